// Package webhook delivers the relay's events to the endpoints accounts
// configure (SPEC §13, issue 17), the Standard Webhooks way
// (https://www.standardwebhooks.com/): each message is an HTTP POST
// (RFC 9110) of one JSON event (RFC 8259) with the headers webhook-id (the
// store's message id, the same on every retry, so receivers can drop
// duplicates), webhook-timestamp (Unix seconds of the attempt) and
// webhook-signature ("v1," and the base64 HMAC-SHA256 (RFC 2104) of
// "id.timestamp.body"), signed by the standard-webhooks library; during a
// secret rotation's grace period both secrets sign, space-separated.
//
// The store queues a message for every matching endpoint in the
// transaction that stores its event; the Engine claims due messages with
// a lease, sends them and records every attempt. Delivery is at least
// once: timeouts, connection errors, 408, 409, 425, 429 and 5xx are
// retried on Standard Webhooks' schedule (DefaultSchedule: immediately,
// then after 5s, 5m, 30m, 2h, 5h, 10h and 10h, about 27.6 hours in all),
// never sooner than a Retry-After (RFC 9110 §10.2.3) asks; other 4xx and
// 3xx answers (redirects are not followed) are final. Each endpoint gets
// at most Config.Concurrency requests at once, so one slow receiver holds
// up nobody else. An endpoint that has failed without a single success for
// Config.DisableAfter (5 days) is disabled, with the reason in its record.
//
// Requests go only where Policy allows: https:// URLs (http:// when
// allowed), and never to loopback, link-local, private, unspecified,
// multicast or reserved addresses or the relay's own, unless the operator
// allows them. The address is checked when the connection is made, after
// DNS (a net.Dialer Control function), so a name that resolves to a public
// address when the endpoint is made and to a private one later gets
// nowhere.
package webhook

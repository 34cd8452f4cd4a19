// Package api is trackrelay's REST API on the relay's internal listener
// (SPEC §9). Its paths and field names follow SMTPeter's REST API so that
// scripts written for it keep working: POST /v1/send, the log files under
// /v1/logfiles, events under /v1/events and the dashboard's /v1/stats and
// /v1/links. The embedded OpenAPI document, Spec, describes every route;
// a test keeps the two in step.
//
// Every call authenticates with an API key: an RFC 6750 bearer token in
// the Authorization header or the access_token query parameter. Keys are
// bcrypt hashes in the configuration (Keyring); a call sees only the data
// of its key's account.
//
// /v1/send builds the message (RFC 5322, MIME per RFC 2045-2049 with
// go-message's writer, List-Unsubscribe per RFC 2369) or takes a whole one,
// and hands it to the same smtpd.Submitter as SMTP. Log files stream as
// CSV (RFC 4180) or JSON and are never held in memory whole.
//
// The package owns small interfaces for what it needs (smtpd.Submitter,
// EventReader, KeyChecker, and the optional CopyReader, Rollups and
// LinkPositions); *store.Relay and *smtpd.Spool implement them.
package api

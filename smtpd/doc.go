// Package smtpd is trackrelay's mail side: the SMTP submission server
// (RFC 5321, RFC 6409; STARTTLS RFC 3207; AUTH RFC 4954 with PLAIN RFC 4616
// and LOGIN; SIZE RFC 1870; 8BITMIME RFC 6152; SMTPUTF8 RFC 6531;
// ENHANCEDSTATUSCODES RFC 2034/3463; PIPELINING RFC 2920), the durable
// spool, and delivery to the upstream; and for the mail that comes back,
// VERP envelope senders, the MX listener (RFC 5321 with the null reverse
// path, postmaster per §4.5.1) and the inbound spool whose processor
// records bounces (RFC 3464), complaints (RFC 5965), responses (RFC 3834)
// and DMARC reports (RFC 7489) as package inbound reads them.
package smtpd

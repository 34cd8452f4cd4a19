// Package store is trackrelay's persistence: the relay's database (spool
// index, message copies, event logs, ingested hits) and the redirector's
// hit journal. The embedded implementation is bbolt; nothing outside this
// package imports bbolt, so a networked store can take its place.
package store

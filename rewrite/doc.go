// Package rewrite turns the links and images of an HTML or plain-text body
// into tracked ones, and holds the token codec that tracked URLs carry.
//
// The HTML rewriter streams through the golang.org/x/net/html Tokenizer
// (WHATWG HTML tokenization) and writes every byte it does not change as it
// came in; a changed tag has only its URL value spliced into its raw bytes.
// Tracked URLs follow trackrelay's SPEC §6: the original path, query and
// fragment stay visible behind a token that names the original scheme, host
// and port (RFC 3986) and is signed with HMAC-SHA256 (RFC 2104).
package rewrite

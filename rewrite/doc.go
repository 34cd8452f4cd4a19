// Package rewrite turns the links and images of an HTML or plain-text body
// into tracked ones, and holds the token codec that tracked URLs carry.
//
// The HTML rewriter streams through the golang.org/x/net/html Tokenizer
// (WHATWG HTML tokenization) and writes every byte it does not change as it
// came in; a changed tag has only its URL value spliced into its raw bytes,
// found by a small attribute scanner that follows the tokenizer's rules.
// Tracked URLs follow trackrelay's SPEC §6: the original path, query and
// fragment stay visible behind a token that names the original scheme, host
// and port (RFC 3986) and is signed with HMAC-SHA256 (RFC 2104).
//
// What is tracked: <a href>, <area href> and <v:roundrect href> as clicks;
// <img src>, background on body/table/td/th, <v:fill src> and <v:image src>
// as images; the same inside conditional comments ("<!--[if mso]>"), which
// are tokenized again. Left as written: every URL that is not absolute
// http(s) (mailto:, tel:, data:, cid:, fragments, relative URLs unless an
// absolute <base href> resolves them, scheme-relative //host), URLs with
// userinfo, template placeholders or a click domain, values the token
// cannot carry, and elements with a no-track attribute (data-notrack,
// data-pm-no-track, clicktracking="off"), which is removed.
//
// Memory does not grow with the input: a token longer than 256 KiB passes
// through unchanged, the preventscam look-ahead is bounded to 8 KiB or 256
// tokens, and the text rewriter leaves URLs over 8 KiB alone.
package rewrite

// Package dkim signs the relay's copies with DKIM (RFC 6376) after the
// rewrite, as they stream to the upstream, and checks that a key's record
// is published. Signing is github.com/emersion/go-msgauth/dkim's; this
// package adds the streaming, the choice of header fields, keys and their
// records (RFC 6376 §3.6, RFC 8463 for Ed25519, RFC 8301 for key sizes),
// a DNS check of a record, and reading the signatures a message already
// carries.
//
// # Signing
//
// Sign writes one DKIM-Signature field per key at the top of the copy:
// relaxed/relaxed canonicalization, rsa-sha256 (RSA keys of at least 1024
// bits; GenerateKey makes 2048) or ed25519-sha256, no l= (a body length
// would let anyone append content), no x=. The signed fields are those of
// SignedHeaders the copy has, each as often as it has it, and From once
// more than it has it, so that a From added later breaks the signature.
// Two keys sign at once: the old and the new selector during a rotation,
// or an RSA and an Ed25519 key (not every verifier checks Ed25519 yet,
// so an Ed25519 signature goes beside an RSA one, not instead of it).
//
// The copy is written with CRLF line endings: SMTP sends CRLF anyway
// (go-smtp's DATA writer adds the CR a bare LF lacks), and signing the
// bytes exactly as they will travel leaves no verifier to guess. A lone
// CR stays data, as the MIME walker treats it. A copy whose header is not
// an RFC 5322 header with a From field cannot be signed: Sign says so
// with ErrUnsignable before writing anything, and the caller sends it
// unsigned.
//
// # Streaming
//
// go-msgauth's Signer is an io.WriteCloser that reads the header into
// memory and hashes the body as it streams through (through an io.Pipe
// to a goroutine of its own); only after Close does it give the
// DKIM-Signature field, which must come before the header it signs, and
// so before the body. The library's Sign helper copies the whole message
// into a bytes.Buffer to get around that, which a 50 MB message cannot
// afford. It offers no way to pass a body hash computed elsewhere, and it
// reads the signing time from the clock.
//
// So Sign takes a render function (the relay's rewrite of the spooled
// original, which gives the same bytes every time) and calls it twice:
// first into the Signers, keeping nothing but the header, then, with the
// signatures written, into the destination. Memory stays that of one
// header and a few buffers, whatever the size. A copy that fits in
// Options.BufferBytes (256 KiB by default: most HTML mail) is kept from
// the first rendering and written from memory instead, so it is rendered
// once. Both renderings are hashed (hash/maphash) and compared: a render
// that is not deterministic, which would send a signature that does not
// match, ends in ErrNotDeterministic, and the caller must then drop the
// connection rather than commit the copy.
//
// # Cost
//
// Measured on the 2-core development machine, shared with other work
// (BenchmarkSignedCopy, each way in turn within every iteration, 3 runs):
// a tracked copy of the 36 KB newsletter, signed, goes at 0.42-0.47 of
// the rate of the unsigned copy with Ed25519, 0.19-0.24 with RSA-2048
// and 0.16-0.19 with both; an RSA-2048 signature costs about a
// millisecond of CPU, more than the whole rewrite. Rendering it twice
// instead of once would bring Ed25519 down to 0.28-0.36. For a large
// copy the body hash dominates: go-msgauth's relaxed body
// canonicalization works a byte at a time with two allocations per
// 4 KiB, about 136 MB/s (its simple one 260 MB/s, SHA-256 alone about
// 1.5 GB/s), and Sign adds about 6% to the bare Signer. A copy with a
// 2 MB attachment signs at 0.06-0.08 of its unsigned rate with one key,
// 0.03-0.04 with two; its second rendering adds little. A 50 MB copy
// signed with two keys takes about a second and grows the heap by 7-10
// MB.
//
// # Messages already signed
//
// Inspect reads a message's header and says whether it is DKIM-signed,
// by which d= domains, and what its From domains are. When the relay
// re-signs a message its sender had signed, the sender's DKIM-Signature
// fields are dropped by default (Options.KeepExisting keeps them):
//   - The rewrite changed the body, so the sender's signatures no longer
//     verify, and a verifier should treat a message whose signatures all
//     fail like an unsigned one (RFC 6376 §6.1): keeping them gains
//     nothing.
//   - DMARC (RFC 7489 §3.1.1) passes on any one valid signature aligned
//     with the From domain: the relay's, for that domain's key. A broken
//     one is not needed for that and cannot help.
//   - Some filters score a signature that fails (SpamAssassin's
//     DKIM_INVALID, rspamd's R_DKIM_REJECT) worse than none.
//   - Without ARC (RFC 8617, out of scope) nothing records that the
//     sender's signature was valid before the rewrite, so a broken one
//     tells a receiver nothing it can use.
//
// # Keys and records
//
// Record gives the TXT value to publish ("v=DKIM1; k=rsa; p=..." with
// the SubjectPublicKeyInfo of an RSA key, the 32 raw bytes of an Ed25519
// key) and ZoneLine one zone-file line with the value split into strings
// of at most 255 bytes. NewSelector names a key "tr" + year and month +
// "r" or "e" (tr202607r): the age is readable and an RSA and an Ed25519
// key of one month do not collide; a name in use gets "-2", "-3", ...
// Private keys are PEM, PKCS #8 (MarshalPrivateKey; ParsePrivateKey also
// reads PKCS #1).
//
// Check looks up SELECTOR._domainkey.DOMAIN through a given resolver
// (miekg/dns, UDP then TCP when truncated), follows a CNAME chain to a
// record hosted elsewhere and reports it, and says in words whether the
// record publishes the key: no record, several records (RFC 6376
// §3.6.2.2 leaves the choice to the verifier), another key, a syntax
// error, revoked (empty p=), or a record that excludes sha256 or email.
// A lookup that fails is an error, not a verdict.
package dkim

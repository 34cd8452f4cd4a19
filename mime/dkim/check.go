package dkim

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Status is the outcome of a Check.
type Status int

// The outcomes of a Check. Only Published means the key can sign.
const (
	Published      Status = iota // the record publishes this key, usable for email
	NoRecord                     // no TXT record at the name (or at the end of its CNAME chain)
	SeveralRecords               // more than one TXT record: receivers may pick either (RFC 6376 §3.6.2.2)
	OtherKey                     // a well-formed record of another key
	SyntaxError                  // the record is not a valid DKIM key record
	Revoked                      // p= is empty: the key is revoked (RFC 6376 §3.6.1)
	Unusable                     // the record is valid but excludes this use (h= without sha256, s= without email)
)

var statusNames = [...]string{"published", "no record", "several records", "another key", "syntax error", "revoked", "unusable"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status " + strconv.Itoa(int(s))
}

// Verdict is what Check found.
type Verdict struct {
	Status Status
	Name   string // the name queried: SELECTOR._domainkey.DOMAIN
	// CNAMEs is the chain followed from Name, each target in turn: a
	// record hosted elsewhere (by the operator, as large services do).
	CNAMEs []string
	// Records are the TXT values found at the end of the chain, each one's
	// strings joined.
	Records []string
	// Problem says in words what is wrong; empty when Published.
	Problem string
	// Notes are remarks that do not stop signing, such as testing mode.
	Notes []string
}

// OK reports whether the key is published right and may sign.
func (v Verdict) OK() bool { return v.Status == Published }

// String is the verdict in one line, for logs and the CLI.
func (v Verdict) String() string {
	var b strings.Builder
	b.WriteString(v.Name)
	for _, c := range v.CNAMEs {
		b.WriteString(" -> CNAME " + c)
	}
	b.WriteString(": " + v.Status.String())
	if v.Problem != "" {
		b.WriteString(": " + v.Problem)
	}
	for _, n := range v.Notes {
		b.WriteString("; note: " + n)
	}
	return b.String()
}

// maxCNAMEs bounds the CNAME chain Check follows.
const maxCNAMEs = 8

// queryTimeout bounds one DNS exchange when ctx has no earlier deadline.
const queryTimeout = 5 * time.Second

// Check looks up the key record of selector at domain through resolver
// (host:port of a recursive resolver, port 53 if omitted; the first
// nameserver of /etc/resolv.conf that answers when empty) and says
// whether it publishes pub (a public key, or the private key) right. It
// follows a CNAME chain and reports it. The error is for a lookup that
// failed (timeout, SERVFAIL, refused): then nothing is known about the
// record. A definite answer, good or bad, is a Verdict.
func Check(ctx context.Context, resolver, domain, selector string, pub any) (Verdict, error) {
	name, err := RecordName(domain, selector)
	if err != nil {
		return Verdict{}, err
	}
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	kind, err := KindOf(pub)
	if err != nil {
		return Verdict{}, err
	}
	servers, err := resolvers(resolver)
	if err != nil {
		return Verdict{}, err
	}
	v := Verdict{Name: name}
	records, cnames, err := lookupTXT(ctx, servers, name)
	v.CNAMEs = cnames
	if err != nil {
		return v, err
	}
	v.Records = records
	switch len(records) {
	case 0:
		v.Status = NoRecord
		if len(cnames) > 0 {
			v.Problem = "the CNAME chain ends at " + cnames[len(cnames)-1] + ", which has no TXT record"
		} else {
			v.Problem = "no TXT record at " + name + ": publish the key record there"
		}
		return v, nil
	case 1:
	default:
		v.Status = SeveralRecords
		v.Problem = fmt.Sprintf("%d TXT records at %s: receivers may pick any one of them (RFC 6376 §3.6.2.2); keep only the key record", len(records), where(v))
		return v, nil
	}
	judge(&v, records[0], kind, pub)
	return v, nil
}

// where names the place the record was found.
func where(v Verdict) string {
	if len(v.CNAMEs) > 0 {
		return v.CNAMEs[len(v.CNAMEs)-1]
	}
	return v.Name
}

// judge sets v's status from the one record rec.
func judge(v *Verdict, rec string, kind Kind, pub any) {
	kr, err := ParseRecord(rec)
	switch {
	case errors.Is(err, errRevoked):
		v.Status, v.Problem = Revoked, "the record's p= is empty: the key is revoked; publish the new record"
		return
	case err != nil:
		v.Status, v.Problem = SyntaxError, strings.TrimPrefix(err.Error(), "dkim: ")
		return
	}
	if kr.Kind != kind {
		v.Status = OtherKey
		v.Problem = fmt.Sprintf("the record holds an %s key, this key is %s", kr.Kind, kind)
		return
	}
	if !keyEqual(kr.Key, pub) {
		v.Status = OtherKey
		v.Problem = fmt.Sprintf("the record holds another %s key (SHA-256 %s, this key's is %s): publish this key's record", kind, Fingerprint(kr.Key), Fingerprint(pub))
		return
	}
	if kr.Hashes != nil && !slices.Contains(kr.Hashes, "sha256") {
		v.Status = Unusable
		v.Problem = "the record's h= (" + strings.Join(kr.Hashes, ":") + ") does not allow sha256, which every signature uses"
		return
	}
	if kr.Services != nil && !slices.Contains(kr.Services, "*") && !slices.Contains(kr.Services, "email") {
		v.Status = Unusable
		v.Problem = "the record's s= (" + strings.Join(kr.Services, ":") + ") does not allow email"
		return
	}
	v.Status = Published
	if slices.Contains(kr.Flags, "y") {
		v.Notes = append(v.Notes, "testing mode (t=y): receivers may treat signed mail as unsigned; remove t=y once it works")
	}
}

func keyEqual(a, b any) bool {
	switch a := a.(type) {
	case *rsa.PublicKey:
		return a.Equal(b)
	case ed25519.PublicKey:
		return a.Equal(b)
	}
	return false
}

// Fingerprint is the SHA-256 of a public key's record bytes (the p=
// value decoded), shortened to 16 hex digits: enough to tell keys apart
// in a message.
func Fingerprint(pub any) string {
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	var raw []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		raw, _ = x509.MarshalPKIXPublicKey(k)
	case ed25519.PublicKey:
		raw = k
	default:
		return "?"
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// KeyRecord is a parsed DKIM key record (RFC 6376 §3.6.1).
type KeyRecord struct {
	Kind     Kind
	Key      any      // *rsa.PublicKey or ed25519.PublicKey
	Hashes   []string // h=; nil when absent (all allowed)
	Services []string // s=; nil when absent (all allowed)
	Flags    []string // t=
	Notes    string   // n=
}

var errRevoked = errors.New("dkim: key revoked (empty p=)")

// ParseRecord parses a key record's TXT value. The error says in words
// what is wrong with it; a revoked key (empty p=) is an error too.
func ParseRecord(s string) (KeyRecord, error) {
	var kr KeyRecord
	tags, err := parseTags(s)
	if err != nil {
		return kr, fmt.Errorf("dkim: record: %w", err)
	}
	if v, ok := lookup(tags, "v"); ok {
		if tags[0].name != "v" {
			return kr, errors.New("dkim: record: v= must come first")
		}
		if v != "DKIM1" {
			return kr, fmt.Errorf("dkim: record: v=%s is not DKIM1", clip(v))
		}
	}
	k := "rsa"
	if kv, ok := lookup(tags, "k"); ok {
		k = kv
	}
	switch Kind(k) {
	case RSA, Ed25519:
		kr.Kind = Kind(k)
	default:
		return kr, fmt.Errorf("dkim: record: unknown key type k=%s (want rsa or ed25519)", clip(k))
	}
	if hv, ok := lookup(tags, "h"); ok {
		kr.Hashes = splitList(hv)
	}
	if sv, ok := lookup(tags, "s"); ok {
		kr.Services = splitList(sv)
	}
	if tv, ok := lookup(tags, "t"); ok {
		kr.Flags = splitList(tv)
	}
	kr.Notes, _ = lookup(tags, "n")
	p, ok := lookup(tags, "p")
	if !ok {
		return kr, errors.New("dkim: record: no p= tag (the public key)")
	}
	p = stripFWS(p)
	if p == "" {
		return kr, errRevoked
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return kr, fmt.Errorf("dkim: record: p= is not base64: %w", err)
	}
	switch kr.Kind {
	case RSA:
		// SubjectPublicKeyInfo, as RFC 6376 means it; a bare RSAPublicKey
		// too, as some tools publish (RFC 6376 erratum 3017).
		key, err := x509.ParsePKIXPublicKey(raw)
		if err != nil {
			key, err = x509.ParsePKCS1PublicKey(raw)
		}
		if err != nil {
			return kr, errors.New("dkim: record: p= is not an RSA public key")
		}
		rk, ok := key.(*rsa.PublicKey)
		if !ok {
			return kr, fmt.Errorf("dkim: record: k=rsa but p= holds a %T key", key)
		}
		if rk.N.BitLen() < minRSABits {
			return kr, fmt.Errorf("dkim: record: RSA key of %d bits is too short: receivers ignore keys under %d bits (RFC 8301)", rk.N.BitLen(), minRSABits)
		}
		kr.Key = rk
	case Ed25519:
		if len(raw) != ed25519.PublicKeySize {
			return kr, fmt.Errorf("dkim: record: k=ed25519 but p= holds %d bytes, not %d (RFC 8463 §4.2)", len(raw), ed25519.PublicKeySize)
		}
		kr.Key = ed25519.PublicKey(raw)
	}
	return kr, nil
}

// resolvers returns the servers to ask, as host:port.
func resolvers(resolver string) ([]string, error) {
	if resolver != "" {
		if _, _, err := net.SplitHostPort(resolver); err != nil {
			resolver = net.JoinHostPort(strings.Trim(resolver, "[]"), "53")
		}
		return []string{resolver}, nil
	}
	cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("dkim: no resolver given and /etc/resolv.conf unreadable: %w", err)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("dkim: no resolver given and none in /etc/resolv.conf")
	}
	var out []string
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out, nil
}

// lookupTXT returns the TXT records at name, following CNAMEs (as the
// resolver reported them in its answer, or by asking again for the
// target), and the chain of CNAME targets.
func lookupTXT(ctx context.Context, servers []string, name string) ([]string, []string, error) {
	var cnames []string
	seen := map[string]bool{strings.ToLower(dns.Fqdn(name)): true}
	q := dns.Fqdn(name)
	for {
		r, err := exchange(ctx, servers, q)
		if err != nil {
			return nil, cnames, err
		}
		if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
			return nil, cnames, fmt.Errorf("dkim: look up %s: the resolver answered %s", strings.TrimSuffix(q, "."), dns.RcodeToString[r.Rcode])
		}
		cur := q
		for {
			target := ""
			for _, rr := range r.Answer {
				if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
					target = c.Target
					break
				}
			}
			if target == "" {
				break
			}
			key := strings.ToLower(target)
			if seen[key] {
				return nil, cnames, fmt.Errorf("dkim: look up %s: CNAME loop at %s", name, strings.TrimSuffix(target, "."))
			}
			seen[key] = true
			cnames = append(cnames, strings.TrimSuffix(target, "."))
			if len(cnames) > maxCNAMEs {
				return nil, cnames, fmt.Errorf("dkim: look up %s: more than %d CNAMEs", name, maxCNAMEs)
			}
			cur = target
		}
		if r.Rcode == dns.RcodeNameError {
			// The last name of the chain does not exist.
			return nil, cnames, nil
		}
		var txts []string
		for _, rr := range r.Answer {
			if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, cur) {
				var b strings.Builder
				for _, s := range t.Txt {
					b.WriteString(unescapeTXT(s))
				}
				txts = append(txts, b.String())
			}
		}
		if len(txts) > 0 || cur == q {
			return txts, cnames, nil
		}
		// The answer stopped at a CNAME: ask for its target.
		q = cur
	}
}

// exchange asks each server in turn for the TXT records at q, over UDP
// and again over TCP when the answer was truncated.
func exchange(ctx context.Context, servers []string, q string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(q, dns.TypeTXT)
	m.RecursionDesired = true
	m.SetEdns0(4096, false)
	var last error
	for _, srv := range servers {
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		r, err := exchangeOne(qctx, m, srv)
		cancel()
		if err == nil {
			return r, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dkim: look up %s: %w", strings.TrimSuffix(q, "."), last)
}

func exchangeOne(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", UDPSize: 4096}
	r, _, err := c.ExchangeContext(ctx, m, srv)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", srv, err)
	}
	return r, nil
}

// unescapeTXT undoes miekg/dns's presentation escapes of one TXT string
// (\" \\ and \DDD) to give the bytes that were on the wire.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		i++
		b.WriteByte(s[i])
	}
	return b.String()
}

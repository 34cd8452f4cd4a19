// Package domaincheck decides whether a custom click domain really leads to
// trackrelay's redirector, and says in words what is wrong when it does not
// and which DNS record to create. It needs no store: the relay gives it a
// name, the operator's target host and a resolver, and it asks DNS and then
// the redirector itself.
//
// A domain is verified when its CNAME chain reaches the target (or, for an
// apex or a DNS host that flattens CNAMEs, when its A/AAAA records are the
// target's addresses) and a plain HTTP request for Path at one of those
// addresses returns the domain's challenge (Challenger), which proves the
// request reached a redirector holding the relay's token keys.
//
// DNS per RFC 1034/1035 (CNAME at an apex: RFC 1034 §3.6.2), EDNS0 RFC
// 6891, TCP fallback RFC 7766, NXDOMAIN after a CNAME RFC 6604; the
// challenge is a well-known URI (RFC 8615) fetched over HTTP/1.1 (RFC 9110,
// RFC 9112); names in IDNA A-labels (RFC 5891).
package domaincheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Problem names what stands between a domain and verification. The values
// are stable: the relay stores them and the REST API shows them.
type Problem string

// Problems, in the order the check meets them.
const (
	OK Problem = "" // verified

	BadName          Problem = "bad_name"          // not a usable host name
	TargetUnresolved Problem = "target_unresolved" // the operator's target has no address
	DNSTimeout       Problem = "dns_timeout"       // the resolver did not answer
	DNSError         Problem = "dns_error"         // the resolver answered with an error
	NoRecord         Problem = "no_record"         // no CNAME, A or AAAA record
	WrongCNAME       Problem = "wrong_cname"       // a CNAME that leads elsewhere
	WrongAddress     Problem = "wrong_address"     // A/AAAA records that are not the target's
	NotAnswering     Problem = "not_answering"     // DNS right, nothing answers HTTP
	HTTPTimeout      Problem = "http_timeout"      // DNS right, the HTTP request timed out
	Foreign          Problem = "foreign"           // something else answered: a proxy, a CDN, another server
	WrongChallenge   Problem = "wrong_challenge"   // a trackrelay redirector with other keys answered
)

// Result is the outcome of one check. Message and Advice are sentences for
// the user; Records are what to create at their DNS host.
type Result struct {
	Domain   string // as checked: A-labels, lower case
	Verified bool
	Problem  Problem
	// Message says what was found, Advice what to do about it.
	Message string
	Advice  string
	// Records are the exact records to create, as zone-file lines: a CNAME
	// to the target, or, for an apex, A/AAAA lines with the target's
	// addresses. Alternative holds the A/AAAA lines when Records is a CNAME,
	// for DNS hosts that flatten CNAMEs.
	Records     []string
	Alternative []string
	Apex        bool
	// What DNS said: the CNAME chain from the domain and its addresses.
	Chain     []string
	Addresses []netip.Addr
	// Proxy names the proxy or CDN whose marks an answer carried.
	Proxy string
	// Notes are remarks that do not stop verification.
	Notes []string
	// Checked is when the check ran.
	Checked time.Time
}

// Checker checks domains. Target and Challenger are required; the zero
// value of every other field is a sensible default. It is safe for
// concurrent use.
type Checker struct {
	// Target is the host every click domain's CNAME points at ([domains]
	// target).
	Target string
	// Resolver is the DNS server asked, host:port ([domains] resolver);
	// empty is the first server of /etc/resolv.conf.
	Resolver string
	// Challenger computes the expected challenge.
	Challenger *Challenger
	// HTTPPort is the port the challenge is fetched from; 0 is 80.
	HTTPPort int
	// Timeout bounds one DNS query and one HTTP request; 0 is 5 seconds.
	// A whole check is bounded by a few of them.
	Timeout time.Duration
	// AllowFetch lists addresses that are not the target's but may still be
	// asked for the challenge, to name the proxy in front of a domain whose
	// records point elsewhere. Public unicast addresses are always allowed;
	// loopback, private, link-local and other special addresses only when
	// listed here (so that a user's record cannot make the relay probe its
	// own network).
	AllowFetch []netip.Prefix
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Check checks domain and returns the verdict. It never returns an
// incomplete Result: every Problem comes with a Message and an Advice.
func (c *Checker) Check(ctx context.Context, domain string) Result {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	res := Result{Domain: domain, Checked: now()}
	d, err := Normalize(domain)
	if err != nil {
		return res.fail(BadName, strings.TrimPrefix(err.Error(), "domaincheck: "),
			"Enter the host name you want tracked links to use, such as link.example.com.")
	}
	res.Domain = d
	target, err := Normalize(c.Target)
	if err != nil || c.Challenger == nil {
		return res.fail(TargetUnresolved, "The relay has no usable target host configured ([domains] target).",
			"The operator must set [domains] target to the redirector's host name.")
	}
	r := &resolver{server: c.Resolver, timeout: c.timeout()}
	if r.server == "" {
		r.server = systemResolver()
	}

	tl, err := r.addresses(ctx, target)
	if err != nil {
		return res.dnsFail(err, r.server)
	}
	if len(tl.addrs) == 0 {
		return res.fail(TargetUnresolved, fmt.Sprintf("The target host %s has no A or AAAA record, so no click domain can point at it.", target),
			"The operator must give "+target+" the redirector's addresses (or fix [domains] target).")
	}
	targetAddrs := tl.addrs

	apex, err := r.isApex(ctx, d)
	if err != nil {
		return res.dnsFail(err, r.server)
	}
	res.Apex = apex
	res.Records, res.Alternative = records(d, target, targetAddrs, apex)

	dl, err := r.addresses(ctx, d)
	if err != nil {
		return res.dnsFail(err, r.server)
	}
	res.Chain, res.Addresses = dl.chain, dl.addrs

	create := "Create this record at your DNS host: " + quoted(res.Records) + "."
	if !apex {
		create += " If your DNS host cannot make a CNAME here, create these instead: " + quoted(res.Alternative) + "."
	}
	viaTarget := slices.Contains(dl.chain, target)
	ours := len(dl.addrs) > 0 && subset(dl.addrs, targetAddrs)
	switch {
	case len(dl.chain) == 0 && len(dl.addrs) == 0:
		return res.fail(NoRecord, fmt.Sprintf("%s has no DNS record (no CNAME, A or AAAA).", d), create)
	case len(dl.chain) > 0 && !viaTarget && !ours:
		msg := fmt.Sprintf("%s is a CNAME to %s, not to %s.", d, dl.chain[0], target)
		if len(dl.chain) > 1 {
			msg = fmt.Sprintf("%s is a CNAME to %s (which leads to %s), not to %s.", d, dl.chain[0], dl.chain[len(dl.chain)-1], target)
		}
		if dl.nxname != "" {
			msg += fmt.Sprintf(" %s does not exist.", dl.nxname)
		}
		adv := "Change the CNAME of " + d + " to point at " + target + "."
		c.nameProxy(ctx, &res, d, dl.addrs, targetAddrs)
		if res.Proxy != "" {
			msg += " It is served by " + res.Proxy + "."
			adv += " If " + res.Proxy + " proxies the name, turn that off (DNS only) so that it points straight at " + target + "."
		}
		return res.fail(WrongCNAME, msg, adv)
	case viaTarget && len(dl.addrs) == 0:
		return res.fail(TargetUnresolved, fmt.Sprintf("%s points at %s, but the resolver gave no address for it.", d, target),
			"Try again in a few minutes; if it persists, the operator must check the target's records.")
	case !ours:
		msg := fmt.Sprintf("%s resolves to %s, which is not an address of %s (%s).", d, joinAddrs(dl.addrs), target, joinAddrs(targetAddrs))
		adv := create
		if apex {
			adv = "Set the A/AAAA records of " + d + " to exactly these: " + quoted(res.Records) + "."
		}
		c.nameProxy(ctx, &res, d, dl.addrs, targetAddrs)
		if res.Proxy != "" {
			msg += " Those addresses answer as " + res.Proxy + ": a proxy or CDN is in between."
			adv += " Turn off proxying for " + d + " (DNS only), so that it points straight at the redirector."
		}
		return res.fail(WrongAddress, msg, adv)
	}
	if len(dl.chain) > 0 && !viaTarget {
		res.Notes = append(res.Notes, fmt.Sprintf("%s is a CNAME to %s rather than to %s; that works only while %s has %s's addresses.", d, dl.chain[0], target, dl.chain[len(dl.chain)-1], target))
	}
	if len(dl.chain) == 0 {
		if missing := minus(targetAddrs, dl.addrs); len(missing) > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("%s lacks %s of %s's addresses; clients that reach only those may fail.", d, joinAddrs(missing), target))
		}
	}
	return c.challenge(ctx, res, d, dl.addrs, target)
}

// challenge fetches d's challenge from its addresses (all the target's) and
// gives the verdict: verified when one answers right and none answers as
// something else.
func (c *Checker) challenge(ctx context.Context, res Result, d string, addrs []netip.Addr, target string) Result {
	port := c.port()
	var down []answer
	for _, a := range addrs[:min(len(addrs), maxFetchAddrs)] {
		ans := fetch(ctx, d, a, port, c.timeout())
		switch {
		case ans.err != nil:
			down = append(down, ans)
		case ans.status == 200 && c.Challenger.Verify(d, ans.body):
			res.Verified = true
		case isChallenge(ans.body):
			return res.fail(WrongChallenge,
				fmt.Sprintf("%s reaches a trackrelay redirector at %s, but one with other token keys than this relay.", d, a),
				"The operator must give every redirector behind "+target+" the relay's key file ([keys] key_file).")
		default:
			res.Proxy = proxyName(ans.header)
			msg := fmt.Sprintf("%s reaches %s, but what answers there is not the redirector (%s).", d, a, ans.describe())
			adv := "The operator must make sure the redirector itself answers plain HTTP on port " + fmt.Sprint(port) + " of " + target + "'s addresses."
			if res.Proxy != "" {
				msg = fmt.Sprintf("%s reaches %s, which answers as %s (%s), not as the redirector: a proxy or CDN is in between.", d, a, res.Proxy, ans.describe())
				adv = "Turn off proxying for " + d + " (DNS only), or have the proxy pass requests for " + d + " to " + target + " unchanged."
			}
			return res.fail(Foreign, msg, adv)
		}
	}
	if res.Verified {
		for _, a := range down {
			res.Notes = append(res.Notes, fmt.Sprintf("%s:%d did not answer (%v).", a.addr, port, shortErr(a.err)))
		}
		res.Message = fmt.Sprintf("%s leads to the redirector: verified.", d)
		return res
	}
	a := down[0]
	if a.timeout {
		return res.fail(HTTPTimeout,
			fmt.Sprintf("The DNS record of %s is right, but %s:%d did not answer within %s.", d, a.addr, port, c.timeout()),
			"Nothing to change in DNS. The operator must check that the redirector runs and that port "+fmt.Sprint(port)+" is open; then check again.")
	}
	return res.fail(NotAnswering,
		fmt.Sprintf("The DNS record of %s is right, but nothing answers HTTP at %s:%d (%v).", d, a.addr, port, shortErr(a.err)),
		"Nothing to change in DNS. The operator must check that the redirector runs and listens on port "+fmt.Sprint(port)+" (redirector.listen); then check again.")
}

// nameProxy asks the addresses a wrong record leads to for the challenge,
// to name a proxy or CDN in between, when they may be asked.
func (c *Checker) nameProxy(ctx context.Context, res *Result, d string, addrs, targetAddrs []netip.Addr) {
	for _, a := range addrs[:min(len(addrs), maxFetchAddrs)] {
		if !c.mayFetch(a, targetAddrs) {
			continue
		}
		ans := fetch(ctx, d, a, c.port(), c.timeout())
		if ans.err != nil {
			continue
		}
		if p := proxyName(ans.header); p != "" {
			res.Proxy = p
			return
		}
	}
}

// mayFetch reports whether a may be sent the challenge request.
func (c *Checker) mayFetch(a netip.Addr, targetAddrs []netip.Addr) bool {
	if slices.Contains(targetAddrs, a) {
		return true
	}
	for _, p := range c.AllowFetch {
		if p.Contains(a) {
			return true
		}
	}
	return a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() && !a.IsLinkLocalUnicast() &&
		!netip.MustParsePrefix("100.64.0.0/10").Contains(a) && !netip.MustParsePrefix("fc00::/7").Contains(a)
}

func (c *Checker) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 5 * time.Second
}

func (c *Checker) port() int {
	if c.HTTPPort > 0 {
		return c.HTTPPort
	}
	return 80
}

func (res Result) fail(p Problem, msg, advice string) Result {
	res.Verified = false
	res.Problem = p
	res.Message = msg
	res.Advice = advice
	return res
}

func (res Result) dnsFail(err error, server string) Result {
	var de *dnsError
	if !errors.As(err, &de) {
		de = &dnsError{name: res.Domain, err: err}
	}
	if de.timeout {
		return res.fail(DNSTimeout, fmt.Sprintf("The resolver %s did not answer for %s.", server, de.name),
			"Check again in a minute; if it persists, the operator must check [domains] resolver.")
	}
	msg := fmt.Sprintf("The resolver %s answered %s for %s.", server, dns.RcodeToString[de.rcode], de.name)
	if de.err != nil {
		msg = fmt.Sprintf("Looking up %s at the resolver %s failed: %v.", de.name, server, de.err)
	}
	return res.fail(DNSError, msg,
		"Check that the domain's DNS servers answer (a SERVFAIL often means broken DNSSEC or a missing delegation); then check again.")
}

// records returns the records to create for d: a CNAME to target, or for
// an apex the A/AAAA lines, and the A/AAAA lines as the alternative.
func records(d, target string, addrs []netip.Addr, apex bool) (primary, alt []string) {
	for _, a := range addrs {
		t := "A"
		if a.Is6() {
			t = "AAAA"
		}
		alt = append(alt, fmt.Sprintf("%s. 3600 IN %s %s", d, t, a))
	}
	if apex {
		return alt, nil
	}
	return []string{fmt.Sprintf("%s. 3600 IN CNAME %s.", d, target)}, alt
}

// quoted lists zone-file lines for a sentence.
func quoted(lines []string) string {
	q := make([]string, len(lines))
	for i, l := range lines {
		q[i] = strconv.Quote(l)
	}
	return strings.Join(q, ", ")
}

func subset(a, b []netip.Addr) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func minus(a, b []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// shortErr is err's text without the layers of Go's wrapping that say
// nothing to a user.
func shortErr(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "domaincheck: ")
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "dial tcp") {
		s = s[i+2:]
	}
	return s
}

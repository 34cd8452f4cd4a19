package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/trackrelay/trackrelay/api"
)

// The check of an account's own bounce domain (store.Domain of kind
// bounce): mail sent back to its VERP addresses must reach this relay's MX
// listener, so its MX record must name the operator's MX host ([inbound]
// mx_host), or a CNAME must lead there (RFC 5321 §5.1: without MX records
// the name's own address is the mail host). A null MX (RFC 7505) accepts
// no mail. Resolved with [domains] resolver, or the system's.

// bounceCheckTimeout bounds one DNS query of the check, unless the
// checker sets its own.
const bounceCheckTimeout = 5 * time.Second

func checkBounceMX(ctx context.Context, rc *relayChecker, name string) api.DomainCheck {
	want := []string{bounceRecord(name, rc.mxHost)}
	if rc.mxHost == "" {
		return api.DomainCheck{Problem: "bounce domains cannot be checked: the operator has not set [inbound] mx_host (the MX listener's public name)"}
	}
	server := rc.resolver
	if server == "" {
		server = systemNameServer()
	}
	timeout := rc.dnsTimeout
	if timeout <= 0 {
		timeout = bounceCheckTimeout
	}
	mxs, chain, nx, err := lookupMX(ctx, server, name, timeout)
	switch {
	case err != nil:
		return api.DomainCheck{Records: want, Problem: fmt.Sprintf("the DNS lookup of %s failed (%v); try again later", name, err)}
	case nx:
		return api.DomainCheck{Records: want, Problem: fmt.Sprintf("%s does not exist in DNS: create the MX record %s", name, want[0])}
	}
	for _, mx := range mxs {
		if mx == rc.mxHost {
			return api.DomainCheck{OK: true, Records: want}
		}
	}
	if len(mxs) == 0 && slices.Contains(chain, rc.mxHost) {
		return api.DomainCheck{OK: true, Records: []string{fmt.Sprintf("%s. 3600 IN CNAME %s.", name, rc.mxHost)}}
	}
	switch {
	case len(mxs) == 1 && mxs[0] == "":
		return api.DomainCheck{Records: want, Problem: fmt.Sprintf("%s has a null MX record (it takes no mail): replace it with %s", name, want[0])}
	case len(mxs) > 0:
		return api.DomainCheck{Records: want, Problem: fmt.Sprintf("the MX records of %s lead to %s, not to %s: replace them with %s", name, strings.Join(mxs, ", "), rc.mxHost, want[0])}
	case len(chain) > 0:
		return api.DomainCheck{Records: want, Problem: fmt.Sprintf("%s is a CNAME to %s, which does not lead to %s: make it %s", name, chain[len(chain)-1], rc.mxHost, want[0])}
	}
	return api.DomainCheck{Records: want, Problem: fmt.Sprintf("%s has no MX record: create %s", name, want[0])}
}

func bounceRecord(name, mxHost string) string {
	if mxHost == "" {
		mxHost = "MX-HOST"
	}
	return fmt.Sprintf("%s. 3600 IN MX 10 %s.", name, mxHost)
}

// maxCNAMEs bounds the CNAME chain followed.
const maxCNAMEs = 8

// lookupMX asks server for name's MX records, following a CNAME chain
// (asking again where the resolver did not chase it). It returns the
// exchanges (lower case, no final dot; "" for a null MX), the chain, and
// whether the name does not exist.
func lookupMX(ctx context.Context, server, name string, timeout time.Duration) (mxs, chain []string, nx bool, err error) {
	cur := dns.Fqdn(strings.ToLower(name))
	c := &dns.Client{Timeout: timeout, UDPSize: 1232}
	for asked := 0; asked <= maxCNAMEs; asked++ {
		m := new(dns.Msg)
		m.SetQuestion(cur, dns.TypeMX)
		m.RecursionDesired = true
		m.SetEdns0(1232, false)
		c.Net = "udp"
		in, _, err := c.ExchangeContext(ctx, m, server)
		if err == nil && in.Truncated {
			c.Net = "tcp"
			in, _, err = c.ExchangeContext(ctx, m, server)
		}
		if err != nil {
			return nil, chain, false, err
		}
		if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
			return nil, chain, false, fmt.Errorf("the resolver answered %s", dns.RcodeToString[in.Rcode])
		}
		askedFor := cur
		for {
			var next string
			for _, rr := range in.Answer {
				if !strings.EqualFold(rr.Header().Name, cur) {
					continue
				}
				switch v := rr.(type) {
				case *dns.CNAME:
					next = strings.ToLower(v.Target)
				case *dns.MX:
					mxs = append(mxs, strings.TrimSuffix(strings.ToLower(v.Mx), "."))
				}
			}
			if len(mxs) > 0 {
				return mxs, chain, false, nil
			}
			if next == "" {
				break
			}
			if len(chain) >= maxCNAMEs || slices.Contains(chain, strings.TrimSuffix(next, ".")) {
				return nil, chain, false, errors.New("CNAME loop or chain too long")
			}
			chain = append(chain, strings.TrimSuffix(next, "."))
			cur = next
		}
		if in.Rcode == dns.RcodeNameError {
			return nil, chain, true, nil
		}
		if cur == askedFor {
			return nil, chain, false, nil
		}
	}
	return nil, chain, false, errors.New("CNAME chain too long")
}

// systemNameServer is the first name server of /etc/resolv.conf.
func systemNameServer() string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "127.0.0.1:53"
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port)
}

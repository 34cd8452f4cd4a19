package domaincheck

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Bounds on the challenge fetch.
const (
	maxBody        = 512     // a challenge is under 100 bytes
	maxHeaderBytes = 8 << 10 // the response's header block
	maxFetchAddrs  = 4       // addresses tried per check
)

// answer is what one address said to the challenge request.
type answer struct {
	addr     netip.Addr
	err      error // no HTTP answer: refused, reset, timed out
	timeout  bool
	status   int
	header   http.Header
	body     string
	location string
}

// fetch asks addr:port for host's challenge: one GET of Path with Host set
// to host, dialing addr itself (never a name, never a proxy), following no
// redirect, reading at most maxBody bytes, within timeout.
func fetch(ctx context.Context, host string, addr netip.Addr, port int, timeout time.Duration) answer {
	ans := answer{addr: addr}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := net.JoinHostPort(addr.String(), strconv.Itoa(port))
	d := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		Proxy: nil, // the request goes to the address DNS gave, nowhere else
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", target)
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	u := "http://" + hostPort(host, port) + Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		ans.err = err
		return ans
	}
	req.Header.Set("User-Agent", "trackrelay-domain-check/1")
	resp, err := client.Do(req)
	if err != nil {
		ans.err = err
		var ne net.Error
		ans.timeout = errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
		return ans
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	ans.status = resp.StatusCode
	ans.header = resp.Header
	ans.body = string(body)
	ans.location = resp.Header.Get("Location")
	return ans
}

func hostPort(host string, port int) string {
	if port == 80 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// proxyName names the proxy or CDN whose marks an answer carries, "" when
// it carries none.
func proxyName(h http.Header) string {
	server := strings.ToLower(h.Get("Server"))
	via := strings.ToLower(h.Get("Via"))
	switch {
	case h.Get("CF-Ray") != "" || strings.Contains(server, "cloudflare"):
		return "Cloudflare"
	case h.Get("X-Amz-Cf-Id") != "" || strings.Contains(via, "cloudfront"):
		return "Amazon CloudFront"
	case h.Get("X-Fastly-Request-Id") != "" || strings.HasPrefix(strings.ToLower(h.Get("X-Served-By")), "cache-"):
		return "Fastly"
	case strings.Contains(server, "akamai") || h.Get("X-Akamai-Request-Id") != "":
		return "Akamai"
	case h.Get("X-Azure-Ref") != "":
		return "Azure Front Door"
	case strings.Contains(server, "varnish") || h.Get("X-Varnish") != "":
		return "a Varnish cache"
	case via != "":
		return "a proxy (Via: " + clip(h.Get("Via")) + ")"
	}
	return ""
}

// describe says in a few words what answered: its status and server.
func (a answer) describe() string {
	var b strings.Builder
	b.WriteString("HTTP ")
	b.WriteString(strconv.Itoa(a.status))
	if s := a.header.Get("Server"); s != "" {
		b.WriteString(", Server: ")
		b.WriteString(clip(s))
	}
	if a.location != "" {
		b.WriteString(", redirecting to ")
		b.WriteString(clip(a.location))
	}
	return b.String()
}

// clip bounds a header value quoted back to the user.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

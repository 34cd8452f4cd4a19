package redirector

import (
	"github.com/valyala/fasthttp"

	"github.com/trackrelay/trackrelay/redirector/domaincheck"
)

// serveChallenge answers the domain check (domaincheck.Path) for any Host,
// over HTTP and HTTPS: the relay asks it through a new click domain before
// it verifies the domain, so it cannot wait for the domain to be known.
// The value is an HMAC of the host under a key derived from the token
// keys; it tells nothing but that this redirector holds them.
func (h *Handler) serveChallenge(ctx *fasthttp.RequestCtx) {
	host := canonicalRequestHost(string(ctx.Request.Header.Host()))
	if h.challenger == nil || host == "" || !(ctx.IsGet() || ctx.IsHead()) {
		h.notFound(ctx, "path")
		return
	}
	h.m.count("challenge")
	plainFast(ctx, fasthttp.StatusOK, h.challenger.Value(host)+"\n")
}

// challengePath is domaincheck.Path, for the request switch.
const challengePath = domaincheck.Path

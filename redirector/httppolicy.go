package redirector

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// HTTPPolicy is the DomainPolicy of a redirector that runs apart from the
// relay: it asks the relay's internal API (GET BaseURL+host, with the
// ingest secret), which answers 200 for a click domain it serves and 404
// for any other host. The Handler caches the answers (Config.PolicyTTL).
type HTTPPolicy struct {
	BaseURL string // e.g. http://relay.internal:8025/internal/domains/
	Secret  string
	Client  *http.Client
}

// PolicyURL derives the relay's domain endpoint from its hit ingest URL
// (…/internal/hits becomes …/internal/domains/).
func PolicyURL(ingestURL string) (string, error) {
	u, err := url.Parse(ingestURL)
	if err != nil {
		return "", fmt.Errorf("redirector: ingest url: %w", err)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/hits") + "/domains/"
	u.RawQuery = ""
	return u.String(), nil
}

// ClickDomain implements DomainPolicy.
func (p *HTTPPolicy) ClickDomain(ctx context.Context, host string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.BaseURL+url.PathEscape(host), nil)
	if err != nil {
		return false, fmt.Errorf("redirector: domain policy: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.Secret)
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, fmt.Errorf("redirector: domain policy: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("redirector: domain policy: the relay answered %s", resp.Status)
}

package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
)

// pageNames are the templates under templates/, each rendered inside
// layout.html.
var pageNames = []string{"login", "error", "overview", "links", "link", "messages", "message", "credentials", "logs", "users", "password"}

var funcs = template.FuncMap{
	"int": func(v any) string {
		switch n := v.(type) {
		case uint64:
			return fmtInt(n)
		case int:
			if n < 0 {
				return "-" + fmtInt(uint64(-n))
			}
			return fmtInt(uint64(n))
		}
		return fmt.Sprint(v)
	},
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2 Jan 2006 15:04:05")
	},
	"rfc3339": func(s string) string { // an api.Link's first/last
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return "–"
		}
		return t.UTC().Format("2 Jan 15:04")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
	// host and rest split a URL for display: the host stands out.
	"urlHost": func(s string) string {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		return u.Host
	},
	"urlRest": func(s string) string {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return s
		}
		_, rest, _ := strings.Cut(s, u.Host)
		return rest
	},
	"join":  strings.Join,
	"query": url.QueryEscape,
	"pct":   pct,
	"active": func(path, item string) bool {
		if item == "/" {
			return path == "/"
		}
		return path == item || strings.HasPrefix(path, item+"/")
	},
	"inc": func(i int) int { return i + 1 },
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("web: dict: odd arguments")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("web: dict: key %v", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
}

func (h *Handler) parseTemplates() error {
	base, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("web: templates: %w", err)
	}
	h.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("web: templates: %w", err)
		}
		h.pages[name] = t
	}
	return nil
}

package web

import (
	"context"
	"html"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// kpi reads a figure card's value.
func kpi(t *testing.T, body, name string) string {
	t.Helper()
	m := regexp.MustCompile(`<span class="k">` + regexp.QuoteMeta(name) + `</span><span class="v[^"]*">([^<]*)</span>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no figure %q on the page", name)
	}
	return html.UnescapeString(m[1])
}

var (
	tagRe   = regexp.MustCompile(`<[^>]+>`)
	spaceRe = regexp.MustCompile(`\s+`)
)

// row returns the text of each cell of the table row that contains sub.
func row(t *testing.T, body, sub string) []string {
	t.Helper()
	for _, tr := range strings.Split(body, "<tr") {
		if !strings.Contains(tr, sub) {
			continue
		}
		var cells []string
		for _, td := range regexp.MustCompile(`(?s)<t[dh][^>]*>(.*?)</t[dh]>`).FindAllStringSubmatch(tr, -1) {
			cells = append(cells, strings.TrimSpace(spaceRe.ReplaceAllString(html.UnescapeString(tagRe.ReplaceAllString(td[1], " ")), " ")))
		}
		return cells
	}
	t.Fatalf("no row with %q", sub)
	return nil
}

// TestFigures sends mail through the real relay, follows its links and
// loads its pixel through the real redirector as people and as machines,
// and checks every figure the dashboard shows against what was done.
func TestFigures(t *testing.T) {
	s := newStack(t)
	const l1, l2 = "https://shop.example/sale?x=1", "https://shop.example/about"
	htmlA := `<p><a href="` + l1 + `">the sale</a> <a href="` + l2 + `">about us</a></p>`
	htmlB := `<p><a href="` + l1 + `">the sale</a></p>`
	a := s.send("shop-smtp", "Sale", "nov", htmlA, "r1@example.com", "r2@example.com", "r3@example.com")
	b := s.send("shop-smtp", "Reminder", "", htmlB, "r4@example.com", "r5@example.com")
	clicks := func(m []byte) []string { return s.trackedURLs(m, rewrite.KindClick) }
	pixel := func(m []byte) string {
		p := s.trackedURLs(m, rewrite.KindPixel)
		if len(p) != 1 {
			t.Fatalf("pixels %v", p)
		}
		return p[0]
	}
	r1, r2 := clicks(a["r1@example.com"]), clicks(a["r2@example.com"])
	if len(r1) != 2 || len(r2) != 2 {
		t.Fatalf("tracked links %v %v", r1, r2)
	}
	// r1: two clicks on the sale, one on about, an open.
	s.hit(http.MethodGet, r1[0], browserUA)
	s.hit(http.MethodGet, r1[0], browserUA)
	s.hit(http.MethodGet, r1[1], browserUA)
	s.hit(http.MethodGet, pixel(a["r1@example.com"]), browserUA)
	// r2: one click by the reader; a HEAD and a scanner are machines.
	s.hit(http.MethodGet, r2[0], browserUA)
	s.hit(http.MethodHead, r2[1], browserUA)
	s.hit(http.MethodGet, r2[0], scannerUA)
	// r3: only an image proxy opens it.
	s.hit(http.MethodGet, pixel(a["r3@example.com"]), "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)")
	// r4 clicks and opens message B; r5 does nothing.
	s.hit(http.MethodGet, clicks(b["r4@example.com"])[0], browserUA)
	s.hit(http.MethodGet, pixel(b["r4@example.com"]), browserUA)
	s.ship()

	ann := s.browser()
	ann.login("ann@shop.example", testPassword)
	for _, c := range []struct {
		path string
		want map[string]string
	}{
		{"/?range=today", map[string]string{"Accepted": "5", "Delivered": "5", "Failed": "0", "Bounced": "0",
			"Opens": "2", "Open rate": "40%", "Clicks": "3", "Click rate": "60%"}},
		{"/?range=7d&tag=nov", map[string]string{"Accepted": "3", "Delivered": "3", "Opens": "1", "Open rate": "33%", "Clicks": "2", "Click rate": "67%"}},
	} {
		st, body := ann.get(c.path)
		if st != 200 {
			t.Fatalf("%s: %d", c.path, st)
		}
		for k, v := range c.want {
			if got := kpi(t, body, k); got != v {
				t.Errorf("%s: %s = %s, want %s", c.path, k, got, v)
			}
		}
		if c.path == "/?range=today" {
			// All hits apart from the unique ones, and the machines apart.
			for _, sub := range []string{"unique · 2 in all", "unique · 5 in all", "1 opens (33% of all opens)", "2 clicks (29% of all clicks)",
				"Machine opens <span class=\"num\">1</span>", "Machine clicks <span class=\"num\">2</span>", "Delivered <span class=\"num\">5</span>"} {
				if !strings.Contains(body, sub) {
					t.Errorf("overview lacks %q", sub)
				}
			}
			// Today in hour buckets: 24 rows in each chart's table.
			if n := strings.Count(body, ":00</th>"); n != 3*24 {
				t.Errorf("hour rows %d, want 72", n)
			}
		}
	}

	// Links: by unique clicks, with the share of recipients (the copies
	// that carried each link are written a second after their delivery).
	s.st.FlushLinkDeliveries(context.Background())
	_, body := ann.get("/links?range=today")
	id1, id2 := store.LinkID(l1), store.LinkID(l2)
	if strings.Index(body, id1) > strings.Index(body, id2) {
		t.Error("the sale (3 unique clicks) is not above about (1)")
	}
	// rank, link, unique, share (of delivered), all clicks, machine, first, last
	if c := row(t, body, "/links/"+id1); c[2] != "3" || c[3] != "60% of 5" || c[4] != "4" || c[5] != "1" || c[6] == "–" {
		t.Errorf("sale row %q", c)
	}
	if c := row(t, body, "/links/"+id2); c[2] != "1" || c[3] != "33% of 3" || c[4] != "1" || c[5] != "1" {
		t.Errorf("about row %q", c)
	}
	_, body = ann.get("/links?range=today&tag=nov")
	if c := row(t, body, "/links/"+id1); c[2] != "2" || c[4] != "3" {
		t.Errorf("sale row for tag nov %q", c)
	}
	msgs, _ := s.st.SearchMessages(context.Background(), store.MessageQuery{Account: "shop"})
	var idA, idB string
	for _, m := range msgs {
		if len(m.Recipients) == 3 {
			idA = store.FormatID(m.ID)
		} else {
			idB = store.FormatID(m.ID)
		}
	}
	_, body = ann.get("/links?message=" + idA)
	if c := row(t, body, "/links/"+id1); c[0] != "@0" || c[2] != "2" || c[4] != "3" {
		t.Errorf("sale in message A %q", c)
	}
	if c := row(t, body, "/links/"+id2); c[0] != "@1" || c[2] != "1" {
		t.Errorf("about in message A %q", c)
	}

	// One link: its figures, its days, the messages that carried it.
	_, body = ann.get("/links/" + id1 + "?range=7d")
	for k, v := range map[string]string{"Unique clicks": "3", "All clicks": "4", "Share of recipients": "60%", "Machine clicks": "1"} {
		if got := kpi(t, body, k); got != v {
			t.Errorf("link page: %s = %s, want %s", k, got, v)
		}
	}
	if c := row(t, body, "/messages/"+idA); c[3] != "2" || c[4] != "3" || c[5] != "3" {
		t.Errorf("link page, message A %q", c)
	}
	if c := row(t, body, "/messages/"+idB); c[3] != "1" || c[4] != "1" || c[5] != "2" {
		t.Errorf("link page, message B %q", c)
	}
	if !strings.Contains(body, "Unique clicks <span class=\"num\">3</span>") || strings.Count(body, "<th scope=\"row\">") != 7 {
		t.Errorf("link chart: legend or 7 day rows missing")
	}

	// Message A's timeline: every event of its copies, in time order.
	_, body = ann.get("/messages/" + idA)
	want := map[string]int{"attempt": 3, "delivery": 3, "click": 6, "open": 2}
	for typ, n := range want {
		if got := strings.Count(body, `<span class="etype">`+typ+`</span>`); got != n {
			t.Errorf("timeline: %d %s events, want %d", got, typ, n)
		}
	}
	if got := strings.Count(body, `class="pill machine"`); got != 3 {
		t.Errorf("timeline: %d machine hits, want 3", got)
	}
	for _, sub := range []string{"trackclicks on", "trackopens on", "credential shop-smtp", "Envelope sender news@shop.example",
		"Upstream reply: 250", "IP <code>127.0.0.1</code>", "Chrome/131.0", "r1@example.com clicked " + html.EscapeString(l1), "/logs/clicks.", "Log record"} {
		if !strings.Contains(body, sub) {
			t.Errorf("timeline lacks %q", sub)
		}
	}
	if kpi(t, body, "Clicks") != "2" || kpi(t, body, "Opens") != "1" || kpi(t, body, "Delivered") != "3" {
		t.Errorf("message figures: clicks %s opens %s delivered %s", kpi(t, body, "Clicks"), kpi(t, body, "Opens"), kpi(t, body, "Delivered"))
	}
	// The search finds it by recipient and by id.
	if _, body := ann.get("/messages?recipient=r2@example.com"); !strings.Contains(body, idA) || strings.Contains(body, idB) {
		t.Error("search by recipient")
	}
	if st, hdr, _ := ann.do(http.MethodGet, "/messages?id="+idB, nil); st != http.StatusSeeOther || hdr.Get("Location") != "/messages/"+idB {
		t.Errorf("search by id: %d %q", st, hdr.Get("Location"))
	}
}

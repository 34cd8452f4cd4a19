package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Fixed copy ids of the fixture.
const (
	idA1 uint64 = 0x00a1
	idA2 uint64 = 0x00a2
	idO1 uint64 = 0x00f1
)

func at(day, clock string) time.Time {
	t, err := time.Parse(time.DateOnly+" 15:04:05", day+" "+clock)
	if err != nil {
		panic(err)
	}
	return t
}

// fixture fills the store with two accounts' events.
func (e *env) fixture() {
	e.t.Helper()
	click := func(acct string, id uint64, rcpt string, tags []string, when time.Time, url, key string) store.Event {
		return store.Event{Log: store.LogClicks, Account: acct, ID: id, Time: when, Recipient: rcpt, Tags: tags, Key: key,
			Fields: map[string]string{"headers": `{"User-Agent":"Mail/1.0"}`, "ip": "192.0.2.7", "url": url, "destination": url}}
	}
	nov, novVIP := []string{"nov"}, []string{"nov", "vip"}
	events := []store.Event{
		{Log: store.LogAttempts, Account: "shop", ID: idA1, Time: at("2026-11-21", "10:00:00"), Recipient: "ann@example.com", Tags: nov,
			Fields: map[string]string{"envelope": "news@shop.example", "properties": `{"trackclicks":true}`}},
		{Log: store.LogDeliveries, Account: "shop", ID: idA1, Time: at("2026-11-21", "10:00:01"), Recipient: "ann@example.com", Tags: nov,
			Fields: map[string]string{"envelope": "news@shop.example", "from": "192.0.2.1", "to": "mx.example.com", "attempt": "1"}},
		click("shop", idA1, "ann@example.com", nov, at("2026-11-21", "12:00:00"), "https://shop.example/a", "h1"),
		click("shop", idA1, "ann@example.com", nov, at("2026-11-21", "12:00:05"), "https://shop.example/a", "h2"),
		{Log: store.LogOpens, Account: "shop", ID: idA1, Time: at("2026-11-22", "08:00:00"), Recipient: "ann@example.com", Tags: nov,
			Fields: map[string]string{"headers": `{}`, "ip": "192.0.2.7", "protocol": "HTTP/1.1"}},
		{Log: store.LogAttempts, Account: "shop", ID: idA2, Time: at("2026-11-22", "09:00:00"), Recipient: "bob@example.com", Tags: novVIP,
			Fields: map[string]string{"envelope": "news@shop.example", "properties": `{"trackclicks":true}`}},
		{Log: store.LogFailures, Account: "shop", ID: idA2, Time: at("2026-11-22", "09:00:01"), Recipient: "bob@example.com", Tags: novVIP,
			Fields: map[string]string{"envelope": "news@shop.example", "attempt": "1", "type": "soft", "code": "451", "status": "4.3.0", "description": "try later, \"soon\"\nreally", "state": "rcpt"}},
		{Log: store.LogFailures, Account: "shop", ID: idA2, Time: at("2026-11-22", "09:30:00"), Recipient: "bob@example.com", Tags: novVIP,
			Fields: map[string]string{"envelope": "news@shop.example", "attempt": "2", "type": "hard", "code": "550", "status": "5.1.1", "description": "no such user", "state": "rcpt"}},
		click("shop", idA2, "bob@example.com", novVIP, at("2026-11-22", "10:00:00"), "https://shop.example/a", "h3"),
		click("shop", idA2, "bob@example.com", novVIP, at("2026-11-22", "10:00:01"), "https://shop.example/b", "h4"),
		{Log: store.LogAttempts, Account: "other", ID: idO1, Time: at("2026-11-22", "11:00:00"), Recipient: "ann@example.com", Tags: nov,
			Fields: map[string]string{"envelope": "secret@other.example", "properties": `{}`}},
		click("other", idO1, "ann@example.com", nov, at("2026-11-20", "11:00:00"), "https://other.example/secret", "h5"),
	}
	if err := e.relay.AppendEvents(context.Background(), events); err != nil {
		e.t.Fatal(err)
	}
}

func unmarshal(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
}

func TestLogFiles(t *testing.T) {
	e := newEnv(t)
	e.fixture()
	tests := []struct {
		name, key, path string
		want            string // exact JSON, for lists
	}{
		{"shop dates", keyShop, "/v1/logfiles", `["2026-11-21","2026-11-22"]`},
		{"other dates", keyOther, "/v1/logfiles", `["2026-11-20","2026-11-22"]`},
		{"shop files of a day", keyShop, "/v1/logfiles/2026-11-22", `["attempts.2026-11-22.log","failures.2026-11-22.log","clicks.2026-11-22.log","opens.2026-11-22.log"]`},
		{"other files of a day", keyOther, "/v1/logfiles/2026-11-22", `["attempts.2026-11-22.log"]`},
		{"a day without logs", keyShop, "/v1/logfiles/2026-11-20", `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := e.get(tc.path, tc.key)
			if st != 200 || strings.TrimSpace(string(body)) != tc.want {
				t.Fatalf("%d %s, want %s", st, body, tc.want)
			}
		})
	}

	t.Run("csv", func(t *testing.T) {
		st, h, body := e.do("GET", "/v1/logfiles/clicks.2026-11-22.log", keyShop, nil)
		if st != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/csv") {
			t.Fatalf("%d %s %s", st, h.Get("Content-Type"), body)
		}
		if h.Get("Content-Length") != "" {
			t.Errorf("a log download has a Content-Length (%s): it was buffered, not streamed", h.Get("Content-Length"))
		}
		recs := parseCSV(t, body)
		if len(recs) != 2 || recs[0][0] != store.FormatID(idA2) || recs[1][4] != "https://shop.example/b" || recs[0][6] != "nov,vip" {
			t.Fatalf("records %q", recs)
		}
		if !slices.Equal(recs[0], []string{store.FormatID(idA2), "2026-11-22T10:00:00Z", `{"User-Agent":"Mail/1.0"}`, "192.0.2.7",
			"https://shop.example/a", "https://shop.example/a", "nov,vip", "bob@example.com", "false", "false"}) {
			t.Fatalf("record %q", recs[0])
		}
	})
	t.Run("csv with header", func(t *testing.T) {
		st, body := e.get("/v1/logfiles/failures.2026-11-22.log/header", keyShop)
		if st != 200 {
			t.Fatalf("%d %s", st, body)
		}
		recs := parseCSV(t, body)
		if len(recs) != 3 || !slices.Equal(recs[0], store.LogFields[store.LogFailures]) || recs[1][10] != "try later, \"soon\"\nreally" {
			t.Fatalf("records %q", recs)
		}
		goldenCompare(t, "logs/failures.csv", body)
	})
	t.Run("json", func(t *testing.T) {
		st, body := e.get("/v1/logfiles/attempts.2026-11-21.log/json", keyShop)
		if st != 200 {
			t.Fatalf("%d %s", st, body)
		}
		var recs []map[string]any
		unmarshal(t, body, &recs)
		if len(recs) != 1 || recs[0]["recipient"] != "ann@example.com" || fmt.Sprint(recs[0]["tags"]) != "[nov]" ||
			fmt.Sprint(recs[0]["properties"]) != "map[trackclicks:true]" || len(recs[0]) != len(store.LogFields[store.LogAttempts]) {
			t.Fatalf("records %v", recs)
		}
		goldenCompare(t, "logs/attempts.json", body)
	})
	t.Run("json of an empty day", func(t *testing.T) {
		st, body := e.get("/v1/logfiles/opens.2026-01-01.log/json", keyShop)
		if st != 200 || strings.TrimSpace(string(body)) != "[\n]" {
			t.Fatalf("%d %q", st, body)
		}
	})

	// Another account's names, days and files show nothing of shop's.
	cross := []string{
		"/v1/logfiles/clicks.2026-11-22.log",
		"/v1/logfiles/clicks.2026-11-21.log/header",
		"/v1/logfiles/failures.2026-11-22.log/json",
	}
	for _, p := range cross {
		t.Run("cross account "+p, func(t *testing.T) {
			st, body := e.get(p, keyOther)
			if st != 200 || strings.Contains(string(body), "shop") || strings.Contains(string(body), store.FormatID(idA1)) {
				t.Fatalf("%d %s", st, body)
			}
		})
	}
	t.Run("other sees its own", func(t *testing.T) {
		st, body := e.get("/v1/logfiles/clicks.2026-11-20.log", keyOther)
		if st != 200 || !strings.Contains(string(body), "other.example/secret") {
			t.Fatalf("%d %s", st, body)
		}
		st, body = e.get("/v1/logfiles/clicks.2026-11-20.log", keyShop)
		if st != 200 || len(body) != 0 {
			t.Fatalf("shop saw other's clicks: %d %s", st, body)
		}
	})

	bad := []struct {
		path   string
		status int
		errSub string
	}{
		{"/v1/logfiles/2026-13-01", 400, "date"},
		{"/v1/logfiles/2026-02-30", 400, "date"},
		{"/v1/logfiles/clicks.2026-02-30.log", 400, "date"},
		{"/v1/logfiles/clicks.2026-02-30.log/json", 400, "date"},
		{"/v1/logfiles/nosuchlog.2026-11-22.log", 404, "log file"},
		{"/v1/logfiles/clicks.log", 404, "log file"},
		{"/v1/logfiles/..%2Fetc%2Fpasswd", 404, "log file"},
		{"/v1/logfiles/clicks.2026-11-22.log/xml", 404, "no such endpoint"},
	}
	for _, tc := range bad {
		t.Run("bad "+tc.path, func(t *testing.T) {
			st, body := e.get(tc.path, keyShop)
			wantError(t, st, body, tc.status, tc.errSub)
		})
	}
}

func TestEvents(t *testing.T) {
	e := newEnv(t)
	e.fixture()
	type ev struct {
		Event string         `json:"event"`
		Data  map[string]any `json:"data"`
	}
	get := func(t *testing.T, path, key string) []ev {
		t.Helper()
		st, body := e.get(path, key)
		if st != 200 {
			t.Fatalf("%s: %d %s", path, st, body)
		}
		var out []ev
		unmarshal(t, body, &out)
		for i := 1; i < len(out); i++ {
			if out[i].Data["time"].(string) < out[i-1].Data["time"].(string) {
				t.Fatalf("%s: not in time order: %v", path, out)
			}
		}
		return out
	}
	names := func(evs []ev) string {
		var s []string
		for _, e := range evs {
			s = append(s, e.Event)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name, key, path, want string
	}{
		{"by id", keyShop, "/v1/events/messageid/" + store.FormatID(idA1), "attempt,delivery,click,click,open"},
		{"by id of another account", keyOther, "/v1/events/messageid/" + store.FormatID(idA1), ""},
		{"by id, other's own", keyOther, "/v1/events/messageid/" + store.FormatID(idO1), "click,attempt"},
		{"by email", keyShop, "/v1/events/email/ann@example.com?start=2026-11-01&end=2026-11-30", "attempt,delivery,click,click,open"},
		{"by email, upper case", keyShop, "/v1/events/email/ANN@example.com?start=2026-11-01&end=2026-11-30", "attempt,delivery,click,click,open"},
		{"by email, other account", keyOther, "/v1/events/email/ann@example.com?start=2026-11-01&end=2026-11-30", "click,attempt"},
		{"by email, one day", keyShop, "/v1/events/email/ann@example.com?start=2026-11-22&end=2026-11-22", "open"},
		{"by email, default period", keyShop, "/v1/events/email/bob@example.com", "attempt,failure,failure,click,click"},
		{"by email, RFC 3339", keyShop, "/v1/events/email/bob@example.com?start=2026-11-22T09:10:00Z&end=2026-11-22T10:00:00Z", "failure"},
		{"by tag", keyShop, "/v1/events/tags/nov?start=2026-11-21&end=2026-11-21", "attempt,delivery,click,click"},
		{"by tags", keyShop, "/v1/events/tags/nov;vip?start=2026-11-01&end=2026-11-30", "attempt,failure,failure,click,click"},
		{"by tags, other account", keyOther, "/v1/events/tags/vip?start=2026-11-01&end=2026-11-30", ""},
		{"by tags, access_token", "", "/v1/events/tags/vip?start=2026-11-01&end=2026-11-30&access_token=" + keyShop, "attempt,failure,failure,click,click"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(get(t, tc.path, tc.key)); got != tc.want {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("golden", func(t *testing.T) {
		_, body := e.get("/v1/events/messageid/"+store.FormatID(idA2), keyShop)
		goldenCompare(t, "events/a2.json", body)
	})
	bad := []struct{ path, errSub string }{
		{"/v1/events/messageid/xyz", "id"},
		{"/v1/events/messageid/00000000000000a1x", "id"},
		{"/v1/events/email/not-an-address", "address"},
		{"/v1/events/email/a@b.example?start=yesterday", "start"},
		{"/v1/events/email/a@b.example?start=2026-11-31", "start"},
		{"/v1/events/email/a@b.example?end=2026-02-30", "end"},
		{"/v1/events/email/a@b.example?start=2026-11-22&end=2026-11-01", "before end"},
		{"/v1/events/email/a@b.example?start=2020-01-01&end=2026-01-01", "longer"},
		{"/v1/events/tags/a,b", "tags"},
		{"/v1/events/tags/;;", "tags"},
	}
	for _, tc := range bad {
		t.Run("bad "+tc.path, func(t *testing.T) {
			st, body := e.get(tc.path, keyShop)
			wantError(t, st, body, http.StatusBadRequest, tc.errSub)
		})
	}
}

func TestStatsAndLinks(t *testing.T) {
	e := newEnv(t)
	e.fixture()
	testStatsAndLinks(t, e)
}

func testStatsAndLinks(t *testing.T, e *env) {
	var stats statsAnswer
	st, body := e.get("/v1/stats?start=2026-11-20&end=2026-11-22", keyShop)
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	unmarshal(t, body, &stats)
	want := Counts{Sent: 2, Delivered: 1, Failed: 1, Deferred: 1, Opens: 1, UniqueOpens: 1, Clicks: 4, UniqueClicks: 2}
	if stats.Total != want || len(stats.Days) != 3 {
		t.Fatalf("stats %+v, want total %+v over 3 days", stats, want)
	}
	if d := stats.Days[1]; d.Date != "2026-11-21" || d.Clicks != 2 || d.UniqueClicks != 1 || d.Sent != 1 {
		t.Fatalf("day 2026-11-21: %+v", d)
	}
	if d := stats.Days[0]; d != (Counts{Date: "2026-11-20"}) {
		t.Fatalf("day 2026-11-20 shows another account's click: %+v", d)
	}
	unmarshal(t, mustGet(t, e, "/v1/stats?start=2026-11-20&end=2026-11-22&tag=vip", keyShop), &stats)
	if want := (Counts{Sent: 1, Failed: 1, Deferred: 1, Clicks: 2, UniqueClicks: 1}); stats.Total != want {
		t.Fatalf("tag vip: %+v, want %+v", stats.Total, want)
	}
	unmarshal(t, mustGet(t, e, "/v1/stats?start=2026-11-20&end=2026-11-22", keyOther), &stats)
	if want := (Counts{Sent: 1, Clicks: 1, UniqueClicks: 1}); stats.Total != want {
		t.Fatalf("other: %+v, want %+v", stats.Total, want)
	}
	// The fixture's events have no copies: a credential filter keeps none.
	unmarshal(t, mustGet(t, e, "/v1/stats?start=2026-11-20&end=2026-11-22&credential=shop-api", keyShop), &stats)
	if stats.Total != (Counts{}) {
		t.Fatalf("credential filter kept copy-less events: %+v", stats.Total)
	}

	var links struct{ Links []Link }
	unmarshal(t, mustGet(t, e, "/v1/links?start=2026-11-01&end=2026-11-30", keyShop), &links)
	if len(links.Links) != 2 || links.Links[0].URL != "https://shop.example/a" || links.Links[0].Clicks != 3 || links.Links[0].UniqueClicks != 2 ||
		links.Links[1].URL != "https://shop.example/b" || links.Links[1].Clicks != 1 {
		t.Fatalf("links %+v", links.Links)
	}
	unmarshal(t, mustGet(t, e, "/v1/links?start=2026-11-01&end=2026-11-30&limit=1&tag=vip", keyShop), &links)
	if len(links.Links) != 1 || links.Links[0].Clicks != 1 {
		t.Fatalf("links limit 1, tag vip: %+v", links.Links)
	}
	unmarshal(t, mustGet(t, e, "/v1/links?start=2026-11-01&end=2026-11-30", keyOther), &links)
	if len(links.Links) != 1 || links.Links[0].URL != "https://other.example/secret" {
		t.Fatalf("other's links %+v", links.Links)
	}
	for _, p := range []string{"/v1/links?limit=0", "/v1/links?limit=x", "/v1/links?tag=a,b", "/v1/stats?start=bad", "/v1/stats?tag=a,b", "/v1/links?start=2026-12-01&end=2026-11-01"} {
		st, body := e.get(p, keyShop)
		wantError(t, st, body, 400, strings.SplitN(strings.SplitN(p, "?", 2)[1], "=", 2)[0])
	}
}

func mustGet(t testing.TB, e *env, path, key string) []byte {
	t.Helper()
	st, body := e.get(path, key)
	if st != 200 {
		t.Fatalf("%s: %d %s", path, st, body)
	}
	return body
}

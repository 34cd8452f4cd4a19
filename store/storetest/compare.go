package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Compare fails t where two stores answer differently: records, messages
// and copies (but their Node), every account's events, day counts,
// counters, series, links, address lists and webhook queue. It is how a
// copy between backends is checked.
func Compare(t *testing.T, a, b store.DB) {
	t.Helper()
	same := func(what string, x, y any) {
		t.Helper()
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%s differ:\n  %+v\n  %+v", what, x, y)
		}
	}
	for _, k := range store.RecordKinds {
		ra, ea := a.ListRecords(ctx, k, "")
		rb, eb := b.ListRecords(ctx, k, "")
		same("records "+string(k), fmt.Sprint(ra, ea), fmt.Sprint(rb, eb))
	}
	accounts := map[string]bool{store.AllAccounts: true}
	var endpoints []string
	for _, acc := range must(store.List[store.Account](ctx, a, store.KindAccount, "")) {
		accounts[acc.Name] = true
	}
	for _, w := range must(store.List[store.Webhook](ctx, a, store.KindWebhook, "")) {
		endpoints = append(endpoints, w.ID)
		accounts[w.Account] = true
	}
	msgs := func(db store.DB) []store.Message {
		ms := must(db.SearchMessages(ctx, store.MessageQuery{Account: store.AllAccounts, Limit: 1000}))
		for i := range ms {
			ms[i].Node = ""
			accounts[ms[i].Account] = true
		}
		return ms
	}
	ma, mb := msgs(a), msgs(b)
	same("messages", ma, mb)
	var from, to time.Time
	for _, m := range ma {
		same("counters of message "+store.FormatID(m.ID), must(a.MessageCounters(ctx, m.ID)), must(b.MessageCounters(ctx, m.ID)))
		same("links of message "+store.FormatID(m.ID), must(a.MessageLinks(ctx, m.ID)), must(b.MessageLinks(ctx, m.ID)))
		for _, id := range m.CopyIDs {
			same("copy "+store.FormatID(id), must(a.Copy(ctx, id)), must(b.Copy(ctx, id)))
		}
		if from.IsZero() || m.Created.Before(from) {
			from = m.Created
		}
		if m.Created.After(to) {
			to = m.Created
		}
	}
	queued := func(db store.DB) []uint64 {
		var ids []uint64
		_ = db.QueuedCopies(ctx, func(c *store.Copy) error { ids = append(ids, c.ID); return nil })
		return ids
	}
	same("queued copies", queued(a), queued(b))
	from, to = from.Add(-48*time.Hour), to.Add(48*time.Hour)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range accounts {
			if !yield(n) {
				return
			}
		}
	})
	for _, acct := range names {
		for _, log := range store.Logs {
			ea := collect(t, a.Events(ctx, acct, log, time.Time{}, time.Time{}))
			eb := collect(t, b.Events(ctx, acct, log, time.Time{}, time.Time{}))
			same(fmt.Sprintf("%s's %s", acct, log), ea, eb)
			for _, e := range ea {
				if e.Time.Before(from) {
					from = e.Time.Add(-time.Hour)
				}
				if e.Time.After(to) {
					to = e.Time.Add(time.Hour)
				}
			}
		}
		same(acct+"'s days", must(a.EventDays(ctx, acct)), must(b.EventDays(ctx, acct)))
		same(acct+"'s totals", must(a.Totals(ctx, acct)), must(b.Totals(ctx, acct)))
		same(acct+"'s hit counts", must(a.HitCounts(ctx, acct)), must(b.HitCounts(ctx, acct)))
		pa, ta, erra := a.Series(ctx, acct, "", from, to, time.Hour)
		pb, tb, errb := b.Series(ctx, acct, "", from, to, time.Hour)
		same(acct+"'s series", fmt.Sprint(pa, ta, erra), fmt.Sprint(pb, tb, errb))
		la := must(a.TopLinks(ctx, acct, "", from, to, 0))
		same(acct+"'s top links", la, must(b.TopLinks(ctx, acct, "", from, to, 0)))
		for _, l := range la {
			ua, da, _ := a.LinkSeries(ctx, acct, "", l.ID, from, to)
			ub, db, _ := b.LinkSeries(ctx, acct, "", l.ID, from, to)
			same("link series "+l.ID, fmt.Sprint(ua, da), fmt.Sprint(ub, db))
			same("link messages "+l.ID, must(a.LinkMessages(ctx, acct, l.ID, 0)), must(b.LinkMessages(ctx, acct, l.ID, 0)))
		}
		for _, list := range []string{store.ListSuppressed, store.ListNoTrack} {
			same(acct+"'s "+list, must(a.ListAddresses(ctx, list, acct, "", "", 0)), must(b.ListAddresses(ctx, list, acct, "", "", 0)))
		}
	}
	for _, ep := range endpoints {
		wa, wb := must(a.WebhookMessages(ctx, ep, "", "", 0)), must(b.WebhookMessages(ctx, ep, "", "", 0))
		same("webhook messages of "+ep, wa, wb)
		for _, m := range wa {
			same("attempts of "+m.ID, must(a.WebhookAttempts(ctx, m.ID)), must(b.WebhookAttempts(ctx, m.ID)))
		}
	}
	same("webhook queue", must(a.WebhookQueue(ctx)), must(b.WebhookQueue(ctx)))
}

// Populate fills db with a little of everything a relay keeps: accounts
// with privacy settings, a webhook endpoint, messages delivered, failed,
// bounced and still queued, opens and clicks (joined, machine, orphan),
// keyed events, address lists and webhook attempts.
func Populate(t *testing.T, db store.DB) {
	t.Helper()
	for _, r := range []store.Record{
		&store.Account{Name: "shop", IP: store.KeepTruncated, Created: base},
		&store.Account{Name: "news", Created: base, Retention: map[string]int{store.LogClicks: 30}},
		&store.Credential{Username: "shop", Account: "shop", Clicks: true},
		&store.Webhook{ID: "wh-shop", Account: "shop", URL: "https://hooks.example/", Secret: "s"},
	} {
		if err := store.Create(ctx, db, r); err != nil {
			t.Fatal(err)
		}
	}
	s := linked(t, db, "shop", []string{"nov"}, "a@x", "b@x", "c@x")
	n := send(t, db, "news", "news", nil, base.Add(time.Hour), "d@x", "e@x")
	deliver(t, db, s.copies[0], base.Add(time.Minute))
	deliver(t, db, s.copies[1], base.Add(time.Minute))
	deliver(t, db, n.copies[0], base.Add(2*time.Hour))
	s.copies[2].State = store.CopyFailed
	if _, err := db.UpdateCopy(ctx, s.copies[2], []store.Event{ev(store.LogFailures, "shop", s.copies[2].ID, base.Add(time.Hour), "c@x", map[string]string{"type": "hard"})}); err != nil {
		t.Fatal(err)
	}
	machine := hit("p3", "click", s.copies[0], 2, "https://shop.example/b", base.Add(3*time.Hour))
	machine.Machine = true
	if err := db.IngestHits(ctx, []store.Hit{
		hit("p1", "pixel", s.copies[0], 0, "", base.Add(3*time.Hour)),
		hit("p2", "click", s.copies[0], 1, "https://shop.example/a?x=9", base.Add(3*time.Hour)),
		machine,
		hit("p4", "click", s.copies[1], 2, "https://shop.example/b", base.Add(27*time.Hour)),
		hit("p5", "click", n.copies[0], 1, "https://news.example/", base.Add(4*time.Hour)),
		hit("p6", "pixel", &store.Copy{ID: 999}, 0, "", base.Add(4*time.Hour)),
	}); err != nil {
		t.Fatal(err)
	}
	keyed := ev(store.LogResponses, "shop", s.copies[0].ID, base.Add(5*time.Hour), "a@x", map[string]string{"kind": "reply"})
	keyed.Key = "resp-1"
	if err := db.RecordReturned(ctx, []store.Event{keyed, ev(store.LogBounces, "shop", s.copies[1].ID, base.Add(6*time.Hour), "b@x", map[string]string{"type": "hard"})},
		[]uint64{s.copies[1].ID}, []store.AddressEntry{{List: store.ListSuppressed, Account: "shop", Address: "b@x", Reason: store.ReasonHardBounce}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddAddress(ctx, store.AddressEntry{List: store.ListNoTrack, Account: "news", Address: "e@x", Reason: store.ReasonManual, Created: base}); err != nil {
		t.Fatal(err)
	}
	ms, err := db.ClaimWebhooks(ctx, time.Now(), time.Minute, 2)
	if err != nil || len(ms) != 2 {
		t.Fatalf("claim %d %v", len(ms), err)
	}
	if err := db.FinishWebhookAttempt(ctx, ms[0].ID, store.WebhookAttempt{Message: ms[0].ID, Endpoint: ms[0].Endpoint, Time: base, Status: 200}, store.WebhookDelivered, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishWebhookAttempt(ctx, ms[1].ID, store.WebhookAttempt{Message: ms[1].ID, Endpoint: ms[1].Endpoint, Time: base, Status: 503, Error: "busy"}, store.WebhookPending, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

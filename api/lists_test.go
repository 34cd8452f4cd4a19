package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/store"
)

// The suppression and no-tracking lists over REST: add, read, search with
// paging, remove; scoped to the key's account, operators naming one.
func TestAddressListsREST(t *testing.T) {
	for _, tc := range []struct{ path, list string }{{"/v1/suppressions", store.ListSuppressed}, {"/v1/notrack", store.ListNoTrack}} {
		t.Run(tc.list, func(t *testing.T) {
			d := newDKIMEnv(t, "")
			var e AddressEntry
			st, b := d.call(http.MethodPost, tc.path, keyShop, map[string]string{"address": " Alice@Example.ORG ", "detail": "asked by phone"}, &e)
			if st != http.StatusCreated || e.Address != "alice@example.org" || e.Account != "shop" || e.Reason != store.ReasonManual || e.Detail != "asked by phone" || e.Created == "" {
				t.Fatalf("add: %d %s", st, b)
			}
			// Twice: the first entry stays.
			st, b = d.call(http.MethodPost, tc.path, keyShop, map[string]string{"address": "alice@example.org", "reason": "unsubscribe"}, &e)
			if st != http.StatusOK || e.Reason != store.ReasonManual {
				t.Fatalf("add again: %d %s", st, b)
			}
			// In the store, on the right list, for the right account.
			got, err := d.relay.LookupAddresses(context.Background(), tc.list, "shop", []string{"ALICE@example.org"})
			if err != nil || got["alice@example.org"] == nil {
				t.Fatalf("not in the store: %v %v", got, err)
			}
			for i := range 25 {
				if st, b := d.call(http.MethodPost, tc.path, keyShop, map[string]string{"address": fmt.Sprintf("user%02d@list.test", i), "reason": "unsubscribe"}, nil); st != http.StatusCreated {
					t.Fatalf("add %d: %d %s", i, st, b)
				}
			}
			// Paging: 26 entries in pages of 10.
			var seen []string
			after := ""
			for pages := 0; ; pages++ {
				var page AddressPage
				q := "?limit=10"
				if after != "" {
					q += "&after=" + url.QueryEscape(after)
				}
				if st, b := d.call(http.MethodGet, tc.path+q, keyShop, nil, &page); st != http.StatusOK {
					t.Fatalf("page: %d %s", st, b)
				}
				for _, e := range page.Entries {
					seen = append(seen, e.Address)
				}
				if page.Next == "" {
					if pages != 2 || len(page.Entries) != 6 {
						t.Fatalf("last page %d with %d entries", pages, len(page.Entries))
					}
					break
				}
				after = page.Next
			}
			if len(seen) != 26 || seen[0] != "alice@example.org" || seen[25] != "user24@list.test" {
				t.Fatalf("paged through %d: %v", len(seen), seen)
			}
			// Search by text.
			var page AddressPage
			d.call(http.MethodGet, tc.path+"?search=USER1", keyShop, nil, &page)
			if len(page.Entries) != 10 || page.Entries[0].Address != "user10@list.test" {
				t.Fatalf("search user1: %+v", page)
			}
			// One address, escaped or not.
			if st, b := d.call(http.MethodGet, tc.path+"/"+url.PathEscape("alice@example.org"), keyShop, nil, &e); st != http.StatusOK || e.Address != "alice@example.org" {
				t.Fatalf("get: %d %s", st, b)
			}
			if st, b := d.call(http.MethodGet, tc.path+"/Alice@example.org", keyShop, nil, &e); st != http.StatusOK {
				t.Fatalf("get in other case: %d %s", st, b)
			}
			// Another account sees none of it, and cannot remove it.
			st, b = d.call(http.MethodGet, tc.path+"/alice@example.org", keyOther, nil, nil)
			wantError(t, st, b, http.StatusNotFound, "not on the")
			d.call(http.MethodGet, tc.path, keyOther, nil, &page)
			if len(page.Entries) != 0 {
				t.Fatalf("other account sees %+v", page.Entries)
			}
			st, b = d.call(http.MethodDelete, tc.path+"/alice@example.org", keyOther, nil, nil)
			wantError(t, st, b, http.StatusNotFound, "not on the")
			// Operators name the account.
			st, b = d.call(http.MethodGet, tc.path, keyOperator, nil, nil)
			wantError(t, st, b, http.StatusBadRequest, "?account=")
			st, b = d.call(http.MethodGet, tc.path+"?account=nobody", keyOperator, nil, nil)
			wantError(t, st, b, http.StatusNotFound, "not found")
			if st, b := d.call(http.MethodGet, tc.path+"/alice@example.org?account=shop", keyOperator, nil, &e); st != http.StatusOK || e.Account != "shop" {
				t.Fatalf("operator get: %d %s", st, b)
			}
			if st, b := d.call(http.MethodPost, tc.path+"?account=other", keyOperator, map[string]string{"address": "bob@example.org"}, &e); st != http.StatusCreated || e.Account != "other" {
				t.Fatalf("operator add: %d %s", st, b)
			}
			// Remove.
			if st, b := d.call(http.MethodDelete, tc.path+"/alice@example.org", keyShop, nil, nil); st != http.StatusNoContent {
				t.Fatalf("delete: %d %s", st, b)
			}
			st, b = d.call(http.MethodDelete, tc.path+"/alice@example.org", keyShop, nil, nil)
			wantError(t, st, b, http.StatusNotFound, "not on the")
			// Bad input, each with a clear reply.
			for _, bad := range []map[string]string{{"address": "no-at-sign"}, {"address": "a b@x.test"}, {"address": "x@y.test", "reason": "hard-bounce"}, {"address": strings.Repeat("a", 400) + "@x.test"}} {
				st, b := d.call(http.MethodPost, tc.path, keyShop, bad, nil)
				wantError(t, st, b, http.StatusBadRequest, "")
			}
			st, b = d.call(http.MethodGet, tc.path+"?limit=5000", keyShop, nil, nil)
			wantError(t, st, b, http.StatusBadRequest, "limit")
			st, b = d.call(http.MethodGet, tc.path, "", nil, nil)
			wantError(t, st, b, http.StatusUnauthorized, "")
		})
	}
}

// An address suppressed over REST is refused by send, with the reason.
func TestSuppressedOverRESTRefusesSend(t *testing.T) {
	d := newDKIMEnv(t, "")
	if st, b := d.call(http.MethodPost, "/v1/suppressions", keyShop, map[string]string{"address": "gone@example.org"}, nil); st != http.StatusCreated {
		t.Fatalf("add: %d %s", st, b)
	}
	st, hdr, b := d.do(http.MethodPost, "/v1/send", keyShop,
		strings.NewReader(`{"from":"shop@example.com","to":["gone@example.org","here@example.org"],"subject":"hi","text":"hello"}`), "Content-Type", "application/json")
	if st != http.StatusOK || !strings.Contains(hdr.Get("Trackrelay-Refused"), "gone@example.org; ") || strings.Contains(string(b), "gone@") {
		t.Fatalf("send: %d %q %s", st, hdr.Get("Trackrelay-Refused"), b)
	}
}

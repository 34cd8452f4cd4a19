package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/trackrelay/trackrelay/store"
)

// An account's address lists (SPEC §11, §13): the suppression list (mail
// to these addresses is refused at RCPT, or reported refused by send) and
// the no-tracking list (mail to these goes untracked). Hard bounces and
// complaints add to the suppression list by themselves; both lists can
// be read, searched, added to and removed from here. Every call acts on
// the caller's account (an operator names one with ?account=).

func init() {
	for _, l := range []struct{ path, list string }{{"/v1/suppressions", store.ListSuppressed}, {"/v1/notrack", store.ListNoTrack}} {
		h := listHandlers{list: l.list}
		routes = append(routes,
			route{http.MethodGet, l.path, buffered, h.search},
			route{http.MethodPost, l.path, direct, h.add},
			route{http.MethodGet, l.path + "/{address}", buffered, h.get},
			route{http.MethodDelete, l.path + "/{address}", direct, h.remove},
		)
	}
}

// AddressEntry is an address on a list, as the API shows it.
type AddressEntry struct {
	Address string `json:"address"`
	Account string `json:"account"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
	// Copy is the message copy that put it there (a bounce, a complaint).
	Copy    string `json:"copy,omitempty"`
	Created string `json:"created"`
}

// AddressPage is one page of a list.
type AddressPage struct {
	Entries []AddressEntry `json:"entries"`
	// Next is the after= of the next page; absent on the last.
	Next string `json:"next,omitempty"`
}

func entryOf(e *store.AddressEntry) AddressEntry {
	out := AddressEntry{Address: e.Address, Account: e.Account, Reason: e.Reason, Detail: e.Detail, Created: e.Created.UTC().Format(time.RFC3339)}
	if e.Copy != 0 {
		out.Copy = store.FormatID(e.Copy)
	}
	return out
}

// Page sizes of a list search.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

type listHandlers struct{ list string }

// listAddress checks an address given to a list: local@domain, within
// RFC 5321's lengths, without spaces or control characters.
func listAddress(a string) (string, error) {
	a = strings.TrimSpace(a)
	at := strings.LastIndexByte(a, '@')
	switch {
	case a == "" || len(a) > 320 || !utf8.ValidString(a):
		return "", badRequest("address: want an email address (at most 320 bytes)")
	case at <= 0 || at == len(a)-1 || at > 64:
		return "", badRequest("address %q: want local@domain", clip(a))
	case strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' }):
		return "", badRequest("address %q: no spaces, angle brackets or control characters", clip(a))
	}
	return store.NormalAddress(a), nil
}

func (h listHandlers) search(s *server, w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return badRequest("limit: want 1-%d", maxListLimit)
		}
		limit = n
	}
	search := strings.TrimSpace(q.Get("search"))
	if len(search) > 320 {
		return badRequest("search: at most 320 bytes")
	}
	// One more than asked: whether a next page exists.
	es, err := s.cfg.Store.ListAddresses(r.Context(), h.list, acct, search, q.Get("after"), limit+1)
	if err != nil {
		return err
	}
	page := AddressPage{Entries: make([]AddressEntry, 0, min(len(es), limit))}
	for i := range es {
		if i == limit {
			page.Next = es[limit-1].Address
			break
		}
		page.Entries = append(page.Entries, entryOf(&es[i]))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (h listHandlers) add(s *server, w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	var req struct {
		Address string `json:"address"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
	}
	if err := decodeJSON(r.Body, &req); err != nil {
		return err
	}
	addr, err := listAddress(req.Address)
	if err != nil {
		return err
	}
	switch req.Reason {
	case "":
		req.Reason = store.ReasonManual
	case store.ReasonManual, store.ReasonUnsubscribe:
	default:
		return badRequest("reason: want %s (default) or %s", store.ReasonManual, store.ReasonUnsubscribe)
	}
	if len(req.Detail) > 500 {
		return badRequest("detail: at most 500 bytes")
	}
	e := store.AddressEntry{List: h.list, Account: acct, Address: addr, Reason: req.Reason, Detail: req.Detail, Created: s.cfg.Now().UTC()}
	added, err := s.cfg.Store.AddAddress(r.Context(), e)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if !added {
		// Already listed: its first entry stays, and is what is shown.
		status = http.StatusOK
		cur, err := s.cfg.Store.LookupAddresses(r.Context(), h.list, acct, []string{addr})
		if err != nil {
			return err
		}
		if c := cur[addr]; c != nil {
			e = *c
		}
	}
	s.log.Info("address listed", "list", h.list, "account", acct, "added", added)
	writeJSON(w, status, entryOf(&e))
	return nil
}

// pathAddress is the {address} of the path, unescaped.
func pathAddress(r *http.Request) (string, error) {
	raw := r.PathValue("address")
	if a, err := url.PathUnescape(raw); err == nil {
		raw = a
	}
	return listAddress(raw)
}

func (h listHandlers) get(s *server, w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	addr, err := pathAddress(r)
	if err != nil {
		return err
	}
	found, err := s.cfg.Store.LookupAddresses(r.Context(), h.list, acct, []string{addr})
	if err != nil {
		return err
	}
	e := found[addr]
	if e == nil {
		return errorf(http.StatusNotFound, "%s is not on the %s list of account %s", clip(addr), h.list, acct)
	}
	writeJSON(w, http.StatusOK, entryOf(e))
	return nil
}

func (h listHandlers) remove(s *server, w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	addr, err := pathAddress(r)
	if err != nil {
		return err
	}
	removed, err := s.cfg.Store.RemoveAddress(r.Context(), h.list, acct, addr)
	if err != nil {
		return err
	}
	if !removed {
		return errorf(http.StatusNotFound, "%s is not on the %s list of account %s", clip(addr), h.list, acct)
	}
	s.log.Info("address unlisted", "list", h.list, "account", acct)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

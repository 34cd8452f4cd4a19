package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
)

// Custom click domains and bounce domains of an account (SPEC §12):
// added, checked and removed at run time. A domain is used only once a
// check has seen it lead to us.

func init() {
	routes = append(routes,
		route{http.MethodGet, "/v1/domains", buffered, (*server).listDomains},
		route{http.MethodPost, "/v1/domains", direct, (*server).addDomain},
		route{http.MethodGet, "/v1/domains/{name}", buffered, (*server).getDomain},
		route{http.MethodDelete, "/v1/domains/{name}", direct, (*server).removeDomain},
		route{http.MethodPost, "/v1/domains/{name}/check", direct, (*server).checkDomain},
	)
}

// DomainChecker checks that a domain really leads to this relay's
// redirector (a click domain) or MX listener (a bounce domain).
type DomainChecker interface {
	// Records lists the DNS records the domain's owner must create, before
	// any check has looked (a check may find better ones: A/AAAA records
	// for an apex).
	Records(name, kind string) []string
	// Check looks the domain up and fetches its challenge.
	Check(ctx context.Context, name, kind string) DomainCheck
}

// DomainCheck is the outcome of one check.
type DomainCheck struct {
	OK bool
	// Problem says in words what is wrong and what to do about it.
	Problem string
	// Records are the records to create, as this check found them.
	Records []string
}

// Domain is a domain as the API shows it.
type Domain struct {
	Name     string   `json:"name"`
	Account  string   `json:"account"`
	Kind     string   `json:"kind"`
	State    string   `json:"state"`
	Problem  string   `json:"problem,omitempty"`
	Checked  string   `json:"checked,omitempty"`
	Verified string   `json:"verified,omitempty"`
	Declared bool     `json:"declared,omitempty"`
	Records  []string `json:"records"` // the DNS records to create
}

func (s *server) domainOf(d *store.Domain) Domain {
	out := Domain{Name: d.Name, Account: d.Account, Kind: d.Kind, State: d.State, Problem: d.Problem, Declared: d.Declared, Records: []string{}}
	if !d.Checked.IsZero() {
		out.Checked = d.Checked.Format(time.RFC3339)
	}
	if !d.Verified.IsZero() {
		out.Verified = d.Verified.Format(time.RFC3339)
	}
	switch {
	case len(d.Records) > 0:
		out.Records = d.Records
	case s.cfg.Domains != nil:
		out.Records = s.cfg.Domains.Records(d.Name, d.Kind)
	}
	return out
}

// NormalDomain checks a host name as a click or bounce domain and
// returns it in lower case without a trailing dot.
func NormalDomain(name string) (string, error) {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if n == "" || len(n) > 253 || !strings.Contains(n, ".") {
		return "", errors.New("want a fully qualified host name such as link.example.com")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", errors.New("not a valid host name")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", errors.New("not a valid host name (write international names in punycode, xn--...)")
			}
		}
	}
	return n, nil
}

// account is the account a call acts on: the key's own, or the one an
// operator named with ?account= (dispatch's scope has checked it).
func (s *server) account(_ *http.Request, p *Principal) (string, error) {
	return needAccount(p)
}

func (s *server) listDomains(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	out, err := listViews(r.Context(), s.cfg.Store, store.KindDomain, acct, nil, s.domainOf)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ownDomain returns the account's domain named in the path; another
// account's is "not found", as an unknown one is.
// An operator need not name the account: a domain belongs to one.
func (s *server) ownDomain(r *http.Request, p *Principal) (*store.Domain, error) {
	name, err := NormalDomain(r.PathValue("name"))
	if err != nil {
		return nil, badRequest("name: %v", err)
	}
	acct := p.Account // "" for an operator who named no account
	d, err := store.Get[store.Domain](r.Context(), s.cfg.Store, store.KindDomain, name)
	if errors.Is(err, store.ErrNotFound) || err == nil && acct != "" && d.Account != acct {
		if acct == "" {
			return nil, errorf(http.StatusNotFound, "domain %s: no such domain", name)
		}
		return nil, errorf(http.StatusNotFound, "domain %s: not a domain of account %s", name, acct)
	}
	return d, err
}

func (s *server) getDomain(w http.ResponseWriter, r *http.Request, p *Principal) error {
	d, err := s.ownDomain(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.domainOf(d))
	return nil
}

func (s *server) addDomain(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	var req struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	}
	if err := decodeJSON(r.Body, &req); err != nil {
		return err
	}
	name, err := NormalDomain(req.Name)
	if err != nil {
		return badRequest("name: %v", err)
	}
	switch req.Kind {
	case "":
		req.Kind = store.DomainClick
	case store.DomainClick, store.DomainBounce:
	default:
		return badRequest("kind: want click or bounce")
	}
	d := &store.Domain{Name: name, Account: acct, Kind: req.Kind, State: store.DomainPending, Created: s.cfg.Now().UTC()}
	if err := store.Create(r.Context(), s.cfg.Store, d); errors.Is(err, store.ErrExists) {
		return errorf(http.StatusConflict, "domain %s is already added (to this or another account)", name)
	} else if err != nil {
		return err
	}
	s.log.Info("domain added", "domain", name, "account", acct, "kind", req.Kind)
	s.changed()
	writeJSON(w, http.StatusCreated, s.domainOf(d))
	return nil
}

func (s *server) removeDomain(w http.ResponseWriter, r *http.Request, p *Principal) error {
	d, err := s.ownDomain(r, p)
	if err != nil {
		return err
	}
	if err := store.Delete(r.Context(), s.cfg.Store, store.KindDomain, d.Name); errors.Is(err, store.ErrDeclared) {
		return errorf(http.StatusConflict, "domain %s is declared in the config file: remove it there", d.Name)
	} else if err != nil {
		return err
	}
	s.log.Info("domain removed", "domain", d.Name, "account", d.Account)
	s.changed()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) checkDomain(w http.ResponseWriter, r *http.Request, p *Principal) error {
	d, err := s.ownDomain(r, p)
	if err != nil {
		return err
	}
	if s.cfg.Domains == nil {
		return errorf(http.StatusServiceUnavailable, "domain checks are off: the operator has not set [domains] target")
	}
	nd, err := CheckAndRecord(r.Context(), s.cfg.Store, s.cfg.Domains, d.Name, s.cfg.Now())
	if err != nil {
		return err
	}
	s.changed()
	writeJSON(w, http.StatusOK, s.domainOf(nd))
	return nil
}

// CheckAndRecord checks one domain and records the outcome in its record:
// verified, or pending (never verified) or failing (verified before)
// with the problem. The relay's periodic re-check uses it too.
func CheckAndRecord(ctx context.Context, st store.RecordStore, dc DomainChecker, name string, now time.Time) (*store.Domain, error) {
	cur, err := store.Get[store.Domain](ctx, st, store.KindDomain, name)
	if err != nil {
		return nil, err
	}
	res := dc.Check(ctx, name, cur.Kind)
	ok, problem := res.OK, res.Problem
	var out *store.Domain
	err = store.Update[store.Domain](ctx, st, store.KindDomain, name, true, func(d *store.Domain) (*store.Domain, error) {
		d.Checked = now.UTC()
		if len(res.Records) > 0 {
			d.Records = res.Records
		}
		switch {
		case ok:
			d.State, d.Problem = store.DomainVerified, ""
			if d.Verified.IsZero() {
				d.Verified = d.Checked
			}
		case d.Verified.IsZero():
			d.State, d.Problem = store.DomainPending, problem
		default:
			d.State, d.Problem = store.DomainFailing, problem
		}
		out = d
		return d, nil
	})
	return out, err
}

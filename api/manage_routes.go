package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/trackrelay/trackrelay/store"
)

// The REST endpoints over Ops: accounts, users, SMTP credentials, API
// keys, message search and history, link reports. Each handler decodes,
// calls Ops (which checks, validates and changes), and answers.
func init() {
	routes = append(routes,
		route{http.MethodGet, "/v1/accounts", buffered, (*server).listAccounts},
		route{http.MethodPost, "/v1/accounts", direct, (*server).createAccount},
		route{http.MethodGet, "/v1/accounts/{name}", buffered, (*server).getAccount},
		route{http.MethodDelete, "/v1/accounts/{name}", direct, (*server).deleteAccount},
		route{http.MethodGet, "/v1/account", buffered, (*server).ownAccount},
		route{http.MethodPatch, "/v1/account", direct, (*server).patchAccount},
		route{http.MethodGet, "/v1/users", buffered, (*server).listUsers},
		route{http.MethodPost, "/v1/users", direct, (*server).createUser},
		route{http.MethodGet, "/v1/users/{login}", buffered, (*server).getUser},
		route{http.MethodPatch, "/v1/users/{login}", direct, (*server).patchUser},
		route{http.MethodDelete, "/v1/users/{login}", direct, (*server).deleteUser},
		route{http.MethodGet, "/v1/credentials", buffered, (*server).listCredentials},
		route{http.MethodPost, "/v1/credentials", direct, (*server).createCredential},
		route{http.MethodGet, "/v1/credentials/{username}", buffered, (*server).getCredential},
		route{http.MethodPatch, "/v1/credentials/{username}", direct, (*server).patchCredential},
		route{http.MethodDelete, "/v1/credentials/{username}", direct, (*server).deleteCredential},
		route{http.MethodGet, "/v1/apikeys", buffered, (*server).listKeys},
		route{http.MethodPost, "/v1/apikeys", direct, (*server).createKey},
		route{http.MethodPatch, "/v1/apikeys/{id}", direct, (*server).patchKey},
		route{http.MethodDelete, "/v1/apikeys/{id}", direct, (*server).deleteKey},
		route{http.MethodGet, "/v1/messages", buffered, (*server).searchMessages},
		route{http.MethodGet, "/v1/messages/{id}", buffered, (*server).messageHistory},
		route{http.MethodGet, "/v1/links/{id}", buffered, (*server).linkReport},
	)
}

func (s *server) ops() *Ops {
	return &Ops{Store: s.cfg.Store, Reload: s.cfg.Reload, Log: s.log, Now: s.cfg.Now, BcryptCost: s.cfg.BcryptCost}
}

// principalKey carries a principal in a request's context: only code in
// this process can set it (WithPrincipal), never a request from outside.
type principalKey struct{}

// WithPrincipal returns ctx with p as the caller of the REST API: a
// request with this context is served as p without an API key. The
// dashboard serves log downloads through the API this way, so both serve
// the same files.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// scope applies ?account=NAME: an operator acts for that account; any
// other caller may only name its own.
func (s *server) scope(r *http.Request, p *Principal) (*Principal, error) {
	names, ok := r.URL.Query()["account"]
	if !ok {
		return p, nil
	}
	if len(names) != 1 || names[0] == "" {
		return nil, badRequest("account: give one account name")
	}
	name := names[0]
	if !p.Operator {
		if name != p.Account {
			return nil, errorf(http.StatusForbidden, "account: this key speaks for its own account only")
		}
		return p, nil
	}
	if p.Account != "" && p.Account != name {
		return nil, errorf(http.StatusForbidden, "account: this principal acts for account %s only", p.Account)
	}
	if _, err := s.cfg.Store.GetRecord(r.Context(), store.KindAccount, name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errorf(http.StatusNotFound, "account %q not found", clip(name))
		}
		return nil, err
	}
	cp := *p
	cp.Account = name
	return &cp, nil
}

// decode reads a JSON body into v, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("body: want a JSON object")
		}
		return badRequest("body: %s", clip(strings.TrimPrefix(err.Error(), "json: ")))
	}
	if dec.More() {
		return badRequest("body: one JSON object only")
	}
	return nil
}

func (s *server) listAccounts(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := needOperator(p); err != nil {
		return err
	}
	as, err := s.ops().Accounts(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, as)
	return nil
}

func (s *server) createAccount(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body struct {
		Name string `json:"name"`
		AccountSettings
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	a, err := s.ops().CreateAccount(r.Context(), p, body.Name, body.AccountSettings)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (s *server) getAccount(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := needOperator(p); err != nil {
		return err
	}
	a, err := s.ops().Account(r.Context(), p, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *server) deleteAccount(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := s.ops().DeleteAccount(r.Context(), p, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) ownAccount(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if _, err := needAccount(p); err != nil {
		return err
	}
	a, err := s.ops().Account(r.Context(), p, p.Account)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *server) patchAccount(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if _, err := needAccount(p); err != nil {
		return err
	}
	var body AccountSettings
	if err := decode(r, &body); err != nil {
		return err
	}
	a, err := s.ops().UpdateAccount(r.Context(), p, p.Account, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *server) listUsers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	us, err := s.ops().Users(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, us)
	return nil
}

func (s *server) createUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body NewUser
	if err := decode(r, &body); err != nil {
		return err
	}
	u, err := s.ops().CreateUser(r.Context(), p, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

func (s *server) getUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	u, err := s.ops().User(r.Context(), p, r.PathValue("login"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *server) patchUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body UserChange
	if err := decode(r, &body); err != nil {
		return err
	}
	u, err := s.ops().UpdateUser(r.Context(), p, r.PathValue("login"), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *server) deleteUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := s.ops().DeleteUser(r.Context(), p, r.PathValue("login")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) listCredentials(w http.ResponseWriter, r *http.Request, p *Principal) error {
	cs, err := s.ops().Credentials(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cs)
	return nil
}

func (s *server) createCredential(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body CredentialChange
	if err := decode(r, &body); err != nil {
		return err
	}
	c, err := s.ops().CreateCredential(r.Context(), p, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *server) getCredential(w http.ResponseWriter, r *http.Request, p *Principal) error {
	c, err := s.ops().Credential(r.Context(), p, r.PathValue("username"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *server) patchCredential(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body CredentialChange
	if err := decode(r, &body); err != nil {
		return err
	}
	c, err := s.ops().UpdateCredential(r.Context(), p, r.PathValue("username"), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *server) deleteCredential(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := s.ops().DeleteCredential(r.Context(), p, r.PathValue("username")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) listKeys(w http.ResponseWriter, r *http.Request, p *Principal) error {
	ks, err := s.ops().APIKeys(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ks)
	return nil
}

func (s *server) createKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body APIKeyChange
	if err := decode(r, &body); err != nil {
		return err
	}
	k, err := s.ops().CreateAPIKey(r.Context(), p, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, k)
	return nil
}

func (s *server) patchKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var body APIKeyChange
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Operator {
		return badRequest("operator: a key's kind cannot change")
	}
	k, err := s.ops().UpdateAPIKey(r.Context(), p, r.PathValue("id"), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *server) deleteKey(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := s.ops().DeleteAPIKey(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// MessageQuery reads a message search from query parameters (id,
// recipient, tag, subject, sender, start, end, limit), shared by
// GET /v1/messages and the dashboard.
func MessageQuery(qv map[string][]string) (store.MessageQuery, error) {
	get := func(k string) string {
		if v := qv[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	q := store.MessageQuery{Recipient: get("recipient"), Tag: get("tag"), Subject: get("subject"), Sender: get("sender")}
	if id := get("id"); id != "" {
		n, err := store.ParseID(id)
		if err != nil {
			return q, badRequest("id: want the 16 hex digits of a message or copy id")
		}
		q.ID = n
	}
	for k, v := range map[string]string{"recipient": q.Recipient, "tag": q.Tag, "subject": q.Subject, "sender": q.Sender} {
		if len(v) > 512 {
			return q, badRequest("%s: longer than 512 bytes", k)
		}
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return q, badRequest("limit: want a number from 1 to 1000")
		}
		q.Limit = n
	}
	return q, nil
}

func (s *server) searchMessages(w http.ResponseWriter, r *http.Request, p *Principal) error {
	qv := r.URL.Query()
	q, err := MessageQuery(qv)
	if err != nil {
		return err
	}
	if qv.Get("start") != "" || qv.Get("end") != "" {
		if q.From, q.To, err = s.period(qv); err != nil {
			return err
		}
	}
	ms, err := s.ops().SearchMessages(r.Context(), p, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ms)
	return nil
}

func (s *server) messageHistory(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, err := store.ParseID(r.PathValue("id"))
	if err != nil {
		return errorf(http.StatusNotFound, "message not found")
	}
	h, err := s.ops().MessageHistory(r.Context(), p, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *server) linkReport(w http.ResponseWriter, r *http.Request, p *Principal) error {
	qv := r.URL.Query()
	start, end, err := s.period(qv)
	if err != nil {
		return err
	}
	dim, err := dimension(qv)
	if err != nil {
		return err
	}
	rep, err := s.ops().LinkReport(r.Context(), p, r.PathValue("id"), dim, start, end)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

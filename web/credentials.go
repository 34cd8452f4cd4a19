package web

import (
	"net/http"
	"strconv"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/store"
)

func init() {
	pages = append(pages,
		page{"GET /credentials", (*Handler).credentials},
		page{"POST /credentials", (*Handler).createCredential},
		page{"POST /credentials/{username}", (*Handler).updateCredential},
		page{"POST /credentials/{username}/delete", (*Handler).deleteCredential},
		page{"POST /apikeys", (*Handler).createKey},
		page{"POST /apikeys/{id}", (*Handler).updateKey},
		page{"POST /apikeys/{id}/delete", (*Handler).deleteKey},
	)
}

// credentialsView is the credentials page.
type credentialsView struct {
	Creds   []api.CredentialView
	Keys    []api.APIKeyView
	Domains map[string][]store.Domain // account -> its click domains
	// Secret is a new credential's password or a new key, shown once.
	Secret, SecretFor, SecretKind string
	Error                         string
}

func (h *Handler) credentialsData(r *http.Request, s *session) (*credentialsView, error) {
	ctx := r.Context()
	p := s.Principal()
	cs, err := h.cfg.Ops.Credentials(ctx, p)
	if err != nil {
		return nil, err
	}
	ks, err := h.cfg.Ops.APIKeys(ctx, p)
	if err != nil {
		return nil, err
	}
	v := &credentialsView{Creds: cs, Keys: ks, Domains: map[string][]store.Domain{}}
	for _, c := range cs {
		if _, ok := v.Domains[c.Account]; !ok {
			ds, err := h.cfg.Ops.ClickDomains(ctx, c.Account)
			if err != nil {
				return nil, err
			}
			v.Domains[c.Account] = ds
		}
	}
	return v, nil
}

func (h *Handler) credentials(w http.ResponseWriter, r *http.Request, s *session) error {
	v, err := h.credentialsData(r, s)
	if err != nil {
		return err
	}
	h.render(w, r, http.StatusOK, "credentials", s, "Credentials", v)
	return nil
}

// showCredentials renders the page after a change, with a secret to
// show once or the change's error.
func (h *Handler) showCredentials(w http.ResponseWriter, r *http.Request, s *session, status int, fill func(*credentialsView)) error {
	v, err := h.credentialsData(r, s)
	if err != nil {
		return err
	}
	fill(v)
	h.render(w, r, status, "credentials", s, "Credentials", v)
	return nil
}

// opError shows an Ops refusal on the page it came from; a failure is
// the error page's.
func (h *Handler) opError(w http.ResponseWriter, r *http.Request, s *session, err error) error {
	status, msg := api.ErrorStatus(err)
	if status >= 500 {
		return err
	}
	return h.showCredentials(w, r, s, status, func(v *credentialsView) { v.Error = msg })
}

// actingFor is the principal a new record is made with: an operator
// acting for every account names the account in the form.
func (h *Handler) actingFor(r *http.Request, s *session) *api.Principal {
	p := s.Principal()
	if p.Operator && p.Account == "" {
		p.Account = r.PostFormValue("account")
	}
	return p
}

func formBool(r *http.Request, name string) *bool {
	b := r.PostFormValue(name) != ""
	return &b
}

func (h *Handler) createCredential(w http.ResponseWriter, r *http.Request, s *session) error {
	ch := api.CredentialChange{Username: r.PostFormValue("username"),
		Clicks: formBool(r, "trackclicks"), Opens: formBool(r, "trackopens"), PreventScam: formBool(r, "preventscam")}
	c, err := h.cfg.Ops.CreateCredential(r.Context(), h.actingFor(r, s), ch)
	if err != nil {
		return h.opError(w, r, s, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	return h.showCredentials(w, r, s, http.StatusCreated, func(v *credentialsView) {
		v.Secret, v.SecretFor, v.SecretKind = c.Password, c.Username, "password"
	})
}

// updateCredential applies one row's form: the tracking toggles and
// click domain ("save"), or enabling and disabling.
func (h *Handler) updateCredential(w http.ResponseWriter, r *http.Request, s *session) error {
	var ch api.CredentialChange
	switch r.PostFormValue("action") {
	case "save":
		ch.Clicks, ch.Opens, ch.PreventScam = formBool(r, "trackclicks"), formBool(r, "trackopens"), formBool(r, "preventscam")
		d := r.PostFormValue("click_domain")
		ch.ClickDomain = &d
	case "disable", "enable":
		b := r.PostFormValue("action") == "disable"
		ch.Disabled = &b
	default:
		return badInput("Unknown action.")
	}
	if _, err := h.cfg.Ops.UpdateCredential(r.Context(), s.Principal(), r.PathValue("username"), ch); err != nil {
		return h.opError(w, r, s, err)
	}
	redirect(w, r, "/credentials")
	return nil
}

func (h *Handler) deleteCredential(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := h.cfg.Ops.DeleteCredential(r.Context(), s.Principal(), r.PathValue("username")); err != nil {
		return h.opError(w, r, s, err)
	}
	redirect(w, r, "/credentials")
	return nil
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, s *session) error {
	name, cred := r.PostFormValue("name"), r.PostFormValue("credential")
	ch := api.APIKeyChange{Name: &name, Credential: &cred, Operator: r.PostFormValue("operator") != ""}
	p := s.Principal()
	if !ch.Operator {
		p = h.actingFor(r, s)
	}
	k, err := h.cfg.Ops.CreateAPIKey(r.Context(), p, ch)
	if err != nil {
		return h.opError(w, r, s, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	label := k.ID
	if k.Name != "" {
		label = k.Name + " (" + k.ID + ")"
	}
	return h.showCredentials(w, r, s, http.StatusCreated, func(v *credentialsView) {
		v.Secret, v.SecretFor, v.SecretKind = k.Key, label, "API key"
	})
}

func (h *Handler) updateKey(w http.ResponseWriter, r *http.Request, s *session) error {
	var ch api.APIKeyChange
	switch r.PostFormValue("action") {
	case "disable", "enable":
		b := r.PostFormValue("action") == "disable"
		ch.Disabled = &b
	default:
		return badInput("Unknown action.")
	}
	if _, err := h.cfg.Ops.UpdateAPIKey(r.Context(), s.Principal(), r.PathValue("id"), ch); err != nil {
		return h.opError(w, r, s, err)
	}
	redirect(w, r, "/credentials")
	return nil
}

func (h *Handler) deleteKey(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := h.cfg.Ops.DeleteAPIKey(r.Context(), s.Principal(), r.PathValue("id")); err != nil {
		return h.opError(w, r, s, err)
	}
	redirect(w, r, "/credentials")
	return nil
}

// trimZero formats v with at most prec decimals, without trailing zeros.
func trimZero(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	return s
}

package web

import (
	"net/http"

	"github.com/trackrelay/trackrelay/api"
)

func init() {
	pages = append(pages,
		page{"GET /users", (*Handler).users},
		page{"POST /users", (*Handler).createUser},
		page{"POST /users/{login}", (*Handler).updateUser},
		page{"POST /users/{login}/delete", (*Handler).deleteUser},
		page{"POST /accounts", (*Handler).createAccount},
		page{"POST /accounts/{name}/delete", (*Handler).deleteAccount},
	)
}

type peopleView struct {
	Users    []api.UserView
	Accounts []api.AccountView
	Error    string
	Done     string
}

func (h *Handler) showUsers(w http.ResponseWriter, r *http.Request, s *session, status int, errMsg, done string) error {
	ctx := r.Context()
	p := s.Principal()
	us, err := h.cfg.Ops.Users(ctx, p)
	if err != nil {
		return err
	}
	v := &peopleView{Users: us, Error: errMsg, Done: done}
	if s.user.Operator {
		if v.Accounts, err = h.cfg.Ops.Accounts(ctx, p); err != nil {
			return err
		}
	}
	h.render(w, r, status, "users", s, "People", v)
	return nil
}

func (h *Handler) users(w http.ResponseWriter, r *http.Request, s *session) error {
	return h.showUsers(w, r, s, http.StatusOK, "", "")
}

func (h *Handler) peopleError(w http.ResponseWriter, r *http.Request, s *session, err error) error {
	status, msg := api.ErrorStatus(err)
	if status >= 500 {
		return err
	}
	return h.showUsers(w, r, s, status, msg, "")
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request, s *session) error {
	nu := api.NewUser{Login: r.PostFormValue("login"), Password: r.PostFormValue("password"), Operator: r.PostFormValue("operator") != ""}
	p := s.Principal()
	if !nu.Operator {
		p = h.actingFor(r, s)
	}
	u, err := h.cfg.Ops.CreateUser(r.Context(), p, nu)
	if err != nil {
		return h.peopleError(w, r, s, err)
	}
	return h.showUsers(w, r, s, http.StatusCreated, "", "Added "+u.Login+".")
}

func (h *Handler) updateUser(w http.ResponseWriter, r *http.Request, s *session) error {
	var ch api.UserChange
	switch r.PostFormValue("action") {
	case "disable", "enable":
		b := r.PostFormValue("action") == "disable"
		ch.Disabled = &b
	case "password":
		pw := r.PostFormValue("password")
		ch.Password = &pw
	default:
		return badInput("Unknown action.")
	}
	u, err := h.cfg.Ops.UpdateUser(r.Context(), s.Principal(), r.PathValue("login"), ch)
	if err != nil {
		return h.peopleError(w, r, s, err)
	}
	if ch.Password != nil {
		return h.showUsers(w, r, s, http.StatusOK, "", "New password set for "+u.Login+"; their sessions ended.")
	}
	redirect(w, r, "/users")
	return nil
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := h.cfg.Ops.DeleteUser(r.Context(), s.Principal(), r.PathValue("login")); err != nil {
		return h.peopleError(w, r, s, err)
	}
	redirect(w, r, "/users")
	return nil
}

func (h *Handler) createAccount(w http.ResponseWriter, r *http.Request, s *session) error {
	a, err := h.cfg.Ops.CreateAccount(r.Context(), s.Principal(), r.PostFormValue("name"), api.AccountSettings{})
	if err != nil {
		return h.peopleError(w, r, s, err)
	}
	return h.showUsers(w, r, s, http.StatusCreated, "", "Account "+a.Name+" made.")
}

func (h *Handler) deleteAccount(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := h.cfg.Ops.DeleteAccount(r.Context(), s.Principal(), r.PathValue("name")); err != nil {
		return h.peopleError(w, r, s, err)
	}
	redirect(w, r, "/users")
	return nil
}

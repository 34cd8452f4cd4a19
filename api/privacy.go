package api

import (
	"net/http"

	"github.com/trackrelay/trackrelay/store"
)

// Erasure (SPEC §13): everything an account holds about one recipient
// address goes, in one call that says how many records went.

func init() {
	routes = append(routes, route{http.MethodPost, "/v1/erase", direct, (*server).erase})
}

func (s *server) erase(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.account(r, p)
	if err != nil {
		return err
	}
	var req struct {
		Address string `json:"address"`
		// Suppression also removes the address's suppression entry (by
		// default it stays, so that mail to a person who asked to be
		// forgotten is not sent again).
		Suppression bool `json:"suppression"`
	}
	if err := decodeJSON(r.Body, &req); err != nil {
		return err
	}
	if err := checkAddr(req.Address); err != nil {
		return badRequest("address: %v", err)
	}
	n, err := s.cfg.Store.EraseAddress(r.Context(), acct, req.Address, req.Suppression)
	if err != nil {
		return err
	}
	s.log.Info("address erased", "account", acct, "events", n.Events, "copies", n.Copies, "pending", n.Pending)
	writeJSON(w, http.StatusOK, struct {
		store.Erased
		Address string `json:"address"`
	}{n, store.NormalAddress(req.Address)})
	return nil
}

package api

import (
	_ "embed"
	"net/http"
)

// Spec is the API's OpenAPI 3.1 document (JSON). Tests check that it lists
// exactly the routes New registers.
//
//go:embed openapi.json
var Spec []byte

// openapi serves Spec at /v1/openapi.json, to anyone: it holds no secret
// and tells a client every path.
func (s *server) openapi(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, err := w.Write(Spec)
	return err
}

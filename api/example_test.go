package api_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// The API mounts under /v1/ on the relay's internal listener, over the
// relay's store and spool.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "api-example-")
	defer os.RemoveAll(dir)
	relay, _ := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	defer relay.Close()
	spool, _ := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 1 << 20})
	defer spool.Close()
	hash, _ := bcrypt.GenerateFromPassword([]byte("secret-key"), bcrypt.MinCost)
	keys, _ := api.NewKeyring([]api.Key{{Hash: hash, Cred: &smtpd.Credential{Username: "shop", Account: "shop"}}})

	mux := http.NewServeMux()
	mux.Handle("/v1/", api.New(api.Config{Submitter: spool, Store: relay, Keys: keys}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/v1/logfiles?access_token=secret-key")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

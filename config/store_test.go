package config

import (
	"strings"
	"testing"
)

func TestStoreSection(t *testing.T) {
	for _, tc := range []struct {
		name, toml, want string // want: "" valid, else a substring of the error
	}{
		{"default", "", ""},
		{"bbolt", `backend = "bbolt"`, ""},
		{"postgres url", `backend = "postgres"` + "\n" + `dsn = "postgres://tr@db/tr"`, ""},
		{"postgres socket", `backend = "postgres"` + "\n" + `dsn = "host=/run/postgresql dbname=tr"`, ""},
		{"postgres without dsn", `backend = "postgres"`, "store.dsn: must be set"},
		{"dsn not a dsn", `backend = "postgres"` + "\n" + `dsn = "db.example"`, "store.dsn: want"},
		{"dsn with bbolt", `dsn = "host=/tmp"`, "store.dsn: only with"},
		{"unknown backend", `backend = "mysql"`, "store.backend:"},
		{"bad node", `node = "a` + "\\n" + `b"`, "store.node:"},
		{"bad max_conns", `max_conns = -1`, "store.max_conns:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader("[relay]\nhostname = \"relay1.example\"\n[store]\n" + tc.toml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Store.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if c.Store.Node == "" || (tc.name == "default" && (c.Store.Node != "relay1.example" || c.Store.Backend != StoreBolt)) {
				t.Errorf("defaults: %+v", c.Store)
			}
		})
	}
	// The password in a DSN is never shown.
	c, _ := Parse(strings.NewReader("[store]\nbackend = \"postgres\"\ndsn = \"postgres://u:s3cret@[::1\"\n"))
	if err := c.Store.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad URL: %v", err)
	}
}

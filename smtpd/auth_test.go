package smtpd

import (
	"bytes"
	"errors"
	"testing"

	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"
)

func TestLoginServer(t *testing.T) {
	type step struct {
		resp      []byte
		challenge string
		done      bool
	}
	tests := []struct {
		name     string
		steps    []step
		wantUser string
		wantPass string
	}{
		{"no initial response", []step{
			{nil, "Username:", false},
			{[]byte("joe"), "Password:", false},
			{[]byte("pw"), "", true},
		}, "joe", "pw"},
		{"username as initial response", []step{
			{[]byte("joe"), "Password:", false},
			{[]byte("pw"), "", true},
		}, "joe", "pw"},
		{"empty initial response", []step{
			{[]byte{}, "Password:", false},
			{[]byte("pw"), "", true},
		}, "", "pw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotUser, gotPass string
			s := &loginServer{auth: func(u, p string) error { gotUser, gotPass = u, p; return nil }}
			for i, st := range tt.steps {
				ch, done, err := s.Next(st.resp)
				if err != nil || string(ch) != st.challenge || done != st.done {
					t.Fatalf("step %d: got %q %v %v, want %q %v", i, ch, done, err, st.challenge, st.done)
				}
			}
			if gotUser != tt.wantUser || gotPass != tt.wantPass {
				t.Errorf("auth(%q, %q), want (%q, %q)", gotUser, gotPass, tt.wantUser, tt.wantPass)
			}
			if _, _, err := s.Next([]byte("more")); err == nil {
				t.Error("a response after the end was accepted")
			}
		})
	}
	// The auth function's error is the mechanism's error.
	s := &loginServer{auth: func(u, p string) error { return errAuthFailed }}
	s.Next([]byte("joe"))
	if _, done, err := s.Next([]byte("pw")); !done || err != errAuthFailed {
		t.Errorf("got %v %v", done, err)
	}
	var _ sasl.Server = s
}

func TestVerifyCache(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cred := &Credential{Username: "u"}
	tbl, err := newUserTable(map[string]User{"u": {Hash: hash, Cred: cred}})
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("per-process-salt")
	check := func(user, pass string, want error) {
		t.Helper()
		got, err := tbl.verify(salt, nil, user, pass)
		if !errors.Is(err, want) && err != want {
			t.Fatalf("verify(%q, %q): %v, want %v", user, pass, err, want)
		}
		if want == nil && got != cred {
			t.Fatalf("verify(%q, %q): credential %v", user, pass, got)
		}
	}
	check("u", "wrong", errAuthFailed)
	if len(tbl.cache) != 0 {
		t.Fatal("a failure was cached")
	}
	check("u", "right", nil)
	entry, ok := tbl.cache["u"]
	if !ok {
		t.Fatal("success not cached")
	}
	if bytes.Contains(entry[:], []byte("right")) {
		t.Fatal("the cache holds the password")
	}
	// A cache hit skips bcrypt: prove it by breaking the stored hash.
	tbl.users["u"] = User{Hash: []byte("not a hash"), Cred: cred}
	check("u", "right", nil)
	// A wrong password is not a hit, and reaches bcrypt (which now fails).
	check("u", "wrong", errCheckFailed)
	check("nobody", "right", errAuthFailed)
	check("", "right", errAuthFailed)
	// The cache key depends on the salt: another process's entry is useless.
	tbl.users["u"] = User{Hash: hash, Cred: cred}
	if _, err := tbl.verify([]byte("other salt"), nil, "u", "wrong"); err != errAuthFailed {
		t.Fatalf("other salt: %v", err)
	}
	// Unknown users cost a bcrypt comparison at the users' cost.
	if c, err := bcrypt.Cost(tbl.dummy); err != nil || c != bcrypt.MinCost {
		t.Errorf("dummy hash cost %d, %v", c, err)
	}
}

func TestUsersSwapDropsCache(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.srv.users.Load().verify(e.srv.salt, e.srv.bcryptSem, testUser, testPassword); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.users.Load().cache); n != 1 {
		t.Fatalf("%d cache entries", n)
	}
	newHash, _ := bcrypt.GenerateFromPassword([]byte("new password"), bcrypt.MinCost)
	if err := e.srv.SetUsers(map[string]User{testUser: {Hash: newHash, Cred: e.cred}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.users.Load().verify(e.srv.salt, e.srv.bcryptSem, testUser, testPassword); err != errAuthFailed {
		t.Fatalf("old password after a password change: %v", err)
	}
	if _, err := e.srv.users.Load().verify(e.srv.salt, e.srv.bcryptSem, testUser, "new password"); err != nil {
		t.Fatal(err)
	}
}

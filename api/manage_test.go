package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

const keyMgOperator = "operator-key-0123456789"

// manageEnv is the REST API over a real store whose keys come from the
// store's records, reloaded after every change (as the relay's directory
// does).
type manageEnv struct {
	t     *testing.T
	relay *store.Relay
	srv   *httptest.Server
	kr    *Keyring
}

func newManageEnv(t *testing.T) *manageEnv {
	t.Helper()
	dir := t.TempDir()
	relay, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 1 << 20, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	opHash, _ := bcrypt.GenerateFromPassword([]byte(keyMgOperator), bcrypt.MinCost)
	if err := store.Create(context.Background(), relay, &store.APIKey{ID: "cfg-op", Hash: string(opHash)}); err != nil {
		t.Fatal(err)
	}
	m := &manageEnv{t: t, relay: relay}
	m.kr, err = NewKeyring(nil)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(ctx context.Context) error {
		ks, err := store.List[store.APIKey](ctx, relay, store.KindAPIKey, "")
		if err != nil {
			return err
		}
		var keys []Key
		for _, k := range ks {
			if k.Disabled {
				continue
			}
			ak := Key{ID: k.ID, Hash: []byte(k.Hash), Operator: k.Account == ""}
			if !ak.Operator {
				ak.Cred = &smtpd.Credential{Username: "api:" + k.Account, Account: k.Account}
			}
			keys = append(keys, ak)
		}
		return m.kr.SetKeys(keys)
	}
	if err := reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.srv = httptest.NewServer(New(Config{Submitter: spool, Store: relay, Keys: m.kr, Reload: reload, BcryptCost: bcrypt.MinCost}))
	t.Cleanup(m.srv.Close)
	return m
}

// call makes a JSON request and decodes a 2xx answer into out.
func (m *manageEnv) call(method, path, key string, body any, out any) (int, string) {
	m.t.Helper()
	var rd *strings.Reader
	if s, ok := body.(string); ok {
		rd = strings.NewReader(s)
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, m.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			m.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

func (m *manageEnv) must(method, path, key string, body, out any, want int) string {
	m.t.Helper()
	st, raw := m.call(method, path, key, body, out)
	if st != want {
		m.t.Fatalf("%s %s: %d %s, want %d", method, path, st, raw, want)
	}
	return raw
}

func TestManageAccountsCredentialsKeys(t *testing.T) {
	m := newManageEnv(t)
	for _, name := range []string{"shop", "other"} {
		m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": name}, nil, 201)
	}
	m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": "shop"}, nil, 409)
	var accts []AccountView
	m.must("GET", "/v1/accounts", keyMgOperator, nil, &accts, 200)
	if len(accts) != 2 {
		t.Fatalf("accounts %+v", accts)
	}
	// An operator key makes records in an account it names.
	if st, raw := m.call("POST", "/v1/credentials", keyMgOperator, map[string]any{"username": "news"}, nil); st != 400 || !strings.Contains(raw, "account") {
		t.Fatalf("credential without an account: %d %s", st, raw)
	}
	var cred CredentialView
	m.must("POST", "/v1/credentials?account=shop", keyMgOperator, map[string]any{"username": "news", "trackclicks": true}, &cred, 201)
	if len(cred.Password) < 20 || !cred.Clicks || cred.Opens || cred.Account != "shop" {
		t.Fatalf("made credential %+v", cred)
	}
	stored, err := store.Get[store.Credential](context.Background(), m.relay, store.KindCredential, "news")
	if err != nil || bcrypt.CompareHashAndPassword([]byte(stored.PasswordHash), []byte(cred.Password)) != nil {
		t.Fatalf("the stored hash does not match the answered password: %v", err)
	}
	raw := m.must("GET", "/v1/credentials/news?account=shop", keyMgOperator, nil, nil, 200)
	if strings.Contains(raw, cred.Password) || strings.Contains(raw, "password") {
		t.Fatalf("the password is shown again: %s", raw)
	}
	// Keys for each account; the secret comes once.
	var shopKey, otherKey APIKeyView
	m.must("POST", "/v1/apikeys?account=shop", keyMgOperator, map[string]any{"name": "shop app", "credential": "news"}, &shopKey, 201)
	m.must("POST", "/v1/apikeys?account=other", keyMgOperator, map[string]any{"name": "other app"}, &otherKey, 201)
	if !strings.HasPrefix(shopKey.Key, KeyPrefix+shopKey.ID+"_") || shopKey.Account != "shop" {
		t.Fatalf("key %+v", shopKey)
	}
	if raw := m.must("GET", "/v1/apikeys?account=shop", keyMgOperator, nil, nil, 200); strings.Contains(raw, shopKey.Key) || strings.Contains(raw, "$2") {
		t.Fatalf("the key list shows a secret or hash: %s", raw)
	}
	m.must("POST", "/v1/apikeys?account=shop", keyMgOperator, map[string]any{"credential": "nope"}, nil, 400)

	// Each account's key sees and changes its own records only.
	var list []CredentialView
	m.must("GET", "/v1/credentials", shopKey.Key, nil, &list, 200)
	if len(list) != 1 || list[0].Username != "news" {
		t.Fatalf("shop's credentials %+v", list)
	}
	m.must("GET", "/v1/credentials", otherKey.Key, nil, &list, 200)
	if len(list) != 0 {
		t.Fatalf("other sees %+v", list)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/credentials/news"}, {"PATCH", "/v1/credentials/news"}, {"DELETE", "/v1/credentials/news"},
		{"PATCH", "/v1/apikeys/" + shopKey.ID}, {"DELETE", "/v1/apikeys/" + shopKey.ID},
	} {
		body := map[string]any{"disabled": true}
		if strings.Contains(c.path, "credentials") {
			body = map[string]any{"trackclicks": false}
		}
		if st, raw := m.call(c.method, c.path, otherKey.Key, body, nil); st != 404 {
			t.Errorf("other %s %s: %d %s, want 404", c.method, c.path, st, raw)
		}
	}
	if st, _ := m.call("GET", "/v1/credentials?account=shop", otherKey.Key, nil, nil); st != 403 {
		t.Errorf("other naming shop: %d, want 403", st)
	}
	if st, _ := m.call("GET", "/v1/accounts", shopKey.Key, nil, nil); st != 403 {
		t.Errorf("an account key lists accounts: %d, want 403", st)
	}
	if st, _ := m.call("POST", "/v1/apikeys", shopKey.Key, map[string]any{"operator": true}, nil); st != 403 {
		t.Errorf("an account key makes an operator key: %d, want 403", st)
	}
	var changed CredentialView
	m.must("PATCH", "/v1/credentials/news", shopKey.Key, map[string]any{"trackclicks": false, "trackopens": true, "preventscam": true}, &changed, 200)
	if changed.Clicks || !changed.Opens || !changed.PreventScam {
		t.Fatalf("changed %+v", changed)
	}
	stored, _ = store.Get[store.Credential](context.Background(), m.relay, store.KindCredential, "news")
	if stored.Clicks || !stored.Opens || !stored.PreventScam {
		t.Fatalf("stored %+v", stored)
	}
	// Disabling a key takes it out of the key ring at once.
	m.must("PATCH", "/v1/apikeys/"+otherKey.ID, keyMgOperator, map[string]any{"disabled": true}, nil, 200)
	if st, _ := m.call("GET", "/v1/credentials", otherKey.Key, nil, nil); st != 401 {
		t.Fatalf("a disabled key: %d, want 401", st)
	}
	// The account cannot go while it has records; declared ones are read-only.
	if st, raw := m.call("DELETE", "/v1/accounts/shop", keyMgOperator, nil, nil); st != 409 || !strings.Contains(raw, "credential") {
		t.Fatalf("deleting a busy account: %d %s", st, raw)
	}
	if _, err := store.SyncDeclared(context.Background(), m.relay, store.KindCredential, []store.Record{&store.Credential{Username: "cfg", Account: "shop", Declared: true}}); err != nil {
		t.Fatal(err)
	}
	if st, raw := m.call("PATCH", "/v1/credentials/cfg", shopKey.Key, map[string]any{"trackclicks": true}, nil); st != 409 || !strings.Contains(raw, "config file") {
		t.Fatalf("changing a declared credential: %d %s", st, raw)
	}
	m.must("DELETE", "/v1/credentials/news", shopKey.Key, nil, nil, 204)
	m.must("GET", "/v1/credentials/news", shopKey.Key, nil, nil, 404)
}

func TestManageValidation(t *testing.T) {
	m := newManageEnv(t)
	m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": "shop"}, nil, 201)
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		sub                string
	}{
		{"account with a space", "POST", "/v1/accounts", map[string]any{"name": "a b"}, 400, "name"},
		{"account ip", "PATCH", "/v1/account?account=shop", map[string]any{"ip": "some"}, 400, "ip"},
		{"account retention log", "PATCH", "/v1/account?account=shop", map[string]any{"retention": map[string]int{"nope": 3}}, 400, "retention"},
		{"unknown field", "POST", "/v1/credentials?account=shop", `{"username":"a","clicks":true}`, 400, "unknown field"},
		{"two objects", "POST", "/v1/credentials?account=shop", `{"username":"a"}{}`, 400, "one JSON object"},
		{"short password", "POST", "/v1/credentials?account=shop", map[string]any{"username": "a", "password": "short"}, 400, "password"},
		{"bad scheme", "POST", "/v1/credentials?account=shop", map[string]any{"username": "a", "scheme": "ftp"}, 400, "scheme"},
		{"click domain of nobody", "POST", "/v1/credentials?account=shop", map[string]any{"username": "a", "click_domain": "c.example"}, 400, "click_domain"},
		{"no such account", "POST", "/v1/users?account=nope", map[string]any{"login": "a@b", "password": "longenough"}, 404, "account"},
		{"user short password", "POST", "/v1/users?account=shop", map[string]any{"login": "a@b", "password": "x"}, 400, "password"},
		{"bad message id", "GET", "/v1/messages?id=xyz", nil, 400, "id"},
		{"bad link", "GET", "/v1/links/zzz", nil, 404, "link"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, raw := m.call(c.method, c.path, keyMgOperator, c.body, nil)
			if st != c.status || !strings.Contains(raw, c.sub) {
				t.Fatalf("%d %s, want %d mentioning %q", st, raw, c.status, c.sub)
			}
		})
	}
	var a AccountView
	m.must("PATCH", "/v1/account?account=shop", keyMgOperator, map[string]any{"ip": "truncated", "retention": map[string]int{"clicks": 30}, "soft_bounce_window": "72h"}, &a, 200)
	if a.IP != "truncated" || a.Retention["clicks"] != 30 || a.SoftBounceWindow != "72h0m0s" {
		t.Fatalf("account %+v", a)
	}
}

func TestManageUsers(t *testing.T) {
	m := newManageEnv(t)
	m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": "shop"}, nil, 201)
	m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": "other"}, nil, 201)
	var u UserView
	m.must("POST", "/v1/users?account=shop", keyMgOperator, map[string]any{"login": " Ann@Shop.Example ", "password": "correct horse"}, &u, 201)
	if u.Login != "ann@shop.example" || u.Account != "shop" || u.Operator {
		t.Fatalf("user %+v", u)
	}
	m.must("POST", "/v1/users", keyMgOperator, map[string]any{"login": "root", "password": "operator pw", "operator": true}, &u, 201)
	ops := &Ops{Store: m.relay}
	if _, err := ops.CheckLogin(context.Background(), "ANN@shop.example", "correct horse"); err != nil {
		t.Fatalf("login: %v", err)
	}
	if _, err := ops.CheckLogin(context.Background(), "ann@shop.example", "wrong"); err != ErrBadLogin {
		t.Fatalf("wrong password: %v", err)
	}
	var shopUsers, all []UserView
	m.must("GET", "/v1/users?account=shop", keyMgOperator, nil, &shopUsers, 200)
	m.must("GET", "/v1/users", keyMgOperator, nil, &all, 200)
	if len(shopUsers) != 1 || len(all) != 2 {
		t.Fatalf("shop %+v, all %+v", shopUsers, all)
	}
	// Another account cannot see, change or remove them; nor operators.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/users/ann@shop.example"}, {"PATCH", "/v1/users/ann@shop.example"}, {"DELETE", "/v1/users/ann@shop.example"},
		{"GET", "/v1/users/root"}, {"PATCH", "/v1/users/root"}, {"DELETE", "/v1/users/root"},
	} {
		if st, raw := m.call(c.method, c.path+"?account=other", keyMgOperator, map[string]any{"disabled": true}, nil); st != 404 {
			t.Errorf("%s %s as other: %d %s", c.method, c.path, st, raw)
		}
	}
	before := time.Now().Add(-time.Second)
	m.must("PATCH", "/v1/users/ann@shop.example?account=shop", keyMgOperator, map[string]any{"password": "battery staple"}, &u, 200)
	if u.PasswordChanged.Before(before) {
		t.Fatalf("password_changed %v", u.PasswordChanged)
	}
	if _, err := ops.CheckLogin(context.Background(), "ann@shop.example", "battery staple"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	m.must("PATCH", "/v1/users/ann@shop.example?account=shop", keyMgOperator, map[string]any{"disabled": true}, nil, 200)
	if _, err := ops.CheckLogin(context.Background(), "ann@shop.example", "battery staple"); err != ErrBadLogin {
		t.Fatalf("a disabled user logs in: %v", err)
	}
	m.must("DELETE", "/v1/users/ann@shop.example?account=shop", keyMgOperator, nil, nil, 204)
	m.must("GET", "/v1/users/ann@shop.example?account=shop", keyMgOperator, nil, nil, 404)
}

func TestManageMessagesScoped(t *testing.T) {
	m := newManageEnv(t)
	ctx := context.Background()
	for _, name := range []string{"shop", "other"} {
		m.must("POST", "/v1/accounts", keyMgOperator, map[string]any{"name": name}, nil, 201)
	}
	var shopKey, otherKey APIKeyView
	m.must("POST", "/v1/apikeys?account=shop", keyMgOperator, map[string]any{}, &shopKey, 201)
	m.must("POST", "/v1/apikeys?account=other", keyMgOperator, map[string]any{}, &otherKey, 201)
	now := time.Now().UTC()
	msg := &store.Message{ID: m.relay.NextID(), SpoolPath: "x", From: "news@shop.example", Recipients: []string{"ann@example.com"}, Created: now,
		Remaining: 1, Account: "shop", Subject: "November sale", HeaderFrom: "Shop <news@shop.example>", Tags: []string{"nov"}}
	cp := &store.Copy{ID: m.relay.NextID(), MessageID: msg.ID, Account: "shop", Recipient: "ann@example.com", State: store.CopyQueued, Created: now}
	ev := []store.Event{{Log: store.LogAttempts, Account: "shop", ID: cp.ID, Time: now, Recipient: "ann@example.com", Tags: []string{"nov"},
		Fields: map[string]string{"envelope": msg.From, "properties": `{"trackclicks":true}`}}}
	if err := m.relay.AddMessage(ctx, msg, []*store.Copy{cp}, ev); err != nil {
		t.Fatal(err)
	}
	id := store.FormatID(msg.ID)
	for _, q := range []string{"subject=novem", "sender=shop.example", "tag=nov", "recipient=ANN@example.com", "id=" + id, "id=" + store.FormatID(cp.ID)} {
		var got []MessageSummary
		m.must("GET", "/v1/messages?"+q, shopKey.Key, nil, &got, 200)
		if len(got) != 1 || got[0].ID != id || got[0].Subject != "November sale" {
			t.Errorf("shop %s: %+v", q, got)
		}
		m.must("GET", "/v1/messages?"+q, otherKey.Key, nil, &got, 200)
		if len(got) != 0 {
			t.Errorf("other %s: %+v", q, got)
		}
	}
	var h History
	m.must("GET", "/v1/messages/"+id, shopKey.Key, nil, &h, 200)
	if len(h.Events) != 1 || h.Events[0].Event != "attempt" || h.Events[0].Fields["envelope"] != msg.From || len(h.Copies) != 1 {
		t.Fatalf("history %+v", h)
	}
	m.must("GET", "/v1/messages/"+id, otherKey.Key, nil, nil, 404)
}

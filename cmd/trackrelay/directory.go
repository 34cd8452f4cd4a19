package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// The directory keeps what the SMTP front and the REST API check logins
// against in step with the store's records: accounts, credentials and API
// keys, whether the config file declares them or they were made at run
// time (REST API, dashboard, CLI). The config file's are copied into the
// store at start and on SIGHUP (syncDeclared); every change to a record,
// on this node or another sharing the store, reaches the running servers
// within a second (the directory polls the records' version), and at once
// for changes made here (Reload).

// declaredRecords turns the config file's accounts, credentials and API
// keys into store records marked Declared.
func declaredRecords(cfg *config.Config, now time.Time) (accounts, creds, keys []store.Record) {
	for _, a := range cfg.Accounts {
		accounts = append(accounts, &store.Account{Name: a.Name, Declared: true, Created: now})
	}
	first := map[string]string{} // account -> its first credential, in file order
	for _, c := range cfg.Credentials {
		if _, ok := first[c.Account]; !ok {
			first[c.Account] = c.Username
		}
		creds = append(creds, &store.Credential{
			Username: c.Username, Account: c.Account, PasswordHash: c.PasswordHash,
			Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam, Text: c.Text, TrackSigned: c.TrackSigned,
			ClickDomain: c.ClickDomain, Scheme: c.Scheme, Upstream: c.Upstream,
			Declared: true, Created: now,
		})
	}
	for _, k := range cfg.API.Keys {
		keys = append(keys, &store.APIKey{
			ID: declaredKeyID(k.Account, k.KeyHash), Account: k.Account, Hash: k.KeyHash, Credential: first[k.Account],
			Declared: true, Created: now,
		})
	}
	return accounts, creds, keys
}

// declaredKeyID names a declared API key's record by a digest of its
// account and hash (the key itself is not known).
func declaredKeyID(account, hash string) string {
	s := sha256.Sum256([]byte(account + "\x00" + hash))
	return "cfg-" + hex.EncodeToString(s[:8])
}

// syncDeclared copies the config file's records into the store.
func syncDeclared(ctx context.Context, st store.RecordStore, cfg *config.Config) error {
	accounts, creds, keys := declaredRecords(cfg, time.Now().UTC())
	for _, k := range []struct {
		kind store.RecordKind
		recs []store.Record
	}{{store.KindAccount, accounts}, {store.KindCredential, creds}, {store.KindAPIKey, keys}} {
		if _, err := store.SyncDeclared(ctx, st, k.kind, k.recs); err != nil {
			return fmt.Errorf("config: %s records: %w", k.kind, err)
		}
	}
	return nil
}

// directory applies the store's records to the running servers.
type directory struct {
	st      store.DB
	log     *slog.Logger
	server  *smtpd.Server
	keyring *api.Keyring

	mu      sync.Mutex
	cfg     *config.Config
	version uint64
	loaded  bool
}

func newDirectory(st store.DB, cfg *config.Config, log *slog.Logger) *directory {
	return &directory{st: st, cfg: cfg, log: log}
}

// setConfig swaps the configuration (trusted networks, the default click
// domain) after a reload.
func (d *directory) setConfig(cfg *config.Config) {
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
}

// defaultClickDomain is where links of credentials without a (verified)
// click domain of their own go: the first click domain the redirector is
// configured for, else the first declared credential's.
func defaultClickDomain(cfg *config.Config) (domain, scheme string) {
	scheme = "https"
	for _, c := range cfg.Credentials {
		if c.ClickDomain != "" {
			domain, scheme = c.ClickDomain, c.Scheme
			break
		}
	}
	if len(cfg.Redirector.ClickDomains) > 0 {
		domain = cfg.Redirector.ClickDomains[0]
	}
	if len(cfg.Relay.ClickDomains) > 0 && domain == "" {
		domain = cfg.Relay.ClickDomains[0]
	}
	return domain, scheme
}

// snapshot is one reading of the records.
type snapshot struct {
	users   map[string]smtpd.User
	trusted []smtpd.TrustedNetwork
	keys    []api.Key
}

// read builds the servers' tables from the store.
func (d *directory) read(ctx context.Context, cfg *config.Config) (*snapshot, error) {
	creds, err := store.List[store.Credential](ctx, d.st, store.KindCredential, "")
	if err != nil {
		return nil, err
	}
	domains, err := store.List[store.Domain](ctx, d.st, store.KindDomain, "")
	if err != nil {
		return nil, err
	}
	usable := map[string]string{} // click domain -> account, verified ones
	for _, dm := range domains {
		if dm.Kind == store.DomainClick && dm.Usable() {
			usable[dm.Name] = dm.Account
		}
	}
	defDomain, defScheme := defaultClickDomain(cfg)
	// Verified domains of an account get certificates on demand when the
	// redirector does ACME on an HTTPS listener: their new links are https.
	acme := cfg.ACME
	acme.SetDefaults()
	ownScheme := defScheme
	if cfg.Redirector.TLSListen != "" && acme.Enabled() {
		ownScheme = "https"
	}
	byName := map[string]*smtpd.Credential{}
	firstOf := map[string]*smtpd.Credential{}
	snap := &snapshot{users: map[string]smtpd.User{}}
	for i := range creds {
		c := &creds[i]
		sc := effectiveCredential(c, usable, defDomain, defScheme, ownScheme, d.log)
		if sc.Upstream == "" && len(cfg.Upstreams) > 0 {
			sc.Upstream = cfg.Upstreams[0].Name // "" is the first upstream
		}
		byName[c.Username] = sc
		if firstOf[c.Account] == nil {
			firstOf[c.Account] = sc
		}
		if !c.Disabled {
			snap.users[c.Username] = smtpd.User{Hash: []byte(c.PasswordHash), Cred: sc}
		}
	}
	for i, t := range cfg.TrustedNetworks {
		p, err := netip.ParsePrefix(t.CIDR)
		if err != nil {
			return nil, fmt.Errorf("trusted_networks[%d]: %w", i, err)
		}
		cr := byName[t.Credential]
		if cr == nil {
			d.log.Warn("trusted network names no credential; it is ignored", "cidr", t.CIDR, "credential", t.Credential)
			continue
		}
		snap.trusted = append(snap.trusted, smtpd.TrustedNetwork{Prefix: p.Masked(), Cred: cr})
	}
	keys, err := store.List[store.APIKey](ctx, d.st, store.KindAPIKey, "")
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Disabled {
			continue
		}
		ak := api.Key{ID: k.ID, Hash: []byte(k.Hash)}
		switch {
		case k.Account == "":
			ak.Operator = true
		case byName[k.Credential] != nil && byName[k.Credential].Account == k.Account:
			ak.Cred = byName[k.Credential]
		case firstOf[k.Account] != nil:
			ak.Cred = firstOf[k.Account]
		default:
			// An account without credentials sends untracked through the
			// first upstream, as credential "api:ACCOUNT".
			ak.Cred = &smtpd.Credential{Username: "api:" + k.Account, Account: k.Account, Scheme: defScheme, ClickDomain: defDomain}
			if len(cfg.Upstreams) > 0 {
				ak.Cred.Upstream = cfg.Upstreams[0].Name
			}
		}
		snap.keys = append(snap.keys, ak)
	}
	return snap, nil
}

// effectiveCredential is the smtpd view of a credential record: a
// run-time credential's click domain is used only when it is a verified
// domain of its own account; otherwise its links go to the default click
// domain, and that is logged.
func effectiveCredential(c *store.Credential, usable map[string]string, defDomain, defScheme, ownScheme string, log *slog.Logger) *smtpd.Credential {
	sc := &smtpd.Credential{
		Username: c.Username, Account: c.Account, Clicks: c.Clicks, Opens: c.Opens, PreventScam: c.PreventScam,
		Text: c.Text, TrackSigned: c.TrackSigned, ClickDomain: c.ClickDomain, Scheme: c.Scheme, Upstream: c.Upstream,
	}
	if sc.Scheme == "" {
		sc.Scheme = defScheme
	}
	if c.Declared && c.ClickDomain != "" {
		return sc // the operator's own configuration
	}
	if c.ClickDomain != "" {
		host := hostOnly(c.ClickDomain)
		if acct, ok := usable[host]; ok && acct == c.Account {
			sc.Scheme = ownScheme
			return sc
		}
		log.Warn("credential's click domain is not a verified domain of its account; using the default",
			"credential", c.Username, "account", c.Account, "click_domain", c.ClickDomain, "default", defDomain)
	}
	sc.ClickDomain, sc.Scheme = defDomain, defScheme
	return sc
}

// Reload reads the records now and applies them.
func (d *directory) Reload(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.st.RecordsVersion(ctx)
	if err != nil {
		return err
	}
	snap, err := d.read(ctx, d.cfg)
	if err != nil {
		return err
	}
	if d.server != nil {
		if err := d.server.SetUsers(snap.users); err != nil {
			return fmt.Errorf("smtp users: %w", err)
		}
		d.server.SetTrusted(snap.trusted)
	}
	if d.keyring != nil {
		if err := d.keyring.SetKeys(snap.keys); err != nil {
			return fmt.Errorf("api keys: %w", err)
		}
	}
	if d.loaded && v != d.version {
		d.log.Info("records changed: logins reloaded", "credentials", len(snap.users), "api_keys", len(snap.keys))
	}
	d.version, d.loaded = v, true
	return nil
}

// firstSnapshot reads the records before the servers exist.
func (d *directory) firstSnapshot(ctx context.Context) (*snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.st.RecordsVersion(ctx)
	if err != nil {
		return nil, err
	}
	snap, err := d.read(ctx, d.cfg)
	if err == nil {
		d.version, d.loaded = v, true
	}
	return snap, err
}

// hostOnly strips a port from host[:port].
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

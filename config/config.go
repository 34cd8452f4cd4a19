// Package config reads, defaults and validates trackrelay's TOML
// configuration file. It is its own package because every role (relay,
// redirector, API) and the admin commands read the same file.
//
// Parse decodes and fills in defaults; Validate checks every value and
// reports every problem with its dotted key. Neither touches the file
// system: Load reads the file, and CheckFiles looks at the files the
// configuration names (keys, certificates, password files).
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration file.
type Config struct {
	Relay           Relay            `toml:"relay"`
	SMTP            SMTP             `toml:"smtp"`
	Accounts        []Account        `toml:"accounts"`
	Credentials     []Credential     `toml:"credentials"`
	TrustedNetworks []TrustedNetwork `toml:"trusted_networks"`
	Upstreams       []Upstream       `toml:"upstreams"`
	Keys            Keys             `toml:"keys"`
	Delivery        Delivery         `toml:"delivery"`
	Logs            Logs             `toml:"logs"`
	API             API              `toml:"api"`
	Store           Store            `toml:"store"` // see store.go
	// Redirector is the public HTTP edge's section; see redirector.go.
	Redirector Redirector `toml:"redirector"`

	// BaseDir is the directory relative paths are resolved against: the
	// config file's own directory when read by Load.
	BaseDir string `toml:"-"`
}

// Relay names the relay and where it keeps its data.
type Relay struct {
	Hostname string `toml:"hostname"` // EHLO name and the name in replies
	DataDir  string `toml:"data_dir"` // spool and database live here
	// ClickDomains lists extra hosts that are click domains already:
	// links to them are never rewritten.
	ClickDomains []string `toml:"click_domains"`
}

// SMTP configures the submission side: listeners, TLS and limits.
type SMTP struct {
	Listeners []Listener `toml:"listeners"`
	TLSCert   string     `toml:"tls_cert"` // PEM certificate chain file
	TLSKey    string     `toml:"tls_key"`  // PEM private key file
	// AllowPlaintextLoopback allows AUTH and mail without TLS from
	// loopback addresses. Off by default.
	AllowPlaintextLoopback bool `toml:"allow_plaintext_loopback"`

	MaxMessageBytes  int64 `toml:"max_message_bytes"`
	MaxRecipients    int   `toml:"max_recipients"`
	MaxSessions      int   `toml:"max_sessions"`
	MaxSessionsPerIP int   `toml:"max_sessions_per_ip"`
	// AuthFailuresSlow is how many failed AUTHs from one address start
	// slowing its replies down; AuthFailuresBlock refuses it for
	// AuthBlockFor.
	AuthFailuresSlow  int           `toml:"auth_failures_slow"`
	AuthFailuresBlock int           `toml:"auth_failures_block"`
	AuthBlockFor      time.Duration `toml:"auth_block_for"`
	ReadTimeout       time.Duration `toml:"read_timeout"`
	WriteTimeout      time.Duration `toml:"write_timeout"`
}

// Listener is one SMTP listening address.
type Listener struct {
	Addr string `toml:"addr"` // host:port
	Mode string `toml:"mode"` // "starttls", "implicit" or "plain"
}

// Listener modes. A plain listener speaks SMTP in clear text from the
// first byte, as a starttls one does; it still offers STARTTLS when a
// certificate is configured, and the SMTP front still refuses AUTH and
// mail without TLS unless the client is on loopback and
// allow_plaintext_loopback is set.
const (
	ModeSTARTTLS = "starttls"
	ModeImplicit = "implicit"
	ModePlain    = "plain"
)

// Account groups credentials and API keys; reports are per account.
type Account struct {
	Name string `toml:"name"`
}

// Credential is an SMTP login and its tracking settings.
type Credential struct {
	Username     string `toml:"username"`
	PasswordHash string `toml:"password_hash"` // bcrypt; make one with "trackrelay passwd"
	Account      string `toml:"account"`
	Clicks       bool   `toml:"clicks"`
	Opens        bool   `toml:"opens"`
	PreventScam  bool   `toml:"preventscam"`
	Text         bool   `toml:"text"`
	ClickDomain  string `toml:"click_domain"` // host[:port]
	Scheme       string `toml:"scheme"`       // "https" (default) or "http"
	Upstream     string `toml:"upstream"`     // upstream name; default: the first
}

// TrustedNetwork lets clients from CIDR submit without AUTH, as Credential.
type TrustedNetwork struct {
	CIDR       string `toml:"cidr"`
	Credential string `toml:"credential"` // a credential's username
}

// Upstream is where copies are delivered: an SMTP server or, for
// development, a folder that receives one .eml file per copy.
type Upstream struct {
	Name         string `toml:"name"`
	Host         string `toml:"host"`
	Port         int    `toml:"port"`
	TLS          string `toml:"tls"` // "starttls" (default), "implicit" or "none"
	CAFile       string `toml:"ca_file"`
	Username     string `toml:"username"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	PoolSize     int    `toml:"pool_size"`
	Folder       string `toml:"folder"` // set instead of host: write .eml files here
}

// Upstream TLS modes.
const (
	UpstreamSTARTTLS = "starttls"
	UpstreamImplicit = "implicit"
	UpstreamNone     = "none"
)

// Keys names the token key file (rewrite.ReadKeys format; the first key
// signs new tokens, the others are still accepted).
type Keys struct {
	KeyFile string `toml:"key_file"`
}

// Delivery tunes retries.
type Delivery struct {
	RetryBase time.Duration `toml:"retry_base"` // first retry after this
	RetryMax  time.Duration `toml:"retry_max"`  // backoff cap
	MaxAge    time.Duration `toml:"max_age"`    // give up on a copy this old
	Workers   int           `toml:"workers"`
}

// Logs configures the event logs.
type Logs struct {
	RetentionDays int `toml:"retention_days"`
}

// API is the internal listener: health, metrics and (issue 6) the REST API.
type API struct {
	Addr string   `toml:"addr"`
	Keys []APIKey `toml:"keys"`
}

// APIKey is an account's REST API key, stored as a bcrypt hash.
type APIKey struct {
	Account string `toml:"account"`
	KeyHash string `toml:"key_hash"`
}

// Defaults.
const (
	DefaultMaxMessageBytes = 32 << 20
	DefaultMaxRecipients   = 100
	DefaultPoolSize        = 8
	DefaultRetentionDays   = 90
)

//go:embed example.toml
var example []byte

// Example returns the commented example configuration.
func Example() []byte { return bytes.Clone(example) }

// Parse decodes a configuration and fills in defaults. Unknown keys are
// errors. It does not validate: call Validate.
func Parse(r io.Reader) (*Config, error) {
	c := &Config{}
	md, err := toml.NewDecoder(io.LimitReader(r, 4<<20)).Decode(c)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config: unknown keys: %s", strings.Join(keys, ", "))
	}
	c.SetDefaults()
	return c, nil
}

// Load reads, defaults and validates the file at path. Relative paths in it
// are taken relative to the file's directory.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if abs, err := filepath.Abs(filepath.Dir(path)); err == nil {
		c.BaseDir = abs
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// SetDefaults fills in every unset value that has a default.
func (c *Config) SetDefaults() {
	if c.Relay.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			c.Relay.Hostname = h
		} else {
			c.Relay.Hostname = "localhost"
		}
	}
	if c.Relay.DataDir == "" {
		c.Relay.DataDir = "data"
	}
	s := &c.SMTP
	for i := range s.Listeners {
		if s.Listeners[i].Mode == "" {
			s.Listeners[i].Mode = ModeSTARTTLS
		}
	}
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if s.MaxMessageBytes == 0 {
		s.MaxMessageBytes = DefaultMaxMessageBytes
	}
	def(&s.MaxRecipients, DefaultMaxRecipients)
	def(&s.MaxSessions, 1000)
	def(&s.MaxSessionsPerIP, 100)
	def(&s.AuthFailuresSlow, 3)
	def(&s.AuthFailuresBlock, 10)
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defDur(&s.AuthBlockFor, 15*time.Minute)
	defDur(&s.ReadTimeout, 5*time.Minute)
	defDur(&s.WriteTimeout, 5*time.Minute)
	for i := range c.Credentials {
		cr := &c.Credentials[i]
		if cr.Scheme == "" {
			cr.Scheme = "https"
		}
		if cr.Upstream == "" && len(c.Upstreams) > 0 {
			cr.Upstream = c.Upstreams[0].Name
		}
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Folder != "" {
			continue
		}
		if u.TLS == "" {
			u.TLS = UpstreamSTARTTLS
		}
		if u.Port == 0 {
			switch u.TLS {
			case UpstreamImplicit:
				u.Port = 465
			default:
				u.Port = 25
			}
		}
		def(&u.PoolSize, DefaultPoolSize)
	}
	d := &c.Delivery
	defDur(&d.RetryBase, time.Minute)
	defDur(&d.RetryMax, time.Hour)
	defDur(&d.MaxAge, 5*24*time.Hour)
	def(&d.Workers, 64)
	def(&c.Logs.RetentionDays, DefaultRetentionDays)
	if c.API.Addr == "" {
		c.API.Addr = "127.0.0.1:8025"
	}
	c.Redirector.SetDefaults()
	c.Store.SetDefaults(c.Relay.Hostname)
}

// Path resolves p against BaseDir. Empty stays empty.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.BaseDir == "" {
		return p
	}
	return filepath.Join(c.BaseDir, p)
}

// problems collects validation errors, each named by its dotted key.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// Validate checks every value and returns all problems joined, each as
// "dotted.key: problem". It is pure: it reads no files.
func (c *Config) Validate() error {
	var p problems
	if strings.ContainsAny(c.Relay.Hostname, " \t\r\n<>") {
		p.add("relay.hostname", "must be a host name")
	}
	if c.Relay.DataDir == "" {
		p.add("relay.data_dir", "must be set")
	}
	for i, d := range c.Relay.ClickDomains {
		if !validAuthority(d) {
			p.add(fmt.Sprintf("relay.click_domains[%d]", i), "%q is not host[:port]", d)
		}
	}

	s := c.SMTP
	tlsNeeded := false
	seenAddr := map[string]bool{}
	for i, l := range s.Listeners {
		k := fmt.Sprintf("smtp.listeners[%d]", i)
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			p.add(k+".addr", "%q is not host:port", l.Addr)
		} else if seenAddr[l.Addr] {
			p.add(k+".addr", "%q is listed twice", l.Addr)
		}
		seenAddr[l.Addr] = true
		switch l.Mode {
		case ModeSTARTTLS, ModeImplicit:
			tlsNeeded = true
		case ModePlain:
			// Needs no certificate.
		default:
			p.add(k+".mode", "%q: must be starttls, implicit or plain", l.Mode)
		}
	}
	if tlsNeeded && (s.TLSCert == "" || s.TLSKey == "") {
		p.add("smtp.tls_cert", "a starttls or implicit listener needs smtp.tls_cert and smtp.tls_key")
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		p.add("smtp.tls_key", "set both smtp.tls_cert and smtp.tls_key, or neither")
	}
	if s.MaxMessageBytes <= 0 {
		p.add("smtp.max_message_bytes", "must be > 0")
	}
	if s.MaxRecipients <= 0 {
		p.add("smtp.max_recipients", "must be > 0")
	}
	if s.MaxSessions <= 0 {
		p.add("smtp.max_sessions", "must be > 0")
	}
	if s.MaxSessionsPerIP <= 0 {
		p.add("smtp.max_sessions_per_ip", "must be > 0")
	} else if s.MaxSessionsPerIP > s.MaxSessions && s.MaxSessions > 0 {
		p.add("smtp.max_sessions_per_ip", "must be <= smtp.max_sessions")
	}
	if s.AuthFailuresSlow <= 0 {
		p.add("smtp.auth_failures_slow", "must be > 0")
	}
	if s.AuthFailuresBlock < s.AuthFailuresSlow {
		p.add("smtp.auth_failures_block", "must be >= smtp.auth_failures_slow")
	}
	if s.AuthBlockFor <= 0 {
		p.add("smtp.auth_block_for", "must be > 0")
	}
	if s.ReadTimeout <= 0 {
		p.add("smtp.read_timeout", "must be > 0")
	}
	if s.WriteTimeout <= 0 {
		p.add("smtp.write_timeout", "must be > 0")
	}

	accounts := map[string]bool{}
	for i, a := range c.Accounts {
		k := fmt.Sprintf("accounts[%d].name", i)
		switch {
		case !validName(a.Name):
			p.add(k, "%q: must be 1-64 letters, digits, '-', '_' or '.'", a.Name)
		case accounts[a.Name]:
			p.add(k, "%q is listed twice", a.Name)
		}
		accounts[a.Name] = true
	}

	upstreams := map[string]bool{}
	for i, u := range c.Upstreams {
		k := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case !validName(u.Name):
			p.add(k+".name", "%q: must be 1-64 letters, digits, '-', '_' or '.'", u.Name)
		case upstreams[u.Name]:
			p.add(k+".name", "%q is listed twice", u.Name)
		}
		upstreams[u.Name] = true
		if u.Folder != "" {
			if u.Host != "" || u.Username != "" || u.Password != "" || u.PasswordFile != "" {
				p.add(k+".folder", "a folder upstream takes no host, username or password")
			}
			continue
		}
		if u.Host == "" {
			p.add(k+".host", "must be set (or set folder)")
		} else if strings.ContainsAny(u.Host, " /:@") && net.ParseIP(u.Host) == nil {
			p.add(k+".host", "%q is not a host name", u.Host)
		}
		if u.Port < 1 || u.Port > 65535 {
			p.add(k+".port", "must be 1-65535")
		}
		switch u.TLS {
		case UpstreamSTARTTLS, UpstreamImplicit, UpstreamNone:
		default:
			p.add(k+".tls", "%q: must be starttls, implicit or none", u.TLS)
		}
		if u.Password != "" && u.PasswordFile != "" {
			p.add(k+".password_file", "set password or password_file, not both")
		}
		if u.Username == "" && (u.Password != "" || u.PasswordFile != "") {
			p.add(k+".username", "must be set with a password")
		}
		if u.Username != "" && u.TLS == UpstreamNone && !isLoopbackHost(u.Host) {
			p.add(k+".tls", "AUTH over an unencrypted connection would send the password in clear")
		}
		if u.PoolSize < 1 || u.PoolSize > 1000 {
			p.add(k+".pool_size", "must be 1-1000")
		}
	}

	creds := map[string]bool{}
	for i, cr := range c.Credentials {
		k := fmt.Sprintf("credentials[%d]", i)
		switch {
		case cr.Username == "" || len(cr.Username) > 256 || strings.ContainsAny(cr.Username, "\x00\r\n"):
			p.add(k+".username", "must be 1-256 bytes without NUL or line breaks")
		case creds[cr.Username]:
			p.add(k+".username", "%q is listed twice", cr.Username)
		}
		creds[cr.Username] = true
		if !validBcrypt(cr.PasswordHash) {
			p.add(k+".password_hash", "must be a bcrypt hash (make one with \"trackrelay passwd\")")
		}
		if !accounts[cr.Account] {
			p.add(k+".account", "%q is not in accounts", cr.Account)
		}
		if (cr.Clicks || cr.Opens) && cr.ClickDomain == "" {
			p.add(k+".click_domain", "must be set when clicks or opens are tracked")
		}
		if cr.ClickDomain != "" && !validAuthority(cr.ClickDomain) {
			p.add(k+".click_domain", "%q is not host[:port]", cr.ClickDomain)
		}
		if cr.Scheme != "http" && cr.Scheme != "https" {
			p.add(k+".scheme", "%q: must be http or https", cr.Scheme)
		}
		if !upstreams[cr.Upstream] {
			p.add(k+".upstream", "%q is not in upstreams", cr.Upstream)
		}
	}
	for i, tn := range c.TrustedNetworks {
		k := fmt.Sprintf("trusted_networks[%d]", i)
		if _, err := netip.ParsePrefix(tn.CIDR); err != nil {
			p.add(k+".cidr", "%q is not a CIDR prefix", tn.CIDR)
		}
		if !creds[tn.Credential] {
			p.add(k+".credential", "%q is not in credentials", tn.Credential)
		}
	}
	if c.Keys.KeyFile == "" && (len(c.Credentials) > 0 || len(c.SMTP.Listeners) > 0) {
		p.add("keys.key_file", "must be set (make a key with \"trackrelay keygen\")")
	}
	d := c.Delivery
	if d.RetryBase <= 0 {
		p.add("delivery.retry_base", "must be > 0")
	}
	if d.RetryMax < d.RetryBase {
		p.add("delivery.retry_max", "must be >= delivery.retry_base")
	}
	if d.MaxAge <= 0 {
		p.add("delivery.max_age", "must be > 0")
	}
	if d.Workers < 1 || d.Workers > 10000 {
		p.add("delivery.workers", "must be 1-10000")
	}
	if c.Logs.RetentionDays < 1 {
		p.add("logs.retention_days", "must be >= 1")
	}
	if _, _, err := net.SplitHostPort(c.API.Addr); err != nil {
		p.add("api.addr", "%q is not host:port", c.API.Addr)
	}
	for i, k := range c.API.Keys {
		key := fmt.Sprintf("api.keys[%d]", i)
		if !accounts[k.Account] {
			p.add(key+".account", "%q is not in accounts", k.Account)
		}
		if !validBcrypt(k.KeyHash) {
			p.add(key+".key_hash", "must be a bcrypt hash (make one with \"trackrelay passwd\")")
		}
	}
	if err := c.Redirector.Validate(); err != nil {
		p = append(p, err)
	}
	if err := c.Store.Validate(); err != nil {
		p = append(p, err)
	}
	return errors.Join(p...)
}

// CheckFiles reads the files the configuration names (key file, TLS
// certificate and key, upstream password and CA files) and reports those
// that are missing or unreadable. Unlike Validate it touches the file
// system; check-config and start-up call both.
func (c *Config) CheckFiles() error {
	var p problems
	check := func(key, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(c.Path(path))
		if err != nil {
			p.add(key, "%v", err)
			return
		}
		f.Close()
	}
	check("keys.key_file", c.Keys.KeyFile)
	check("smtp.tls_cert", c.SMTP.TLSCert)
	check("smtp.tls_key", c.SMTP.TLSKey)
	for i, u := range c.Upstreams {
		check(fmt.Sprintf("upstreams[%d].password_file", i), u.PasswordFile)
		check(fmt.Sprintf("upstreams[%d].ca_file", i), u.CAFile)
	}
	return errors.Join(p...)
}

// Credential returns the credential named username, or nil.
func (c *Config) Credential(username string) *Credential {
	for i := range c.Credentials {
		if c.Credentials[i].Username == username {
			return &c.Credentials[i]
		}
	}
	return nil
}

// UpstreamPassword returns u's password, reading PasswordFile if set (its
// first line, without surrounding space).
func (c *Config) UpstreamPassword(u *Upstream) (string, error) {
	if u.PasswordFile == "" {
		return u.Password, nil
	}
	b, err := os.ReadFile(c.Path(u.PasswordFile))
	if err != nil {
		return "", fmt.Errorf("config: upstream %s: %w", u.Name, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line), nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validBcrypt(h string) bool {
	return len(h) == 60 && (strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$"))
}

// validAuthority accepts host[:port] as it goes into a URL.
func validAuthority(s string) bool {
	if s == "" || strings.ContainsAny(s, "/\\@?#% \t\r\n\"<>") {
		return false
	}
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	} else if strings.Count(s, ":") == 1 {
		return false
	}
	return host != "" && len(host) <= 253
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

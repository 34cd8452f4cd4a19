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
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
	// ACME and Domains: click domains' certificates and checks; see
	// acme.go and domains.go.
	ACME     ACME     `toml:"acme"`
	Domains  Domains  `toml:"domains"`
	DKIM     DKIM     `toml:"dkim"`     // see dkim.go
	Webhooks Webhooks `toml:"webhooks"` // see webhooks.go
	Inbound  Inbound  `toml:"inbound"`  // the mail that comes back; see inbound.go

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
	// MinFreeBytes is the free space mail intake leaves on the disk of
	// data_dir: below it, SMTP answers 452 4.3.1 and the REST API 503.
	MinFreeBytes int64 `toml:"min_free_bytes"`
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
	// MaxUnauthSessionsPerNet bounds the connections from one /24 (IPv4)
	// or /64 (IPv6) that have not authenticated yet.
	MaxUnauthSessionsPerNet int `toml:"max_unauth_sessions_per_net"`
	// MaxLineBytes is the longest line taken, in commands and in message
	// data alike; a message with a longer one is refused with 554 5.6.0.
	MaxLineBytes int `toml:"max_line_bytes"`
	// AuthFailuresSlow is how many failed AUTHs of one username from one
	// address start slowing its replies down; AuthFailuresBlock refuses
	// that username there for AuthBlockFor; AuthFailuresBlockAddress
	// failures from one address, whatever the usernames, refuse the
	// address. Trusted networks and successful logins are never counted.
	AuthFailuresSlow         int           `toml:"auth_failures_slow"`
	AuthFailuresBlock        int           `toml:"auth_failures_block"`
	AuthFailuresBlockAddress int           `toml:"auth_failures_block_address"`
	AuthBlockFor             time.Duration `toml:"auth_block_for"`
	// AuthTimeout is how long a connection may stay without AUTH
	// (trusted networks aside).
	AuthTimeout time.Duration `toml:"auth_timeout"`
	// ReadTimeout is an idle limit: per command, and per read of message
	// data. DataTimeout bounds one message's data as a whole.
	ReadTimeout  time.Duration `toml:"read_timeout"`
	DataTimeout  time.Duration `toml:"data_timeout"`
	WriteTimeout time.Duration `toml:"write_timeout"`
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

// Credential is an SMTP login and its tracking settings. In a file,
// clicks and opens default to true when click_domain is set (tracking is
// what the relay is for); a credential without a click domain tracks
// nothing unless it says so (and then Validate asks for the domain).
type Credential struct {
	Username     string `toml:"username"`
	PasswordHash string `toml:"password_hash"` // bcrypt; make one with "trackrelay passwd"
	Account      string `toml:"account"`
	Clicks       bool   `toml:"clicks"`
	Opens        bool   `toml:"opens"`
	PreventScam  bool   `toml:"preventscam"`
	Text         bool   `toml:"text"`
	// TrackSigned tracks messages the sender already DKIM-signed, which
	// breaks their signature; off by default (they pass through as sent).
	TrackSigned bool   `toml:"track_signed"`
	ClickDomain string `toml:"click_domain"` // host[:port]
	Scheme      string `toml:"scheme"`       // "https" (default) or "http"
	Upstream    string `toml:"upstream"`     // upstream name; default: the first
}

// decoded fills in the defaults that depend on which keys the file set.
func (cr *Credential) decoded(set map[string]bool) {
	if cr.ClickDomain == "" {
		return
	}
	if !set["clicks"] {
		cr.Clicks = true
	}
	if !set["opens"] {
		cr.Opens = true
	}
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
	// RetentionDaysByLog keeps some logs a different number of days than
	// RetentionDays (clicks and opens shorter than deliveries, say), by
	// log name. An account's own setting wins over both.
	RetentionDaysByLog map[string]int `toml:"retention_days_by_log"`
}

// LogNames are the event logs, for logs.retention_days_by_log (the store
// defines them; this list must match store.Logs, which a test checks).
var LogNames = []string{"attempts", "deliveries", "failures", "clicks", "opens", "bounces", "responses", "complaints", "dmarc"}

// API is the internal listener: health, metrics and (issue 6) the REST API.
type API struct {
	Addr string   `toml:"addr"`
	Keys []APIKey `toml:"keys"`
	// DashboardURL is where people open the dashboard when a
	// TLS-terminating proxy stands in front of the listener
	// ("https://relay.example.com"): cookies are then Secure, forms must
	// come from that origin, and a login's address is the last
	// X-Forwarded-For entry.
	DashboardURL string `toml:"dashboard_url"`
}

// APIKey is an account's REST API key, stored as a bcrypt hash.
type APIKey struct {
	Account string `toml:"account"`
	KeyHash string `toml:"key_hash"`
}

// Defaults.
const (
	DefaultMaxMessageBytes  = 32 << 20
	DefaultMaxRecipients    = 100
	DefaultPoolSize         = 8
	DefaultRetentionDays    = 90
	DefaultMinFreeBytes     = 100 << 20
	DefaultMaxLineBytes     = 1 << 20
	DefaultMaxUnauthPerNet  = 50
	DefaultAuthTimeout      = 45 * time.Second
	DefaultDataTimeout      = time.Hour
	DefaultAuthBlockAddress = 30
)

//go:embed example.toml
var example []byte

// Example returns the commented example configuration.
func Example() []byte { return bytes.Clone(example) }

// Parse decodes a configuration and fills in defaults. Unknown keys and
// values of the wrong type are errors, all of them reported, each by its
// dotted key. It does not validate: call Validate.
func Parse(r io.Reader) (*Config, error) {
	c, errs, err := Decode(r)
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return c, nil
}

// Decode decodes a configuration and fills in defaults, key by key: a
// value of the wrong type, or a key that does not exist, is one problem in
// problems (named by its dotted key, without the "config: " prefix) and
// the rest is still decoded, so that every problem is found in one run.
// Only a TOML syntax error (err) stops it.
func Decode(r io.Reader) (c *Config, problems []error, err error) {
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(io.LimitReader(r, 4<<20)).Decode(&top)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	c = &Config{}
	d := &decoder{md: md}
	d.table(top, reflect.ValueOf(c).Elem(), "")
	c.SetDefaults()
	return c, d.errs, nil
}

// decoder decodes a parsed document into the configuration's structs one
// key at a time (BurntSushi/toml stops at the first type error).
type decoder struct {
	md   toml.MetaData
	errs []error
}

func (d *decoder) bad(key, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// table decodes the keys of one TOML table into the struct v.
func (d *decoder) table(m map[string]toml.Primitive, v reflect.Value, path string) map[string]bool {
	fields := map[string]int{}
	for i := 0; i < v.NumField(); i++ {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ","); name != "" && name != "-" {
			fields[name] = i
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := map[string]bool{}
	for _, k := range keys {
		key := k
		if path != "" {
			key = path + "." + k
		}
		i, ok := fields[k]
		if !ok {
			d.bad(key, "unknown key")
			continue
		}
		set[k] = true
		d.value(m[k], v.Field(i), key)
	}
	if dd, ok := v.Addr().Interface().(interface{ decoded(map[string]bool) }); ok {
		dd.decoded(set)
	}
	return set
}

var durationType = reflect.TypeFor[time.Duration]()

// tomlKind names the Go types BurntSushi/toml reports for TOML values.
var tomlKind = strings.NewReplacer("int64", "integer", "float64", "float", "bool", "boolean",
	"[]interface {}", "array", "map[string]interface {}", "table", "time.Time", "date-time")

// value decodes one value into v: a table into a struct, an array of
// tables into a slice of structs, anything else as BurntSushi/toml does.
func (d *decoder) value(p toml.Primitive, v reflect.Value, key string) {
	switch {
	case v.Kind() == reflect.Struct:
		var m map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(p, &m); err != nil {
			d.bad(key, "want a table")
			return
		}
		d.table(m, v, key)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		var list []toml.Primitive
		if err := d.md.PrimitiveDecode(p, &list); err != nil {
			d.bad(key, "want an array of tables ([[%s]])", key)
			return
		}
		out := reflect.MakeSlice(v.Type(), len(list), len(list))
		for i, e := range list {
			d.value(e, out.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(out)
	default:
		if err := d.md.PrimitiveDecode(p, v.Addr().Interface()); err != nil {
			v.Set(reflect.Zero(v.Type()))
			d.bad(key, "%s", typeProblem(err, v.Type()))
		}
	}
}

// typeProblem words a decoding error of one value without the library's
// prefix and key (the caller names the key).
func typeProblem(err error, t reflect.Type) string {
	msg := err.Error()
	line := ""
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg = pe.Message
		if pe.Position.Line > 0 {
			line = fmt.Sprintf(" (line %d)", pe.Position.Line)
		}
	}
	msg = strings.TrimPrefix(msg, "toml: ")
	// "line 7 (last key "smtp.x"): ...": the caller names the key.
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, " "); ok {
			if _, tail, ok := strings.Cut(after, "): "); ok {
				msg, line = tail, " (line "+n+")"
			}
		}
	}
	if rest, ok := strings.CutPrefix(msg, "incompatible types: TOML value has type "); ok {
		if got, want, ok := strings.Cut(rest, "; destination has type "); ok {
			if t == durationType {
				want = "a duration such as \"30s\" or \"5m\""
			}
			msg = "want " + want + ", not " + tomlKind.Replace(got)
		}
	}
	return msg + line
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

// Check reads the file at path and returns every problem with it found in
// one run: keys that do not decode or do not exist, what Validate finds
// in what did decode, and the files CheckFiles cannot open, each by its
// dotted key (none repeats the file's name). A key that did not decode is
// not reported again by the checks after it. Only a file that cannot be
// read or a TOML syntax error stops it early. The Config is nil then.
func Check(path string) (*Config, []error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, []error{err}
	}
	defer f.Close()
	c, problems, err := Decode(f)
	if err != nil {
		return nil, []error{errors.Unwrap(err)}
	}
	if abs, err := filepath.Abs(filepath.Dir(path)); err == nil {
		c.BaseDir = abs
	}
	undecoded := make([]string, 0, len(problems))
	for _, p := range problems {
		k, _, _ := strings.Cut(p.Error(), ": ")
		undecoded = append(undecoded, k)
	}
	for _, e := range append(split(c.Validate()), split(c.CheckFiles())...) {
		k, _, _ := strings.Cut(e.Error(), ": ")
		if !slices.ContainsFunc(undecoded, func(u string) bool { return k == u || strings.HasPrefix(k, u+".") || strings.HasPrefix(k, u+"[") }) {
			problems = append(problems, e)
		}
	}
	return c, problems
}

// split undoes errors.Join (nested ones too).
func split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, split(e)...)
		}
		return out
	}
	return []error{err}
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
	if c.Relay.MinFreeBytes == 0 {
		c.Relay.MinFreeBytes = DefaultMinFreeBytes
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
	def(&s.MaxUnauthSessionsPerNet, DefaultMaxUnauthPerNet)
	def(&s.MaxLineBytes, DefaultMaxLineBytes)
	def(&s.AuthFailuresSlow, 3)
	def(&s.AuthFailuresBlock, 10)
	def(&s.AuthFailuresBlockAddress, DefaultAuthBlockAddress)
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defDur(&s.AuthBlockFor, 15*time.Minute)
	defDur(&s.AuthTimeout, DefaultAuthTimeout)
	defDur(&s.DataTimeout, DefaultDataTimeout)
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
	c.ACME.SetDefaults()
	c.DKIM.SetDefaults()
	c.Webhooks.SetDefaults()
	c.Inbound.SetDefaults()
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
	if c.Relay.MinFreeBytes < 0 {
		p.add("relay.min_free_bytes", "must be >= 0")
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
	if s.MaxUnauthSessionsPerNet <= 0 {
		p.add("smtp.max_unauth_sessions_per_net", "must be > 0")
	}
	if s.MaxLineBytes < 1000 {
		p.add("smtp.max_line_bytes", "must be >= 1000 (RFC 5321 lines are up to 1000 bytes)")
	} else if int64(s.MaxLineBytes) > s.MaxMessageBytes && s.MaxMessageBytes > 0 {
		p.add("smtp.max_line_bytes", "must be <= smtp.max_message_bytes")
	}
	if s.AuthFailuresSlow <= 0 {
		p.add("smtp.auth_failures_slow", "must be > 0")
	}
	if s.AuthFailuresBlock < s.AuthFailuresSlow {
		p.add("smtp.auth_failures_block", "must be >= smtp.auth_failures_slow")
	}
	if s.AuthFailuresBlockAddress < s.AuthFailuresBlock {
		p.add("smtp.auth_failures_block_address", "must be >= smtp.auth_failures_block")
	}
	if s.AuthTimeout <= 0 {
		p.add("smtp.auth_timeout", "must be > 0")
	}
	if s.DataTimeout < s.ReadTimeout {
		p.add("smtp.data_timeout", "must be >= smtp.read_timeout")
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
		switch {
		case cr.Scheme != "http" && cr.Scheme != "https":
			p.add(k+".scheme", "%q: must be http or https", cr.Scheme)
		case cr.Scheme == "http" && !c.redirectorServesHTTP():
			p.add(k+".scheme", "\"http\": the redirector has no plain-HTTP listener (redirector.tls_cert is set), so http links would not open; use https")
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
	for name, days := range c.Logs.RetentionDaysByLog {
		k := "logs.retention_days_by_log." + name
		switch {
		case !slices.Contains(LogNames, name):
			p.add(k, "no such log; the logs are %s", strings.Join(LogNames, ", "))
		case days < 1:
			p.add(k, "must be >= 1")
		}
	}
	if _, _, err := net.SplitHostPort(c.API.Addr); err != nil {
		p.add("api.addr", "%q is not host:port", c.API.Addr)
	}
	if u := c.API.DashboardURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || (pu.Path != "" && pu.Path != "/") {
			p.add("api.dashboard_url", "%q: want https://host[:port]", u)
		}
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
	if c.Redirector.MinFreeBytes > 0 && c.Relay.MinFreeBytes > 0 && c.Redirector.MinFreeBytes <= c.Relay.MinFreeBytes {
		// Hits stop growing files first, so that below the hits' floor
		// the space between the two floors stays for mail.
		p.add("redirector.min_free_bytes", "must be above relay.min_free_bytes (%d), so hits never take the space mail needs", c.Relay.MinFreeBytes)
	}
	p = append(p, c.ACME.Validate(), c.Domains.Validate(), c.validateRedirectorTLS(), c.DKIM.Validate(), c.Webhooks.Validate(), c.Inbound.Validate()) // nils are dropped by Join
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
	check("acme.ca_file", c.ACME.CAFile)
	for i, u := range c.Upstreams {
		check(fmt.Sprintf("upstreams[%d].password_file", i), u.PasswordFile)
		check(fmt.Sprintf("upstreams[%d].ca_file", i), u.CAFile)
	}
	return errors.Join(p...)
}

// redirectorServesHTTP says whether the redirector has a plain-HTTP
// listener, which links with scheme "http" need. The one place for this
// rule: the redirector's listener is HTTPS when redirector.tls_cert is
// set and there is no separate HTTPS listener; with one (tls_listen) the
// listener stays plain HTTP.
func (c *Config) redirectorServesHTTP() bool {
	return c.Redirector.TLSCert == "" || c.Redirector.TLSListen != ""
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

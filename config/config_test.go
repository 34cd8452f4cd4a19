package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleParsesAndValidates(t *testing.T) {
	c, err := Parse(bytes.NewReader(Example()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example.toml does not validate:\n%v", err)
	}
	if len(c.SMTP.Listeners) != 2 || c.Credentials[0].Upstream != "smarthost" || c.Upstreams[0].PoolSize != DefaultPoolSize {
		t.Errorf("example parsed as %+v", c)
	}
	if c.Delivery.MaxAge != 5*24*time.Hour || c.SMTP.MaxMessageBytes != DefaultMaxMessageBytes {
		t.Errorf("defaults not applied: %+v", c.Delivery)
	}
}

const minimal = `
[relay]
data_dir = "d"
[[smtp.listeners]]
addr = "127.0.0.1:2525"
mode = "plain"
[[accounts]]
name = "a"
[[credentials]]
username = "u"
password_hash = "$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq"
account = "a"
clicks = true
click_domain = "click.example.com"
[[upstreams]]
name = "out"
folder = "outbox"
[keys]
key_file = "k"
`

func TestMinimalValid(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Credentials[0].Scheme != "https" || c.Credentials[0].Upstream != "out" || c.API.Addr != "127.0.0.1:8025" {
		t.Errorf("defaults: %+v %+v", c.Credentials[0], c.API)
	}
	if c.SMTP.AllowPlaintextLoopback || len(c.TrustedNetworks) != 0 {
		t.Error("insecure default")
	}
}

func TestValidateProblems(t *testing.T) {
	for _, tc := range []struct {
		name, edit string
		want       []string
	}{
		{"size", "[smtp]\nmax_message_bytes = -1\n", []string{"smtp.max_message_bytes: must be > 0"}},
		{"recipients", "[smtp]\nmax_recipients = -5\n", []string{"smtp.max_recipients: must be > 0"}},
		{"mode", "[[smtp.listeners]]\naddr = \"127.0.0.1:1\"\nmode = \"ssl\"\n", []string{"smtp.listeners[1].mode: \"ssl\": must be starttls, implicit or plain"}},
		{"tls without cert", "[[smtp.listeners]]\naddr = \"127.0.0.1:1\"\n", []string{"smtp.tls_cert: a starttls or implicit listener needs"}},
		{"bad addr", "[[smtp.listeners]]\naddr = \"nohost\"\nmode = \"plain\"\n", []string{"smtp.listeners[1].addr"}},
		{"dup addr", "[[smtp.listeners]]\naddr = \"127.0.0.1:2525\"\nmode = \"plain\"\n", []string{"smtp.listeners[1].addr: \"127.0.0.1:2525\" is listed twice"}},
		{"hash", "[[credentials]]\nusername = \"v\"\npassword_hash = \"secret\"\naccount = \"a\"\n", []string{"credentials[1].password_hash: must be a bcrypt hash"}},
		{"account", "[[credentials]]\nusername = \"v\"\npassword_hash = \"$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq\"\naccount = \"zz\"\n", []string{"credentials[1].account: \"zz\" is not in accounts"}},
		{"dup user", "[[credentials]]\nusername = \"u\"\npassword_hash = \"$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq\"\naccount = \"a\"\n", []string{"credentials[1].username: \"u\" is listed twice"}},
		{"click domain", "[[credentials]]\nusername = \"v\"\npassword_hash = \"$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq\"\naccount = \"a\"\nopens = true\nclick_domain = \"x/y\"\nscheme = \"ftp\"\nupstream = \"nope\"\n",
			[]string{"credentials[1].click_domain: \"x/y\" is not host[:port]", "credentials[1].scheme", "credentials[1].upstream: \"nope\" is not in upstreams"}},
		{"trusted", "[[trusted_networks]]\ncidr = \"10.0.0.300/8\"\ncredential = \"ghost\"\n", []string{"trusted_networks[0].cidr", "trusted_networks[0].credential: \"ghost\""}},
		{"upstream", "[[upstreams]]\nname = \"out\"\nport = 70000\ntls = \"tls\"\npassword = \"p\"\npassword_file = \"f\"\npool_size = -1\n",
			[]string{"upstreams[1].name: \"out\" is listed twice", "upstreams[1].host: must be set", "upstreams[1].port", "upstreams[1].tls", "upstreams[1].password_file", "upstreams[1].username", "upstreams[1].pool_size"}},
		{"cleartext auth", "[[upstreams]]\nname = \"x\"\nhost = \"mx.example.com\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n", []string{"upstreams[1].tls: AUTH over an unencrypted connection"}},
		{"delivery", "[delivery]\nretry_base = \"1h\"\nretry_max = \"1m\"\nmax_age = \"-1s\"\n", []string{"delivery.retry_max: must be >= delivery.retry_base", "delivery.max_age: must be > 0"}},
		{"api", "[api]\naddr = \"x\"\n[[api.keys]]\naccount = \"q\"\nkey_hash = \"k\"\n", []string{"api.addr", "api.keys[0].account", "api.keys[0].key_hash"}},
		{"retention", "[logs]\nretention_days = -1\n", []string{"logs.retention_days: must be >= 1"}},
		{"auth limits", "[smtp]\nauth_failures_slow = 5\nauth_failures_block = 2\n", []string{"smtp.auth_failures_block: must be >= smtp.auth_failures_slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := minimal + tc.edit
			// A second [smtp] table is a TOML error; merge it into the first.
			if strings.HasPrefix(tc.edit, "[smtp]\n") {
				src = strings.Replace(minimal, "[[smtp.listeners]]", tc.edit+"[[smtp.listeners]]", 1)
			}
			c, err := Parse(strings.NewReader(src))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if err == nil {
				t.Fatal("no problem reported")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems do not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidateJoinsEveryProblem(t *testing.T) {
	c, err := Parse(strings.NewReader("[smtp]\nmax_message_bytes = -1\nmax_recipients = -1\n[logs]\nretention_days = -3\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || strings.Count(err.Error(), "\n") < 2 {
		t.Fatalf("want every problem, got: %v", err)
	}
	// Validate is pure: a second call gives the same answer, c unchanged.
	before := *c
	if err2 := c.Validate(); err2 == nil || err2.Error() != err.Error() || c.SMTP.MaxMessageBytes != before.SMTP.MaxMessageBytes {
		t.Fatal("Validate is not pure")
	}
}

func TestUnknownKeysRefused(t *testing.T) {
	for _, src := range []string{"[relay]\nhostnme = \"x\"\n", "[[credentials]]\nusername = \"u\"\npassword = \"plain\"\n", "[bogus]\n"} {
		_, err := Parse(strings.NewReader(src))
		if err == nil {
			t.Errorf("%q: accepted", src)
		}
	}
	_, err := Parse(strings.NewReader("[relay]\nhostnme = \"x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "relay.hostnme") {
		t.Errorf("error does not name the key: %v", err)
	}
	if _, err := Parse(strings.NewReader("[delivery]\nmax_age = \"soon\"\n")); err == nil {
		t.Error("bad duration accepted")
	}
}

func TestLoadResolvesPathsAndCheckFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Path("k"); got != filepath.Join(dir, "k") {
		t.Errorf("Path = %q", got)
	}
	if err := c.CheckFiles(); err == nil || !strings.Contains(err.Error(), "keys.key_file") {
		t.Errorf("missing key file not reported: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "k"), []byte("1 x\n"), 0o600)
	if err := c.CheckFiles(); err != nil {
		t.Errorf("CheckFiles: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "pw"), []byte("  s3cret \nignored\n"), 0o600)
	u := &Upstream{Name: "x", PasswordFile: "pw"}
	if pw, err := c.UpstreamPassword(u); err != nil || pw != "s3cret" {
		t.Errorf("UpstreamPassword = %q, %v", pw, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("missing file loaded")
	}
}

// Credentials track clicks and opens unless told not to, when they have a
// click domain; one without a click domain keeps working, tracking nothing.
func TestCredentialTrackingDefaults(t *testing.T) {
	const hash = "$2a$10$wZfFxep1cB.Wy.5RlVvo.ecILBtol3uCu0Algd2alryQC5x1NgcBq"
	src := strings.Replace(minimal, "clicks = true\n", "", 1) + `
[[credentials]]
username = "off"
password_hash = "` + hash + `"
account = "a"
click_domain = "click.example.com"
clicks = false
track_signed = true
[[credentials]]
username = "nodomain"
password_hash = "` + hash + `"
account = "a"
`
	c, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user                       string
		clicks, opens, trackSigned bool
	}{{"u", true, true, false}, {"off", false, true, true}, {"nodomain", false, false, false}} {
		cr := c.Credential(tc.user)
		if cr.Clicks != tc.clicks || cr.Opens != tc.opens || cr.TrackSigned != tc.trackSigned {
			t.Errorf("%s: clicks %v opens %v track_signed %v, want %v %v %v", tc.user, cr.Clicks, cr.Opens, cr.TrackSigned, tc.clicks, tc.opens, tc.trackSigned)
		}
	}
	// A Config built in Go keeps its zero values.
	var cr Credential
	if cr.Clicks || cr.Opens {
		t.Error("zero Credential tracks")
	}
}

// Decode reports every value of the wrong type by its dotted key and still
// decodes the others.
func TestDecodeKeyByKey(t *testing.T) {
	src := "[relay]\ndata_dir = 5\nhostname = \"h\"\n[smtp]\nmax_recipients = \"x\"\nmax_sessions = 7\n[[upstreams]]\nname = \"u\"\nport = \"25\"\nhost = \"mx.test\"\n[logs]\nretention_days = 3\nbogus = 1\n[delivery]\nworkers = 1.5\n"
	c, problems, err := Decode(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Error())
	}
	want := []string{
		"relay.data_dir: want string, not integer (line 2)",
		"smtp.max_recipients: want integer, not string (line 5)",
		"upstreams[0].port: want integer, not string (line 9)",
		"logs.bogus: unknown key",
		"delivery.workers: want integer, not float (line 15)",
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("problems lack %q: %q", w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d: %q", len(got), len(want), got)
	}
	if c.Relay.Hostname != "h" || c.SMTP.MaxSessions != 7 || c.Upstreams[0].Host != "mx.test" || c.Logs.RetentionDays != 3 {
		t.Errorf("the good keys were not decoded: %+v", c)
	}
	if c.SMTP.MaxRecipients != DefaultMaxRecipients {
		t.Errorf("a bad value did not fall back to its default: %d", c.SMTP.MaxRecipients)
	}
	if _, err := Parse(strings.NewReader(src)); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Parse: %v", err)
	}
	if _, _, err := Decode(strings.NewReader("[relay\n")); err == nil {
		t.Error("a syntax error decoded")
	}
}

func TestNewSMTPKeys(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	s := c.SMTP
	if s.DataTimeout != DefaultDataTimeout || s.AuthTimeout != DefaultAuthTimeout || s.MaxLineBytes != DefaultMaxLineBytes ||
		s.MaxUnauthSessionsPerNet != DefaultMaxUnauthPerNet || s.AuthFailuresBlockAddress != DefaultAuthBlockAddress ||
		c.Relay.MinFreeBytes != DefaultMinFreeBytes {
		t.Errorf("defaults: %+v %+v", s, c.Relay)
	}
	for _, tc := range []struct{ edit, want string }{
		{"data_timeout = \"1m\"\n", "smtp.data_timeout: must be >= smtp.read_timeout"},
		{"max_line_bytes = 10\n", "smtp.max_line_bytes: must be >= 1000"},
		{"auth_failures_block_address = 2\n", "smtp.auth_failures_block_address: must be >= smtp.auth_failures_block"},
		{"auth_timeout = \"-1s\"\n", "smtp.auth_timeout: must be > 0"},
		{"max_unauth_sessions_per_net = -1\n", "smtp.max_unauth_sessions_per_net: must be > 0"},
	} {
		c, err := Parse(strings.NewReader(strings.Replace(minimal, "[[smtp.listeners]]", "[smtp]\n"+tc.edit+"[[smtp.listeners]]", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.edit, err)
		}
	}
	c.Redirector.TLSCert, c.Redirector.TLSKey = "c", "k"
	c.Credentials[0].Scheme = "http"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "credentials[0].scheme") {
		t.Errorf("http credential with an HTTPS-only redirector: %v", err)
	}
	c.Redirector.TLSCert, c.Redirector.TLSKey = "", ""
	if err := c.Validate(); err != nil {
		t.Errorf("http credential with a plain redirector: %v", err)
	}
}

// Every key of the file, with its default, is in example.toml (set, or
// commented out). [redirector] is checked by its own tests.
func TestExampleShowsEveryKey(t *testing.T) {
	ex := string(Example())
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := f.Tag.Get("toml")
			if name == "" || name == "-" || path == "" && name == "redirector" {
				continue // [redirector] has its own tests
			}
			key := strings.TrimPrefix(path+"."+name, ".")
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]() {
				walk(ft, key)
				continue
			}
			re := regexp.MustCompile(`(?m)^#? *` + regexp.QuoteMeta(name) + ` *=`)
			if !re.MatchString(ex) {
				t.Errorf("example.toml does not show %s", key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

// Links with scheme "http" need a plain-HTTP redirector listener: refused
// when tls_cert makes the one listener HTTPS, accepted when tls_listen
// serves HTTPS beside it (redirector/acme.go: the listener stays plain).
func TestHTTPSchemeNeedsPlainListener(t *testing.T) {
	for _, tc := range []struct {
		redirector string
		ok         bool
	}{
		{"", true},
		{"[redirector]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n", false},
		{"[redirector]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_listen = \"127.0.0.1:8443\"\n", true},
	} {
		c, err := Parse(strings.NewReader(strings.Replace(minimal, "[[upstreams]]", "scheme = \"http\"\n[[upstreams]]", 1) + tc.redirector))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if refused := err != nil && strings.Contains(err.Error(), "no plain-HTTP listener"); refused == tc.ok {
			t.Errorf("%q: validate says %v", tc.redirector, err)
		}
	}
}

package smtpd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// corpusAddresses returns envelope-like addresses from the headers of the
// shared MIME corpus, to seed the address fuzzer with real inputs.
func corpusAddresses(t testing.TB, max int) []string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "corpora", "mime")
	if _, err := os.Stat(dir); err != nil {
		t.Logf("%s absent: seeding from built-in addresses only", dir)
		return nil
	}
	re := regexp.MustCompile(`<([^<>\s]{1,300}@[^<>\s]{1,300})>`)
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || len(out) >= max {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		hdr, _, _ := bytes.Cut(data, []byte("\n\n"))
		for _, m := range re.FindAllSubmatch(hdr, 4) {
			out = append(out, string(m[1]))
		}
		return nil
	})
	return out
}

func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{
		"a@example.com", "jos\u00e9@example.es", "a@[192.0.2.1]", "a@[IPv6:2001:db8::1]",
		"a..b@example.com", "a@b@c", "\"q\"@x.org", "a@-x.org", "x@" + strings.Repeat("a", 64) + ".com", "@", "",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	for _, s := range corpusAddresses(f, 300) {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, addr string, utf8ok bool) {
		err := checkAddress(addr, utf8ok, errBadRecipient)
		if err != nil {
			if err != errBadRecipient && err != errNeedUTF8 {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		at := strings.LastIndexByte(addr, '@')
		if at <= 0 || at > maxLocalLen || len(addr)-at-1 > maxDomainLen || len(addr) > maxPathLen {
			t.Fatalf("accepted %q: bad shape", addr)
		}
		if !utf8.ValidString(addr) || strings.ContainsAny(addr, "\x00\r\n\t <>") {
			t.Fatalf("accepted %q: unsafe characters", addr)
		}
		if !utf8ok {
			for i := 0; i < len(addr); i++ {
				if addr[i] >= 0x80 {
					t.Fatalf("accepted non-ASCII %q without SMTPUTF8", addr)
				}
			}
		}
		if strings.Count(addr, "@") != 1 {
			t.Fatalf("accepted %q with %d @", addr, strings.Count(addr, "@"))
		}
	})
}

// FuzzSessionInput sends arbitrary bytes to a real server over TCP, with
// plaintext allowed on loopback so every command is reachable. No password
// can be guessed (it is random per run) and no network is trusted, so
// whatever the input, nothing may be submitted; the server must neither
// panic nor hang.
func FuzzSessionInput(f *testing.F) {
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	hash, err := bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(pw[:])), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	e := newEnv(f, func(c *ServerConfig) {
		c.AllowPlaintextLoopback = true
		c.Users = map[string]User{testUser: {Hash: hash, Cred: &Credential{Username: testUser}}}
		c.ReadTimeout = 5 * time.Second
		c.AuthDelay = time.Microsecond
		c.AuthBlockAfter = 1 << 30
		c.MaxMessageBytes = 4096
	})
	for _, s := range []string{
		"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO x\r\nAUTH PLAIN " + b64("\x00app\x00guess") + "\r\nMAIL FROM:<a@b.c>\r\n",
		"EHLO x\r\nAUTH LOGIN\r\n" + b64("app") + "\r\n" + b64("guess") + "\r\n",
		"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 3 LAST\r\nabcRSET\r\n",
		"HELO x\r\nMAIL FROM:<> SIZE=99999999999\r\nRCPT TO:<\"a b\"@c>\r\nNOOP\r\n",
		"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN =\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			_, _ = c.Write(input)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		br := bufio.NewReader(c)
		if _, err := io.Copy(io.Discard, br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("server hangs on %q", input)
			}
		}
		if n := e.sub.count(); n != 0 {
			t.Fatalf("%d messages submitted without authentication, input %q", n, input)
		}
	})
}

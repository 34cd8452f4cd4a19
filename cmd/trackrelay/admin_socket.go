package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trackrelay/trackrelay/config"
)

// The admin socket is how the command-line tools (domains, dkim, user)
// change a running relay: its REST API on a Unix socket in the data
// folder, which only the socket file's owner can open, acting as an
// operator. With bbolt the store is one process's file, so the tools
// cannot open it while the relay runs; with PostgreSQL the same path
// keeps one way of doing things.

// adminSocketPath is the socket's path for a data folder.
func adminSocketPath(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// listenAdmin listens on the admin socket, replacing a stale one (a live
// relay holds the bbolt lock, so a second one never gets here) and
// leaving it readable by its owner only.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// adminClient talks to a running relay over its admin socket.
type adminClient struct {
	path string
	http *http.Client
}

// newAdminClient finds the admin socket of the relay that runs with the
// configuration file at cfgPath.
func newAdminClient(cfgPath string) (*adminClient, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	path := adminSocketPath(cfg.Path(cfg.Relay.DataDir))
	return &adminClient{path: path, http: &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}},
	}}, nil
}

// apiError is the API's error answer.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return e.Msg }

// do calls the API: body (when not nil) as JSON, the answer into out
// (when not nil). An error answer comes back as *apiError.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://admin"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "connect: no such file") || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the relay is not running (no admin socket at %s): start it, then try again", c.path)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

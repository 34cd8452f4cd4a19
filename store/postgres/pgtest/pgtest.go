// Package pgtest starts a real, throwaway PostgreSQL server for tests:
// initdb in a temporary folder, the server listening only on a Unix
// socket in that folder, removed by Stop. As root (CI) the server runs as
// the postgres user (Debian's package makes it) or nobody, since initdb
// and postgres refuse to run as root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres is returned by Start when no PostgreSQL binaries are found.
var ErrNoPostgres = errors.New("pgtest: PostgreSQL's initdb and postgres are not installed (Debian: apt-get install postgresql; make deps does it)")

// Server is a running test server.
type Server struct {
	Dir  string // data folder, also the socket folder
	bin  string
	user string // the OS user it runs as; "" for the current one
	n    atomic.Int64
}

// Options tune Start.
type Options struct {
	// Durable keeps fsync on (benchmarks); tests run without it.
	Durable bool
}

// binDir finds the folder holding initdb and pg_ctl.
func binDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start runs initdb and the server.
func Start(opts Options) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "trackrelay-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		s.user = "postgres"
		u, err := user.Lookup(s.user)
		if err != nil {
			s.user = "nobody"
			if u, err = user.Lookup(s.user); err != nil {
				os.RemoveAll(dir)
				return nil, fmt.Errorf("pgtest: running as root and neither postgres nor nobody exists: %w", err)
			}
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		// The folders above must let that user in (MkdirTemp's parent is
		// usually /tmp, which does).
	}
	data := filepath.Join(dir, "data")
	if out, err := s.cmd("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	conf := []string{
		"listen_addresses = ''",
		"unix_socket_directories = '" + dir + "'",
		"max_connections = 200",
		"shared_buffers = 128MB",
		"log_min_messages = warning",
	}
	if !opts.Durable {
		conf = append(conf, "fsync = off", "synchronous_commit = off", "full_page_writes = off")
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	_, err = f.WriteString("\n" + strings.Join(conf, "\n") + "\n")
	f.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if out, err := s.cmd("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return s, nil
}

func (s *Server) cmd(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	var c *exec.Cmd
	if s.user != "" {
		if _, err := exec.LookPath("runuser"); err == nil {
			c = exec.Command("runuser", append([]string{"-u", s.user, "--", path}, args...)...)
		} else {
			c = exec.Command(path, args...)
			u, _ := user.Lookup(s.user)
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
	} else {
		c = exec.Command(path, args...)
	}
	c.Dir = s.Dir
	return c
}

// DSN returns the connection string of database name on the server.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("host=%s user=postgres dbname=%s sslmode=disable", s.Dir, name)
}

// NewDatabase makes a fresh, empty database and returns its DSN.
func (s *Server) NewDatabase() (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return s.DSN(name), nil
}

// Stop stops the server and removes its folder.
func (s *Server) Stop() {
	_ = s.cmd("pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "immediate", "-w", "stop").Run()
	os.RemoveAll(s.Dir)
}

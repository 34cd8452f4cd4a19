package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/rewrite"
)

func init() {
	commands["passwd"] = command{cmdPasswd, "read a password on stdin, print its bcrypt hash for the config"}
	commands["keygen"] = command{cmdKeygen, "print a new token key line for the key file"}
	commands["check-config"] = command{cmdCheckConfig, "validate a config file and print every problem"}
}

// bcryptCost is the work factor of hashes we make.
const bcryptCost = 12

func newFlags(name string, io stdio) *flag.FlagSet {
	fs := flag.NewFlagSet("trackrelay "+name, flag.ContinueOnError)
	fs.SetOutput(io.err)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, which it returns in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) > 0 {
			pos, args = append(pos, args[0]), args[1:]
		}
	}
	return pos, nil
}

func cmdPasswd(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("passwd", io)
	fs.Usage = func() {
		fmt.Fprintln(io.err, "usage: trackrelay passwd < password\n\nReads one line (the password) from stdin and prints its bcrypt hash.")
	}
	if err := parseFlags(fs, args); err != nil || fs.NArg() != 0 {
		if err == nil {
			fs.Usage()
		}
		return errUsage
	}
	pw, err := readSecretLine(io.in)
	if err != nil {
		return err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcryptCost)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	fmt.Fprintln(io.out, string(h))
	return nil
}

// readSecretLine reads the first line of r without its line ending. It
// refuses an empty one and one longer than bcrypt reads (72 bytes).
func readSecretLine(r io.Reader) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, 4096))
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("passwd: read: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "":
		return "", errors.New("passwd: empty password")
	case len(line) > 72:
		return "", errors.New("passwd: password longer than 72 bytes (bcrypt would ignore the rest)")
	}
	return line, nil
}

func cmdKeygen(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("keygen", io)
	id := fs.Uint("id", 1, "key id (0-255); give each key of a file its own")
	if err := parseFlags(fs, args); err != nil || fs.NArg() != 0 {
		return errUsage
	}
	if *id > 255 {
		fmt.Fprintln(io.err, "keygen: -id must be 0-255")
		return errUsage
	}
	k, err := rewrite.GenerateKey(uint8(*id))
	if err != nil {
		return err
	}
	fmt.Fprintln(io.out, rewrite.FormatKey(k))
	return nil
}

func cmdCheckConfig(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("check-config", io)
	fs.Usage = func() { fmt.Fprintln(io.err, "usage: trackrelay check-config FILE") }
	if err := parseFlags(fs, args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fs.Usage()
		}
		return errUsage
	}
	path := fs.Arg(0)
	cfg, problems := config.Check(path)
	if cfg != nil {
		// The key file's content, once it is there to read.
		if err := loadKeysErr(cfg); err != nil && !slices.ContainsFunc(problems, func(p error) bool {
			return strings.HasPrefix(p.Error(), "keys.key_file:")
		}) {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		word := "problems"
		if len(problems) == 1 {
			word = "problem"
		}
		fmt.Fprintf(io.out, "%s: %d %s\n", path, len(problems), word)
		for _, p := range problems {
			for _, line := range strings.Split(p.Error(), "\n") {
				fmt.Fprintf(io.out, "  %s\n", line)
			}
		}
		return errors.New("check-config: the file has problems")
	}
	fmt.Fprintf(io.out, "%s: ok\n", path)
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/trackrelay/trackrelay/api"
)

func init() {
	commands["domains"] = command{cmdDomains, "add, check, list or remove an account's click and bounce domains (on the running relay)"}
}

const domainsUsage = `usage:
  trackrelay domains add DOMAIN --account NAME [--kind click|bounce] --config FILE
  trackrelay domains check DOMAIN --config FILE    (exit status 0 only when verified)
  trackrelay domains list [--account NAME] --config FILE
  trackrelay domains remove DOMAIN --config FILE

The relay must be running: the command talks to it over its admin socket.
`

func cmdDomains(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(io.err, domainsUsage)
		return errUsage
	}
	verb := args[0]
	fs := newFlags("domains "+verb, io)
	cfgPath := fs.String("config", "", "config file (TOML) of the running relay")
	account := fs.String("account", "", "the account")
	kind := fs.String("kind", "click", "click or bounce")
	fs.Usage = func() { fmt.Fprint(io.err, domainsUsage) }
	// Flags may come before or after the domain.
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if *cfgPath == "" {
		fmt.Fprintln(io.err, "trackrelay domains: --config FILE is required")
		return errUsage
	}
	needDomain := verb != "list"
	if needDomain && len(pos) != 1 || !needDomain && len(pos) != 0 {
		fmt.Fprint(io.err, domainsUsage)
		return errUsage
	}
	c, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *account != "" {
		q.Set("account", *account)
	}
	var d api.Domain
	switch verb {
	case "add":
		if *account == "" {
			fmt.Fprintln(io.err, "trackrelay domains add: --account NAME is required")
			return errUsage
		}
		err := c.do(ctx, http.MethodPost, "/v1/domains?"+q.Encode(), map[string]string{"name": pos[0], "kind": *kind}, &d)
		if err != nil {
			return err
		}
		fmt.Fprintf(io.out, "added %s (%s domain of account %s), not yet verified.\n", d.Name, d.Kind, d.Account)
		printRecords(io, &d)
		fmt.Fprintf(io.out, "Then run: trackrelay domains check %s --config %s\n", d.Name, *cfgPath)
		return nil
	case "check":
		err := c.do(ctx, http.MethodPost, "/v1/domains/"+url.PathEscape(pos[0])+"/check?"+q.Encode(), nil, &d)
		if err != nil {
			return err
		}
		if d.State == "verified" {
			fmt.Fprintf(io.out, "%s: verified. Links of account %s may use it.\n", d.Name, d.Account)
			return nil
		}
		fmt.Fprintf(io.out, "%s: %s.\n%s\n", d.Name, d.State, d.Problem)
		printRecords(io, &d)
		return errNotVerified
	case "list":
		var ds []api.Domain
		if err := c.do(ctx, http.MethodGet, "/v1/domains?"+q.Encode(), nil, &ds); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && *account == "" {
				return fmt.Errorf("%w (give --account NAME)", err)
			}
			return err
		}
		for _, d := range ds {
			line := fmt.Sprintf("%-40s %-7s %-9s %s", d.Name, d.Kind, d.State, d.Account)
			if d.Problem != "" {
				line += "  (" + firstLine(d.Problem) + ")"
			}
			fmt.Fprintln(io.out, strings.TrimRight(line, " "))
		}
		return nil
	case "remove":
		if err := c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(pos[0])+"?"+q.Encode(), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(io.out, "removed %s\n", pos[0])
		return nil
	}
	fmt.Fprint(io.err, domainsUsage)
	return errUsage
}

// errNotVerified makes `domains check` exit 1 after it said why.
var errNotVerified = fmt.Errorf("not verified: %w", errReported)

func printRecords(io stdio, d *api.Domain) {
	if len(d.Records) == 0 {
		return
	}
	fmt.Fprintln(io.out, "Create this DNS record (one of them, when there are alternatives):")
	for _, r := range d.Records {
		fmt.Fprintln(io.out, "  "+r)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

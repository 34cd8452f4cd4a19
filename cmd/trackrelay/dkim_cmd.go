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
	commands["dkim"] = command{cmdDKIM, "make, check, list, rotate or remove an account's DKIM keys (on the running relay)"}
}

const dkimUsage = `usage:
  trackrelay dkim keygen DOMAIN --account NAME [--type rsa|ed25519] --config FILE
        makes a key for the From domain and prints its record as one
        zone-file line; it signs once the record is published and checked
  trackrelay dkim check DOMAIN [--account NAME] --config FILE
        looks the domain's records up now (exit status 0 only when every
        key that must be published is published right)
  trackrelay dkim list [--account NAME] --config FILE
  trackrelay dkim rotate DOMAIN [--account NAME] [--type rsa|ed25519] --config FILE
        makes the next key and prints its record; the current key signs
        until the new record is published and checked
  trackrelay dkim remove DOMAIN SELECTOR [--account NAME] [--force] --config FILE
  trackrelay dkim zone --config FILE
        prints the TXT records the operator hosts for keys published by
        CNAME (config dkim.cname_zone)

The relay must be running: the command talks to it over its admin socket.
`

func cmdDKIM(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(io.err, dkimUsage)
		return errUsage
	}
	verb := args[0]
	fs := newFlags("dkim "+verb, io)
	cfgPath := fs.String("config", "", "config file (TOML) of the running relay")
	account := fs.String("account", "", "the account")
	typ := fs.String("type", "", "key type: rsa (default for keygen) or ed25519")
	force := fs.Bool("force", false, "remove: also an active key (it stops signing at once)")
	fs.Usage = func() { fmt.Fprint(io.err, dkimUsage) }
	// Flags may come before or after the positional arguments.
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	want := map[string]int{"keygen": 1, "check": 1, "list": 0, "rotate": 1, "remove": 2, "zone": 0}
	n, known := want[verb]
	if !known || len(pos) != n {
		fmt.Fprint(io.err, dkimUsage)
		return errUsage
	}
	if *cfgPath == "" {
		fmt.Fprintf(io.err, "trackrelay dkim %s: --config FILE is required\n", verb)
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
	domainPath := func(suffix string) string {
		if len(pos) == 0 {
			return ""
		}
		return "/v1/dkim/" + url.PathEscape(pos[0]) + suffix + "?" + q.Encode()
	}
	switch verb {
	case "keygen":
		if *account == "" {
			fmt.Fprintln(io.err, "trackrelay dkim keygen: --account NAME is required")
			return errUsage
		}
		var k api.DKIMKey
		if err := c.do(ctx, http.MethodPost, "/v1/dkim?"+q.Encode(), map[string]string{"domain": pos[0], "type": *typ}, &k); err != nil {
			return err
		}
		fmt.Fprintln(io.out, k.ZoneLine)
		fmt.Fprintf(io.err, "made %s key %s for %s (account %s), pending: publish the record above", k.Type, k.Selector, k.Domain, k.Account)
		if k.CNAME != "" {
			fmt.Fprintf(io.err, ", or instead this CNAME to the record the relay's operator hosts:\n  %s\n", k.CNAME)
		} else {
			fmt.Fprintln(io.err, ".")
		}
		fmt.Fprintf(io.err, "It signs once a check sees it published (the relay checks every few minutes), or run: trackrelay dkim check %s --config %s\n", k.Domain, *cfgPath)
		return nil
	case "check":
		var dd api.DKIMDomain
		if err := c.do(ctx, http.MethodPost, domainPath("/check"), nil, &dd); err != nil {
			return err
		}
		printDKIMKeys(io, dd.Keys, false)
		if !dd.Published {
			fmt.Fprintf(io.out, "%s: not every key is published right; publish the records above, then check again.\n", dd.Domain)
			return errNotPublished
		}
		fmt.Fprintf(io.out, "%s: every key is published right.\n", dd.Domain)
		return nil
	case "list":
		var ks []api.DKIMKey
		if err := c.do(ctx, http.MethodGet, "/v1/dkim?"+q.Encode(), nil, &ks); err != nil {
			return err
		}
		printDKIMKeys(io, ks, true)
		return nil
	case "rotate":
		var body any
		if *typ != "" {
			body = map[string]string{"type": *typ}
		}
		var dd api.DKIMDomain
		if err := c.do(ctx, http.MethodPost, domainPath("/rotate"), body, &dd); err != nil {
			return err
		}
		for _, k := range dd.Keys {
			if k.State != "pending" {
				continue
			}
			fmt.Fprintln(io.out, k.ZoneLine)
			if k.CNAME != "" {
				fmt.Fprintf(io.err, "(or instead: %s)\n", k.CNAME)
			}
		}
		fmt.Fprintf(io.err, "made the next key of %s, pending: publish the record above. The current key signs until a check sees it published; it then stops signing and its record must stay published until it retires (trackrelay dkim list shows when).\n", dd.Domain)
		return nil
	case "remove":
		if *force {
			q.Set("force", "true")
		}
		p := "/v1/dkim/" + url.PathEscape(pos[0]) + "/" + url.PathEscape(pos[1]) + "?" + q.Encode()
		if err := c.do(ctx, http.MethodDelete, p, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(io.out, "removed key %s of %s\n", pos[1], pos[0])
		return nil
	case "zone":
		var ks []api.DKIMKey
		if err := c.do(ctx, http.MethodGet, "/v1/dkim?"+q.Encode(), nil, &ks); err != nil {
			return err
		}
		hosted := 0
		for _, k := range ks {
			if k.Hosted == "" {
				continue
			}
			hosted++
			if k.State != "retired" {
				fmt.Fprintln(io.out, k.Hosted)
			}
		}
		if hosted == 0 && len(ks) > 0 {
			return errors.New("no hosted records: the relay's config sets no dkim.cname_zone")
		}
		return nil
	}
	fmt.Fprint(io.err, dkimUsage)
	return errUsage
}

// errNotPublished makes `dkim check` exit 1 after it said why.
var errNotPublished = fmt.Errorf("not published: %w", errReported)

// printDKIMKeys prints one line per key, then, for the keys whose record
// must be published and is not seen right, the problem and the record.
func printDKIMKeys(io stdio, ks []api.DKIMKey, withAccount bool) {
	for _, k := range ks {
		line := fmt.Sprintf("%-30s %-14s %-8s %-9s", k.Domain, k.Selector, k.Type, k.State)
		if withAccount {
			line += " " + k.Account
		}
		if k.State == "retiring" && k.RetireAt != "" {
			line += "  (keep its record published until " + k.RetireAt + ")"
		}
		if k.State == "retired" {
			line += "  (its record may be removed)"
		}
		fmt.Fprintln(io.out, strings.TrimRight(line, " "))
		if k.Problem != "" && k.State != "retired" {
			fmt.Fprintf(io.out, "    problem: %s\n", k.Problem)
			if k.State == "pending" || k.State == "active" {
				fmt.Fprintf(io.out, "    publish: %s\n", k.ZoneLine)
				if k.CNAME != "" {
					fmt.Fprintf(io.out, "    or:      %s\n", k.CNAME)
				}
			}
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackrelay/trackrelay/api"
	"github.com/trackrelay/trackrelay/config"
)

func init() {
	commands["user"] = command{cmdUser, "manage dashboard users: add, passwd, remove, list"}
}

// The user command changes dashboard users. bbolt lets one process open
// the store at a time, so it works two ways, with the same operations
// (api.Ops) either way:
//   - the relay is running: through its REST API on the admin socket in
//     its data folder (admin_socket.go: only the folder's owner can open
//     it, and it acts as an operator), as the domains and dkim commands do;
//   - the relay is stopped (a fresh install's first operator): on the
//     store directly.

const userUsage = `usage: trackrelay user COMMAND --config FILE [flags] [LOGIN]

  add LOGIN [--account NAME | --operator]   add a user; the password is read from stdin
  passwd LOGIN                               set a user's password (stdin); their sessions end
  remove LOGIN                               remove a user
  list [--account NAME]                      list users

With --dev --data DIR instead of --config, the development setup's.
`

func cmdUser(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(io.err, userUsage)
		return errUsage
	}
	verb := args[0]
	fs := newFlags("user "+verb, io)
	fs.Usage = func() { fmt.Fprint(io.err, userUsage) }
	cfgPath := fs.String("config", "", "config file (TOML)")
	dev := fs.Bool("dev", false, "use the development setup in --data")
	data := fs.String("data", "", "data folder (with --dev)")
	account := fs.String("account", "", "the user's account (add), or only this account's users (list)")
	operator := fs.Bool("operator", false, "add an operator, who sees every account")
	// Flags may come before or after the login.
	var rest []string
	for a := args[1:]; ; {
		if err := parseFlags(fs, a); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		a = fs.Args()[1:]
	}
	switch verb {
	case "add", "passwd", "remove":
		if len(rest) != 1 {
			fmt.Fprint(io.err, userUsage)
			return errUsage
		}
	case "list":
		if len(rest) != 0 {
			fmt.Fprint(io.err, userUsage)
			return errUsage
		}
	default:
		fmt.Fprintf(io.err, "trackrelay user: unknown command %q\n\n%s", verb, userUsage)
		return errUsage
	}
	if *operator && *account != "" {
		fmt.Fprintln(io.err, "trackrelay user: --operator and --account exclude each other")
		return errUsage
	}
	if verb == "add" && !*operator && *account == "" {
		fmt.Fprintln(io.err, "trackrelay user add: give --account NAME or --operator")
		return errUsage
	}
	path := *cfgPath
	if *dev {
		if *data == "" {
			fmt.Fprintln(io.err, "trackrelay user: --dev needs --data DIR")
			return errUsage
		}
		abs, err := filepath.Abs(*data)
		if err != nil {
			return err
		}
		path = filepath.Join(abs, devConfigName)
	}
	if path == "" {
		fmt.Fprintln(io.err, "trackrelay user: give --config FILE (or --dev --data DIR)")
		return errUsage
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	var password string
	if verb == "add" || verb == "passwd" {
		if password, err = readSecretLine(io.in); err != nil {
			return err
		}
	}
	login := ""
	if len(rest) == 1 {
		login = api.NormalLogin(rest[0])
	}
	dataDir := cfg.Path(cfg.Relay.DataDir)
	c, err := userClient(ctx, cfg, dataDir)
	if err != nil {
		return err
	}
	defer c.close()
	switch verb {
	case "add":
		u, err := c.add(ctx, *account, api.NewUser{Login: login, Password: password, Operator: *operator})
		if err != nil {
			return err
		}
		what := "account " + u.Account
		if u.Operator {
			what = "every account (operator)"
		}
		fmt.Fprintf(io.out, "added %s for %s (%s)\n", u.Login, what, c.via)
	case "passwd":
		if err := c.passwd(ctx, login, password); err != nil {
			return err
		}
		fmt.Fprintf(io.out, "password of %s changed; their sessions end (%s)\n", login, c.via)
	case "remove":
		if err := c.remove(ctx, login); err != nil {
			return err
		}
		fmt.Fprintf(io.out, "removed %s (%s)\n", login, c.via)
	case "list":
		us, err := c.list(ctx, *account)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LOGIN\tACCOUNT\tSTATE\tCREATED")
		for _, u := range us {
			acct, state := u.Account, "active"
			if u.Operator {
				acct = "(operator)"
			}
			if u.Disabled {
				state = "disabled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Login, acct, state, u.Created.Format(time.DateOnly))
		}
		return tw.Flush()
	}
	return nil
}

// userCmdClient runs the user command's operations on the store, or
// through the running relay's REST API.
type userCmdClient struct {
	via   string
	ops   *api.Ops // direct
	close func()
	// through the running relay
	admin *adminClient
}

// userClient reaches the users: through the running relay when its admin
// socket answers, else on the store.
func userClient(ctx context.Context, cfg *config.Config, dataDir string) (*userCmdClient, error) {
	path := adminSocketPath(dataDir)
	if _, err := os.Stat(path); err == nil {
		ac := &adminClient{path: path, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			}}}}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ac.do(hctx, http.MethodGet, "/v1/users", nil, nil)
		cancel()
		var ae *apiError
		if err == nil || errors.As(err, &ae) {
			return &userCmdClient{via: "through the running relay", admin: ac, close: func() {}}, nil
		}
	}
	st, err := openStore(cfg, dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, fmt.Errorf("user: the store is not free and the relay's admin socket at %s does not answer: %w", path, err)
	}
	// The config file's accounts, as the relay puts them in the store at
	// start: a fresh install's users can join them.
	if err := syncDeclared(ctx, st, cfg); err != nil {
		st.Close()
		return nil, err
	}
	return &userCmdClient{via: "in the store", ops: &api.Ops{Store: st}, close: func() { st.Close() }}, nil
}

// cli is the principal of the command: an operator (whoever runs it can
// read the data folder).
var cli = &api.Principal{Operator: true}

func (c *userCmdClient) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := c.admin.do(ctx, method, path, body, out); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	return nil
}

func acctQuery(account string) url.Values {
	if account == "" {
		return nil
	}
	return url.Values{"account": {account}}
}

func opsErr(err error) error {
	if err == nil {
		return nil
	}
	if status, msg := api.ErrorStatus(err); status < 500 {
		return errors.New("user: " + msg)
	}
	return err
}

func (c *userCmdClient) add(ctx context.Context, account string, nu api.NewUser) (*api.UserView, error) {
	if c.ops != nil {
		p := *cli
		p.Account = account
		if account != "" {
			if _, err := c.ops.Account(ctx, &p, account); err != nil {
				return nil, opsErr(err)
			}
		}
		c.ops.BcryptCost = bcryptCost
		u, err := c.ops.CreateUser(ctx, &p, nu)
		return u, opsErr(err)
	}
	var u api.UserView
	err := c.call(ctx, http.MethodPost, "/v1/users", acctQuery(account), nu, &u)
	return &u, err
}

func (c *userCmdClient) passwd(ctx context.Context, login, password string) error {
	ch := api.UserChange{Password: &password}
	if c.ops != nil {
		c.ops.BcryptCost = bcryptCost
		_, err := c.ops.UpdateUser(ctx, cli, login, ch)
		return opsErr(err)
	}
	return c.call(ctx, http.MethodPatch, "/v1/users/"+url.PathEscape(login), nil, ch, nil)
}

func (c *userCmdClient) remove(ctx context.Context, login string) error {
	if c.ops != nil {
		return opsErr(c.ops.DeleteUser(ctx, cli, login))
	}
	return c.call(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(login), nil, nil, nil)
}

func (c *userCmdClient) list(ctx context.Context, account string) ([]api.UserView, error) {
	if c.ops != nil {
		p := *cli
		p.Account = account
		us, err := c.ops.Users(ctx, &p)
		return us, opsErr(err)
	}
	var us []api.UserView
	err := c.call(ctx, http.MethodGet, "/v1/users", acctQuery(account), nil, &us)
	return us, err
}

// Command trackrelay is an SMTP relay that adds click and open tracking to
// outgoing mail, and the redirector that records the clicks and opens.
//
// Usage: trackrelay COMMAND [flags]; "trackrelay help" lists the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && serverCommands[os.Args[1]] {
		if _, set := os.LookupEnv("GOGC"); !set {
			// The servers' live heap is small and their garbage is
			// per request: collecting at 5x the live heap instead of 2x
			// saves about a tenth of the redirector's CPU per hit, for
			// tens of MB. GOGC, when set, decides instead.
			debug.SetGCPercent(serverGCPercent)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) && !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "trackrelay:", err)
		}
		os.Exit(exitCode(err))
	}
}

// serverCommands are the long-running commands; serverGCPercent is their
// GOGC unless the environment sets one.
var serverCommands = map[string]bool{"serve": true, "relay": true, "redirector": true}

const serverGCPercent = 400

// stdio is what a command reads and writes, so tests can run commands
// in-process.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// errUsage reports a usage error that was already printed.
var errUsage = errors.New("usage")

// errReported is a failure the command has explained already: it only
// sets the exit status (1).
var errReported = errors.New("reported")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

type command struct {
	run   func(ctx context.Context, args []string, io stdio) error
	short string
}

// commands is filled by the files that implement them.
var commands = map[string]command{}

func run(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(io.err)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(io.err, "trackrelay: unknown command %q\n", args[0])
		usage(io.err)
		return errUsage
	}
	return c.run(ctx, args[1:], io)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: trackrelay COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].short)
	}
	fmt.Fprintln(w, "\nRun \"trackrelay COMMAND -h\" for a command's flags.")
}

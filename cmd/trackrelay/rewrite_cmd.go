package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	goio "io"
	"os"
	"strings"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/rewrite"
)

func init() {
	commands["rewrite"] = command{cmdRewrite, "preview tracking: read a message on stdin, write the tracked message"}
}

// cmdBufSize is the command's read and write buffer.
const cmdBufSize = 256 << 10

// previewMessageID is the message id every preview's tokens carry, so that
// a preview of the same input is always the same.
const previewMessageID = 1

const rewriteUsage = `usage: trackrelay rewrite [flags] < message.eml > tracked.eml
       trackrelay rewrite --html [flags] < body.html > tracked.html

Reads a whole RFC 5322 message on stdin (with --html, a bare HTML body) and
writes it on stdout with its links and images tracked, as the relay would
track one recipient's copy. The message's x-smtpeter-* control headers
beat the flags. Tokens carry the fixed message id 1 (a preview, not a
real copy); what was tracked is summarised on stderr.

flags:`

func cmdRewrite(ctx context.Context, args []string, io stdio) error {
	fs := flag.NewFlagSet("trackrelay rewrite", flag.ContinueOnError)
	fs.SetOutput(io.err)
	clicks := fs.Bool("clicks", true, "track links")
	opens := fs.Bool("opens", true, "track images and add the open pixel")
	scam := fs.Bool("preventscam", false, "leave links whose text is a URL or domain")
	text := fs.Bool("text", false, "also track links in text/plain parts")
	domain := fs.String("click-domain", "localhost:8080", "click domain (host[:port]) of the tracked URLs")
	scheme := fs.String("scheme", "http", "scheme of the tracked URLs: http or https")
	keyFile := fs.String("key-file", "", "token key file, one \"ID SECRET\" line per key, the first active\n(default: the fixed development key, which anyone can forge)")
	bare := fs.Bool("html", false, "stdin is a bare HTML body, not a message")
	fs.Usage = func() {
		fmt.Fprintln(io.err, rewriteUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(io.err, "trackrelay rewrite: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if *scheme != "http" && *scheme != "https" {
		fmt.Fprintf(io.err, "trackrelay rewrite: --scheme %q: must be http or https\n", *scheme)
		return errUsage
	}
	if *domain == "" || strings.ContainsAny(*domain, "/?#@ \t") {
		fmt.Fprintf(io.err, "trackrelay rewrite: --click-domain %q: want host[:port]\n", *domain)
		return errUsage
	}
	codec, err := previewCodec(*keyFile, io)
	if err != nil {
		return err
	}
	cfg := rewrite.Config{
		Clicks:      *clicks,
		Opens:       *opens,
		PreventScam: *scam,
		Codec:       codec,
		Scheme:      *scheme,
		Domain:      *domain,
		MessageID:   previewMessageID,
	}
	// Large reads and writes: the tokenizer reads at most 4 KB at a time
	// and the rewriter writes 16 KB, each a system call on a pipe or file.
	io.in = bufio.NewReaderSize(io.in, cmdBufSize)
	bw := bufio.NewWriterSize(io.out, cmdBufSize)
	out := &tailWriter{w: bw}
	io.out = out
	defer bw.Flush()
	// The summary on stderr starts on a line of its own, also when the
	// output (on the same terminal) does not end with a newline; the
	// output itself is not changed.
	defer out.endLine(io.err)
	if *bare {
		tr := rewrite.New(cfg)
		if err := tr.HTML(io.out, io.in); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("rewrite: write: %w", err)
		}
		out.endLine(io.err)
		printStats(io, tr.Stats())
		return nil
	}
	var tr *rewrite.Tracker
	decide := func(c mime.Controls) (mime.Tracker, error) {
		cfg := cfg
		if c.TrackClicks != nil {
			cfg.Clicks = *c.TrackClicks
		}
		if c.TrackOpens != nil {
			cfg.Opens = *c.TrackOpens
		}
		if c.PreventScam != nil {
			cfg.PreventScam = *c.PreventScam
		}
		if !cfg.Clicks && !cfg.Opens {
			return nil, nil // only strip the control headers
		}
		tr = rewrite.New(cfg)
		return tr, nil
	}
	rep, err := mime.Rewrite(io.out, io.in, mime.Options{TrackText: *text}, decide)
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("rewrite: write: %w", err)
	}
	out.endLine(io.err)
	if rep.ControlErr != nil {
		// The walker treats the bad header as absent so that delivery never
		// fails; the relay refuses such a message at DATA. Say so loudly.
		return fmt.Errorf("the relay would refuse this message (550 5.6.0): %w", rep.ControlErr)
	}
	if rep.Untouched != "" {
		fmt.Fprintf(io.err, "message passed through untracked: %s\n", rep.Untouched)
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(io.err, "part %s passed through: %s\n", s.Part, s.Reason)
	}
	if tr == nil {
		fmt.Fprintln(io.err, "tracking is off for this message (control headers or flags)")
		return nil
	}
	fmt.Fprintf(io.err, "parts tracked: %d\n", rep.Tracked)
	printStats(io, tr.Stats())
	return nil
}

// previewCodec reads the key file, or falls back to the development key
// and says so.
func previewCodec(path string, io stdio) (*rewrite.Codec, error) {
	if path == "" {
		fmt.Fprintln(io.err, "trackrelay rewrite: no --key-file: using the fixed development key (tokens are forgeable)")
		return rewrite.NewCodec(rewrite.DevKey)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rewrite: key file: %w", err)
	}
	defer f.Close()
	keys, err := rewrite.ReadKeys(f)
	if err != nil {
		return nil, fmt.Errorf("rewrite: key file %s: %w", path, err)
	}
	c, err := rewrite.NewCodec(keys[0], keys[1:]...)
	if err != nil {
		return nil, fmt.Errorf("rewrite: key file %s: %w", path, err)
	}
	return c, nil
}

func printStats(io stdio, st rewrite.Stats) {
	pixel := "no"
	if st.Pixel {
		pixel = "yes"
	}
	fmt.Fprintf(io.err, "links tracked: %d, images tracked: %d, open pixel: %s\n", st.Links, st.Images, pixel)
}

// tailWriter passes writes to w and remembers whether what was written
// last ended a line.
type tailWriter struct {
	w       goio.Writer
	n       int64
	last    byte
	newline bool // endLine has run since the last write
}

func (t *tailWriter) Write(b []byte) (int, error) {
	n, err := t.w.Write(b)
	if n > 0 {
		t.n += int64(n)
		t.last = b[n-1]
		t.newline = false
	}
	return n, err
}

// endLine writes a newline to w (stderr) when output was written and did
// not end with one, once.
func (t *tailWriter) endLine(w goio.Writer) {
	if t.n > 0 && t.last != '\n' && !t.newline {
		fmt.Fprintln(w)
	}
	t.newline = true
}

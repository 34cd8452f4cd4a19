// Command tokenize is the baseline that `trackrelay rewrite --html` is
// measured against as a whole process (rewrite/bench/rewrite-vs-tokenizer.sh):
// it runs x/net/html's Tokenizer over stdin and copies every token's raw
// bytes to stdout, buffered, and nothing else. Its output is its input.
//
//	tokenize < body.html > copy.html
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/net/html"
)

func main() {
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	z := html.NewTokenizer(os.Stdin)
	for z.Next() != html.ErrorToken {
		if _, err := out.Write(z.Raw()); err != nil {
			fail(err)
		}
	}
	if err := z.Err(); !errors.Is(err, io.EOF) {
		fail(err)
	}
	if _, err := out.Write(z.Raw()); err != nil {
		fail(err)
	}
	if err := out.Flush(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tokenize:", err)
	os.Exit(1)
}

package main

import (
	"context"
	"errors"
)

func init() {
	commands["rewrite"] = command{cmdRewrite, "preview tracking: read a message on stdin, write the tracked message"}
}

func cmdRewrite(ctx context.Context, args []string, io stdio) error {
	return errors.New("rewrite: not built yet (issue 2)")
}

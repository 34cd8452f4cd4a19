package main

import (
	"context"
	"errors"
)

func init() {
	commands["serve"] = command{cmdServe, "run the relay and the redirector in one process"}
}

func cmdServe(ctx context.Context, args []string, io stdio) error {
	return errors.New("serve: the relay is not built yet (issue 4)")
}

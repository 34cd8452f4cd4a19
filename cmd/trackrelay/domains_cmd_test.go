package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// The domains command changes the running relay's records over its admin
// socket: add (telling the DNS record to make), list, refuse a second
// add, check (off here: no [domains] target), remove.
func TestDomainsCommand(t *testing.T) {
	data := t.TempDir()
	startRelay(t, data)
	cfg := filepath.Join(data, devConfigName)
	out, _, err := runCmd(t, "", "domains", "add", "Link.Shop.Example.", "--account", "dev", "--config", cfg)
	if err != nil || !strings.Contains(out, "added link.shop.example (click domain of account dev)") {
		t.Fatalf("add: %q %v", out, err)
	}
	if _, _, err := runCmd(t, "", "domains", "add", "link.shop.example", "--account", "dev", "--config", cfg); err == nil || !strings.Contains(err.Error(), "already added") {
		t.Fatalf("second add: %v", err)
	}
	if _, _, err := runCmd(t, "", "domains", "add", "no_such domain", "--account", "dev", "--config", cfg); err == nil || !strings.Contains(err.Error(), "name:") {
		t.Fatalf("bad name: %v", err)
	}
	if _, _, err := runCmd(t, "", "domains", "add", "x.example", "--account", "nobody", "--config", cfg); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown account: %v", err)
	}
	out, _, err = runCmd(t, "", "domains", "list", "--account", "dev", "--config", cfg)
	if err != nil || !strings.Contains(out, "link.shop.example") || !strings.Contains(out, "pending") {
		t.Fatalf("list: %q %v", out, err)
	}
	if _, _, err := runCmd(t, "", "domains", "check", "link.shop.example", "--config", cfg); err == nil {
		t.Fatal("check passed with checks off")
	}
	out, _, err = runCmd(t, "", "domains", "remove", "link.shop.example", "--config", cfg)
	if err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %q %v", out, err)
	}
	out, _, err = runCmd(t, "", "domains", "list", "--account", "dev", "--config", cfg)
	if err != nil || strings.Contains(out, "link.shop.example") {
		t.Fatalf("list after remove: %q %v", out, err)
	}
}

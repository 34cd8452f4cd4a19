package api

import (
	"fmt"

	"github.com/trackrelay/trackrelay/config"
	"github.com/trackrelay/trackrelay/smtpd"
)

// KeysFromConfig returns the configuration's API keys (section api.keys).
// Mail sent with a key goes out with the settings and upstream of its
// account's first credential (in file order), whose name its events carry;
// an account without credentials sends untracked through the first
// upstream, as credential "api:ACCOUNT".
func KeysFromConfig(cfg *config.Config) ([]Key, error) {
	keys := make([]Key, 0, len(cfg.API.Keys))
	for i, k := range cfg.API.Keys {
		if k.Account == "" || k.KeyHash == "" {
			return nil, fmt.Errorf("api: api.keys[%d]: account and key_hash are required", i)
		}
		keys = append(keys, Key{Hash: []byte(k.KeyHash), Cred: accountCredential(cfg, k.Account)})
	}
	return keys, nil
}

func accountCredential(cfg *config.Config, account string) *smtpd.Credential {
	for i := range cfg.Credentials {
		if c := &cfg.Credentials[i]; c.Account == account {
			return smtpd.CredentialFromConfig(c)
		}
	}
	cr := &smtpd.Credential{Username: "api:" + account, Account: account, Scheme: "https"}
	if len(cfg.Upstreams) > 0 {
		cr.Upstream = cfg.Upstreams[0].Name
	}
	return cr
}

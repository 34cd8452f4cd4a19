package config

// Redirector configures the public HTTP edge (issue 5).
type Redirector struct{}

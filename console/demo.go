package console

import "github.com/procurement/gateway/config"

// The demo operator of the shipped config.yaml, so that `go run .` shows
// the console at once. Its password is public (the README prints it): the
// gateway warns at start while a user still has this hash.
const (
	DemoUser         = "demo"
	DemoPassword     = "demo-change-me"
	DemoPasswordHash = config.ShippedConsoleHash
)

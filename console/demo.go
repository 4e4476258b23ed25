package console

// The demo operator of the shipped config.yaml, so that `go run .` shows
// the console at once. Its password is public (the README prints it): the
// gateway warns at start while a user still has this hash.
const (
	DemoUser         = "demo"
	DemoPassword     = "demo-change-me"
	DemoPasswordHash = "$2a$12$GGvcCgsKkzOF2KNVBETchuPZCq9XFeasPu/7ihPgi4CT210gYAHaG"
)

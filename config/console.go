package config

import (
	"time"
	// The zone database in the binary: a container from scratch has none.
	_ "time/tzdata"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Console is the operators' web console (package console), served under
// /console/. With no users it is off: /console/ answers 404.
type Console struct {
	// Addr, when set, serves the console on a listener of its own (and not
	// on server.addr), so that it can be kept on an internal network.
	Addr string `yaml:"addr"`
	// SessionTTL is how long a sign-in lasts, whatever is done meanwhile.
	SessionTTL time.Duration `yaml:"session_ttl" default:"8h"`
	// TimeZone is the operators': the pages show times in it, and "today"
	// is its day. (What is stored stays UTC.)
	TimeZone string `yaml:"time_zone" default:"Asia/Shanghai"`
	// Users may sign in; GATEWAY_CONSOLE_USERS_<NAME>_PASSWORD_HASH
	// overrides one.
	Users []ConsoleUser `yaml:"users" envkey:"name"`
}

// ConsoleUser is one person who may sign in to the console.
type ConsoleUser struct {
	Name string `yaml:"name"`
	// PasswordHash is a bcrypt hash (`gateway password` prints one). Not a
	// secret in the strict sense, but printed redacted all the same: a hash
	// offline is a password to guess at leisure.
	PasswordHash string `yaml:"password_hash" secret:"true"`
	Role         string `yaml:"role"` // viewer | operator
}

// The console's roles: a viewer reads, an operator also acts.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
)

// MinBcryptCost is the weakest password hash the console accepts: 10 is
// bcrypt's default, about 60 ms a guess on one core here.
const MinBcryptCost = 10

// MaxConsoleUserName bounds a user name, which is stored with every action.
const MaxConsoleUserName = 64

// Enabled reports whether the console serves at all.
func (c Console) Enabled() bool { return len(c.Users) > 0 }

// User returns the user with that name.
func (c Console) User(name string) (*ConsoleUser, bool) {
	for i := range c.Users {
		if c.Users[i].Name == name {
			return &c.Users[i], true
		}
	}
	return nil, false
}

func (c *Config) validateConsole(v *validator) {
	con := c.Console
	if con.Addr != "" {
		switch {
		case port(con.Addr) == "":
			v.add("console.addr", "", "%q is not host:port (e.g. \"127.0.0.1:8081\")", con.Addr)
		case con.Addr == c.Server.Addr && port(con.Addr) != "0": // :0 is any free port, twice
			v.add("console.addr", "", "is server.addr; leave it empty to serve the console under /console/ there")
		}
	}
	if _, err := time.LoadLocation(con.TimeZone); err != nil || con.TimeZone == "" {
		v.add("console.time_zone", "", "unknown time zone %q (e.g. Asia/Shanghai or UTC)", con.TimeZone)
	}
	if con.SessionTTL < time.Minute {
		v.add("console.session_ttl", "", "must be at least 1m, got %s", con.SessionTTL)
	}
	seen := map[string]bool{}
	for i, u := range con.Users {
		key := indexPath("console.users", i)
		name := key
		if u.Name != "" && validUserName(u.Name) && !seen[u.Name] {
			name = "console.users[" + u.Name + "]"
		}
		add := func(field, format string, args ...any) {
			v.add(key+"."+field, name+"."+field, format, args...)
		}
		switch {
		case u.Name == "":
			add("name", "empty")
		case !validUserName(u.Name):
			add("name", "%q: use at most %d letters, digits and . _ @ -", u.Name, MaxConsoleUserName)
		case seen[u.Name]:
			add("name", "duplicate %q", u.Name)
		}
		seen[u.Name] = true
		switch cost, err := bcrypt.Cost([]byte(u.PasswordHash)); {
		case u.PasswordHash == "":
			add("password_hash", "empty (make one with `gateway password`)")
		case err != nil:
			add("password_hash", "not a bcrypt hash (make one with `gateway password`)")
		case cost < MinBcryptCost:
			add("password_hash", "bcrypt cost %d is below %d (make a new one with `gateway password`)", cost, MinBcryptCost)
		}
		switch u.Role {
		case RoleViewer, RoleOperator:
		case "":
			add("role", "empty (viewer or operator)")
		default:
			add("role", "unknown role %q (viewer or operator)", u.Role)
		}
	}
}

// validUserName: 1 to MaxConsoleUserName of A-Z a-z 0-9 . _ @ -, so that
// a name is safe in logs, in the audit and in a URL.
func validUserName(s string) bool {
	if s == "" || utf8.RuneCountInString(s) > MaxConsoleUserName {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '@', r == '-':
		default:
			return false
		}
	}
	return true
}

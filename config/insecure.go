package config

// The secrets this repository ships in config.yaml, the README and the
// simulator's flags. They are fine on a laptop and a hole anywhere else:
// anyone who has read the README holds them.
const (
	// ShippedAPIToken is config.yaml's api.tokens when GATEWAY_API_TOKEN is
	// unset, and the token of the README's examples.
	ShippedAPIToken = "dev-token-change-me-0001"
	// ShippedSimSecret is config.yaml's app_secret of the simulated
	// institution when SIM_APP_SECRET is unset, and banksim's default.
	ShippedSimSecret = "simsecret0123456"
	// ShippedConsoleHash is the bcrypt hash of config.yaml's demo console
	// operator's password, which the README prints.
	ShippedConsoleHash = "$2a$12$GGvcCgsKkzOF2KNVBETchuPZCq9XFeasPu/7ihPgi4CT210gYAHaG"
)

// InsecureDefaults names each shipped secret still in force, by the path
// of the key that holds it ("api.tokens[0]", "institutions[SIM].app_secret"),
// never by its value. The gateway warns about each at start and counts
// them in the gateway_insecure_defaults gauge (docs/decisions.md §40).
func (c *Config) InsecureDefaults() []string {
	var out []string
	for i, t := range c.API.Tokens {
		if t == ShippedAPIToken {
			out = append(out, indexPath("api.tokens", i))
		}
	}
	for i, in := range c.Institutions {
		if in.AppSecret == ShippedSimSecret {
			name := indexPath("institutions", i)
			if in.OrgCode != "" {
				name = "institutions[" + in.OrgCode + "]"
			}
			out = append(out, name+".app_secret")
		}
	}
	for i, u := range c.Console.Users {
		if u.PasswordHash == ShippedConsoleHash {
			out = append(out, indexPath("console.users", i)+".password_hash")
		}
	}
	return out
}

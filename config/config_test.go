package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env returns a getenv reading from vars.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

var noEnv = env(nil)

// fullYAML gives every field a value other than its default.
const fullYAML = `
server:
  addr: "0.0.0.0:9443"
  instance: gw-1
  public_base_url: "https://gw.example.com/base"
  tls: { cert_file: /etc/gw/tls.crt, key_file: /etc/gw/tls.key }
  shutdown_grace: 20s
  notify_body_limit: 1048576
  callback_body_limit: 4096
  callback_batch: 16
  stranger_audit_rate: 0
  body_bytes_in_flight: 67108864
database:
  driver: mysql
  dsn: "gw:${DB_PASSWORD}@tcp(db.internal:3306)/gateway?parseTime=true&loc=UTC&charset=utf8mb4"
  max_open_conns: 64
  max_idle_conns: 0
  conn_max_lifetime: 1h
  retries: 3
  retry_wait: 20ms
api:
  tokens: ["${GATEWAY_API_TOKEN}", "second-token-0123456789"]
institutions:
  - orgcode: "BANK01"
    name: "某某银行"
    base_url: "https://bank.example/eg"
    app_key: "k-bank01"
    app_secret: "${BANK01_SECRET}"
    cipher: { algorithm: aes, mode: cbc, iv: "abcdefghijklmnop", encoding: HEX, key: sha1prng, key_bits: 256 }
    timeout: 7s
    disabled: true
    retries: 0
    max_concurrent: 3
    allow_cidrs: ["10.0.0.0/8", "192.168.1.7/32"]
    url_origins: ["https://files.bank.example", "http://10.1.2.3:8080/"]
    rate_limit: 2.5
    rate_burst: 5
  - orgcode: "INS-02"
    name: "保险公司"
    base_url: "http://insurer.example:8081"
    app_key: "k-ins02"
    app_secret: "0123456789abcdef0123456789abcdef"
jobs:
  poll_pending: "*/2 * * * *"
  recover_applying: "@every 2m"
  pull_files: "@hourly"
  deliver_outbox: "@every 5s"
  reconcile: "30 3 * * *"
  retention: "@daily"
  poll_backoff: [30s, 90s]
  redelivery_backoff: [1m]
  apply_backoff: [10s, 20s]
  max_apply_attempts: 3
  stale_after_opening: 48h
  batch_size: 10
  concurrency: 4
  lease: 30s
  disabled: true
retention:
  raw_bodies: 720h
  calls: 0
  batch_size: 50
  pause: 0s
  max_per_run: 1000
log:
  level: debug
  format: json
metrics:
  state_interval: 10s
console:
  addr: "127.0.0.1:9444"
  session_ttl: 1h
  time_zone: UTC
  users:
    - name: ops.li
      password_hash: "$2a$10$cjagT4FzcWPiOh9Rzl.MZOG/2nogSSw.ZzcipMYkUgfOb8g9FJxq."
      role: operator
sim:
  orgcode: INS-02
  addr: "127.0.0.1:9999"
  pay_delay: 0s
  issue_delay: 500ms
`

var fullEnv = map[string]string{
	"DB_PASSWORD":       "DbPassw0rd!",
	"GATEWAY_API_TOKEN": "first-token-0123456789",
	"BANK01_SECRET":     "any length works with sha1prng",
}

// minimalYAML leaves every field with a default out.
const minimalYAML = `
api:
  tokens: ["tok-0123456789abcdef"]
institutions:
  - orgcode: BANK01
    name: Bank
    base_url: https://bank.example/eg
    app_key: k1
    app_secret: "1234567890abcdef"
`

func mustParse(t *testing.T, yml string, getenv func(string) string) *Config {
	t.Helper()
	c, err := Parse([]byte(yml), getenv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestLoadFull(t *testing.T) {
	c := mustParse(t, fullYAML, env(fullEnv))
	want := Config{
		Server: Server{
			Addr: "0.0.0.0:9443", PublicBaseURL: "https://gw.example.com/base", Instance: "gw-1",
			TLS:           &TLS{CertFile: "/etc/gw/tls.crt", KeyFile: "/etc/gw/tls.key"},
			ShutdownGrace: 20 * time.Second, NotifyBodyLimit: 1 << 20, CallbackBodyLimit: 4096, CallbackBatch: 16,
			StrangerAuditRate: 0, BodyBytesInFlight: 64 << 20,
		},
		Database: Database{
			Driver:       "mysql",
			DSN:          "gw:DbPassw0rd!@tcp(db.internal:3306)/gateway?parseTime=true&loc=UTC&charset=utf8mb4",
			MaxOpenConns: 64, MaxIdleConns: 0, ConnMaxLife: time.Hour, Retries: 3, RetryWait: 20 * time.Millisecond,
		},
		API: API{Tokens: []string{"first-token-0123456789", "second-token-0123456789"}},
		Institutions: []Institution{
			{
				OrgCode: "BANK01", Name: "某某银行", BaseURL: "https://bank.example/eg",
				AppKey: "k-bank01", AppSecret: "any length works with sha1prng",
				Cipher:  Cipher{Algorithm: "aes", Mode: "cbc", IV: "abcdefghijklmnop", Encoding: "HEX", Key: "sha1prng", KeyBits: 256},
				Timeout: 7 * time.Second, Disabled: true, Retries: 0, RetryWait: 200 * time.Millisecond, MaxConcurrent: 3, BreakerFailures: 5, BreakerOpenFor: 30 * time.Second,
				AllowCIDRs: []string{"10.0.0.0/8", "192.168.1.7/32"}, RateLimit: 2.5, RateBurst: 5,
				URLOrigins: []string{"https://files.bank.example", "http://10.1.2.3:8080/"},
			},
			{
				OrgCode: "INS-02", Name: "保险公司", BaseURL: "http://insurer.example:8081",
				AppKey: "k-ins02", AppSecret: "0123456789abcdef0123456789abcdef",
				Cipher:  Cipher{Algorithm: "aes", Mode: "ecb", IV: "key", Encoding: "base64", Key: "raw", KeyBits: 128},
				Timeout: 10 * time.Second, Retries: 2, RetryWait: 200 * time.Millisecond, MaxConcurrent: 8, BreakerFailures: 5, BreakerOpenFor: 30 * time.Second,
			},
		},
		Jobs: Jobs{
			PollPending: "*/2 * * * *", RecoverApplying: "@every 2m", PullFiles: "@hourly",
			DeliverOutbox: "@every 5s", Reconcile: "30 3 * * *", Retention: "@daily",
			PollBackoff:       []time.Duration{30 * time.Second, 90 * time.Second},
			RedeliveryBackoff: []time.Duration{time.Minute},
			ApplyBackoff:      []time.Duration{10 * time.Second, 20 * time.Second},
			MaxApplyAttempts:  3, StaleAfterOpening: 48 * time.Hour, BatchSize: 10, Concurrency: 4,
			Lease: 30 * time.Second, Disabled: true,
		},
		// calls: 0 is kept, not taken for absent: keep the calls for ever.
		Retention: Retention{RawBodies: 720 * time.Hour, Calls: 0, BatchSize: 50, Pause: 0, MaxPerRun: 1000},
		Log:       Log{Level: "debug", Format: "json"},
		Metrics:   Metrics{StateInterval: 10 * time.Second},
		Console: Console{Addr: "127.0.0.1:9444", SessionTTL: time.Hour, TimeZone: "UTC", Users: []ConsoleUser{{Name: "ops.li",
			PasswordHash: "$2a$10$cjagT4FzcWPiOh9Rzl.MZOG/2nogSSw.ZzcipMYkUgfOb8g9FJxq.", Role: RoleOperator}}},
		Sim: &Sim{OrgCode: "INS-02", Addr: "127.0.0.1:9999", PayDelay: 0, IssueDelay: 500 * time.Millisecond},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got\n%#v\nwant\n%#v", fields(*c), fields(want))
	}
}

// fields prints a config with its secrets, for failure messages.
func fields(c Config) string {
	return fmt.Sprintf("%+v %+v %+v %+v %+v %+v %+v %+v %+v %+v %+v", c.Server, *c.Server.TLS, c.Database.DSN, c.API.Tokens, c.Institutions, c.Jobs, c.Retention, c.Log, c.Metrics, c.Console, c.Sim)
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimalYAML+"sim: {orgcode: BANK01}\n", noEnv)
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.addr", c.Server.Addr, ":8080"},
		{"server.public_base_url", c.Server.PublicBaseURL, "http://127.0.0.1:8080"},
		{"server.tls", c.Server.TLS, (*TLS)(nil)},
		{"server.shutdown_grace", c.Server.ShutdownGrace, 15 * time.Second},
		{"server.notify_body_limit", c.Server.NotifyBodyLimit, int64(30 << 20)},
		{"server.callback_body_limit", c.Server.CallbackBodyLimit, int64(64 << 10)},
		{"server.callback_batch", c.Server.CallbackBatch, 64},
		{"server.stranger_audit_rate", c.Server.StrangerAuditRate, 10.0},
		{"server.body_bytes_in_flight", c.Server.BodyBytesInFlight, int64(256 << 20)},
		{"institution.url_origins", c.Institutions[0].URLOrigins, []string(nil)},
		{"database.driver", c.Database.Driver, "sqlite"},
		{"database.dsn", c.Database.DSN, "data/gateway.db"},
		{"database.max_open_conns", c.Database.MaxOpenConns, 32},
		{"database.max_idle_conns", c.Database.MaxIdleConns, 32},
		{"database.conn_max_lifetime", c.Database.ConnMaxLife, 30 * time.Minute},
		{"database.retries", c.Database.Retries, 8},
		{"database.retry_wait", c.Database.RetryWait, 10 * time.Millisecond},
		{"institution.timeout", c.Institutions[0].Timeout, 10 * time.Second},
		{"institution.retries", c.Institutions[0].Retries, 2},
		{"institution.max_concurrent", c.Institutions[0].MaxConcurrent, 8},
		{"institution.breaker_failures", c.Institutions[0].BreakerFailures, 5},
		{"institution.cipher", c.Institutions[0].Cipher, Cipher{Algorithm: "aes", Mode: "ecb", IV: "key", Encoding: "base64", Key: "raw", KeyBits: 128}},
		{"jobs.poll_pending", c.Jobs.PollPending, "@every 30s"},
		{"jobs.recover_applying", c.Jobs.RecoverApplying, "@every 1m"},
		{"jobs.pull_files", c.Jobs.PullFiles, "@every 1m"},
		{"jobs.deliver_outbox", c.Jobs.DeliverOutbox, "@every 15s"},
		{"jobs.reconcile", c.Jobs.Reconcile, "0 2 * * *"},
		{"jobs.poll_backoff", fmt.Sprint(c.Jobs.PollBackoff), "[1m0s 2m0s 5m0s 10m0s 30m0s 1h0m0s]"},
		{"jobs.redelivery_backoff", fmt.Sprint(c.Jobs.RedeliveryBackoff), "[15s 15s 30s 3m0s 10m0s 20m0s 30m0s 30m0s 30m0s 1h0m0s 3h0m0s 3h0m0s 3h0m0s 6h0m0s 6h0m0s]"},
		{"jobs.apply_backoff", fmt.Sprint(c.Jobs.ApplyBackoff), "[30s 1m0s 2m0s 5m0s 10m0s]"},
		{"jobs.max_apply_attempts", c.Jobs.MaxApplyAttempts, 8},
		{"jobs.stale_after_opening", c.Jobs.StaleAfterOpening, 24 * time.Hour},
		{"jobs.batch_size", c.Jobs.BatchSize, 100},
		{"jobs.concurrency", c.Jobs.Concurrency, 32},
		{"jobs.lease", c.Jobs.Lease, 2 * time.Minute},
		{"jobs.disabled", c.Jobs.Disabled, false},
		{"jobs.retention", c.Jobs.Retention, "30 * * * *"},
		{"retention", c.Retention, Retention{RawBodies: 180 * 24 * time.Hour, Calls: 180 * 24 * time.Hour, BatchSize: 500,
			Pause: 100 * time.Millisecond, MaxPerRun: 200000}},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "auto"},
		{"sim.addr", c.Sim.Addr, "127.0.0.1:8090"},
		{"sim.pay_delay", c.Sim.PayDelay, time.Second},
		{"sim.issue_delay", c.Sim.IssueDelay, 2 * time.Second},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Errorf("got %v, want %v", ch.got, ch.want)
			}
		})
	}

	// The defaults are copies: changing one config does not change another.
	c.Jobs.PollBackoff[0] = time.Hour
	if Default().Jobs.PollBackoff[0] != time.Minute {
		t.Error("a config shares its back-off slice with the defaults")
	}
	// No sim section: no sim.
	if c := mustParse(t, minimalYAML, noEnv); c.Sim != nil {
		t.Errorf("sim = %+v without a sim section", c.Sim)
	}
}

func TestDefaultsPublicBaseURL(t *testing.T) {
	tests := []struct {
		name, yml, want string
	}{
		{"port of addr", "server: {addr: \"0.0.0.0:9000\"}\n", "http://127.0.0.1:9000"},
		{"tls", "server: {addr: \":8443\", tls: {cert_file: c.pem, key_file: k.pem}}\n", "https://127.0.0.1:8443"},
		{"explicit", "server: {public_base_url: \"https://gw.example\"}\n", "https://gw.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimalYAML+tt.yml, noEnv)
			if c.Server.PublicBaseURL != tt.want {
				t.Errorf("public_base_url = %q, want %q", c.Server.PublicBaseURL, tt.want)
			}
		})
	}
}

// An explicit zero is kept where zero means something; an absent field
// gets its default.
func TestExplicitZero(t *testing.T) {
	c := mustParse(t, minimalYAML+`
sim: {orgcode: BANK01, pay_delay: 0s, issue_delay: "0s"}
database: {max_idle_conns: 0, conn_max_lifetime: 0s}
`, noEnv)
	inst := c.Institutions[0]
	if inst.Retries != 2 {
		t.Errorf("absent retries = %d, want 2", inst.Retries)
	}
	if c.Sim.PayDelay != 0 || c.Sim.IssueDelay != 0 {
		t.Errorf("sim delays %v %v, want 0 0", c.Sim.PayDelay, c.Sim.IssueDelay)
	}
	if c.Database.MaxIdleConns != 0 || c.Database.ConnMaxLife != 0 {
		t.Errorf("database %d %v, want 0 0", c.Database.MaxIdleConns, c.Database.ConnMaxLife)
	}
	c = mustParse(t, strings.Replace(minimalYAML, "app_key: k1", "app_key: k1\n    retries: 0", 1), noEnv)
	if c.Institutions[0].Retries != 0 {
		t.Errorf("retries: 0 became %d", c.Institutions[0].Retries)
	}
}

func TestApplyDefaultsInCode(t *testing.T) {
	c := &Config{
		API:          API{Tokens: []string{"tok-0123456789abcdef"}},
		Institutions: []Institution{{OrgCode: "B", Name: "B", BaseURL: "http://b.example", AppKey: "k", AppSecret: "1234567890abcdef"}},
	}
	if err := c.Validate(); err == nil {
		t.Fatal("Validate of a config without defaults passed")
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate after ApplyDefaults: %v", err)
	}
	if c.Institutions[0].Retries != 2 || c.Server.Addr != ":8080" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestExpand(t *testing.T) {
	vars := env(map[string]string{"A": "alpha", "EMPTY": "", "B_2": "b"})
	tests := []struct {
		name, in, want string
		unset          []string
		err            string
	}{
		{name: "no variable", in: "plain $HOME text", want: "plain $HOME text"},
		{name: "whole", in: "${A}", want: "alpha"},
		{name: "inside", in: "x-${A}-${B_2}-y", want: "x-alpha-b-y"},
		{name: "unset", in: "k=${NOPE}", want: "k=", unset: []string{"NOPE"}},
		{name: "empty", in: "${EMPTY}", want: "", unset: []string{"EMPTY"}},
		{name: "default when unset", in: "${NOPE:-dflt}", want: "dflt"},
		{name: "default when empty", in: "${EMPTY:-dflt}", want: "dflt"},
		{name: "default not used", in: "${A:-dflt}", want: "alpha"},
		{name: "default with colon", in: "${NOPE:-a:b-c}", want: "a:b-c"},
		{name: "empty default", in: "${NOPE:-}", want: ""},
		{name: "escape", in: "$${A} and ${A}", want: "${A} and alpha"},
		{name: "dollars kept", in: "pa$$word$", want: "pa$$word$"},
		{name: "unterminated", in: "${A", err: "unterminated"},
		{name: "bad name", in: "${1A}", err: "invalid variable name"},
		{name: "no name", in: "${}", err: "invalid variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unset, err := expand(tt.in, vars)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || !reflect.DeepEqual(unset, tt.unset) {
				t.Errorf("expand(%q) = %q %v, want %q %v", tt.in, got, unset, tt.want, tt.unset)
			}
		})
	}
}

func TestLoadExpands(t *testing.T) {
	yml := `
server: {addr: "${HOST:-127.0.0.1}:${PORT}", public_base_url: "http://gw.example/$${literal}"}
api: {tokens: "${TOKENS}"}
institutions:
  - orgcode: BANK01
    name: "${BANK_NAME}"
    base_url: https://bank.example/eg
    app_key: k1
    # a secret with YAML-significant characters must arrive intact
    app_secret: ${BANK01_SECRET}
    timeout: "${BANK01_TIMEOUT}"
    retries: ${RETRIES}
`
	c := mustParse(t, yml, env(map[string]string{
		"PORT":          "8181",
		"TOKENS":        "tok-aaaaaaaaaaaaaaaa, tok-bbbbbbbbbbbbbbbb",
		"BANK_NAME":     "Bank: #1",
		"BANK01_SECRET": `a"b#c: d'e,f[g]!`, // 16 bytes
		"RETRIES":       "5",
	}))
	if c.Server.Addr != "127.0.0.1:8181" {
		t.Errorf("addr = %q", c.Server.Addr)
	}
	if c.Server.PublicBaseURL != "http://gw.example/${literal}" {
		t.Errorf("public_base_url = %q", c.Server.PublicBaseURL)
	}
	if want := []string{"tok-aaaaaaaaaaaaaaaa", "tok-bbbbbbbbbbbbbbbb"}; !reflect.DeepEqual(c.API.Tokens, want) {
		t.Errorf("tokens = %q", c.API.Tokens)
	}
	in := c.Institutions[0]
	if in.Name != "Bank: #1" || in.AppSecret != `a"b#c: d'e,f[g]!` {
		t.Errorf("name %q secret %q", in.Name, in.AppSecret)
	}
	if in.Timeout != 10*time.Second { // unset: as if absent, the default
		t.Errorf("timeout = %v", in.Timeout)
	}
	if in.Retries != 5 {
		t.Errorf("retries = %d", in.Retries)
	}
}

const overrideYAML = minimalYAML + `
  - orgcode: "bank-02"
    name: Bank 2
    base_url: https://bank2.example/eg
    app_key: k2
    app_secret: "${BANK02_SECRET}"
`

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		name  string
		vars  map[string]string
		check func(c *Config) any // returns the value to compare
		want  any
	}{
		{"server.addr", map[string]string{"GATEWAY_SERVER_ADDR": ":9999"},
			func(c *Config) any { return c.Server.Addr + " " + c.Server.PublicBaseURL }, ":9999 http://127.0.0.1:9999"},
		{"database.driver and dsn", map[string]string{"GATEWAY_DATABASE_DRIVER": "mysql", "GATEWAY_DATABASE_DSN": "u:p@tcp(h:3306)/db?parseTime=true"},
			func(c *Config) any { return c.Database.Driver + " " + c.Database.DSN }, "mysql u:p@tcp(h:3306)/db?parseTime=true"},
		{"int", map[string]string{"GATEWAY_DATABASE_MAX_OPEN_CONNS": "7"},
			func(c *Config) any { return c.Database.MaxOpenConns }, 7},
		{"jobs.poll_pending", map[string]string{"GATEWAY_JOBS_POLL_PENDING": "@every 5m"},
			func(c *Config) any { return c.Jobs.PollPending }, "@every 5m"},
		{"duration", map[string]string{"GATEWAY_JOBS_LEASE": "90s"},
			func(c *Config) any { return c.Jobs.Lease }, 90 * time.Second},
		{"bool", map[string]string{"GATEWAY_JOBS_DISABLED": "true"},
			func(c *Config) any { return c.Jobs.Disabled }, true},
		{"log.level", map[string]string{"GATEWAY_LOG_LEVEL": "warn"},
			func(c *Config) any { return c.Log.Level }, "warn"},
		{"token list", map[string]string{"GATEWAY_API_TOKENS": "tok-1111111111111111, tok-2222222222222222"},
			func(c *Config) any { return c.API.Tokens }, []string{"tok-1111111111111111", "tok-2222222222222222"}},
		{"duration list", map[string]string{"GATEWAY_JOBS_POLL_BACKOFF": "1m,2m"},
			func(c *Config) any { return c.Jobs.PollBackoff }, []time.Duration{time.Minute, 2 * time.Minute}},
		{"institution secret", map[string]string{"GATEWAY_INSTITUTIONS_BANK01_APP_SECRET": "fedcba0987654321"},
			func(c *Config) any { return c.Institutions[0].AppSecret }, "fedcba0987654321"},
		{"institution cipher", map[string]string{"GATEWAY_INSTITUTIONS_BANK01_CIPHER_MODE": "cbc", "GATEWAY_INSTITUTIONS_BANK01_CIPHER_ENCODING": "hex"},
			func(c *Config) any { return c.Institutions[0].Cipher.Mode + " " + c.Institutions[0].Cipher.Encoding }, "cbc hex"},
		{"institution list", map[string]string{"GATEWAY_INSTITUTIONS_BANK01_ALLOW_CIDRS": "10.0.0.0/8,::1/128"},
			func(c *Config) any { return c.Institutions[0].AllowCIDRs }, []string{"10.0.0.0/8", "::1/128"}},
		{"orgcode with dash", map[string]string{"GATEWAY_INSTITUTIONS_BANK_02_TIMEOUT": "3s"},
			func(c *Config) any { return c.Institutions[1].Timeout }, 3 * time.Second},
		{"creates sim", map[string]string{"GATEWAY_SIM_ORGCODE": "BANK01", "GATEWAY_SIM_PAY_DELAY": "0s"},
			func(c *Config) any { return *c.Sim }, Sim{OrgCode: "BANK01", Addr: "127.0.0.1:8090", PayDelay: 0, IssueDelay: 2 * time.Second}},
		{"creates tls", map[string]string{"GATEWAY_SERVER_TLS_CERT_FILE": "c.pem", "GATEWAY_SERVER_TLS_KEY_FILE": "k.pem"},
			func(c *Config) any { return *c.Server.TLS }, TLS{CertFile: "c.pem", KeyFile: "k.pem"}},
		{"empty is unset", map[string]string{"GATEWAY_LOG_LEVEL": ""},
			func(c *Config) any { return c.Log.Level }, "info"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"BANK02_SECRET": "0123456789abcdef"}
			for k, v := range tt.vars {
				vars[k] = v
			}
			c := mustParse(t, overrideYAML, env(vars))
			if got := tt.check(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// An override supplies a value whose ${NAME} in the file was unset.
func TestEnvOverrideReplacesUnsetVariable(t *testing.T) {
	c := mustParse(t, overrideYAML, env(map[string]string{"GATEWAY_INSTITUTIONS_BANK_02_APP_SECRET": "0123456789abcdef"}))
	if got := c.Institutions[1].AppSecret; got != "0123456789abcdef" {
		t.Errorf("app_secret = %q", got)
	}
}

func TestEnvOverrideErrors(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want []string
	}{
		{"duration", map[string]string{"GATEWAY_JOBS_LEASE": "soon"}, []string{"GATEWAY_JOBS_LEASE", `invalid duration "soon"`, "jobs.lease"}},
		{"duration without unit", map[string]string{"GATEWAY_INSTITUTIONS_BANK01_TIMEOUT": "10"}, []string{"GATEWAY_INSTITUTIONS_BANK01_TIMEOUT", "invalid duration", "institutions[0].timeout"}},
		{"int", map[string]string{"GATEWAY_JOBS_BATCH_SIZE": "many"}, []string{"GATEWAY_JOBS_BATCH_SIZE", "invalid integer"}},
		{"bool", map[string]string{"GATEWAY_JOBS_DISABLED": "maybe"}, []string{"GATEWAY_JOBS_DISABLED", "invalid boolean"}},
		{"list item", map[string]string{"GATEWAY_JOBS_POLL_BACKOFF": "1m,x"}, []string{"GATEWAY_JOBS_POLL_BACKOFF", "item 2", `invalid duration "x"`}},
		{"float", map[string]string{"GATEWAY_INSTITUTIONS_BANK01_RATE_LIMIT": "fast"}, []string{"GATEWAY_INSTITUTIONS_BANK01_RATE_LIMIT", "invalid number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML), env(tt.vars))
			assertErr(t, err, tt.want...)
		})
	}

	t.Run("ambiguous orgcodes", func(t *testing.T) {
		yml := minimalYAML + `
  - orgcode: "BANK-01"
    name: Other
    base_url: https://other.example
    app_key: k2
    app_secret: "1234567890abcdef"
`
		_, err := Parse([]byte(yml), env(map[string]string{"GATEWAY_INSTITUTIONS_BANK_01_TIMEOUT": "1s"}))
		if err != nil {
			t.Fatalf("distinct names: %v", err)
		}
		yml = strings.Replace(yml, "BANK01", "BANK_01", 1)
		_, err = Parse([]byte(yml), env(map[string]string{"GATEWAY_INSTITUTIONS_BANK_01_TIMEOUT": "1s"}))
		assertErr(t, err, "GATEWAY_INSTITUTIONS_BANK_01_TIMEOUT: ambiguous")
	})
}

func assertErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

// validConfig is a loaded config for Validate cases to break.
func validConfig(t *testing.T) *Config {
	t.Helper()
	return mustParse(t, minimalYAML+`
  - orgcode: BANK02
    name: Bank 2
    base_url: http://bank2.example:8080/api
    app_key: k2
    app_secret: "0123456789abcdef0123456789abcdef"
sim: {orgcode: BANK02}
console:
  users: [{name: ops.li, password_hash: "$2a$10$cjagT4FzcWPiOh9Rzl.MZOG/2nogSSw.ZzcipMYkUgfOb8g9FJxq.", role: operator}]
`, noEnv)
}

func TestValidate(t *testing.T) {
	const secret15 = "S3cr3t-15-bytes"
	tests := []struct {
		name   string
		break_ func(c *Config)
		want   []string
	}{
		{"unknown driver", func(c *Config) { c.Database.Driver = "postgres" },
			[]string{`database.driver: unknown driver "postgres" (want sqlite or mysql)`}},
		{"mysql without dsn", func(c *Config) { c.Database.Driver = "mysql"; c.Database.DSN = "" },
			[]string{"database.dsn: empty"}},
		{"mysql bad dsn", func(c *Config) { c.Database.Driver = "mysql"; c.Database.DSN = "u:pw@tcp(h:3306)" },
			[]string{"database.dsn: not a MySQL DSN"}},
		{"duplicate orgcode", func(c *Config) { c.Institutions[1].OrgCode = "BANK01"; c.Sim.OrgCode = "BANK01" },
			[]string{`institutions[1].orgcode: duplicate "BANK01"`}},
		{"duplicate app_key", func(c *Config) { c.Institutions[1].AppKey = "k1" },
			[]string{"institutions[BANK02].app_key: duplicate", "institutions[BANK01]"}},
		{"secret length", func(c *Config) { c.Institutions[0].AppSecret = secret15 },
			[]string{"institutions[BANK01].app_secret:", "15 bytes"}},
		{"secret length sm4", func(c *Config) { c.Institutions[1].Cipher.Algorithm = "sm4" },
			[]string{"institutions[BANK02].app_secret:", "sm4 key is 32 bytes"}},
		{"iv key with a 32-byte key", func(c *Config) { c.Institutions[1].Cipher.Mode = "cbc" },
			[]string{"institutions[BANK02].app_secret:", `iv "key"`}},
		{"cipher mode", func(c *Config) { c.Institutions[0].Cipher.Mode = "gcm" },
			[]string{"institutions[BANK01].cipher:", `mode "gcm"`}},
		{"cipher iv length", func(c *Config) { c.Institutions[0].Cipher.IV = "short-iv" },
			[]string{"institutions[BANK01].cipher:", "iv"}},
		{"cipher encoding", func(c *Config) { c.Institutions[0].Cipher.Encoding = "b64" },
			[]string{"institutions[BANK01].cipher:", "encoding"}},
		{"empty orgcode", func(c *Config) { c.Institutions[0].OrgCode = "" },
			[]string{"institutions[0].orgcode: empty"}},
		{"empty name", func(c *Config) { c.Institutions[0].Name = "" },
			[]string{"institutions[BANK01].name: empty"}},
		{"empty app_key", func(c *Config) { c.Institutions[0].AppKey = "" },
			[]string{"institutions[BANK01].app_key: empty"}},
		{"empty app_secret", func(c *Config) { c.Institutions[0].AppSecret = "" },
			[]string{"institutions[BANK01].app_secret: empty"}},
		{"no institutions", func(c *Config) { c.Institutions = nil; c.Sim = nil },
			[]string{"institutions: empty"}},
		{"base_url relative", func(c *Config) { c.Institutions[0].BaseURL = "/eg" },
			[]string{"institutions[BANK01].base_url:", "absolute http(s)"}},
		{"base_url ftp", func(c *Config) { c.Institutions[0].BaseURL = "ftp://bank.example/eg" },
			[]string{"institutions[BANK01].base_url:", "absolute http(s)"}},
		{"base_url no host", func(c *Config) { c.Institutions[0].BaseURL = "http:///eg" },
			[]string{"institutions[BANK01].base_url:", "no host"}},
		{"base_url query", func(c *Config) { c.Institutions[0].BaseURL = "http://b.example/eg?x=1" },
			[]string{"institutions[BANK01].base_url:", "query"}},
		{"base_url empty", func(c *Config) { c.Institutions[0].BaseURL = "" },
			[]string{"institutions[BANK01].base_url: empty"}},
		{"timeout", func(c *Config) { c.Institutions[0].Timeout = 0 },
			[]string{"institutions[BANK01].timeout: must be positive"}},
		{"max_concurrent", func(c *Config) { c.Institutions[0].MaxConcurrent = 0 },
			[]string{"institutions[BANK01].max_concurrent: must be at least 1"}},
		{"breaker_failures", func(c *Config) { c.Institutions[0].BreakerFailures = 0 },
			[]string{"institutions[BANK01].breaker_failures: must be at least 1"}},
		{"breaker_open_for", func(c *Config) { c.Institutions[0].BreakerOpenFor = -time.Second },
			[]string{"institutions[BANK01].breaker_open_for: must be positive"}},
		{"retries", func(c *Config) { c.Institutions[0].Retries = -1 },
			[]string{"institutions[BANK01].retries: must not be negative"}},
		{"allow_cidrs", func(c *Config) { c.Institutions[0].AllowCIDRs = []string{"10.0.0.0/8", "10.1.2.3"} },
			[]string{`institutions[BANK01].allow_cidrs[1]: "10.1.2.3" is not a CIDR (for one address write 10.1.2.3/32)`}},
		{"url_origins not an origin", func(c *Config) {
			c.Institutions[0].URLOrigins = []string{"https://files.bank.example", "files.bank.example", "https://bank.example/eg/query", "ftp://bank.example"}
		}, []string{
			`institutions[BANK01].url_origins[1]: "files.bank.example" is not an origin`,
			`institutions[BANK01].url_origins[2]: "https://bank.example/eg/query" is not an origin`,
			`institutions[BANK01].url_origins[3]: "ftp://bank.example" is not an origin`}},
		{"stranger_audit_rate negative", func(c *Config) { c.Server.StrangerAuditRate = -1 },
			[]string{"server.stranger_audit_rate: must be a number of rows per second, 0 or more"}},
		{"body_bytes_in_flight below the notify limit", func(c *Config) { c.Server.BodyBytesInFlight = 1 << 20 },
			[]string{"server.body_bytes_in_flight: must be at least server.notify_body_limit (31457280), got 1048576"}},
		{"rate_burst", func(c *Config) { c.Institutions[0].RateLimit = 5 },
			[]string{"institutions[BANK01].rate_burst: must be at least 1"}},
		{"public_base_url relative", func(c *Config) { c.Server.PublicBaseURL = "gw.example:8080" },
			[]string{"server.public_base_url:"}},
		{"public_base_url empty", func(c *Config) { c.Server.PublicBaseURL = "" },
			[]string{"server.public_base_url: empty"}},
		{"addr", func(c *Config) { c.Server.Addr = "8080" },
			[]string{`server.addr: "8080" is not host:port`}},
		{"tls cert only", func(c *Config) { c.Server.TLS = &TLS{CertFile: "c.pem"} },
			[]string{"server.tls.key_file: empty"}},
		{"tls key only", func(c *Config) { c.Server.TLS = &TLS{KeyFile: "k.pem"} },
			[]string{"server.tls.cert_file: empty"}},
		{"body limit", func(c *Config) { c.Server.NotifyBodyLimit = 0 },
			[]string{"server.notify_body_limit: must be positive"}},
		{"callback batch zero", func(c *Config) { c.Server.CallbackBatch = 0 },
			[]string{"server.callback_batch: must be 1 (each callback in its own transaction) to 1000, got 0"}},
		{"callback batch too big", func(c *Config) { c.Server.CallbackBatch = 5000 },
			[]string{"server.callback_batch: must be 1 (each callback in its own transaction) to 1000, got 5000"}},
		{"database retries negative", func(c *Config) { c.Database.Retries = -1 },
			[]string{"database.retries: must be 0 (never run a refused transaction again) to 30, got -1"}},
		{"database retries too many", func(c *Config) { c.Database.Retries = 100 },
			[]string{"database.retries: must be 0 (never run a refused transaction again) to 30, got 100"}},
		{"database retry_wait zero", func(c *Config) { c.Database.RetryWait = 0 },
			[]string{"database.retry_wait: must be positive and at most 1s, got 0s"}},
		{"schedule", func(c *Config) { c.Jobs.PollPending = "every 5s" },
			[]string{`jobs.poll_pending: unparseable schedule "every 5s"`}},
		{"schedule six fields", func(c *Config) { c.Jobs.Reconcile = "0 0 2 * * *" },
			[]string{`jobs.reconcile: unparseable schedule "0 0 2 * * *"`}},
		{"schedule empty", func(c *Config) { c.Jobs.DeliverOutbox = "" },
			[]string{"jobs.deliver_outbox: empty"}},
		{"backoff empty", func(c *Config) { c.Jobs.PollBackoff = nil },
			[]string{"jobs.poll_backoff: empty"}},
		{"backoff not positive", func(c *Config) { c.Jobs.RedeliveryBackoff = []time.Duration{time.Second, 0} },
			[]string{"jobs.redelivery_backoff[1]: must be positive"}},
		{"apply backoff negative", func(c *Config) { c.Jobs.ApplyBackoff = []time.Duration{-time.Second} },
			[]string{"jobs.apply_backoff[0]: must be positive"}},
		{"max_apply_attempts", func(c *Config) { c.Jobs.MaxApplyAttempts = 0 },
			[]string{"jobs.max_apply_attempts: must be at least 1"}},
		{"lease", func(c *Config) { c.Jobs.Lease = 0 },
			[]string{"jobs.lease: must be positive"}},
		{"state interval not positive", func(c *Config) { c.Metrics.StateInterval = 0 },
			[]string{"metrics.state_interval: must be positive, got 0s"}},
		{"retention too short", func(c *Config) { c.Retention.RawBodies = 180 * time.Second },
			[]string{"retention.raw_bodies: must be 0 (keep for ever) or at least 24h0m0s, got 3m0s"}},
		{"retention negative", func(c *Config) { c.Retention.Calls = -time.Hour },
			[]string{"retention.calls: must be 0 (keep for ever) or at least 24h0m0s, got -1h0m0s"}},
		{"retention batch", func(c *Config) { c.Retention.BatchSize = 0 },
			[]string{"retention.batch_size: must be 1 to 10000, got 0"}},
		{"retention max_per_run", func(c *Config) { c.Retention.MaxPerRun = 10 },
			[]string{"retention.max_per_run: must be at least retention.batch_size (500), got 10"}},
		{"retention pause", func(c *Config) { c.Retention.Pause = time.Hour },
			[]string{"retention.pause: must be 0 to 1m, got 1h0m0s"}},
		{"retention schedule", func(c *Config) { c.Jobs.Retention = "hourly" },
			[]string{`jobs.retention: unparseable schedule "hourly"`}},
		{"no token", func(c *Config) { c.API.Tokens = nil },
			[]string{"api.tokens: empty"}},
		{"empty token", func(c *Config) { c.API.Tokens = append(c.API.Tokens, "") },
			[]string{"api.tokens[1]: empty"}},
		{"short token", func(c *Config) { c.API.Tokens = []string{"short-token"} },
			[]string{"api.tokens[0]: too short (11 characters, want at least 16)"}},
		{"log level", func(c *Config) { c.Log.Level = "verbose" },
			[]string{`log.level: unknown level "verbose"`}},
		{"log format", func(c *Config) { c.Log.Format = "xml" },
			[]string{`log.format: unknown format "xml"`}},
		{"sim orgcode", func(c *Config) { c.Sim.OrgCode = "NOPE" },
			[]string{`sim.orgcode: "NOPE" names no configured institution`}},
		{"sim addr", func(c *Config) { c.Sim.Addr = "nowhere" },
			[]string{`sim.addr: "nowhere" is not host:port`}},
		{"console addr", func(c *Config) { c.Console.Addr = "8081" },
			[]string{`console.addr: "8081" is not host:port`}},
		{"console addr is server.addr", func(c *Config) { c.Console.Addr = c.Server.Addr },
			[]string{"console.addr: is server.addr"}},
		{"console session_ttl", func(c *Config) { c.Console.SessionTTL = time.Second },
			[]string{"console.session_ttl: must be at least 1m, got 1s"}},
		{"console time_zone", func(c *Config) { c.Console.TimeZone = "Beijing" },
			[]string{`console.time_zone: unknown time zone "Beijing"`}},
		{"console user name", func(c *Config) { c.Console.Users[0].Name = "li si" },
			[]string{`console.users[0].name: "li si": use at most 64 letters, digits and . _ @ -`}},
		{"console user duplicate", func(c *Config) { c.Console.Users = append(c.Console.Users, c.Console.Users[0]) },
			[]string{`console.users[1].name: duplicate "ops.li"`}},
		{"console user no hash", func(c *Config) { c.Console.Users[0].PasswordHash = "" },
			[]string{"console.users[ops.li].password_hash: empty (make one with `gateway password`)"}},
		{"console user plain password", func(c *Config) { c.Console.Users[0].PasswordHash = "secret-password" },
			[]string{"console.users[ops.li].password_hash: not a bcrypt hash"}},
		{"console user weak hash", func(c *Config) {
			c.Console.Users[0].PasswordHash = "$2a$04$0mN5rIAZsIUyRXtbxuKDEu84MnBDxkA1HjbX4uDL7tq9h5I6NH0gy"
		}, []string{"console.users[ops.li].password_hash: bcrypt cost 4 is below 10"}},
		{"console user role", func(c *Config) { c.Console.Users[0].Role = "admin" },
			[]string{`console.users[ops.li].role: unknown role "admin" (viewer or operator)`}},
		{"several at once", func(c *Config) {
			c.Database.Driver = "postgres"
			c.Log.Format = "xml"
			c.Institutions[0].AppSecret = secret15
		}, []string{"database.driver", "log.format", "institutions[BANK01].app_secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.break_(c)
			err := c.Validate()
			assertErr(t, err, tt.want...)
			if err != nil && strings.Contains(err.Error(), secret15) {
				t.Errorf("error shows the secret: %v", err)
			}
			// Each case breaks one thing (the last three), and only that
			// is reported.
			want := 1
			if tt.name == "several at once" || tt.name == "url_origins not an origin" {
				want = 3
			}
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != want {
				t.Errorf("%d problems, want %d: %v", n, want, err)
			}
		})
	}
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		vars map[string]string
		want []string
	}{
		{"unknown top-level key", minimalYAML + "servr: {addr: x}\n", nil,
			[]string{"servr: unknown key", "known keys here: server, database"}},
		{"unknown nested key", strings.Replace(minimalYAML, "app_key: k1", "app_key: k1\n    cipher: {modee: cbc}", 1), nil,
			[]string{"institutions[0].cipher.modee: unknown key", "line 9"}},
		{"duplicate key", minimalYAML + "log: {level: info}\nlog: {level: debug}\n", nil,
			[]string{"log: duplicate key"}},
		{"duration without unit", strings.Replace(minimalYAML, "app_key: k1", "app_key: k1\n    timeout: 10", 1), nil,
			[]string{"institutions[0].timeout: invalid duration \"10\""}},
		{"integer", minimalYAML + "jobs: {batch_size: lots}\n", nil,
			[]string{`jobs.batch_size: invalid integer "lots"`}},
		{"mapping for a value", minimalYAML + "log: {level: {a: b}}\n", nil,
			[]string{"log.level: want a single value, got a mapping"}},
		{"value for a mapping", minimalYAML + "server: 8080\n", nil,
			[]string{`server: want a mapping (key: value), got the value "8080"`}},
		{"value for a list of mappings", "institutions: BANK01\n", nil,
			[]string{"institutions: want a list"}},
		{"unset secret variable", strings.Replace(minimalYAML, `"1234567890abcdef"`, `"${BANK01_SECRET}"`, 1), nil,
			[]string{"institutions[BANK01].app_secret: empty (set BANK01_SECRET)"}},
		{"unset token variable", strings.Replace(minimalYAML, `"tok-0123456789abcdef"`, `"${GATEWAY_API_TOKEN}"`, 1), nil,
			[]string{"api.tokens[0]: empty (set GATEWAY_API_TOKEN)"}},
		{"unset variable in a longer value", strings.Replace(minimalYAML, "https://bank.example/eg", "https://${BANK_HOST}/eg", 1), nil,
			[]string{"institutions[BANK01].base_url:", "${BANK_HOST} unset or empty"}},
		{"unterminated variable", minimalYAML + "log: {level: \"${LEVEL\"}\n", nil,
			[]string{"log.level: unterminated"}},
		{"two documents", minimalYAML + "---\nlog: {}\n", nil,
			[]string{"more than one YAML document"}},
		{"syntax", "server: [\n", nil,
			[]string{"yaml:"}},
		{"empty file", "", nil,
			[]string{"api.tokens: empty", "institutions: empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yml), env(tt.vars))
			assertErr(t, err, tt.want...)
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error is a %T, not *Error", err)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := Load("testdata-does-not-exist.yaml", noEnv)
	assertErr(t, err, "testdata-does-not-exist.yaml")
	dir := t.TempDir()
	path := dir + "/bad.yaml"
	if err := os.WriteFile(path, []byte(minimalYAML+"log: {level: loud, format: xml}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path, noEnv)
	assertErr(t, err, "config "+path+": ", "log.level", "problems")
}

func TestPath(t *testing.T) {
	tests := []struct {
		name, flag, envValue, want string
	}{
		{"flag wins", "a.yaml", "b.yaml", "a.yaml"},
		{"environment", "", "b.yaml", "b.yaml"},
		{"default", "", "", "config.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Path(tt.flag, env(map[string]string{"GATEWAY_CONFIG": tt.envValue})); got != tt.want {
				t.Errorf("Path = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedaction(t *testing.T) {
	secrets := map[string]string{
		"app_secret": "Zq9-secret-Zq9-secret-Zq9-secret",
		"token":      "tok-VERYSECRET-0123456789",
		"password":   "Db-P@ss/w0rd",
		"iv":         "IVIVIVsecretIVIV",
	}
	yml := fmt.Sprintf(`
database:
  driver: mysql
  dsn: "gw:%s@tcp(db:3306)/gateway?parseTime=true&loc=UTC"
api: {tokens: ["%s"]}
institutions:
  - {orgcode: B1, name: B1, base_url: "http://b1.example", app_key: k1, app_secret: "%s", cipher: {mode: cbc, iv: "%s"}}
  - {orgcode: B2, name: B2, base_url: "http://b2.example", app_key: k2, app_secret: "0123456789abcdef", cipher: {mode: cbc}}
`, secrets["password"], secrets["token"], secrets["app_secret"], secrets["iv"])
	c := mustParse(t, yml, noEnv)

	outputs := map[string]string{
		"String":              c.String(),
		"%v of *Config":       fmt.Sprintf("%v", c),
		"%+v of Config":       fmt.Sprintf("%+v", *c),
		"%#v of Config":       fmt.Sprintf("%#v", *c),
		"Institution.String":  fmt.Sprint(c.Institutions[0]),
		"Database.String":     fmt.Sprint(c.Database),
		"API.String":          fmt.Sprint(c.API),
		"Cipher.String":       fmt.Sprint(c.Institutions[0].Cipher),
		"Redacted().Database": c.Redacted().Database.DSN,
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			for what, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("shows the %s:\n%s", what, out)
				}
			}
			if !strings.Contains(out, redacted) {
				t.Errorf("no %s in:\n%s", redacted, out)
			}
		})
	}
	s := c.String()
	for _, want := range []string{
		"dsn: gw:<redacted>@tcp(db:3306)/gateway?parseTime=true&loc=UTC",
		"tokens: [<redacted>]",
		"app_secret: <redacted>",
		"iv: key", // the keyword is not secret
		"iv: <redacted>",
		"poll_backoff: [1m, 2m, 5m, 10m, 30m, 1h]",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	// Redacted is a copy: the config keeps its secrets.
	r := c.Redacted()
	if c.API.Tokens[0] != secrets["token"] || c.Institutions[0].AppSecret != secrets["app_secret"] {
		t.Error("Redacted changed the original")
	}
	if r.Institutions[0].AppSecret != redacted || r.API.Tokens[0] != redacted || r.Institutions[0].Cipher.IV != redacted {
		t.Errorf("Redacted: %+v", r.Institutions[0])
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"mysql", "user:pass@tcp(127.0.0.1:3306)/gateway?parseTime=true", "user:<redacted>@tcp(127.0.0.1:3306)/gateway?parseTime=true"},
		{"password with @ and /", "user:p@ss/x@tcp(h:3306)/db", "user:<redacted>@tcp(h:3306)/db"},
		{"no password", "user@tcp(h:3306)/db", "user@tcp(h:3306)/db"},
		{"sqlite path", "data/gateway.db", "data/gateway.db"},
		{"sqlite uri", "file:data/gateway.db?mode=rwc", "file:data/gateway.db?mode=rwc"},
		{"secret parameter", "file:x.db?_auth_pass=hunter2&mode=rwc", "file:x.db?_auth_pass=<redacted>&mode=rwc"},
		{"url form", "mysql://u:pw@h/db", "mysql:<redacted>@h/db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactDSN(tt.in); got != tt.want {
				t.Errorf("RedactDSN(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// The YAML that String prints (before redaction) loads back to the same
// config: every key and duration is written in the form the loader reads.
func TestRoundTrip(t *testing.T) {
	c := mustParse(t, fullYAML, env(fullEnv))
	var b strings.Builder
	if err := yamlEncode(&b, toNode(reflect.ValueOf(*c))); err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, b.String(), noEnv)
	if !reflect.DeepEqual(c, back) {
		t.Errorf("round trip differs:\n%s", b.String())
	}
}

func TestInstitution(t *testing.T) {
	c := validConfig(t)
	if in, ok := c.Institution("BANK02"); !ok || in.AppKey != "k2" || in != &c.Institutions[1] {
		t.Errorf("Institution(BANK02) = %v %v", in, ok)
	}
	if _, ok := c.Institution("bank02"); ok {
		t.Error("orgcodes matched case-insensitively")
	}
}

// The repository's default config.yaml loads on a machine with no
// environment set, and takes the token and secret from it when set.
func TestDefaultConfigFile(t *testing.T) {
	c, err := Load("../config.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sim == nil || c.Sim.OrgCode != "SIM" || c.Sim.Addr != "127.0.0.1:8090" {
		t.Errorf("sim = %+v", c.Sim)
	}
	sim, ok := c.Institution("SIM")
	if !ok || sim.BaseURL != "http://127.0.0.1:8090/sim" || sim.AppSecret != "simsecret0123456" || sim.Timeout != 5*time.Second {
		t.Errorf("SIM institution = %+v", sim)
	}
	if c.Database.Driver != "sqlite" || c.Database.DSN != "data/gateway.db" {
		t.Errorf("database = %+v", c.Database)
	}
	if len(c.API.Tokens) != 1 || c.API.Tokens[0] != "dev-token-change-me-0001" {
		t.Errorf("tokens = %q", c.API.Tokens)
	}
	if c.Jobs.PollPending != "@every 10s" || c.Jobs.Reconcile != "0 2 * * *" {
		t.Errorf("jobs = %+v", c.Jobs)
	}
	// A laptop's file, with the README's secrets in it: loopback only, and
	// the gateway says at start which shipped secrets are in force.
	if c.Server.Addr != "127.0.0.1:8080" {
		t.Errorf("server.addr = %q; the shipped config.yaml must listen on loopback only", c.Server.Addr)
	}
	if got := c.InsecureDefaults(); !reflect.DeepEqual(got, []string{"api.tokens[0]", "institutions[SIM].app_secret",
		"console.users[0].password_hash"}) {
		t.Errorf("InsecureDefaults() = %q", got)
	}

	c, err = Load("../config.yaml", env(map[string]string{
		"GATEWAY_API_TOKEN": "prod-token-0123456789abcdef",
		"SIM_APP_SECRET":    "another-secret-0123456789abcdef!",
		// bcrypt of another password
		"GATEWAY_CONSOLE_USERS_DEMO_PASSWORD_HASH": "$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z2FG7m2OwlZ8xGSGHsWdR5Wm",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Tokens[0] != "prod-token-0123456789abcdef" || c.Institutions[0].AppSecret != "another-secret-0123456789abcdef!" {
		t.Errorf("environment not used: %q %q", c.API.Tokens, c.Institutions[0].AppSecret)
	}
	if got := c.InsecureDefaults(); len(got) != 0 {
		t.Errorf("InsecureDefaults() = %q with every secret set", got)
	}
}

// Anchors and merge keys let institutions share settings; a key of the
// mapping itself wins over a merged one.
func TestAnchorsAndMerge(t *testing.T) {
	yml := `
api: {tokens: ["tok-0123456789abcdef"]}
x-common: &common
  cipher: {mode: cbc, encoding: hex}
  timeout: 3s
institutions:
  - <<: *common
    orgcode: B1
    name: B1
    base_url: http://b1.example
    app_key: k1
    app_secret: "1234567890abcdef"
  - <<: *common
    orgcode: B2
    name: B2
    base_url: http://b2.example
    app_key: k2
    app_secret: "1234567890abcdef"
    timeout: 9s
`
	// x-common is not a key of the config: unknown keys are refused even
	// when only used as an anchor.
	_, err := Parse([]byte(yml), noEnv)
	assertErr(t, err, "x-common: unknown key")

	yml = strings.Replace(yml, "x-common: &common\n  cipher: {mode: cbc, encoding: hex}\n  timeout: 3s\n", "", 1)
	yml = strings.Replace(yml, "  - <<: *common\n    orgcode: B1", "  - &b1\n    cipher: {mode: cbc, encoding: hex}\n    timeout: 3s\n    orgcode: B1", 1)
	yml = strings.Replace(yml, "  - <<: *common\n    orgcode: B2", "  - <<: *b1\n    orgcode: B2", 1)
	c := mustParse(t, yml, noEnv)
	b1, b2 := c.Institutions[0], c.Institutions[1]
	if b2.Cipher.Mode != "cbc" || b2.Cipher.Encoding != "hex" || b2.Timeout != 9*time.Second || b1.Timeout != 3*time.Second || b2.AppKey != "k2" {
		t.Errorf("merged: B1 %v %v, B2 %v %v %v", b1.Cipher, b1.Timeout, b2.Cipher, b2.Timeout, b2.AppKey)
	}
}

// TestConsoleUserFromEnvironment: a console user's hash can come from the
// environment, the user named as an institution is (GATEWAY_CONSOLE_USERS_
// <NAME>_PASSWORD_HASH), and it prints redacted.
func TestConsoleUserFromEnvironment(t *testing.T) {
	const hash = "$2a$10$cjagT4FzcWPiOh9Rzl.MZOG/2nogSSw.ZzcipMYkUgfOb8g9FJxq."
	c := mustParse(t, minimalYAML+`
console:
  users:
    - {name: wang.wu, password_hash: "${WANGWU_HASH}", role: viewer}
`, env(map[string]string{"GATEWAY_CONSOLE_USERS_WANG_WU_PASSWORD_HASH": hash}))
	u, ok := c.Console.User("wang.wu")
	if !ok || u.PasswordHash != hash || u.Role != RoleViewer || c.Console.SessionTTL != 8*time.Hour || c.Console.TimeZone != "Asia/Shanghai" {
		t.Fatalf("console: %+v", c.Console)
	}
	if s := c.String(); strings.Contains(s, hash) || !strings.Contains(s, "password_hash: <redacted>") {
		t.Errorf("printed config shows the hash:\n%s", s)
	}
}

// Package config loads and validates config.yaml (API.md "Configuration").
// A wrong config stops the program at start with an error naming the field;
// nothing starts half configured.
package config

import (
	"time"

	"github.com/procurement/gateway/crypto"
)

// Config is the whole configuration.
type Config struct {
	Server       Server        `yaml:"server"`
	Database     Database      `yaml:"database"`
	API          API           `yaml:"api"`
	Institutions []Institution `yaml:"institutions" envkey:"orgcode"` // GATEWAY_INSTITUTIONS_<ORGCODE>_<FIELD>
	Jobs         Jobs          `yaml:"jobs"`
	Log          Log           `yaml:"log"`
	// Sim runs the simulated institution in process (banksim) for the demo
	// and `go run .`; production configs leave it out.
	Sim *Sim `yaml:"sim"`
}

// Server is the HTTP listener.
type Server struct {
	Addr          string        `yaml:"addr"`            // default ":8080"
	PublicBaseURL string        `yaml:"public_base_url"` // what institutions call back
	TLS           *TLS          `yaml:"tls"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace"` // default 15s
	// Body limits of the callbacks: applynotify carries a PDF.
	NotifyBodyLimit   int64 `yaml:"notify_body_limit"`   // default 30 MiB
	CallbackBodyLimit int64 `yaml:"callback_body_limit"` // default 64 KiB
	// CallbackBatch: at most this many concurrent callbacks of a kind share
	// one transaction (group commit); 1 takes each in its own.
	CallbackBatch int `yaml:"callback_batch"` // default 64
}

// TLS serves HTTPS directly when set.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Database selects the store.
type Database struct {
	Driver       string        `yaml:"driver"`            // sqlite (default) | mysql
	DSN          string        `yaml:"dsn" secret:"dsn"`  // shown with the password redacted
	MaxOpenConns int           `yaml:"max_open_conns"`    // default 32 (sqlite: 1 writer is enforced by the driver setup)
	MaxIdleConns int           `yaml:"max_idle_conns"`    // default 32
	ConnMaxLife  time.Duration `yaml:"conn_max_lifetime"` // default 30m
}

// API is the bidding module's access.
type API struct {
	Tokens []string `yaml:"tokens" secret:"true"`
}

// Institution is one bank, insurer or guarantee company.
type Institution struct {
	OrgCode   string        `yaml:"orgcode"`
	Name      string        `yaml:"name"`
	BaseURL   string        `yaml:"base_url"`
	AppKey    string        `yaml:"app_key"`
	AppSecret string        `yaml:"app_secret" secret:"true"`
	Cipher    Cipher        `yaml:"cipher"`
	Timeout   time.Duration `yaml:"timeout"` // default 10s
	Disabled  bool          `yaml:"disabled"`
	// Retries of idempotent calls (cost, query, pull, xmstate) on an
	// outcome-unknown or 5xx failure; apply and cancel are never retried
	// inline (the jobs do it). Default 2.
	Retries int `yaml:"retries"`
	// MaxConcurrent bounds the jobs' calls to this institution at once. Default 8.
	MaxConcurrent int `yaml:"max_concurrent"`
	// The circuit breaker: after BreakerFailures consecutive failures
	// (timeouts, resets, 5xx, garbage; never a stat 0) calls stop for
	// BreakerOpenFor, then one probe decides. Defaults 5 and 30s.
	BreakerFailures int           `yaml:"breaker_failures"`
	BreakerOpenFor  time.Duration `yaml:"breaker_open_for"`
	// AllowCIDRs, when set, is the only source of its callbacks.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// RateLimit is callbacks per second accepted from it (0: unlimited), with Burst.
	RateLimit float64 `yaml:"rate_limit"`
	RateBurst int     `yaml:"rate_burst"`
}

// Cipher is the per-institution choice of DECISIONS.md §2.
type Cipher struct {
	Algorithm string `yaml:"algorithm"`
	Mode      string `yaml:"mode"`
	IV        string `yaml:"iv" secret:"unless=key"` // "key" is not secret, a literal IV is
	Encoding  string `yaml:"encoding"`
	Key       string `yaml:"key"`
	KeyBits   int    `yaml:"key_bits"`
}

// Options converts to the crypto package's options.
func (c Cipher) Options() crypto.Options {
	return crypto.Options{Algorithm: c.Algorithm, Mode: c.Mode, IV: c.IV, Encoding: c.Encoding, Key: c.Key, KeyBits: c.KeyBits}
}

// Jobs are the schedules (robfig/cron/v3 specs) and back-offs.
type Jobs struct {
	PollPending     string `yaml:"poll_pending"`     // default "@every 30s"
	RecoverApplying string `yaml:"recover_applying"` // default "@every 1m"
	PullFiles       string `yaml:"pull_files"`       // default "@every 1m"
	DeliverOutbox   string `yaml:"deliver_outbox"`   // default "@every 15s"
	Reconcile       string `yaml:"reconcile"`        // default "0 2 * * *"

	PollBackoff       []time.Duration `yaml:"poll_backoff"`       // default 1m,2m,5m,10m,30m,1h; the last repeats
	RedeliveryBackoff []time.Duration `yaml:"redelivery_backoff"` // default 15s,15s,30s,3m,10m,20m,30m,30m,30m,1h,3h,3h,3h,6h,6h; then dead
	ApplyBackoff      []time.Duration `yaml:"apply_backoff"`      // default 30s,1m,2m,5m,10m; the last repeats
	MaxApplyAttempts  int             `yaml:"max_apply_attempts"` // default 8; then flagged for operators

	// StaleAfterOpening: polling stops this long after kbttime and the order is flagged stale. Default 24h.
	StaleAfterOpening time.Duration `yaml:"stale_after_opening"`
	BatchSize         int           `yaml:"batch_size"`  // default 100
	Concurrency       int           `yaml:"concurrency"` // per job, default 32
	Lease             time.Duration `yaml:"lease"`       // default 2m
	Disabled          bool          `yaml:"disabled"`    // run no scheduler in this instance
}

// Log configures logrus.
type Log struct {
	Level  string `yaml:"level"`  // default info
	Format string `yaml:"format"` // json | text | auto (default: text on a terminal, json otherwise)
}

// Sim is the in-process simulated institution.
type Sim struct {
	OrgCode    string        `yaml:"orgcode"`     // must match an institution entry
	Addr       string        `yaml:"addr"`        // default "127.0.0.1:8090", fixed so base_url can name it
	PayDelay   time.Duration `yaml:"pay_delay"`   // default 1s
	IssueDelay time.Duration `yaml:"issue_delay"` // default 2s
}

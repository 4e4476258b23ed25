// Package config loads and validates config.yaml (docs/api.md
// "Configuration"). A wrong config stops the program at start with an error
// naming the field; nothing starts half configured.
//
// Every default lives in the `default` tag of its field and nowhere else:
// Load and ApplyDefaults fill fields in from the tags (defaults.go), the
// README's configuration table is checked against them by a test, and the
// packages that take their settings from a Config set none of their own.
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
	Retention    Retention     `yaml:"retention"`
	Log          Log           `yaml:"log"`
	// Console is the operators' web console (console.go).
	Console Console `yaml:"console"`
	// Metrics shapes /metrics.
	Metrics Metrics `yaml:"metrics"`
	// Sim runs the simulated institution in process (banksim) for the demo
	// and `go run .`; production configs leave it out.
	Sim *Sim `yaml:"sim"`
}

// Server is the HTTP listener.
type Server struct {
	Addr string `yaml:"addr" default:":8080"`
	// PublicBaseURL is what institutions are told to call back. Default:
	// http(s)://127.0.0.1:<port of addr>, reachable from this machine.
	PublicBaseURL string `yaml:"public_base_url"`
	// Instance names this replica in the leases it takes and in its logs.
	// Default: host name and process id, unique per running process.
	Instance      string        `yaml:"instance"`
	TLS           *TLS          `yaml:"tls"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace" default:"15s"`
	// Body limits of the callbacks: applynotify carries a PDF.
	NotifyBodyLimit   int64 `yaml:"notify_body_limit" default:"31457280"` // 30 MiB
	CallbackBodyLimit int64 `yaml:"callback_body_limit" default:"65536"`  // 64 KiB
	// CallbackBatch: at most this many concurrent callbacks of a kind share
	// one transaction (group commit); 1 takes each in its own.
	CallbackBatch int `yaml:"callback_batch" default:"64"`
	// StrangerAuditRate: at most this many audit rows per second for the
	// callbacks refused from their headers alone (an unknown appKey, a
	// source outside allow_cidrs, a sender over its rate); the rest are
	// only counted. 0 audits none of them.
	StrangerAuditRate float64 `yaml:"stranger_audit_rate" default:"10"`
	// BodyBytesInFlight bounds the memory of the request bodies being read
	// and worked on at once (docs/decisions.md §35).
	BodyBytesInFlight int64 `yaml:"body_bytes_in_flight" default:"268435456"` // 256 MiB
}

// TLS serves HTTPS directly when set.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Database selects the store.
type Database struct {
	Driver string `yaml:"driver" default:"sqlite"` // sqlite | mysql
	// DSN is shown with the password redacted. Default (sqlite only):
	// data/gateway.db.
	DSN string `yaml:"dsn" secret:"dsn"`
	// The MySQL pool; SQLite runs one connection whatever these say. As
	// many idle as open: the jobs run 32 calls at once by default, and a
	// smaller idle pool closes and reopens connections on every batch.
	MaxOpenConns int           `yaml:"max_open_conns" default:"32"`
	MaxIdleConns int           `yaml:"max_idle_conns" default:"32"`
	ConnMaxLife  time.Duration `yaml:"conn_max_lifetime" default:"30m"`
	// A transaction the database refused over a conflict with another
	// writer (a deadlock; on a Galera cluster, writers of one row on two
	// nodes at once) runs again, at most Retries more times, after a pause
	// drawn at random below RetryWait, doubling each time (at most 1 s):
	// only when conflicts outlast them is a callback answered 503.
	Retries   int           `yaml:"retries" default:"8"`
	RetryWait time.Duration `yaml:"retry_wait" default:"10ms"`
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
	Timeout   time.Duration `yaml:"timeout" default:"10s"` // per call attempt
	Disabled  bool          `yaml:"disabled"`
	// Retries of idempotent calls (cost, query, pull, xmstate) on an
	// outcome-unknown or 5xx failure; apply and cancel are never retried
	// inline (the jobs do it).
	Retries int `yaml:"retries" default:"2"`
	// RetryWait is the pause before the first retry; it doubles after each.
	RetryWait time.Duration `yaml:"retry_wait" default:"200ms"`
	// MaxConcurrent bounds the jobs' calls to this institution at once.
	MaxConcurrent int `yaml:"max_concurrent" default:"8"`
	// The circuit breaker: after BreakerFailures consecutive failures
	// (timeouts, resets, 5xx, garbage; never a stat 0) calls stop for
	// BreakerOpenFor, then one probe decides.
	BreakerFailures int           `yaml:"breaker_failures" default:"5"`
	BreakerOpenFor  time.Duration `yaml:"breaker_open_for" default:"30s"`
	// AllowCIDRs, when set, is the only source of its callbacks.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// URLOrigins are origins (scheme://host[:port]) besides base_url's
	// where its queryurl, pullurl and cancelurl may point; the gateway
	// calls no other (docs/decisions.md §39).
	URLOrigins []string `yaml:"url_origins"`
	// RateLimit is callbacks per second accepted from it (0: unlimited), with Burst.
	RateLimit float64 `yaml:"rate_limit"`
	RateBurst int     `yaml:"rate_burst"`
}

// Cipher is the per-institution choice of docs/decisions.md §2.
type Cipher struct {
	Algorithm string `yaml:"algorithm" default:"aes"`              // aes | sm4
	Mode      string `yaml:"mode" default:"ecb"`                   // ecb | cbc
	IV        string `yaml:"iv" default:"key" secret:"unless=key"` // "key" is not secret, a literal IV is
	Encoding  string `yaml:"encoding" default:"base64"`            // base64 | hex | HEX
	Key       string `yaml:"key" default:"raw"`                    // raw | sha1prng
	KeyBits   int    `yaml:"key_bits" default:"128"`               // 128 | 256, with sha1prng
}

// Options converts to the crypto package's options.
func (c Cipher) Options() crypto.Options {
	return crypto.Options{Algorithm: c.Algorithm, Mode: c.Mode, IV: c.IV, Encoding: c.Encoding, Key: c.Key, KeyBits: c.KeyBits}
}

// Jobs are the schedules (robfig/cron/v3 specs, read in UTC) and back-offs.
type Jobs struct {
	PollPending     string `yaml:"poll_pending" default:"@every 30s"`
	RecoverApplying string `yaml:"recover_applying" default:"@every 1m"`
	PullFiles       string `yaml:"pull_files" default:"@every 1m"`
	DeliverOutbox   string `yaml:"deliver_outbox" default:"@every 15s"`
	Reconcile       string `yaml:"reconcile" default:"0 2 * * *"`
	// Retention removes what retention: says is old enough, hourly: each
	// run then purges about an hour's worth, in small batches.
	Retention string `yaml:"retention" default:"30 * * * *"`

	// Waits between queries of an order in processing; the last repeats.
	PollBackoff []time.Duration `yaml:"poll_backoff" default:"1m,2m,5m,10m,30m,1h"`
	// Waits between attempts of a project-state delivery (~24 h in all);
	// after the last, the delivery is dead.
	RedeliveryBackoff []time.Duration `yaml:"redelivery_backoff" default:"15s,15s,30s,3m,10m,20m,30m,30m,30m,1h,3h,3h,3h,6h,6h"`
	// Waits between re-sends of an apply whose outcome is unknown; the last
	// repeats. After MaxApplyAttempts the order is flagged for operators.
	ApplyBackoff     []time.Duration `yaml:"apply_backoff" default:"30s,1m,2m,5m,10m"`
	MaxApplyAttempts int             `yaml:"max_apply_attempts" default:"8"`

	// StaleAfterOpening: polling stops this long after kbttime and the
	// order is flagged stale.
	StaleAfterOpening time.Duration `yaml:"stale_after_opening" default:"24h"`
	BatchSize         int           `yaml:"batch_size" default:"100"` // rows a job claims at a time
	Concurrency       int           `yaml:"concurrency" default:"32"` // calls of one job at once
	Lease             time.Duration `yaml:"lease" default:"2m"`       // how long a claim holds its rows
	Disabled          bool          `yaml:"disabled"`                 // run no scheduler in this instance
}

// Metrics shapes what /metrics serves.
type Metrics struct {
	// StateInterval: the gauges of orders and deliveries by status are
	// counted in the background this often and served from memory, so that
	// a scrape never waits for a count (one of a million orders takes
	// seconds). A count still running after this long is given up.
	StateInterval time.Duration `yaml:"state_interval" default:"30s"`
}

// Retention is how long the gateway keeps its raw records: the bodies of
// the callbacks and the records of its outbound calls. The job
// jobs.retention removes what is older, in batches of BatchSize with Pause
// between them, at most MaxPerRun rows of each kind per run; 0 keeps them
// for ever. Orders, payments, events, guarantee files and the callbacks'
// rows themselves (digest, size, result, errcode) are never deleted
// (docs/decisions.md §42).
type Retention struct {
	RawBodies time.Duration `yaml:"raw_bodies" default:"4320h"` // 180 days
	Calls     time.Duration `yaml:"calls" default:"4320h"`      // 180 days
	BatchSize int           `yaml:"batch_size" default:"500"`   // rows per statement
	Pause     time.Duration `yaml:"pause" default:"100ms"`      // between batches
	MaxPerRun int           `yaml:"max_per_run" default:"200000"`
}

// MinRetention is the shortest retention accepted other than 0: anything
// shorter is surely a slip (180s meant as 180 days) that would throw away
// the evidence of yesterday's callbacks.
const MinRetention = 24 * time.Hour

// MaxRetentionBatch bounds retention.batch_size: the ids of a batch travel
// in one IN list, and one statement should hold its locks only briefly.
const MaxRetentionBatch = 10000

// Log configures logrus.
type Log struct {
	Level  string `yaml:"level" default:"info"`
	Format string `yaml:"format" default:"auto"` // json | text | auto (text on a terminal, json otherwise)
}

// Sim is the in-process simulated institution.
type Sim struct {
	OrgCode    string        `yaml:"orgcode"`                       // must match an institution entry
	Addr       string        `yaml:"addr" default:"127.0.0.1:8090"` // fixed, so that base_url can name it
	PayDelay   time.Duration `yaml:"pay_delay" default:"1s"`
	IssueDelay time.Duration `yaml:"issue_delay" default:"2s"`
}

package config

import (
	"net"
	"strconv"
	"time"
)

// Defaults of the fields left out (API.md "Configuration" and the comments
// of config.go).
const (
	DefaultAddr              = ":8080"
	DefaultShutdownGrace     = 15 * time.Second
	DefaultNotifyBodyLimit   = 30 << 20 // 30 MiB: applynotify carries the letter's PDF
	DefaultCallbackBodyLimit = 64 << 10 // 64 KiB
	DefaultCallbackBatch     = 64       // callbacks per group-committed transaction
	MaxCallbackBatch         = 1000
	DefaultDriver            = "sqlite"
	DefaultSQLiteDSN         = "data/gateway.db"
	DefaultSimAddr           = "127.0.0.1:8090"
)

// Default back-offs of the jobs.
var (
	DefaultPollBackoff       = []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour}
	DefaultRedeliveryBackoff = []time.Duration{
		15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
		20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, time.Hour,
		3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
	}
	DefaultApplyBackoff = []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute}
)

// ApplyDefaults fills in every zero field that has a default. Load does
// this itself, keeping a number or duration written explicitly as 0 (e.g.
// retries: 0); ApplyDefaults, for a Config built in code, cannot tell and
// treats every zero as absent.
func (c *Config) ApplyDefaults() { c.applyDefaults(nil) }

// applyDefaults fills in the defaults of the fields not in set (paths given
// a value by YAML or environment). An empty string always gets its default.
func (c *Config) applyDefaults(set map[string]bool) {
	s := &c.Server
	dflt(set, "server.addr", &s.Addr, DefaultAddr)
	if s.PublicBaseURL == "" {
		// Reachable from this machine, e.g. by the in-process simulator.
		if p := port(s.Addr); p != "" {
			scheme := "http"
			if s.TLS != nil && s.TLS.CertFile != "" {
				scheme = "https"
			}
			s.PublicBaseURL = scheme + "://127.0.0.1:" + p
		}
	}
	dflt(set, "server.shutdown_grace", &s.ShutdownGrace, DefaultShutdownGrace)
	dflt(set, "server.notify_body_limit", &s.NotifyBodyLimit, DefaultNotifyBodyLimit)
	dflt(set, "server.callback_body_limit", &s.CallbackBodyLimit, DefaultCallbackBodyLimit)
	dflt(set, "server.callback_batch", &s.CallbackBatch, DefaultCallbackBatch)

	db := &c.Database
	dflt(set, "database.driver", &db.Driver, DefaultDriver)
	if db.Driver == "sqlite" {
		dflt(set, "database.dsn", &db.DSN, DefaultSQLiteDSN)
	}
	dflt(set, "database.max_open_conns", &db.MaxOpenConns, 32)
	// As many idle as open: the jobs run 32 calls at once by default, and a
	// smaller idle pool closes and reopens connections on every batch.
	dflt(set, "database.max_idle_conns", &db.MaxIdleConns, 32)
	dflt(set, "database.conn_max_lifetime", &db.ConnMaxLife, 30*time.Minute)

	for i := range c.Institutions {
		in := &c.Institutions[i]
		p := indexPath("institutions", i)
		dflt(set, p+".timeout", &in.Timeout, 10*time.Second)
		dflt(set, p+".retries", &in.Retries, 2)
		dflt(set, p+".max_concurrent", &in.MaxConcurrent, 8)
		dflt(set, p+".breaker_failures", &in.BreakerFailures, 5)
		dflt(set, p+".breaker_open_for", &in.BreakerOpenFor, 30*time.Second)
		ci := &in.Cipher
		dflt(set, p+".cipher.algorithm", &ci.Algorithm, "aes")
		dflt(set, p+".cipher.mode", &ci.Mode, "ecb")
		dflt(set, p+".cipher.iv", &ci.IV, "key")
		dflt(set, p+".cipher.encoding", &ci.Encoding, "base64")
		dflt(set, p+".cipher.key", &ci.Key, "raw")
		dflt(set, p+".cipher.key_bits", &ci.KeyBits, 128)
	}

	j := &c.Jobs
	dflt(set, "jobs.poll_pending", &j.PollPending, "@every 30s")
	dflt(set, "jobs.recover_applying", &j.RecoverApplying, "@every 1m")
	dflt(set, "jobs.pull_files", &j.PullFiles, "@every 1m")
	dflt(set, "jobs.deliver_outbox", &j.DeliverOutbox, "@every 15s")
	dflt(set, "jobs.reconcile", &j.Reconcile, "0 2 * * *")
	dfltList(set, "jobs.poll_backoff", &j.PollBackoff, DefaultPollBackoff)
	dfltList(set, "jobs.redelivery_backoff", &j.RedeliveryBackoff, DefaultRedeliveryBackoff)
	dfltList(set, "jobs.apply_backoff", &j.ApplyBackoff, DefaultApplyBackoff)
	dflt(set, "jobs.max_apply_attempts", &j.MaxApplyAttempts, 8)
	dflt(set, "jobs.stale_after_opening", &j.StaleAfterOpening, 24*time.Hour)
	dflt(set, "jobs.batch_size", &j.BatchSize, 100)
	dflt(set, "jobs.concurrency", &j.Concurrency, 32)
	dflt(set, "jobs.lease", &j.Lease, 2*time.Minute)

	dflt(set, "log.level", &c.Log.Level, "info")
	dflt(set, "log.format", &c.Log.Format, "auto")

	if c.Sim != nil {
		dflt(set, "sim.addr", &c.Sim.Addr, DefaultSimAddr)
		dflt(set, "sim.pay_delay", &c.Sim.PayDelay, time.Second)
		dflt(set, "sim.issue_delay", &c.Sim.IssueDelay, 2*time.Second)
	}
}

// dflt sets *p to v when *p is zero and, unless it is a string, was not
// given explicitly.
func dflt[T comparable](set map[string]bool, path string, p *T, v T) {
	var zero T
	if *p != zero {
		return
	}
	if _, isString := any(v).(string); !isString && set[path] {
		return
	}
	*p = v
}

// dfltList sets *p to a copy of v when the list was not given (an explicit
// empty list stays empty, and validation refuses it).
func dfltList[T any](set map[string]bool, path string, p *[]T, v []T) {
	if len(*p) == 0 && !set[path] {
		*p = append([]T(nil), v...)
	}
}

// port returns the port of a host:port address, or "".
func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if _, err := strconv.Atoi(p); err != nil {
		return ""
	}
	return p
}

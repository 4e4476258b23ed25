package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/robfig/cron/v3"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// MinTokenLength is the shortest API token accepted.
const MinTokenLength = 16

// MaxInstanceLength bounds server.instance, which leads the lease tokens.
const MaxInstanceLength = 80

// scheduleParser parses the jobs' schedules: five fields or a descriptor
// such as "@every 30s" or "@daily" (and an optional CRON_TZ= prefix).
var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a jobs schedule as Validate does.
func ParseSchedule(spec string) (cron.Schedule, error) { return scheduleParser.Parse(spec) }

// Validate checks the whole config and returns every problem found, joined
// (errors.Join), each naming its field path, e.g.
//
//	database.driver: unknown driver "postgres" (want sqlite or mysql)
//	institutions[BANK01].app_secret: aes key is 15 bytes, want 16, 24 or 32
//
// No message contains a secret. Validate does not fill in defaults: Load
// does that before validating; a Config built in code calls ApplyDefaults.
func (c *Config) Validate() error { return errors.Join(c.validate(nil)...) }

// validator collects problems. unset maps the canonical path of a field to
// the ${NAME}s in it that were unset, so that a message can say what to set.
type validator struct {
	errs  []error
	unset map[string][]string
}

// add reports a problem of the field whose canonical path (institutions by
// index) is key and which is shown as shown ("" for key).
func (v *validator) add(key, shown, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if names := v.unset[key]; len(names) > 0 {
		if msg == "empty" {
			msg += " (set " + strings.Join(names, ", ") + ")"
		} else {
			msg += " (${" + strings.Join(names, "}, ${") + "} unset or empty)"
		}
	}
	if shown == "" {
		shown = key
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s", shown, msg))
}

func (c *Config) validate(unset map[string][]string) []error {
	v := &validator{unset: unset}
	c.validateServer(v)
	c.validateDatabase(v)
	c.validateAPI(v)
	c.validateInstitutions(v)
	c.validateJobs(v)
	c.validateRetention(v)
	c.validateLog(v)
	c.validateMetrics(v)
	c.validateConsole(v)
	c.validateSim(v)
	return v.errs
}

func (c *Config) validateServer(v *validator) {
	s := c.Server
	if s.Addr == "" {
		v.add("server.addr", "", "empty")
	} else if port(s.Addr) == "" {
		v.add("server.addr", "", "%q is not host:port (e.g. \":8080\" or \"0.0.0.0:8080\")", s.Addr)
	}
	if s.PublicBaseURL == "" {
		v.add("server.public_base_url", "", "empty")
	} else if err := checkBaseURL(s.PublicBaseURL); err != nil {
		v.add("server.public_base_url", "", "%v", err)
	}
	if t := s.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		if t.CertFile == "" {
			v.add("server.tls.cert_file", "", "empty, but key_file is set (give both files or neither)")
		} else {
			v.add("server.tls.key_file", "", "empty, but cert_file is set (give both files or neither)")
		}
	}
	switch n := utf8.RuneCountInString(s.Instance); {
	case n == 0:
		v.add("server.instance", "", "empty")
	case n > MaxInstanceLength:
		// It leads every lease token: instance/job/random, in 128 characters.
		v.add("server.instance", "", "longer than %d characters (%d)", MaxInstanceLength, n)
	}
	nonNegative(v, "server.shutdown_grace", s.ShutdownGrace)
	if s.NotifyBodyLimit <= 0 {
		v.add("server.notify_body_limit", "", "must be positive, got %d", s.NotifyBodyLimit)
	}
	if s.CallbackBodyLimit <= 0 {
		v.add("server.callback_body_limit", "", "must be positive, got %d", s.CallbackBodyLimit)
	}
	if s.CallbackBatch < 1 || s.CallbackBatch > MaxCallbackBatch {
		v.add("server.callback_batch", "", "must be 1 (each callback in its own transaction) to %d, got %d", MaxCallbackBatch, s.CallbackBatch)
	}
	if s.StrangerAuditRate < 0 || math.IsNaN(s.StrangerAuditRate) || math.IsInf(s.StrangerAuditRate, 0) {
		v.add("server.stranger_audit_rate", "", "must be a number of rows per second, 0 or more, got %v", s.StrangerAuditRate)
	}
	if s.BodyBytesInFlight < s.NotifyBodyLimit || s.BodyBytesInFlight <= 0 {
		v.add("server.body_bytes_in_flight", "", "must be at least server.notify_body_limit (%d), got %d", s.NotifyBodyLimit, s.BodyBytesInFlight)
	}
}

func (c *Config) validateDatabase(v *validator) {
	d := c.Database
	switch d.Driver {
	case "sqlite", "mysql":
	case "":
		v.add("database.driver", "", "empty")
	default:
		v.add("database.driver", "", "unknown driver %q (want sqlite or mysql)", d.Driver)
	}
	switch {
	case d.DSN == "" && d.Driver == "mysql":
		v.add("database.dsn", "", "empty (mysql wants e.g. user:pass@tcp(127.0.0.1:3306)/gateway?parseTime=true&loc=UTC&charset=utf8mb4)")
	case d.DSN == "":
		v.add("database.dsn", "", "empty")
	case d.Driver == "mysql":
		if cfg, err := mysqldrv.ParseDSN(d.DSN); err != nil {
			msg := err.Error()
			if cfg != nil && cfg.Passwd != "" {
				msg = strings.ReplaceAll(msg, cfg.Passwd, redacted)
			}
			v.add("database.dsn", "", "not a MySQL DSN: %s (want e.g. user:pass@tcp(127.0.0.1:3306)/gateway?parseTime=true)", msg)
		}
	}
	if d.MaxOpenConns < 1 {
		v.add("database.max_open_conns", "", "must be at least 1, got %d", d.MaxOpenConns)
	}
	if d.MaxIdleConns < 0 {
		v.add("database.max_idle_conns", "", "must not be negative, got %d", d.MaxIdleConns)
	}
	nonNegative(v, "database.conn_max_lifetime", d.ConnMaxLife)
	if d.Retries < 0 || d.Retries > MaxDatabaseRetries {
		v.add("database.retries", "", "must be 0 (never run a refused transaction again) to %d, got %d", MaxDatabaseRetries, d.Retries)
	}
	if d.RetryWait <= 0 || d.RetryWait > time.Second {
		v.add("database.retry_wait", "", "must be positive and at most 1s, got %s", d.RetryWait)
	}
}

func (c *Config) validateAPI(v *validator) {
	if len(c.API.Tokens) == 0 {
		v.add("api.tokens", "", "empty (at least one bearer token is required)")
		return
	}
	for i, t := range c.API.Tokens {
		p := indexPath("api.tokens", i)
		switch {
		case t == "":
			v.add(p, "", "empty")
		case strings.TrimSpace(t) != t:
			v.add(p, "", "has leading or trailing blanks")
		case len(t) < MinTokenLength:
			v.add(p, "", "too short (%d characters, want at least %d)", len(t), MinTokenLength)
		}
	}
}

func (c *Config) validateInstitutions(v *validator) {
	if len(c.Institutions) == 0 {
		v.add("institutions", "", "empty (configure at least one institution)")
	}
	// Name an institution by its orgcode when that is unique, else by index.
	count := map[string]int{}
	for _, in := range c.Institutions {
		count[in.OrgCode]++
	}
	firstOrg := map[string]string{} // orgcode -> where first seen
	firstKey := map[string]string{} // app_key -> where first seen
	for i, in := range c.Institutions {
		key := indexPath("institutions", i)
		name := key
		if in.OrgCode != "" && count[in.OrgCode] == 1 {
			name = "institutions[" + in.OrgCode + "]"
		}
		add := func(field, format string, args ...any) {
			v.add(key+"."+field, name+"."+field, format, args...)
		}

		switch {
		case in.OrgCode == "":
			add("orgcode", "empty")
		case firstOrg[in.OrgCode] != "":
			add("orgcode", "duplicate %q (also %s)", in.OrgCode, firstOrg[in.OrgCode])
		default:
			firstOrg[in.OrgCode] = key
		}
		if in.Name == "" {
			add("name", "empty")
		}
		if in.BaseURL == "" {
			add("base_url", "empty")
		} else if err := checkBaseURL(in.BaseURL); err != nil {
			add("base_url", "%v", err)
		}
		switch {
		case in.AppKey == "":
			add("app_key", "empty")
		case firstKey[in.AppKey] != "":
			add("app_key", "duplicate (same as %s): callbacks could not be attributed", firstKey[in.AppKey])
		default:
			firstKey[in.AppKey] = name
		}

		// The options first, with a key that fits every valid choice, so
		// that an error is put on the right field.
		opts := in.Cipher.Options()
		if _, err := crypto.New(opts, "0123456789abcdef"); err != nil {
			add("cipher", "%s", cryptoMessage(err, in.AppSecret))
		} else if in.AppSecret == "" {
			add("app_secret", "empty")
		} else if _, err := crypto.New(opts, in.AppSecret); err != nil {
			add("app_secret", "%s", cryptoMessage(err, in.AppSecret))
		}

		if in.Timeout <= 0 {
			add("timeout", "must be positive, got %s", in.Timeout)
		}
		if in.Retries < 0 {
			add("retries", "must not be negative, got %d", in.Retries)
		}
		if in.RetryWait <= 0 {
			add("retry_wait", "must be positive, got %s", in.RetryWait)
		}
		if in.BreakerFailures < 1 {
			add("breaker_failures", "must be at least 1, got %d", in.BreakerFailures)
		}
		if in.BreakerOpenFor <= 0 {
			add("breaker_open_for", "must be positive, got %s", in.BreakerOpenFor)
		}
		if in.MaxConcurrent < 1 {
			add("max_concurrent", "must be at least 1, got %d", in.MaxConcurrent)
		}
		for j, cidr := range in.AllowCIDRs {
			if _, _, err := net.ParseCIDR(strings.TrimSpace(cidr)); err != nil {
				hint := ""
				if ip := net.ParseIP(strings.TrimSpace(cidr)); ip != nil {
					bits := 32
					if ip.To4() == nil {
						bits = 128
					}
					hint = fmt.Sprintf(" (for one address write %s/%d)", strings.TrimSpace(cidr), bits)
				}
				add(indexPath("allow_cidrs", j), "%q is not a CIDR%s", cidr, hint)
			}
		}
		for j, o := range in.URLOrigins {
			if err := checkOrigin(o); err != nil {
				add(indexPath("url_origins", j), "%v", err)
			}
		}
		if in.RateLimit < 0 {
			add("rate_limit", "must not be negative, got %v", in.RateLimit)
		}
		if in.RateBurst < 0 {
			add("rate_burst", "must not be negative, got %d", in.RateBurst)
		} else if in.RateLimit > 0 && in.RateBurst == 0 {
			add("rate_burst", "must be at least 1 when rate_limit is set")
		}
	}
}

// cryptoMessage is a crypto.New error without the package prefix, and with
// the secret blanked should it ever appear in it.
func cryptoMessage(err error, secret string) string {
	msg := strings.TrimPrefix(err.Error(), "crypto: ")
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, redacted)
	}
	return msg
}

func (c *Config) validateJobs(v *validator) {
	j := c.Jobs
	for _, s := range []struct{ path, spec string }{
		{"jobs.poll_pending", j.PollPending},
		{"jobs.recover_applying", j.RecoverApplying},
		{"jobs.pull_files", j.PullFiles},
		{"jobs.deliver_outbox", j.DeliverOutbox},
		{"jobs.reconcile", j.Reconcile},
		{"jobs.retention", j.Retention},
	} {
		if s.spec == "" {
			v.add(s.path, "", "empty")
		} else if _, err := scheduleParser.Parse(s.spec); err != nil {
			v.add(s.path, "", "unparseable schedule %q: %v (want 5 cron fields or e.g. \"@every 30s\")", s.spec, err)
		}
	}
	backoff(v, "jobs.poll_backoff", j.PollBackoff)
	backoff(v, "jobs.redelivery_backoff", j.RedeliveryBackoff)
	backoff(v, "jobs.apply_backoff", j.ApplyBackoff)
	if j.MaxApplyAttempts < 1 {
		v.add("jobs.max_apply_attempts", "", "must be at least 1, got %d", j.MaxApplyAttempts)
	}
	if j.StaleAfterOpening <= 0 {
		v.add("jobs.stale_after_opening", "", "must be positive, got %s", j.StaleAfterOpening)
	}
	if j.BatchSize < 1 {
		v.add("jobs.batch_size", "", "must be at least 1, got %d", j.BatchSize)
	}
	if j.Concurrency < 1 {
		v.add("jobs.concurrency", "", "must be at least 1, got %d", j.Concurrency)
	}
	if j.Lease <= 0 {
		v.add("jobs.lease", "", "must be positive, got %s", j.Lease)
	}
}

func (c *Config) validateRetention(v *validator) {
	r := c.Retention
	for _, d := range []struct {
		path string
		d    time.Duration
	}{{"retention.raw_bodies", r.RawBodies}, {"retention.calls", r.Calls}} {
		if d.d != 0 && d.d < MinRetention {
			v.add(d.path, "", "must be 0 (keep for ever) or at least %s, got %s (write 180 days as 4320h)", MinRetention, d.d)
		}
	}
	if r.BatchSize < 1 || r.BatchSize > MaxRetentionBatch {
		v.add("retention.batch_size", "", "must be 1 to %d, got %d", MaxRetentionBatch, r.BatchSize)
	}
	if r.Pause < 0 || r.Pause > time.Minute {
		v.add("retention.pause", "", "must be 0 to 1m, got %s", r.Pause)
	}
	if r.MaxPerRun < r.BatchSize {
		v.add("retention.max_per_run", "", "must be at least retention.batch_size (%d), got %d", r.BatchSize, r.MaxPerRun)
	}
}

func backoff(v *validator, path string, list []time.Duration) {
	if len(list) == 0 {
		v.add(path, "", "empty (give at least one wait)")
	}
	for i, d := range list {
		if d <= 0 {
			v.add(indexPath(path, i), "", "must be positive, got %s", d)
		}
	}
}

func (c *Config) validateLog(v *validator) {
	if _, err := logrus.ParseLevel(c.Log.Level); err != nil {
		v.add("log.level", "", "unknown level %q (want trace, debug, info, warn, error, fatal or panic)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text", "auto":
	default:
		v.add("log.format", "", "unknown format %q (want json, text or auto)", c.Log.Format)
	}
}

func (c *Config) validateMetrics(v *validator) {
	if d := c.Metrics.StateInterval; d <= 0 {
		v.add("metrics.state_interval", "", "must be positive, got %s", d)
	}
}

func (c *Config) validateSim(v *validator) {
	s := c.Sim
	if s == nil {
		return
	}
	if s.OrgCode == "" {
		v.add("sim.orgcode", "", "empty (name the institution entry the simulator plays)")
	} else if _, ok := c.Institution(s.OrgCode); !ok {
		v.add("sim.orgcode", "", "%q names no configured institution", s.OrgCode)
	}
	if s.Addr == "" {
		v.add("sim.addr", "", "empty")
	} else if port(s.Addr) == "" {
		v.add("sim.addr", "", "%q is not host:port", s.Addr)
	}
	nonNegative(v, "sim.pay_delay", s.PayDelay)
	nonNegative(v, "sim.issue_delay", s.IssueDelay)
}

func nonNegative(v *validator, path string, d time.Duration) {
	if d < 0 {
		v.add(path, "", "must not be negative, got %s", d)
	}
}

// checkOrigin requires an origin: an absolute http(s) URL with a host and
// nothing after it but "/".
func checkOrigin(raw string) error {
	if _, err := wire.Origin(raw); err != nil {
		return fmt.Errorf("%q is not an origin (%v): write scheme://host or scheme://host:port", raw, err)
	}
	u, _ := url.Parse(raw)
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, "?#") {
		return fmt.Errorf("%q is not an origin: write scheme://host or scheme://host:port, without user, path or query", raw)
	}
	return nil
}

// checkBaseURL requires an absolute http(s) URL with a host and no query
// or fragment (paths are appended to it).
func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", raw, errors.Unwrap(err))
	}
	switch {
	case u.User != nil:
		return errors.New("must not contain user information")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	case u.Host == "":
		return fmt.Errorf("%q has no host", raw)
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(raw, "?"):
		return fmt.Errorf("%q must not have a query or fragment", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port", raw)
		}
	}
	return nil
}

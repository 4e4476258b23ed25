package service

import (
	"math"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/procurement/gateway/wire"
)

// Admission is the verdict on a callback's sender from its request's
// headers alone: the institution its appKey names, or why it is refused.
// AdmitCallback gives it before a byte of the body is read, so that a
// sender without a key costs the gateway a header's worth of work
// (docs/decisions.md §33).
type Admission struct {
	judged  bool
	inst    *Institution
	refused *callbackErr
}

// Admitted reports whether the sender may go on and send its body.
func (a Admission) Admitted() bool { return a.judged && a.refused == nil }

// AdmitCallback judges a callback's sender from its headers: its appKey
// must name a configured institution (else 100001), its source address be
// in that institution's allow_cidrs when it has any (else 100001), and it
// must be within the institution's rate_limit (else 500002, HTTP 429). An
// admission takes one token of the rate. A refusal is answered by
// HandleCallback with the Admission in its input, without the body.
func (s *Service) AdmitCallback(appKey, remoteAddr string) Admission {
	inst, ok := s.insts.ByAppKey(appKey)
	if !ok {
		return Admission{judged: true, refused: refuse(wire.CodeBadAppKey, "missing or unknown appKey")}
	}
	if err := admit(inst, remoteAddr); err != nil {
		// Put to the institution's account: an operator sees its key
		// used from elsewhere, or its rate exceeded.
		return Admission{judged: true, inst: inst, refused: err}
	}
	return Admission{judged: true, inst: inst}
}

// admit applies the institution's optional source allowlist and rate limit.
func admit(inst *Institution, remote string) *callbackErr {
	if len(inst.Allow) > 0 {
		host, _, err := net.SplitHostPort(remote)
		if err != nil {
			host = remote
		}
		ip := net.ParseIP(host)
		allowed := false
		for _, n := range inst.Allow {
			if ip != nil && n.Contains(ip) {
				allowed = true
				break
			}
		}
		if !allowed {
			return refuse(wire.CodeBadAppKey, "source address not allowed for this appKey")
		}
	}
	if inst.Limiter != nil && !inst.Limiter.Allow() {
		return &callbackErr{code: codeRateLimited, msg: "too many callbacks, retry later", retryAfter: time.Second}
	}
	return nil
}

// doorAudit bounds the audit rows of refusals at the door: a flood of
// senders without a key, or of one over its rate, would otherwise write a
// row per request, the very load the refusal is there to spare. Up to
// server.stranger_audit_rate rows a second, across all senders, are
// written (without a body: none was read); the rest are counted in a
// metric, and a line at most once a minute says how many
// (docs/decisions.md §34).
type doorAudit struct {
	limit *rate.Limiter // nil: none audited

	mu      sync.Mutex
	skipped int64     // refusals not audited since the last line
	since   time.Time // when the first of them came
	logged  time.Time // the last line
}

func newDoorAudit(perSecond float64) *doorAudit {
	d := &doorAudit{}
	if perSecond > 0 {
		d.limit = rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond))))
	}
	return d
}

// take reports whether this refusal may have its audit row.
func (d *doorAudit) take() bool { return d.limit != nil && d.limit.Allow() }

// skip counts a refusal left unaudited. When a line is due (the first
// skip, then at most once a minute) it returns how many were skipped since
// the last line, and since when; otherwise 0.
func (d *doorAudit) skip(now time.Time) (int64, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.skipped == 0 {
		d.since = now
	}
	d.skipped++
	if !d.logged.IsZero() && now.Sub(d.logged) < time.Minute {
		return 0, time.Time{}
	}
	n, since := d.skipped, d.since
	d.skipped, d.logged = 0, now
	return n, since
}

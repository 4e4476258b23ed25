// Package client is the one outbound client of the gateway: every call to an
// institution (apply, cost, xmstate, and the queryurl, pullurl and cancelurl
// it handed back) goes through a Client, which builds the envelope of
// docs/decisions.md §1, encrypts with that institution's cipher, applies its
// timeout, retries what is safe to retry, stops calling an institution that
// is down (a circuit breaker), and records every attempt.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sony/gobreaker/v2"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// Endpoints, as recorded and counted.
const (
	EndpointApply   = "apply"
	EndpointCost    = "cost"
	EndpointXMState = "xmstate"
	EndpointQuery   = "query"
	EndpointPull    = "pull"
	EndpointCancel  = "cancel"
)

// Response body caps: a pulled PDF (30 MiB, base64 then encrypted then
// base64 again) is the largest thing an institution sends us.
const (
	maxAnswer     = 1 << 20
	maxPullAnswer = 96 << 20
)

// maxRetryWait bounds a pause between attempts: the doubling back-off is
// capped there, and an institution whose Retry-After asks for longer is not
// waited for inline: the error carries RetryAfter and the caller (a job with
// its own schedule) comes back then, rather than a worker sleeping minutes.
const maxRetryWait = 30 * time.Second

// Record is what is kept of one attempt: never a secret, never plaintext.
type Record struct {
	OrgCode       string
	OrderNo       string
	Endpoint      string
	URL           string
	Attempt       int
	HTTPStatus    int
	Stat          *int
	Errcode       string
	Result        string // "ok" or the Kind of the failure
	Error         string
	Latency       time.Duration
	RequestBytes  int64
	ResponseBytes int64
}

// Recorder keeps the records of calls; the service persists them.
type Recorder interface {
	RecordCall(ctx context.Context, r Record)
}

// Config is one institution as the client needs it, from its entry in
// config.yaml (institutions[]), whose defaults apply: every field is set.
type Config struct {
	OrgCode string
	BaseURL string // apply, cost and xmstate live under it
	AppKey  string
	Cipher  crypto.Cipher
	Timeout time.Duration // per attempt
	Retries int           // extra attempts of idempotent calls
	// RetryWait is the pause before the first retry; it doubles.
	RetryWait time.Duration
	// Breaker: open after this many consecutive failures, for OpenFor.
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
	// URLOrigins are the origins besides BaseURL's that the institution's
	// per-order URLs (queryurl, pullurl, cancelurl) may point to; a URL on
	// any other is not called (CheckURL).
	URLOrigins []string
}

// Client calls one institution. Clients share one *http.Client (and so its
// connection pool); each has its own cipher, timeout and breaker.
type Client struct {
	cfg     Config
	http    *http.Client
	rec     Recorder
	breaker *gobreaker.CircuitBreaker[struct{}]
	origins map[string]bool // where it may be called: wire.Origin of BaseURL and of each URLOrigins
}

// New returns the client of one institution.
func New(cfg Config, hc *http.Client, rec Recorder) *Client {
	c := &Client{cfg: cfg, http: hc, rec: rec, origins: map[string]bool{}}
	// The configuration was validated: an origin that does not parse is
	// one nothing can match.
	for _, raw := range append([]string{cfg.BaseURL}, cfg.URLOrigins...) {
		if o, err := wire.Origin(raw); err == nil {
			c.origins[o] = true
		}
	}
	c.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.OrgCode,
		MaxRequests: 1,
		Timeout:     cfg.BreakerOpenFor,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= cfg.BreakerFailures },
		IsSuccessful: func(err error) bool {
			var ce *Error
			return err == nil || !errors.As(err, &ce) || !ce.breakerFailure()
		},
		// A call abandoned by its caller (shutdown, a client that went away)
		// says nothing about the institution: neither success nor failure,
		// and in half-open it frees the probe slot for the next call.
		IsExcluded: func(err error) bool {
			var ce *Error
			return errors.As(err, &ce) && ce.callerGone
		},
	})
	return c
}

// NewHTTPClient is the shared transport: bounded connection set-up, and no
// overall timeout of its own (each attempt has its institution's).
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 0
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // an envelope is never re-posted elsewhere
	}}
}

// OrgCode is the institution's code.
func (c *Client) OrgCode() string { return c.cfg.OrgCode }

// BreakerState is "closed", "half-open" or "open".
func (c *Client) BreakerState() string { return c.breaker.State().String() }

// Apply sends /guarantee/apply. It is not retried inline unless the request
// surely never left: an outcome-unknown apply is re-sent by the recovery job
// with the same orderno.
func (c *Client) Apply(ctx context.Context, req wire.ApplyRequest) (wire.ApplyResult, error) {
	var res wire.ApplyResult
	if err := c.exactMoney(EndpointApply, "bzjmoney", req.DepositAmount); err != nil {
		return res, err
	}
	err := c.call(ctx, call{endpoint: EndpointApply, url: c.under("guarantee/apply"), orderNo: req.OrderNo,
		params: req, check: func(b []byte) error { _, err := wire.ParseApplyRequest(b, false); return err },
		answer: func(b []byte) (err error) { res, err = wire.ParseApplyResult(b); return err }})
	return res, err
}

// Cost asks /guarantee/cost for a fee estimate; retried when safe.
func (c *Client) Cost(ctx context.Context, req wire.CostRequest) (wire.CostResult, error) {
	var res wire.CostResult
	if err := c.exactMoney(EndpointCost, "bzjmoney", req.DepositAmount); err != nil {
		return res, err
	}
	err := c.call(ctx, call{endpoint: EndpointCost, url: c.under("guarantee/cost"), params: req, idempotent: true,
		check:  func(b []byte) error { _, err := wire.ParseCostRequest(b); return err },
		answer: func(b []byte) (err error) { res, err = wire.ParseCostResult(b); return err }})
	return res, err
}

// ProjectState pushes /guarantee/xmstate; retried when safe.
func (c *Client) ProjectState(ctx context.Context, p wire.ProjectState) error {
	return c.call(ctx, call{endpoint: EndpointXMState, url: c.under("guarantee/xmstate"), params: p, idempotent: true,
		check: func(b []byte) error { _, err := wire.ParseProjectState(b); return err }})
}

// Query asks the order's queryurl where it stands; retried when safe.
func (c *Client) Query(ctx context.Context, queryURL, orderNo string) (wire.QueryResult, error) {
	var res wire.QueryResult
	err := c.call(ctx, call{endpoint: EndpointQuery, url: queryURL, orderNo: orderNo, idempotent: true,
		params: wire.OrderRef{OrderNo: orderNo},
		check:  func(b []byte) error { _, err := wire.ParseOrderRef(b); return err },
		answer: func(b []byte) (err error) { res, err = wire.ParseQueryResult(b); return err }})
	return res, err
}

// Pull fetches the guarantee PDF through pullurl; retried when safe.
func (c *Client) Pull(ctx context.Context, pullURL, orderNo, guaranteeNo string) (wire.PullResult, error) {
	var res wire.PullResult
	err := c.call(ctx, call{endpoint: EndpointPull, url: pullURL, orderNo: orderNo, idempotent: true, maxAnswer: maxPullAnswer,
		params: wire.GuaranteeRef{GuaranteeNo: guaranteeNo},
		check:  func(b []byte) error { _, err := wire.ParseGuaranteeRef(b); return err },
		answer: func(b []byte) (err error) { res, err = wire.ParsePullResult(b); return err }})
	return res, err
}

// Cancel asks cancelurl to cancel the guarantee; not retried inline.
func (c *Client) Cancel(ctx context.Context, cancelURL, orderNo, guaranteeNo string) error {
	return c.call(ctx, call{endpoint: EndpointCancel, url: cancelURL, orderNo: orderNo,
		params: wire.GuaranteeRef{GuaranteeNo: guaranteeNo},
		check:  func(b []byte) error { _, err := wire.ParseGuaranteeRef(b); return err }})
}

// CheckURL says whether raw may be called: an absolute http(s) URL on the
// origin of the institution's base_url or of one of its url_origins. A URL
// an institution hands out (queryurl, pullurl, cancelurl) is called with
// its appKey and an envelope: pointed elsewhere, the gateway would carry
// that key to, and probe, any host and port the institution's server names
// (docs/decisions.md §39). The error is KindURLRefused and names the
// origin, never the whole URL (it may carry a token).
func (c *Client) CheckURL(endpoint, raw string) error {
	o, err := wire.Origin(raw)
	if err != nil {
		return &Error{Kind: KindURLRefused, OrgCode: c.cfg.OrgCode, Endpoint: endpoint, Err: err}
	}
	if !c.origins[o] {
		return &Error{Kind: KindURLRefused, OrgCode: c.cfg.OrgCode, Endpoint: endpoint,
			Err: fmt.Errorf("origin %s is neither base_url's nor in url_origins", o)}
	}
	return nil
}

// exactMoney refuses an amount with more than two decimals: wire.Amount
// writes two decimals by rounding, and money must never be changed on the
// way out without anyone noticing (docs/decisions.md §5).
func (c *Client) exactMoney(endpoint, field string, d decimal.Decimal) error {
	if d.Equal(d.Round(2)) {
		return nil
	}
	return &Error{Kind: KindInvalid, OrgCode: c.cfg.OrgCode, Endpoint: endpoint,
		Err: fmt.Errorf("%s: %s has more than two decimals", field, d.String())}
}

func (c *Client) under(path string) string {
	return strings.TrimRight(c.cfg.BaseURL, "/") + "/" + path
}

type call struct {
	endpoint   string
	url        string
	orderNo    string
	params     any
	idempotent bool
	maxAnswer  int64
	check      func(plain []byte) error // docs/protocol.md's rules on what we send
	answer     func(plain []byte) error // nil: the answer carries no data
}

func (c *Client) call(ctx context.Context, k call) error {
	fail := func(kind Kind, err error) *Error {
		return &Error{Kind: kind, OrgCode: c.cfg.OrgCode, Endpoint: k.endpoint, Err: err}
	}
	if u, err := url.Parse(k.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail(KindInvalid, fmt.Errorf("not an absolute http(s) URL: %q", redact(k.url)))
	}
	// Checked before every call, whatever the caller checked before: the
	// URL may have been stored before its origin was refused.
	if err := c.CheckURL(k.endpoint, k.url); err != nil {
		return err
	}
	plain, err := json.Marshal(k.params)
	if err != nil {
		return fail(KindInvalid, err)
	}
	if err := k.check(plain); err != nil {
		return fail(KindInvalid, err)
	}
	ct, err := c.cfg.Cipher.Encrypt(plain)
	if err != nil {
		return fail(KindInvalid, err)
	}
	body, err := json.Marshal(wire.Request{Data: string(ct)})
	if err != nil {
		return fail(KindInvalid, err)
	}
	if k.maxAnswer == 0 {
		k.maxAnswer = maxAnswer
	}
	// An idempotent call gets its retries; any other call only one re-send,
	// and only of a request that surely never left.
	attempts := 2
	if k.idempotent {
		attempts = 1 + c.cfg.Retries
	}
	wait := c.cfg.RetryWait
	var last error // the previous attempt's failure
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			// The caller gave up before this attempt: nothing was sent.
			if last != nil {
				return last
			}
			e := fail(KindUnreachable, ctx.Err())
			e.callerGone = true
			return e
		}
		_, err = c.breaker.Execute(func() (struct{}, error) {
			return struct{}{}, c.attempt(ctx, k, body, attempt)
		})
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			c.rec.RecordCall(context.WithoutCancel(ctx), Record{OrgCode: c.cfg.OrgCode, OrderNo: k.orderNo, Endpoint: k.endpoint,
				URL: redact(k.url), Attempt: attempt, Result: string(KindCircuitOpen), Error: err.Error(), RequestBytes: int64(len(body))})
			if last != nil {
				// An earlier attempt of this call tripped the breaker: its
				// failure (an unknown outcome, say) is what the caller must
				// act on, not the refusal of the retry.
				return last
			}
			return fail(KindCircuitOpen, err)
		}
		var ce *Error
		if err == nil || !errors.As(err, &ce) {
			return err
		}
		last = err
		again := ce.retryable() && (k.idempotent || ce.Kind == KindUnreachable)
		if !again || attempt >= attempts {
			return err
		}
		if ce.RetryAfter > wait {
			if ce.RetryAfter > maxRetryWait {
				return err
			}
			wait = ce.RetryAfter
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err // the caller's deadline would pass while we wait
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(wait*2, maxRetryWait)
	}
}

// attempt makes one exchange under the institution's timeout and records it.
func (c *Client) attempt(parent context.Context, k call, body []byte, n int) (err error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	rec := Record{OrgCode: c.cfg.OrgCode, OrderNo: k.orderNo, Endpoint: k.endpoint, URL: redact(k.url), Attempt: n,
		RequestBytes: int64(len(body)), Result: "ok"}
	start := time.Now()
	defer func() {
		rec.Latency = time.Since(start)
		if err != nil {
			rec.Result = string(KindOf(err))
			rec.Error = truncate(err.Error(), 500)
			var ce *Error
			if errors.As(err, &ce) && parent.Err() != nil {
				ce.callerGone = true // not the institution's doing: see IsExcluded
			}
		}
		c.rec.RecordCall(context.WithoutCancel(ctx), rec)
	}()
	fail := func(kind Kind, cause error) *Error {
		return &Error{Kind: kind, OrgCode: c.cfg.OrgCode, Endpoint: k.endpoint, Err: cause}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.url, bytes.NewReader(body))
	if err != nil {
		return fail(KindInvalid, err)
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", c.cfg.AppKey)
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(sendFailure(err), err)
	}
	defer resp.Body.Close()
	rec.HTTPStatus = resp.StatusCode
	raw, err := io.ReadAll(io.LimitReader(resp.Body, k.maxAnswer+1))
	rec.ResponseBytes = int64(len(raw))
	if err != nil {
		// The institution answered but the body broke off: it got the request.
		return fail(KindUnknown, fmt.Errorf("reading the answer: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		e := fail(KindHTTP, nil)
		e.HTTPStatus = resp.StatusCode
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		return e
	}
	if int64(len(raw)) > k.maxAnswer {
		return fail(KindBadAnswer, fmt.Errorf("answer over %d bytes", k.maxAnswer))
	}
	var env struct {
		Stat    json.RawMessage `json:"stat"`
		Errcode json.RawMessage `json:"errcode"`
		Msg     string          `json:"msg"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fail(KindBadAnswer, errors.New("answer is not the generic response"))
	}
	stat, ok := number(env.Stat)
	if !ok {
		return fail(KindBadAnswer, errors.New("answer has no stat"))
	}
	rec.Stat = &stat
	rec.Errcode = truncate(text(env.Errcode), 32)
	if stat != 1 {
		e := fail(KindRefused, nil)
		e.Errcode, e.Msg = rec.Errcode, truncate(env.Msg, 256)
		return e
	}
	if k.answer == nil {
		return nil
	}
	data := wire.ResponseData(env.Data)
	if data == "" {
		return fail(KindBadAnswer, errors.New("answer has no data"))
	}
	plain, err := c.cfg.Cipher.Decrypt([]byte(data))
	if err != nil {
		return fail(KindBadAnswer, err)
	}
	if err := k.answer(plain); err != nil {
		return fail(KindBadAnswer, err)
	}
	return nil
}

// sendFailure tells a request that surely never left (the dial failed) from
// one whose fate is unknown (timeout or reset after it was written).
func sendFailure(err error) Kind {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return KindUnreachable
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return KindUnreachable
	}
	return KindUnknown
}

// redact hides a password in a URL (https://user:pass@host/...) before the
// URL is recorded.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, 10*time.Minute)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), 10*time.Minute)
	}
	return 0
}

// number reads stat sent as 1 or "1".
func number(raw json.RawMessage) (int, bool) {
	s := text(raw)
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// text reads a JSON string or number as text.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Package handlertest starts a real gateway for tests, built by
// gateway.New as production builds it: a fresh store (SQLite, or MariaDB
// when GATEWAY_TEST_MYSQL_DSN is set), real ciphers, the real outbound
// client, the real service, scheduler and gin server, listening on a free
// loopback port. Institutions are whatever URLs the test gives (usually
// httptest servers, or banksim). The schedules do not run: a test runs a
// job when it wants with Jobs().RunOnce.
package handlertest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/gateway"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/wire"
)

// Token is the bearer token the test gateway accepts.
const Token = "test-token-0123456789abcdef"

// Institution describes one institution of the test gateway.
type Institution struct {
	OrgCode   string
	Name      string
	AppKey    string
	AppSecret string
	Cipher    crypto.Options
	BaseURL   string // where apply, cost and xmstate live; none: a port nothing listens on
	Timeout   time.Duration
	Retries   int
	// Breaker tuning; zero keeps config.yaml's defaults.
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
}

// Options shape the test gateway.
type Options struct {
	Driver       string // "sqlite" (default) or "mysql"
	Institutions []Institution
	Store        *model.Store // use this store instead of a fresh one
	// Configure changes the test's configuration (Config) before the
	// gateway is built.
	Configure func(*config.Config)
}

// Gateway is a running test gateway.
type Gateway struct {
	*gateway.Gateway
	Store   *model.Store
	Service *service.Service
	URL     string
	Log     *logrus.Logger
	Logs    *Buffer // everything logged, for tests that read the logs
	Metrics *service.PrometheusMetrics
	insts   map[string]*Institution
	ciphers map[string]crypto.Cipher
}

// DefaultInstitution is a plain AES/ECB/base64 institution.
func DefaultInstitution(orgCode string) Institution {
	return Institution{OrgCode: orgCode, Name: orgCode + " bank", AppKey: "key-" + orgCode,
		AppSecret: "0123456789abcdef", Timeout: 2 * time.Second}
}

// Config is the configuration of a test gateway: config.yaml's defaults,
// a free loopback port, the test token, the institutions, and quicker
// steps where a test would otherwise wait (retries, back-offs, leases).
func Config(insts []Institution) *config.Config {
	cfg := config.Default()
	cfg.Server.Addr, cfg.Server.Instance = "127.0.0.1:0", "test"
	cfg.Server.PublicBaseURL = "http://127.0.0.1"
	cfg.API.Tokens = []string{Token}
	j := &cfg.Jobs
	j.Disabled = true
	j.PollBackoff = []time.Duration{time.Minute, 2 * time.Minute}
	j.RedeliveryBackoff = []time.Duration{15 * time.Second, 30 * time.Second}
	j.ApplyBackoff = []time.Duration{30 * time.Second, time.Minute}
	j.Lease, j.Concurrency, j.MaxApplyAttempts = time.Minute, 8, 5
	for _, in := range insts {
		c := config.Institution{OrgCode: in.OrgCode, Name: in.Name, BaseURL: in.BaseURL, AppKey: in.AppKey,
			AppSecret: in.AppSecret, Cipher: config.Cipher{Algorithm: in.Cipher.Algorithm, Mode: in.Cipher.Mode,
				IV: in.Cipher.IV, Encoding: in.Cipher.Encoding, Key: in.Cipher.Key, KeyBits: in.Cipher.KeyBits}}
		if c.BaseURL == "" {
			c.BaseURL = "http://127.0.0.1:9/unused"
		}
		cfg.Institutions = append(cfg.Institutions, c)
	}
	cfg.ApplyDefaults()
	// What the test says, zero included (retries: 0), over the defaults.
	for i, in := range insts {
		c := &cfg.Institutions[i]
		c.Timeout, c.Retries, c.RetryWait = cmp.Or(in.Timeout, 2*time.Second), in.Retries, 10*time.Millisecond
		if in.BreakerFailures > 0 {
			c.BreakerFailures = int(in.BreakerFailures)
		}
		if in.BreakerOpenFor > 0 {
			c.BreakerOpenFor = in.BreakerOpenFor
		}
	}
	return cfg
}

// Start builds and starts a gateway; it is closed when the test ends.
func Start(t testing.TB, o Options) *Gateway {
	t.Helper()
	cfg := Config(o.Institutions)
	store := o.Store
	if store == nil {
		d := o.Driver
		if d == "" {
			d = "sqlite"
		}
		store = modeltest.Open(t, d, os.Getenv)
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	logs := &Buffer{}
	log := logrus.New()
	log.SetOutput(logs)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.SetLevel(logrus.DebugLevel)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gw, err := gateway.New(ctx, cfg, log, gateway.WithStore(store))
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	if err := gw.Start(); err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(func() { gw.Close() })
	g := &Gateway{Gateway: gw, Store: store, Service: gw.Service(), URL: "http://" + gw.Addr().String(), Log: log,
		Logs: logs, Metrics: gw.Metrics(), insts: map[string]*Institution{}, ciphers: map[string]crypto.Cipher{}}
	for i := range o.Institutions {
		spec := o.Institutions[i]
		c, err := crypto.New(spec.Cipher, spec.AppSecret)
		if err != nil {
			t.Fatalf("cipher of %s: %v", spec.OrgCode, err)
		}
		g.insts[spec.OrgCode], g.ciphers[spec.OrgCode] = &spec, c
	}
	return g
}

// ForEachDriver runs fn as a subtest on "sqlite" and on "mysql"; the MySQL
// subtest is skipped, saying why, when modeltest.EnvDSN is unset (CI sets
// it). fn passes the driver on to Start.
func ForEachDriver(t *testing.T, fn func(t *testing.T, driver string)) {
	t.Helper()
	for _, d := range []string{"sqlite", "mysql"} {
		t.Run(d, func(t *testing.T) {
			if d == "mysql" && os.Getenv(modeltest.EnvDSN) == "" {
				t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
			}
			fn(t, d)
		})
	}
}

// Cipher returns the cipher of an institution, to encrypt callbacks with.
func (g *Gateway) Cipher(org string) crypto.Cipher { return g.ciphers[org] }

// Callback posts params (marshalled to JSON, or []byte as they are) as
// institution org's callback of kind, encrypted with its cipher and with
// its appKey, and returns the HTTP status and the generic response.
func (g *Gateway) Callback(t testing.TB, org, kind string, params any) (int, wire.Response) {
	t.Helper()
	spec := g.insts[org]
	plain, ok := params.([]byte)
	if !ok {
		var err error
		if plain, err = json.Marshal(params); err != nil {
			t.Fatal(err)
		}
	}
	ct, err := g.ciphers[org].Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.Request{Data: string(ct)})
	return g.RawCallback(t, kind, spec.AppKey, body)
}

// RawCallback posts body as it is with the given appKey header.
func (g *Gateway) RawCallback(t testing.TB, kind, appKey string, body []byte) (int, wire.Response) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/guarantee/"+kind, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	if appKey != "" {
		req.Header.Set("appKey", appKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post %s: %v", kind, err)
	}
	defer resp.Body.Close()
	var r wire.Response
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s answered %d %q: %v", kind, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, r
}

// API calls the bidding module's API with the test token; body may be nil,
// []byte or anything JSON-marshalable. It returns the status and body.
func (g *Gateway) API(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, g.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// Buffer is a concurrency-safe log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

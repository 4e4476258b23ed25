// Package handlertest starts a real gateway for tests: a fresh store
// (SQLite, or MariaDB when GATEWAY_TEST_MYSQL_DSN is set), real ciphers, the
// real outbound client, the real service and the real gin server on an
// httptest listener. Institutions are whatever URLs the test gives (usually
// httptest servers, or banksim).
package handlertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler"
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
	BaseURL   string // where apply, cost and xmstate live; may be set later via SetBaseURL
	Timeout   time.Duration
	Retries   int
	// Breaker tuning; zero keeps the client's defaults.
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
}

// Options shape the test gateway.
type Options struct {
	Driver       string // "sqlite" (default) or "mysql"
	Institutions []Institution
	Settings     service.Settings // zero fields get test-friendly defaults
	Store        *model.Store     // use this store instead of a fresh one
	// NotifyBodyLimit is applynotify's body limit; zero means the default
	// of config (30 MiB).
	NotifyBodyLimit int64
}

// Gateway is a running test gateway.
type Gateway struct {
	Store   *model.Store
	Service *service.Service
	Server  *httptest.Server
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

// Start builds and starts a gateway; it is closed when the test ends.
func Start(t testing.TB, o Options) *Gateway {
	t.Helper()
	store := o.Store
	if store == nil {
		d := o.Driver
		if d == "" {
			d = "sqlite"
		}
		store = modeltest.Open(t, d, os.Getenv)
	}
	logs := &Buffer{}
	log := logrus.New()
	log.SetOutput(logs)
	log.SetFormatter(&logrus.JSONFormatter{})
	log.SetLevel(logrus.DebugLevel)

	set := o.Settings
	if set.Owner == "" {
		set.Owner = "test"
	}
	if set.PollBackoff == nil {
		set.PollBackoff = []time.Duration{time.Minute, 2 * time.Minute}
	}
	if set.RedeliveryBackoff == nil {
		set.RedeliveryBackoff = []time.Duration{15 * time.Second, 30 * time.Second}
	}
	if set.ApplyBackoff == nil {
		set.ApplyBackoff = []time.Duration{30 * time.Second, time.Minute}
	}
	if set.Lease == 0 {
		set.Lease = time.Minute
	}
	if set.BatchSize == 0 {
		set.BatchSize = 100
	}
	if set.Concurrency == 0 {
		set.Concurrency = 8
	}
	if set.MaxApplyAttempts == 0 {
		set.MaxApplyAttempts = 5
	}
	if set.StaleAfterOpening == 0 {
		set.StaleAfterOpening = 24 * time.Hour
	}

	g := &Gateway{Store: store, Log: log, Logs: logs, insts: map[string]*Institution{}, ciphers: map[string]crypto.Cipher{}}
	var insts []*service.Institution
	for i := range o.Institutions {
		spec := o.Institutions[i]
		c, err := crypto.New(spec.Cipher, spec.AppSecret)
		if err != nil {
			t.Fatalf("cipher of %s: %v", spec.OrgCode, err)
		}
		if spec.Timeout == 0 {
			spec.Timeout = 2 * time.Second
		}
		g.insts[spec.OrgCode] = &spec
		g.ciphers[spec.OrgCode] = c
		insts = append(insts, &service.Institution{OrgCode: spec.OrgCode, Name: spec.Name, AppKey: spec.AppKey,
			Cipher: c, Timeout: spec.Timeout, MaxConcurrent: 8})
	}
	g.Metrics = service.NewPrometheusMetrics()
	g.Service = service.New(store, service.NewRegistry(insts), set, log, g.Metrics)
	g.Metrics.Watch(g.Service)
	hc := client.NewHTTPClient()
	for _, in := range insts {
		spec := g.insts[in.OrgCode]
		in.Client = client.New(client.Config{OrgCode: spec.OrgCode, BaseURL: spec.BaseURL, AppKey: spec.AppKey,
			Cipher: in.Cipher, Timeout: spec.Timeout, Retries: spec.Retries, RetryWait: 10 * time.Millisecond,
			BreakerFailures: spec.BreakerFailures, BreakerOpenFor: spec.BreakerOpenFor}, hc, g.Service)
	}
	notifyLimit := o.NotifyBodyLimit
	if notifyLimit == 0 {
		notifyLimit = 30 << 20
	}
	h := handler.NewServer(handler.Deps{Service: g.Service, Log: log, Tokens: []string{Token}, Metrics: g.Metrics.Handler(),
		OpenAPI: []byte("openapi: 3.0.3\n"), NotifyBodyLimit: notifyLimit, CallbackBodyLimit: 64 << 10})
	g.Server = httptest.NewServer(h)
	g.URL = g.Server.URL
	t.Cleanup(g.Server.Close)
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

package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// The keys of the test institution, and another institution's secret whose
// ciphertext ours must refuse.
const (
	appKey      = "test-app-key-7f3a"
	appSecret   = "s3cr3t-0123-4567"
	otherSecret = "fedcba9876543210"
)

// No test in this package runs in parallel: the goroutine counts of
// checkNoLeak would see each other's servers.

func newCipher(t testing.TB, secret string) crypto.Cipher {
	t.Helper()
	c, err := crypto.New(crypto.Options{}, secret)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// received is one request as the institution saw it.
type received struct {
	header http.Header
	body   []byte // the raw envelope
	plain  []byte // the decrypted parameters; nil when they did not decrypt
	at     time.Time
}

// institution is an httptest server speaking docs/protocol.md with the real
// cipher. Its answer function sees the hit number (1-based) and the
// decrypted parameters; release is closed before the server is, so that an
// answer that hangs can end.
type institution struct {
	srv     *httptest.Server
	cipher  crypto.Cipher
	release chan struct{}

	mu  sync.Mutex
	got []received
}

type answerFunc func(in *institution, w http.ResponseWriter, r *http.Request, hit int)

func newInstitution(t testing.TB, answer answerFunc) *institution {
	t.Helper()
	return newInstitutionKeyed(t, appSecret, answer)
}

// newInstitutionKeyed is an institution whose secret is secret.
func newInstitutionKeyed(t testing.TB, secret string, answer answerFunc) *institution {
	t.Helper()
	in := &institution{cipher: newCipher(t, secret), release: make(chan struct{})}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc := received{header: r.Header.Clone(), body: body, at: time.Now()}
		if ct, err := wire.Ciphertext(body); err == nil {
			rc.plain, _ = in.cipher.Decrypt(ct)
		}
		in.mu.Lock()
		in.got = append(in.got, rc)
		hit := len(in.got)
		in.mu.Unlock()
		answer(in, w, r, hit)
	}))
	t.Cleanup(func() {
		close(in.release)
		in.srv.Close()
	})
	return in
}

func (in *institution) URL(path string) string { return in.srv.URL + path }

func (in *institution) requests() []received {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]received(nil), in.got...)
}

// seal encrypts v's JSON (or v itself if it is a string) with c.
func seal(t testing.TB, c crypto.Cipher, v any) string {
	plain, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		plain = string(b)
	}
	ct, err := c.Encrypt([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return string(ct)
}

// writeJSON answers status with v's JSON, or v itself if it is a string.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, ok := v.(string)
	if !ok {
		j, _ := json.Marshal(v)
		b = string(j)
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, b)
}

// okWith answers stat 1 with data, the encryption of v (nil: no data).
func okWith(t testing.TB, v any) answerFunc {
	return func(in *institution, w http.ResponseWriter, _ *http.Request, _ int) {
		resp := map[string]any{"stat": 1, "errcode": "000000", "msg": "成功"}
		if v != nil {
			resp["data"] = seal(t, in.cipher, v)
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// hang never answers: the client's timeout must end the exchange.
func hang(in *institution, _ http.ResponseWriter, r *http.Request, _ int) {
	select {
	case <-r.Context().Done():
	case <-in.release:
	}
}

// recorder keeps what the client records.
type recorder struct {
	mu   sync.Mutex
	recs []client.Record
}

func (r *recorder) RecordCall(_ context.Context, rec client.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
}

func (r *recorder) all() []client.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Record(nil), r.recs...)
}

// newClient builds the client of institution "ORG1" at baseURL over its own
// shared transport, closed (idle connections) when the test ends.
// testConfig is a client of one institution as a test wants it: quick
// timeouts and retries, a breaker that opens after 5 failures for 30s.
func testConfig(t testing.TB, org, baseURL, secret string) client.Config {
	return client.Config{OrgCode: org, BaseURL: baseURL, AppKey: appKey, Cipher: newCipher(t, secret),
		Timeout: 200 * time.Millisecond, RetryWait: 10 * time.Millisecond, BreakerFailures: 5, BreakerOpenFor: 30 * time.Second}
}

func newClient(t testing.TB, baseURL string, tweak func(*client.Config)) (*client.Client, *recorder, *http.Client) {
	t.Helper()
	hc := client.NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	cfg := testConfig(t, "ORG1", baseURL, appSecret)
	if tweak != nil {
		tweak(&cfg)
	}
	rec := &recorder{}
	return client.New(cfg, hc, rec), rec, hc
}

// checkNoLeak fails the test if, once every server is closed and the idle
// connections are dropped (the cleanups registered after it run first),
// more goroutines are left than when it was called.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		n := runtime.NumGoroutine()
		for n > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			n = runtime.NumGoroutine()
		}
		if n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: %d before, %d after; leaked:\n%s", before, n, buf)
		}
	})
}

// refusedURL is an http URL on 127.0.0.1 where nothing listens.
func refusedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// checkRecords fails if any field of any record contains one of forbidden.
func checkRecords(t *testing.T, recs []client.Record, forbidden ...string) {
	t.Helper()
	for i, r := range recs {
		stat := "<nil>"
		if r.Stat != nil {
			stat = fmt.Sprint(*r.Stat)
		}
		all := fmt.Sprintf("%+v stat=%s", r, stat)
		for _, f := range forbidden {
			if f != "" && strings.Contains(all, f) {
				t.Errorf("record %d contains %q: %s", i, f, all)
			}
		}
	}
}

var shanghai = time.FixedZone("CST", 8*3600)

// applyRequest is a valid application with personal data worth hiding.
func applyRequest() wire.ApplyRequest {
	return wire.ApplyRequest{
		ApplicantName: "杭州某某建设工程有限公司", ApplicantCode: "91330100MA27XK1234",
		DepositAmount: decimal.RequireFromString("10000"), OrderNo: "G20260115093000123a1b2c3d4",
		ProjectName: "某某道路改造工程", ProjectCode: "XM-2026-001", LotName: "一标段", LotCode: "BD-01",
		OpeningAt:    time.Date(2026, 1, 20, 9, 30, 0, 0, shanghai),
		TendererName: "某某市交通局", TendererCode: "11330100002493",
		DeadlineAt:  time.Date(2026, 1, 20, 9, 0, 0, 0, shanghai),
		AccountBank: "中国工商银行杭州分行", AccountName: "杭州某某建设工程有限公司", AccountNo: "6222021202041234567",
		ContactName: "张三", ContactPhone: "13800138000", ContactEmail: "zhangsan@example.com",
	}
}

// secrets is what no record may contain after an apply.
func secrets(a wire.ApplyRequest) []string {
	return []string{appSecret, appKey, a.ContactPhone, a.ContactEmail, a.AccountNo, a.ApplicantCode}
}

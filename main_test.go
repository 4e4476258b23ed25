package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects a command's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestServeDefaultConfig runs the real program with the repository's
// config.yaml — the `go run .` of the README — moved to free ports and a
// temporary database through the documented environment overrides, and
// walks a bidder's lifecycle against the in-process simulated institution.
func TestServeDefaultConfig(t *testing.T) {
	gwPort, simPort := freePort(t), freePort(t)
	env := envOf(map[string]string{
		"GATEWAY_SERVER_ADDR":               "127.0.0.1:" + gwPort,
		"GATEWAY_SERVER_PUBLIC_BASE_URL":    "http://127.0.0.1:" + gwPort,
		"GATEWAY_DATABASE_DSN":              filepath.Join(t.TempDir(), "gateway.db"),
		"GATEWAY_SIM_ADDR":                  "127.0.0.1:" + simPort,
		"GATEWAY_INSTITUTIONS_SIM_BASE_URL": "http://127.0.0.1:" + simPort + "/sim",
		"GATEWAY_SIM_PAY_DELAY":             "100ms",
		"GATEWAY_SIM_ISSUE_DELAY":           "200ms",
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", "config.yaml"}, env, &stdout, &stderr) }()

	base := "http://127.0.0.1:" + gwPort
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "gateway listening on") {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not listening after 20s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := call(t, "GET", base+path, ""); code != 200 {
			t.Fatalf("%s = %d %s", path, code, body)
		}
	}

	now := time.Now().UnixMilli()
	apply := fmt.Sprintf(`{"orgcode":"SIM","orderno":"E2E-1","qyname":"某某建设有限公司","qycode":"91110000100000000X",
		"bzjmoney":"100000.00","xmname":"办公楼","xmcode":"XM-1","bdname":"一标段","bdcode":"BD-1",
		"tbjztime":%d,"kbttime":%d,"zbrname":"某局","zbrcode":"11110000000000000Y","qykh":"工商银行",
		"qykhzh":"某某建设有限公司","qyjbzh":"6222020200112233445","jbrname":"张三",
		"jbrphone":"13800005678","jbremail":"zhangsan@example.cn"}`, now+86_400_000, now+90_000_000)
	if code, body := call(t, "POST", base+"/v1/guarantees", apply); code != http.StatusCreated {
		t.Fatalf("apply = %d %s", code, body)
	}
	order := waitFor(t, base+"/v1/guarantees/E2E-1", func(o map[string]any) bool { return o["status"] == "issued" })
	if order["paid_amount"] != 200.0 || order["bhno"] == "" {
		t.Errorf("issued order: paid %v bhno %v", order["paid_amount"], order["bhno"])
	}
	code, pdf := call(t, "GET", base+"/v1/guarantees/E2E-1/file", "")
	if code != 200 || !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("file = %d %q", code, pdf[:min(len(pdf), 40)])
	}
	if code, body := call(t, "POST", base+"/v1/guarantees/E2E-1/cancel", ""); code != http.StatusAccepted {
		t.Fatalf("cancel = %d %s", code, body)
	}
	waitFor(t, base+"/v1/guarantees/E2E-1", func(o map[string]any) bool { return o["status"] == "cancelled" })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no shutdown within 20s")
	}
	if strings.Contains(stderr.String(), "simsecret0123456") {
		t.Error("the app_secret appears in the logs")
	}
}

func TestBadConfigStopsAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	os.WriteFile(path, []byte("database: {driver: postgres}\napi: {tokens: [\"0123456789abcdef0\"]}\n"), 0o600)
	err := run(context.Background(), []string{"serve", "-config", path}, envOf(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "database.driver") {
		t.Fatalf("err = %v, want one naming database.driver", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	env := envOf(map[string]string{"GATEWAY_DATABASE_DSN": filepath.Join(t.TempDir(), "m.db")})
	var out bytes.Buffer
	migrations, err := fs.Glob(os.DirFS("model/migrations/sqlite"), "*.sql")
	if err != nil || len(migrations) == 0 {
		t.Fatalf("migrations: %v %v", migrations, err)
	}
	for i, want := range []string{fmt.Sprintf("migrations applied: %d", len(migrations)), "migrations applied: 0"} {
		out.Reset()
		if err := run(context.Background(), []string{"migrate", "-config", "config.yaml"}, env, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("run %d: %q, want %q", i, out.String(), want)
		}
	}
}

// gateway reconcile: the first run reads everything (no mark yet), the
// next only what changed since, and --full everything again.
func TestReconcileCommand(t *testing.T) {
	env := envOf(map[string]string{"GATEWAY_DATABASE_DSN": filepath.Join(t.TempDir(), "r.db")})
	var out bytes.Buffer
	for i, c := range []struct{ args, want string }{
		{"", "(full true)"}, {"", "(full false)"}, {"--full --date 2026-03-01", "reconciliation 2026-03-01 (full true)"},
	} {
		out.Reset()
		args := append([]string{"reconcile", "-config", "config.yaml"}, strings.Fields(c.args)...)
		if err := run(context.Background(), args, env, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("run %d: %q, want %q", i, out.String(), c.want)
		}
	}
	if err := run(context.Background(), []string{"reconcile", "-config", "config.yaml", "--date", "March"}, env, io.Discard, io.Discard); err == nil {
		t.Error("a date that is no day was taken")
	}
}

func call(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer dev-token-change-me-0001")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitFor(t *testing.T, url string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, b := call(t, "GET", url, "")
		var o map[string]any
		json.Unmarshal(b, &o)
		if ok(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached the expected state; last: %s", url, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

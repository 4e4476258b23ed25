package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/procurement/gateway/console"
)

// TestPasswordCommand: `gateway password` reads a password on standard
// input and prints a bcrypt hash of it that the configuration accepts;
// passwords too short or too long for bcrypt are refused.
func TestPasswordCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runPassword(strings.NewReader("correct horse battery\r\n"), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("correct horse battery")); err != nil {
		t.Errorf("the hash %q does not match the password: %v", hash, err)
	}
	if cost, _ := bcrypt.Cost([]byte(hash)); cost != passwordCost {
		t.Errorf("cost %d, want %d", cost, passwordCost)
	}
	for name, in := range map[string]string{"short": "short-pw\n", "empty": "", "over 72 bytes": strings.Repeat("长", 25) + "\n"} {
		out.Reset()
		if err := runPassword(strings.NewReader(in), &out, &errOut); err == nil || out.Len() > 0 {
			t.Errorf("%s: printed %q (%v), want an error", name, out.String(), err)
		}
	}
}

// TestDemoOperator: the demo operator's hash, in the constants and in the
// shipped config.yaml, is the README's password.
func TestDemoOperator(t *testing.T) {
	if err := bcrypt.CompareHashAndPassword([]byte(console.DemoPasswordHash), []byte(console.DemoPassword)); err != nil {
		t.Fatalf("DemoPasswordHash is not DemoPassword's: %v", err)
	}
	cfg, err := loadConfig("serve", []string{"-config", "config.yaml"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := cfg.Console.User(console.DemoUser)
	if !ok || u.PasswordHash != console.DemoPasswordHash || u.Role != "operator" {
		t.Errorf("config.yaml's demo operator: %+v %v", u, ok)
	}
	for _, doc := range []string{"README.md", "docs/operations.md"} {
		if b := readFile(t, doc); !strings.Contains(b, console.DemoPassword) {
			t.Errorf("%s does not give the demo operator's password", doc)
		}
	}
}

// TestConsoleDefaultConfig is the README's "go run ." with a browser: the
// shipped configuration serves the console, warns about its demo operator,
// and the demo operator finds an order of the simulated institution by
// its orderno in one search and reads its timeline.
func TestConsoleDefaultConfig(t *testing.T) {
	gwPort, simPort := freePort(t), freePort(t)
	env := envOf(map[string]string{
		"GATEWAY_SERVER_ADDR":               "127.0.0.1:" + gwPort,
		"GATEWAY_SERVER_PUBLIC_BASE_URL":    "http://127.0.0.1:" + gwPort,
		"GATEWAY_DATABASE_DSN":              filepath.Join(t.TempDir(), "gateway.db"),
		"GATEWAY_SIM_ADDR":                  "127.0.0.1:" + simPort,
		"GATEWAY_INSTITUTIONS_SIM_BASE_URL": "http://127.0.0.1:" + simPort + "/sim",
		"GATEWAY_SIM_PAY_DELAY":             "50ms",
		"GATEWAY_SIM_ISSUE_DELAY":           "50ms",
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "-config", "config.yaml"}, env, &stdout, &stderr) }()
	defer func() {
		cancel()
		<-done
	}()
	base := "http://127.0.0.1:" + gwPort
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "gateway listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("not listening after 20s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "shipped demo password") || !strings.Contains(stderr.String(), console.DemoPassword) {
		t.Errorf("no warning about the demo operator at start:\n%s", stderr.String())
	}

	now := time.Now().UnixMilli()
	apply := fmt.Sprintf(`{"orgcode":"SIM","orderno":"CONSOLE-DEMO-1","qyname":"某某建设有限公司","qycode":"91110000100000000X",
		"bzjmoney":"100000.00","xmname":"办公楼","xmcode":"XM-1","bdname":"一标段","bdcode":"BD-1",
		"tbjztime":%d,"kbttime":%d,"zbrname":"某局","zbrcode":"11110000000000000Y","qykh":"工商银行",
		"qykhzh":"某某建设有限公司","qyjbzh":"6222020200112233445","jbrname":"张三",
		"jbrphone":"13800005678","jbremail":"zhangsan@example.cn"}`, now+86_400_000, now+90_000_000)
	if code, body := call(t, "POST", base+"/v1/guarantees", apply); code != http.StatusCreated {
		t.Fatalf("apply = %d %s", code, body)
	}
	waitFor(t, base+"/v1/guarantees/CONSOLE-DEMO-1", func(o map[string]any) bool { return o["status"] == "issued" })

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	get := func(path string) (int, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, form := get("/console/")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(form)
	if m == nil || !strings.Contains(form, `action="/console/login"`) {
		t.Fatalf("/console/ is not the sign-in form:\n%s", form)
	}
	resp, err := c.PostForm(base+"/console/login", url.Values{"csrf": {m[1]}, "username": {console.DemoUser},
		"password": {console.DemoPassword}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/console/" {
		t.Fatalf("sign-in as the demo operator: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	code, page := get("/console/orders?q=CONSOLE-DEMO-1")
	if code != http.StatusOK || !strings.Contains(page, `href="/console/orders/CONSOLE-DEMO-1"`) || !strings.Contains(page, "已出函") {
		t.Fatalf("searching the orderno: %d\n%s", code, page)
	}
	code, page = get("/console/orders/CONSOLE-DEMO-1")
	for _, want := range []string{"模拟担保公司", "支付通知 <code>paystate</code>", "出函通知 <code>applynotify</code>", "138****5678"} {
		if code != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("the order page (%d) does not show %q", code, want)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

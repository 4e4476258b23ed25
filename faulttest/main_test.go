// Package faulttest proves that nothing is lost (issue 8): the real gateway
// binary under kill -9 and a database outage, a corpus of malformed
// callbacks, redelivery of project states to an institution that comes
// back, and a fuzz target over the whole callback path. On a three-node
// Galera cluster (galera_test.go, issue 14): three gateways, one per node,
// under contention, a node killed and a gateway killed under load, a node
// cut off, migrations at once.
//
// The subprocess tests (kill, outage, redelivery, cluster) run only when
// GATEWAY_FAULT_TESTS=1 and GATEWAY_TEST_MYSQL_DSN are set (.ci/run sets
// both), the cluster tests only where deploy/galera/cluster.sh can run (they
// skip and say why otherwise); they talk to 127.0.0.1 only and are bounded
// in count and time. The corpus and the fuzz seeds run always.
package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

// EnvFaultTests enables the subprocess tests.
const EnvFaultTests = "GATEWAY_FAULT_TESTS"

// binary is the gateway built once for the whole package. Only the
// subprocess tests need it, so it is built on first use: the corpus and
// the fuzz workers (each a re-run of this test binary) do not pay for it.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-faulttest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faulttest:", err)
		os.Exit(1)
	}
	binary.dir = dir
	code := m.Run()
	stopGalera()
	os.RemoveAll(dir)
	os.Exit(code)
}

// faultGate skips a subprocess test unless the fault suite is enabled.
func faultGate(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvFaultTests) != "1" {
		t.Skipf("fault suite skipped: set %s=1 (CI does) to run the real binary under kill -9, database outage and redelivery", EnvFaultTests)
	}
	if testing.Short() {
		t.Skip("fault suite skipped in -short mode")
	}
}

// raceEnabled reports whether this test binary has the race detector; the
// gateway is then built with it too, so a data race under load fails the
// test instead of passing unseen.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// EnvFaultBinary names a gateway binary to run instead of building one:
// the suite run against another build (an older one, to see a test fail
// where it should).
const EnvFaultBinary = "GATEWAY_FAULT_BINARY"

// gatewayBinary builds github.com/procurement/gateway once, with the race
// detector when this test binary has it.
func gatewayBinary(t testing.TB) string {
	t.Helper()
	return buildOnce(t, &binary, raceEnabled())
}

// plainBinary is the gateway built without the race detector, for the
// tests that measure the process's memory: the detector multiplies it.
var plainBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func gatewayPlainBinary(t testing.TB) string {
	t.Helper()
	if !raceEnabled() {
		return gatewayBinary(t)
	}
	return buildOnce(t, &plainBinary, false)
}

func buildOnce(t testing.TB, b *struct {
	once sync.Once
	dir  string
	path string
	err  error
}, race bool) string {
	t.Helper()
	if p := os.Getenv(EnvFaultBinary); p != "" {
		return p
	}
	b.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(binary.dir, fmt.Sprintf("gateway-race-%v", race))
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "github.com/procurement/gateway")
		start := time.Now()
		out, err := exec.Command(gobin, args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built the gateway (race %v) in %v", race, time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// institution is one institution of the gateway under test.
type institution struct {
	OrgCode   string
	AppKey    string
	AppSecret string // AES-128, the default cipher of docs/decisions.md §2
	BaseURL   string // where xmstate goes; unused by the callback tests
}

func (in institution) cipher(t testing.TB) crypto.Cipher {
	t.Helper()
	c, err := crypto.New(crypto.Options{}, in.AppSecret)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// faultInst is the institution that posts the callbacks of the fault tests.
var faultInst = institution{OrgCode: "FAULT", AppKey: "fault-app-key", AppSecret: "fault-secret-16b",
	BaseURL: "http://127.0.0.1:9/unused"}

// apiToken is the bidding module's bearer token in the gateway's config.
const apiToken = "fault-api-token-0123456789"

// setup is what the gateway's config.yaml says.
type setup struct {
	Driver       string // "mysql" (the default) or "sqlite"
	DSN          string // MySQL's, or the SQLite file
	Institutions []institution
	// Jobs is the body of the jobs: section; empty disables the jobs.
	Jobs string
	// Timeout is each institution's call timeout; 2 s unless set.
	Timeout time.Duration
	// Server is more of the server: section, YAML lines indented by two.
	Server string
	// Plain runs the gateway built without the race detector (memory
	// measurements), and Env adds to its environment (GOMEMLIMIT).
	Plain bool
	Env   []string
	// NoDBRetries sets database.retries to 0: a transaction refused over a
	// conflict is not run again (the gateway before it learnt to).
	NoDBRetries bool
}

func (s setup) yaml() string {
	var b strings.Builder
	b.WriteString("server:\n  addr: \"127.0.0.1:0\"\n  public_base_url: \"http://127.0.0.1:1\"\n  shutdown_grace: 3s\n" + s.Server)
	driver := s.Driver
	if driver == "" {
		driver = "mysql"
	}
	fmt.Fprintf(&b, "database:\n  driver: %s\n  dsn: %q\n  max_open_conns: 16\n  max_idle_conns: 8\n", driver, s.DSN)
	if s.NoDBRetries {
		b.WriteString("  retries: 0\n")
	}
	fmt.Fprintf(&b, "api:\n  tokens: [%q]\n", apiToken)
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	b.WriteString("institutions:\n")
	for _, in := range s.Institutions {
		fmt.Fprintf(&b, "  - orgcode: %q\n    name: %q\n    base_url: %q\n    app_key: %q\n    app_secret: %q\n    timeout: %s\n",
			in.OrgCode, in.OrgCode+" test institution", in.BaseURL, in.AppKey, in.AppSecret, timeout)
	}
	jobs := s.Jobs
	if jobs == "" {
		jobs = "  disabled: true\n"
	}
	b.WriteString("jobs:\n" + jobs)
	b.WriteString("log:\n  level: info\n  format: json\n")
	return b.String()
}

// gatewayProc is the real gateway running as a child process. Its stderr
// (the JSON log, and any race report) goes to a file kept for the test.
type gatewayProc struct {
	t       testing.TB
	bin     string
	cfgPath string
	logPath string
	log     *os.File
	env     []string // added to the environment

	mu   sync.Mutex
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startGateway writes the config and starts the gateway; it is stopped and
// its log checked for data races and panics when the test ends.
func startGateway(t *testing.T, s setup) *gatewayProc {
	t.Helper()
	g := prepareGateway(t, s)
	if _, err := g.start(); err != nil {
		t.Fatal(err)
	}
	return g
}

// prepareGateway writes the config of a gateway that start then starts.
func prepareGateway(t *testing.T, s setup) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	bin := gatewayBinary
	if s.Plain {
		bin = gatewayPlainBinary
	}
	g := &gatewayProc{t: t, bin: bin(t), cfgPath: filepath.Join(dir, "config.yaml"),
		logPath: filepath.Join(dir, "gateway.log"), env: s.Env}
	if err := os.WriteFile(g.cfgPath, []byte(s.yaml()), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	g.log = f
	t.Cleanup(func() {
		g.stop()
		g.checkLog()
		f.Close()
	})
	return g
}

// URL is the base URL of the running process (the port changes on restart).
func (g *gatewayProc) URL() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.url
}

// Pid is the running process's id.
func (g *gatewayProc) Pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (g *gatewayProc) Running() bool {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// start launches the binary, waits for its "gateway listening on" line and
// then for /readyz 200, and returns how long that took. It may run on a
// goroutine other than the test's, so it returns its failure.
func (g *gatewayProc) start() (time.Duration, error) {
	begin := time.Now()
	cmd := exec.Command(g.bin, "serve", "-config", g.cfgPath)
	cmd.Env = append(childEnv(), g.env...)
	cmd.Stderr = g.log
	listening := make(chan string, 1)
	cmd.Stdout = &lineWatch{tee: g.log, prefix: "gateway listening on ", found: listening}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start gateway: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	g.mu.Lock()
	g.cmd, g.done, g.url = cmd, done, ""
	g.mu.Unlock()

	var addr string
	select {
	case line := <-listening:
		// "gateway listening on 127.0.0.1:40123 (database mysql)"
		addr, _, _ = strings.Cut(strings.TrimPrefix(line, "gateway listening on "), " ")
	case <-done:
		return 0, fmt.Errorf("gateway exited at start: %v\n%s", cmd.ProcessState, g.logTail(40))
	case <-time.After(90 * time.Second):
		return 0, fmt.Errorf("gateway did not print its address within 90s\n%s", g.logTail(40))
	}
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		if status, _ := getStatus(url + "/readyz"); status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("gateway at %s not ready within 30s\n%s", url, g.logTail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.mu.Lock()
	g.url = url
	g.mu.Unlock()
	return time.Since(begin), nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (g *gatewayProc) kill() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.url = ""
	g.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop asks for a graceful stop, and kills after 10 s.
func (g *gatewayProc) stop() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		g.t.Errorf("gateway did not stop within 10s of SIGTERM; killed")
		g.kill()
	}
}

// checkLog fails the test on a data race or a panic in any run's log.
func (g *gatewayProc) checkLog() {
	b, err := os.ReadFile(g.logPath)
	if err != nil {
		g.t.Errorf("gateway log: %v", err)
		return
	}
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "handler panicked"} {
		if i := bytes.Index(b, []byte(bad)); i >= 0 {
			end := min(len(b), i+4000)
			g.t.Errorf("gateway log has %q:\n%s", bad, b[i:end])
		}
	}
	if g.t.Failed() {
		g.t.Logf("gateway log (last lines):\n%s", g.logTail(30))
	}
}

func (g *gatewayProc) logTail(n int) string {
	b, _ := os.ReadFile(g.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is this process's environment without GATEWAY_* variables,
// which the gateway would read as config overrides.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// lineWatch copies the child's stdout to tee and reports the first line
// starting with prefix.
type lineWatch struct {
	tee    io.Writer
	prefix string
	found  chan<- string

	buf  []byte
	sent bool
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.tee.Write(p)
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if !w.sent && strings.HasPrefix(line, w.prefix) {
			w.sent = true
			w.found <- line
		}
	}
	return len(p), nil
}

func getStatus(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// answer is what one callback post came to.
type answer struct {
	Status int // HTTP status; 0 when there was no answer
	Resp   wire.Response
	// Err is a transport failure; NotSent says the request surely never
	// reached the gateway (the dial failed), so nothing can have happened.
	Err     error
	NotSent bool
}

// Acked is the institution's view of success: stat 1.
func (a answer) Acked() bool { return a.Err == nil && a.Status == http.StatusOK && a.Resp.Stat == 1 }

func (a answer) String() string {
	if a.Err != nil {
		return "transport: " + a.Err.Error()
	}
	return fmt.Sprintf("HTTP %d stat %d errcode %s (%s)", a.Status, a.Resp.Stat, a.Resp.Errcode, a.Resp.Msg)
}

// sender posts callbacks as an institution does: the envelope of
// docs/decisions.md §1, encrypted with the institution's real cipher. Every
// request dials afresh, so that a refused dial tells "the gateway is down"
// apart from a request whose answer was lost.
type sender struct {
	hc     *http.Client
	cipher crypto.Cipher
	appKey string
}

func newSender(t testing.TB, in institution) *sender {
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &sender{hc: &http.Client{Transport: tr, Timeout: 15 * time.Second}, cipher: in.cipher(t), appKey: in.AppKey}
}

// envelope is the body an institution posts: {"data": ciphertext}. The
// default cipher (ECB) is deterministic, so the same callback always has
// the same body, and the audit row's body_sha256 identifies it.
func (s *sender) envelope(t testing.TB, plain []byte) []byte {
	ct, err := s.cipher.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.Request{Data: string(ct)})
	return body
}

// post sends body as a callback of kind to the gateway at base.
func (s *sender) post(ctx context.Context, base, kind string, body []byte) answer {
	if base == "" {
		return answer{Err: errors.New("gateway down"), NotSent: true}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/guarantee/"+kind, bytes.NewReader(body))
	if err != nil {
		return answer{Err: err, NotSent: true}
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", s.appKey)
	resp, err := s.hc.Do(req)
	if err != nil {
		var op *net.OpError
		return answer{Err: err, NotSent: errors.As(err, &op) && op.Op == "dial"}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal(raw, &a.Resp); err != nil {
		a.Err = fmt.Errorf("HTTP %d with a body that is not the generic response: %q", resp.StatusCode, raw)
	}
	return a
}

// pay is one paystate callback of the fault tests.
type pay struct {
	OrderNo string
	Kind    string // wire.PayKindPay or wire.PayKindRefund
	Amount  decimal.Decimal
	PaidAt  time.Time
}

// key identifies the payment as stored: what the callback said.
func (p pay) key() string {
	return fmt.Sprintf("%s|%s|%d|%s", p.OrderNo, p.Kind, p.PaidAt.UnixMilli(), p.Amount.StringFixed(2))
}

func paymentKey(m model.Payment) string {
	return fmt.Sprintf("%s|%s|%d|%s", m.OrderNo, m.Kind, m.PaidAt.UnixMilli(), m.Amount.StringFixed(2))
}

func (p pay) plain() []byte {
	ps := wire.PayState{OrderNo: p.OrderNo, Amount: p.Amount, PaidAt: p.PaidAt, Kind: p.Kind}
	if p.Kind == wire.PayKindPay {
		ps.PayerName, ps.PayerAccount = "某某建设有限公司", "6222020200112233445"
	}
	b, err := json.Marshal(ps)
	if err != nil {
		panic(err) // a PayState always marshals
	}
	return b
}

// testPDF is a small letter that passes the gateway's PDF check; its length
// is no multiple of 3, so that its base64 has padding for the corpus to
// break.
var testPDF = pdftest.Letter("corpus", 0, 1)

// seedOrders stores n orders of org in processing, as the apply flow would
// have left them, and returns their ordernos.
func seedOrders(t testing.TB, store *model.Store, org, prefix string, n int) []string {
	t.Helper()
	nos := make([]string, n)
	for i := range nos {
		nos[i] = fmt.Sprintf("%s-%04d", prefix, i+1)
		o := testOrder(org, nos[i], i)
		if err := store.CreateOrder(o); err != nil {
			t.Fatalf("seed order: %v", err)
		}
		moved, err := store.MoveOrder(o.OrderNo, []model.Status{model.StatusApplying}, model.StatusProcessing,
			model.OrderChange{}.Links(model.Links{ContinueURL: "https://bank.example/continue/" + o.OrderNo}))
		if err != nil || !moved {
			t.Fatalf("seed order %s to processing: %v %v", o.OrderNo, moved, err)
		}
	}
	return nos
}

func testOrder(org, orderNo string, i int) *model.Order {
	opening := time.Now().UTC().Add(72 * time.Hour).Truncate(time.Second)
	return &model.Order{OrderNo: orderNo, OrgCode: org, Status: model.StatusApplying, RequestHash: strings.Repeat("0", 64),
		ApplicantName: "某某建设有限公司", ApplicantCode: fmt.Sprintf("9111%014d", i), DepositAmount: decimal.RequireFromString("100000.00"),
		ProjectName: "办公楼", ProjectCode: "XM-" + orderNo, LotName: "一标段", LotCode: "BD-1",
		OpeningAt: opening, DeadlineAt: opening.Add(-time.Hour), TendererName: "某局", TendererCode: "11110000000000000Y",
		AccountBank: "工商银行", AccountName: "某某建设有限公司", AccountNo: "6222020200112233445",
		ContactName: "张三", ContactPhone: "13800005678", ContactEmail: "zhangsan@example.cn"}
}

// openStore opens the test's database directly (not through the gateway).
func openStore(t testing.TB, driver, dsn string) *model.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := model.Open(ctx, driver, dsn, model.Pool{MaxOpen: 8, MaxIdle: 4, MaxLifetime: time.Minute})
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

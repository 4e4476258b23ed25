package banksim

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

const (
	testKey    = "k-sim01"
	testSecret = "1234567890abcdef"
	testOrg    = "SIM01"
)

func testCipher(t *testing.T) crypto.Cipher {
	t.Helper()
	c, err := crypto.New(crypto.Options{}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// callback is one callback the fake gateway received, decrypted.
type callback struct {
	Path, AppKey, ContentType string
	Plain                     []byte
}

// fakeGateway stands in for the gateway's callback endpoints: it opens the
// envelope with the real cipher, records what came, and answers stat 1
// unless answer says otherwise.
type fakeGateway struct {
	t      *testing.T
	cipher crypto.Cipher
	srv    *httptest.Server

	mu    sync.Mutex
	calls []callback
	// answer, when set, decides the answer to the n-th call (from 1) of a
	// path: an HTTP status and a raw body. A nil body means the stat 1 body.
	answer func(path string, n int) (int, []byte)
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{t: t, cipher: testCipher(t)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	text, err := wire.Ciphertext(body)
	if err != nil {
		g.t.Errorf("callback %s: envelope: %v", r.URL.Path, err)
		return
	}
	plain, err := g.cipher.Decrypt(text)
	if err != nil {
		g.t.Errorf("callback %s: decrypt: %v", r.URL.Path, err)
		return
	}
	g.mu.Lock()
	g.calls = append(g.calls, callback{r.URL.Path, r.Header.Get("appKey"), r.Header.Get("Content-Type"), plain})
	n := 0
	for _, c := range g.calls {
		if c.Path == r.URL.Path {
			n++
		}
	}
	answer := g.answer
	g.mu.Unlock()

	status, out := http.StatusOK, []byte(nil)
	if answer != nil {
		status, out = answer(r.URL.Path, n)
	}
	if out == nil {
		out, _ = json.Marshal(wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功"})
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	w.Write(out)
}

func (g *fakeGateway) received(path string) []callback {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []callback
	for _, c := range g.calls {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

// await waits until n callbacks of path arrived and returns them.
func (g *fakeGateway) await(t *testing.T, path string, n int) []callback {
	t.Helper()
	eventually(t, path, func() bool { return len(g.received(path)) >= n })
	return g.received(path)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newTestSim serves a Sim whose callbacks go to g (none when g is nil),
// with millisecond delays.
func newTestSim(t *testing.T, g *fakeGateway, mutate func(*Config)) (*Sim, *httptest.Server) {
	t.Helper()
	cfg := Config{
		OrgCode:          testOrg,
		Name:             "模拟银行股份有限公司",
		AppKey:           testKey,
		AppSecret:        testSecret,
		PayDelay:         5 * time.Millisecond,
		IssueDelay:       5 * time.Millisecond,
		ReleaseDelay:     5 * time.Millisecond,
		PDFInNotify:      true,
		CallbackBackoff:  2 * time.Millisecond,
		CallbackTimeout:  2 * time.Second,
		CallbackAttempts: 5,
		Seed:             1,
	}
	if g != nil {
		cfg.GatewayURL = g.srv.URL
	}
	if mutate != nil {
		mutate(&cfg)
	}
	sim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // runs first: ends hangs and callbacks
	return sim, srv
}

func applyRequest(orderNo string) wire.ApplyRequest {
	return wire.ApplyRequest{
		ApplicantName: "某某建设工程有限公司",
		ApplicantCode: "91110000MA01ABCD1X",
		DepositAmount: decimal.RequireFromString("1000000.00"),
		OrderNo:       orderNo,
		ProjectName:   "某市第一中学教学楼改造工程",
		ProjectCode:   "XM-2025-001",
		LotName:       "第一标段",
		LotCode:       "BD-01",
		OpeningAt:     time.Date(2025, 7, 1, 2, 0, 0, 0, time.UTC),
		TendererName:  "某市教育局",
		TendererCode:  "11110000000000000A",
		DeadlineAt:    time.Date(2025, 7, 1, 1, 30, 0, 0, time.UTC),
		AccountBank:   "中国建设银行北京分行",
		AccountName:   "某某建设工程有限公司",
		AccountNo:     "11001234567890123456",
		ContactName:   "张三",
		ContactPhone:  "13800000000",
		ContactEmail:  "zhangsan@example.com",
	}
}

// call posts params in the envelope and returns the answer with its data
// decrypted (nil when empty).
func call(t *testing.T, url, appKey string, params any) (wire.Response, []byte) {
	t.Helper()
	plain, ok := params.([]byte)
	if !ok {
		var err error
		if plain, err = json.Marshal(params); err != nil {
			t.Fatal(err)
		}
	}
	text, err := testCipher(t).Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.Request{Data: string(text)})
	ans := postRaw(t, url, appKey, body)
	if ans.Data == "" {
		return ans, nil
	}
	data, err := testCipher(t).Decrypt([]byte(ans.Data))
	if err != nil {
		t.Fatalf("answer data: %v", err)
	}
	return ans, data
}

// postRaw posts body as it is and returns the answer, data still encrypted.
func postRaw(t *testing.T, url, appKey string, body []byte) wire.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	if appKey != "" {
		req.Header.Set("appKey", appKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d: %s", url, resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json;charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var ans wire.Response
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	return ans
}

func wantOK(t *testing.T, ans wire.Response) {
	t.Helper()
	if ans.Stat != 1 || ans.Errcode != wire.CodeOK || ans.Msg != "成功" {
		t.Fatalf("answer %+v, want stat 1 000000 成功", ans)
	}
}

func wantFail(t *testing.T, ans wire.Response, code string) {
	t.Helper()
	if ans.Stat != 0 || ans.Errcode != code || ans.Data != "" {
		t.Fatalf("answer %+v, want stat 0 errcode %s without data", ans, code)
	}
}

func apply(t *testing.T, srv *httptest.Server, orderNo string) wire.ApplyResult {
	t.Helper()
	ans, data := call(t, srv.URL+"/sim/guarantee/apply", testKey, applyRequest(orderNo))
	wantOK(t, ans)
	res, err := wire.ParseApplyResult(data)
	if err != nil {
		t.Fatalf("apply result %s: %v", data, err)
	}
	return res
}

func TestApplyAnswersAbsoluteURLs(t *testing.T) {
	_, srv := newTestSim(t, nil, nil)
	res := apply(t, srv, "A1")
	base := srv.URL + "/sim"
	want := wire.ApplyResult{
		ContinueURL: base + "/continue/A1",
		QueryURL:    base + "/orders/A1/query",
		PullURL:     base + "/orders/A1/pull",
		CancelURL:   base + "/orders/A1/cancel",
	}
	if res != want {
		t.Fatalf("apply result\n got %+v\nwant %+v", res, want)
	}

	// A configured PublicURL wins over the request's Host; no cancelurl
	// when the institution has none.
	_, srv2 := newTestSim(t, nil, func(c *Config) {
		c.PublicURL = "https://bank.example/eg/"
		c.NoCancelURL = true
	})
	res = apply(t, srv2, "A/2")
	if res.QueryURL != "https://bank.example/eg/orders/A%2F2/query" || res.CancelURL != "" {
		t.Fatalf("apply result %+v", res)
	}
}

func TestRefusesWrongAppKey(t *testing.T) {
	sim, srv := newTestSim(t, nil, nil)
	for _, key := range []string{"", "k-other", testKey + "x"} {
		ans, _ := call(t, srv.URL+"/sim/guarantee/apply", key, applyRequest("K1"))
		wantFail(t, ans, wire.CodeBadAppKey)
	}
	if len(sim.Orders()) != 0 {
		t.Fatal("an order was stored")
	}
}

func TestRefusesBadCiphertext(t *testing.T) {
	_, srv := newTestSim(t, nil, nil)
	other, _ := crypto.New(crypto.Options{}, "fedcba0987654321")
	plain, _ := json.Marshal(applyRequest("C1"))
	foreign, _ := other.Encrypt(plain)
	for name, body := range map[string]string{
		"not base64":  `{"data":"not base64 at all!"}`,
		"foreign key": `{"data":"` + string(foreign) + `"}`,
		"no data":     `{"x":1}`,
		"empty":       ``,
	} {
		ans := postRaw(t, srv.URL+"/sim/guarantee/apply", testKey, []byte(body))
		if ans.Stat != 0 || ans.Errcode != wire.CodeBadCipher {
			t.Errorf("%s: %+v, want 100002", name, ans)
		}
	}
}

func TestRefusesMissingField(t *testing.T) {
	_, srv := newTestSim(t, nil, nil)
	var m map[string]any
	b, _ := json.Marshal(applyRequest("M1"))
	json.Unmarshal(b, &m)
	delete(m, "qycode")
	ans, _ := call(t, srv.URL+"/sim/guarantee/apply", testKey, m)
	wantFail(t, ans, wire.CodeBadParam)
	if !strings.Contains(ans.Msg, "qycode") {
		t.Fatalf("msg %q does not name qycode", ans.Msg)
	}
}

func TestLifecycle(t *testing.T) {
	g := newFakeGateway(t)
	sim, srv := newTestSim(t, g, nil)
	res := apply(t, srv, "L1")

	// paystate: the bidder paid the fee from its basic account.
	pay := g.await(t, "/api/guarantee/paystate", 1)[0]
	if pay.AppKey != testKey || pay.ContentType != "application/json;charset=utf-8" {
		t.Errorf("paystate headers: appKey %q, Content-Type %q", pay.AppKey, pay.ContentType)
	}
	ps, err := wire.ParsePayState(pay.Plain)
	if err != nil {
		t.Fatalf("paystate %s: %v", pay.Plain, err)
	}
	req := applyRequest("L1")
	if ps.OrderNo != "L1" || ps.Kind != wire.PayKindPay || ps.Amount.StringFixed(2) != "1500.00" ||
		ps.PayerName != req.AccountName || ps.PayerAccount != req.AccountNo || time.Since(ps.PaidAt) > time.Minute {
		t.Errorf("paystate %+v", ps)
	}
	if !bytes.Contains(pay.Plain, []byte(`"paymoney":1500.00`)) {
		t.Errorf("paymoney not sent with two decimals: %s", pay.Plain)
	}

	// applynotify: issued, with the letter.
	note := g.await(t, "/api/guarantee/applynotify", 1)[0]
	if !bytes.Contains(note.Plain, []byte(`"staus":"1"`)) {
		t.Errorf("applynotify has no staus 1: %.200s", note.Plain)
	}
	n, err := wire.ParseApplyNotify(note.Plain)
	if err != nil {
		t.Fatalf("applynotify: %v", err)
	}
	if n.OrderNo != "L1" || n.State != wire.NotifyIssued || !regexp.MustCompile(`^BH\d{8}\d{6}$`).MatchString(n.GuaranteeNo) ||
		n.Premium.StringFixed(2) != "1500.00" || n.PremiumRate.String() != "0.0015" ||
		n.IssuerName != "模拟银行股份有限公司" || n.IssuerAddress == "" || n.IssuerPhone == "" ||
		n.IssuedAt.IsZero() || len(n.Missing) != 0 {
		t.Errorf("applynotify %+v", n)
	}
	if !wire.IsPDF(n.File) {
		t.Fatalf("bhfile is not a PDF: %.20q", n.File)
	}
	checkPDF(t, n.File, "L1", n.GuaranteeNo)

	// queryurl: issued, with bhno and dealtime.
	ans, data := call(t, res.QueryURL, testKey, wire.OrderRef{OrderNo: "L1"})
	wantOK(t, ans)
	q, err := wire.ParseQueryResult(data)
	if err != nil || q.Status != wire.NotifyIssued || q.GuaranteeNo != n.GuaranteeNo || q.DealtAt.IsZero() {
		t.Errorf("query %s: %+v %v", data, q, err)
	}

	// pullurl: the very same PDF; an unknown bhno is refused.
	ans, data = call(t, res.PullURL, testKey, wire.GuaranteeRef{GuaranteeNo: n.GuaranteeNo})
	wantOK(t, ans)
	pr, err := wire.ParsePullResult(data)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if !bytes.Equal(pr.File, n.File) {
		t.Errorf("pulled PDF (%d bytes) differs from the notified one (%d bytes)", len(pr.File), len(n.File))
	}
	ans, _ = call(t, res.PullURL, testKey, wire.GuaranteeRef{GuaranteeNo: "BH-NONE"})
	wantFail(t, ans, wire.CodeUnknown)

	// continueurl: a page about the order.
	resp, err := http.Get(res.ContinueURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(page, []byte("L1")) {
		t.Errorf("continue page: %d %s", resp.StatusCode, page)
	}

	// cancelurl: accepted, then release state 1; a second cancel sends no
	// second release.
	ans, _ = call(t, res.CancelURL, testKey, wire.GuaranteeRef{GuaranteeNo: n.GuaranteeNo})
	wantOK(t, ans)
	rel := g.await(t, "/api/guarantee/release", 1)[0]
	r, err := wire.ParseRelease(rel.Plain)
	if err != nil || r.GuaranteeNo != n.GuaranteeNo || r.State != wire.ReleaseCancelled {
		t.Errorf("release %s: %+v %v", rel.Plain, r, err)
	}
	ans, _ = call(t, res.CancelURL, testKey, wire.GuaranteeRef{GuaranteeNo: n.GuaranteeNo})
	wantOK(t, ans)
	time.Sleep(30 * time.Millisecond)
	if got := len(g.received("/api/guarantee/release")); got != 1 {
		t.Errorf("%d release callbacks, want 1", got)
	}
	ans, _ = call(t, res.CancelURL, testKey, wire.GuaranteeRef{GuaranteeNo: "BH-NONE"})
	wantFail(t, ans, wire.CodeUnknown)

	eventually(t, "release ack", func() bool { return sim.Stats().Release == 1 })
	o, _ := sim.Order("L1")
	if o.Status != StatusCancelled || o.GuaranteeNo != n.GuaranteeNo || o.PaidAt.IsZero() || o.ReleasedAt.IsZero() {
		t.Errorf("order %+v", o)
	}
	st := sim.Stats()
	if st.Apply != 1 || st.Query != 1 || st.Pull != 2 || st.Cancel != 3 || st.Continue != 1 ||
		st.PayState != 1 || st.ApplyNotify != 1 || st.Release != 1 || st.GaveUp != 0 || st.Injected != 0 {
		t.Errorf("stats %+v", st)
	}
}

// checkPDF opens the letter with poppler when it is installed.
func checkPDF(t *testing.T, pdf []byte, orderNo, bhno string) {
	t.Helper()
	if !bytes.HasPrefix(pdf, []byte("%PDF-")) {
		t.Fatalf("not a PDF: %.20q", pdf)
	}
	pdfinfo, err := exec.LookPath("pdfinfo")
	if err != nil {
		t.Log("pdfinfo not installed: PDF not opened")
		return
	}
	file := filepath.Join(t.TempDir(), "letter.pdf")
	if err := os.WriteFile(file, pdf, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pdfinfo, file).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Pages:")) || bytes.Contains(out, []byte("Syntax Error")) {
		t.Fatalf("pdfinfo: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("电子投标保函")) || !bytes.Contains(out, []byte(bhno)) {
		t.Errorf("pdfinfo: title lacks the Chinese name or bhno:\n%s", out)
	}
	if pdftotext, err := exec.LookPath("pdftotext"); err == nil {
		text, err := exec.Command(pdftotext, file, "-").CombinedOutput()
		if err != nil || !bytes.Contains(text, []byte(orderNo)) || !bytes.Contains(text, []byte(bhno)) ||
			!bytes.Contains(text, []byte("1,000,000.00")) {
			t.Errorf("pdftotext: %v\n%s", err, text)
		}
	}
}

func TestPullWhenNotInNotify(t *testing.T) {
	g := newFakeGateway(t)
	_, srv := newTestSim(t, g, func(c *Config) { c.PDFInNotify = false })
	res := apply(t, srv, "P1")
	n, err := wire.ParseApplyNotify(g.await(t, "/api/guarantee/applynotify", 1)[0].Plain)
	if err != nil {
		t.Fatal(err)
	}
	if n.File != nil || len(n.Missing) != 1 || n.Missing[0] != "bhfile" {
		t.Fatalf("applynotify carries a file or misses more: %+v", n.Missing)
	}
	ans, data := call(t, res.PullURL, testKey, wire.GuaranteeRef{GuaranteeNo: n.GuaranteeNo})
	wantOK(t, ans)
	pr, err := wire.ParsePullResult(data)
	if err != nil {
		t.Fatal(err)
	}
	checkPDF(t, pr.File, "P1", n.GuaranteeNo)
}

func TestRefusedIssuance(t *testing.T) {
	g := newFakeGateway(t)
	sim, srv := newTestSim(t, g, func(c *Config) { c.RefuseRate = 1; c.RefundOnRefuse = true })
	res := apply(t, srv, "R1")
	n, err := wire.ParseApplyNotify(g.await(t, "/api/guarantee/applynotify", 1)[0].Plain)
	if err != nil {
		t.Fatal(err)
	}
	if n.State != wire.NotifyFailed || n.GuaranteeNo != "" || n.Remark == "" || n.File != nil {
		t.Errorf("applynotify %+v", n)
	}
	pays := g.await(t, "/api/guarantee/paystate", 2)
	refund, err := wire.ParsePayState(pays[1].Plain)
	if err != nil || refund.Kind != wire.PayKindRefund || refund.Amount.StringFixed(2) != "1500.00" {
		t.Errorf("refund %s: %+v %v", pays[1].Plain, refund, err)
	}
	ans, data := call(t, res.QueryURL, testKey, wire.OrderRef{OrderNo: "R1"})
	wantOK(t, ans)
	if q, err := wire.ParseQueryResult(data); err != nil || q.Status != wire.NotifyFailed || q.Describe == "" {
		t.Errorf("query %+v %v", q, err)
	}
	if o, _ := sim.Order("R1"); o.Status != StatusFailed {
		t.Errorf("order %+v", o)
	}
	if _, err := sim.Letter("R1"); err == nil {
		t.Error("a refused order has a letter")
	}
}

func TestIdempotentApply(t *testing.T) {
	g := newFakeGateway(t)
	sim, srv := newTestSim(t, g, nil)
	first := apply(t, srv, "I1")
	g.await(t, "/api/guarantee/applynotify", 1)
	second := apply(t, srv, "I1")
	if first != second {
		t.Fatalf("second apply answered %+v, first %+v", second, first)
	}
	time.Sleep(50 * time.Millisecond) // room for a second lifecycle, if any
	if p, n := len(g.received("/api/guarantee/paystate")), len(g.received("/api/guarantee/applynotify")); p != 1 || n != 1 {
		t.Fatalf("%d paystate and %d applynotify callbacks, want 1 each", p, n)
	}
	if len(sim.Orders()) != 1 || sim.Stats().Apply != 2 {
		t.Fatalf("orders %d, stats %+v", len(sim.Orders()), sim.Stats())
	}
}

func TestQuery(t *testing.T) {
	_, srv := newTestSim(t, nil, func(c *Config) { c.PayDelay = time.Hour })
	res := apply(t, srv, "Q1")
	ans, data := call(t, res.QueryURL, testKey, wire.OrderRef{OrderNo: "Q1"})
	wantOK(t, ans)
	if q, err := wire.ParseQueryResult(data); err != nil || q.Status != wire.NotifyProcessing || !q.DealtAt.IsZero() {
		t.Errorf("query %s: %+v %v", data, q, err)
	}
	if !bytes.Contains(data, []byte(`"status":2`)) {
		t.Errorf("status not sent as the int of docs/protocol.md: %s", data)
	}
	ans, _ = call(t, res.QueryURL, testKey, wire.OrderRef{OrderNo: "Q2"})
	wantFail(t, ans, wire.CodeBadParam) // not the URL's order
	ans, _ = call(t, srv.URL+"/sim/orders/Q2/query", testKey, wire.OrderRef{OrderNo: "Q2"})
	wantFail(t, ans, wire.CodeUnknown)
}

func TestCost(t *testing.T) {
	sim, srv := newTestSim(t, nil, nil)
	for deposit, want := range map[string]string{
		"1000000.00": "1500.00",
		"234567.89":  "351.85", // 351.851835
		"234567.67":  "351.85", // 351.851505: half away from zero at the third decimal only
		"300000.00":  "450.00",
		"10000.00":   "200.00", // the minimum
	} {
		ans, data := call(t, srv.URL+"/sim/guarantee/cost", testKey,
			wire.CostRequest{DepositAmount: decimal.RequireFromString(deposit), OrgCode: testOrg})
		wantOK(t, ans)
		c, err := wire.ParseCostResult(data)
		if err != nil || c.Fee == nil || c.Fee.StringFixed(2) != want {
			t.Errorf("cost of %s: %s %v, want %s", deposit, data, err, want)
		}
	}
	if got := sim.fee(decimal.RequireFromString("1000003.00")).StringFixed(2); got != "1500.00" {
		t.Errorf("1500.0045 rounded to %s", got) // not a half: down
	}
	if got := sim.fee(decimal.RequireFromString("1000010.00")).StringFixed(2); got != "1500.02" {
		t.Errorf("1500.015 rounded to %s, want 1500.02", got) // a half: up
	}

	ans, _ := call(t, srv.URL+"/sim/guarantee/cost", testKey,
		wire.CostRequest{DepositAmount: decimal.NewFromInt(1000), OrgCode: "OTHER"})
	wantFail(t, ans, wire.CodeBadParam)

	_, srv2 := newTestSim(t, nil, func(c *Config) { c.DescribeRate = 1 })
	ans, data := call(t, srv2.URL+"/sim/guarantee/cost", testKey,
		wire.CostRequest{DepositAmount: decimal.NewFromInt(1000), OrgCode: testOrg})
	wantOK(t, ans)
	if c, err := wire.ParseCostResult(data); err != nil || c.Fee != nil || !strings.Contains(c.Description, "0.15%") {
		t.Errorf("describe answer %s: %v", data, err)
	}
}

func TestXMState(t *testing.T) {
	sim, srv := newTestSim(t, nil, nil)
	ps := wire.ProjectState{ProjectName: "某项目", ProjectCode: "XM-1", LotName: "一标段", LotCode: "BD-1",
		OpeningAt: time.Date(2025, 7, 1, 2, 0, 0, 0, time.UTC), State: "2"}
	ans, data := call(t, srv.URL+"/sim/guarantee/xmstate", testKey, ps)
	wantOK(t, ans)
	if data != nil {
		t.Errorf("xmstate answered data %s", data)
	}
	got := sim.ProjectStates()
	if len(got) != 1 || got[0] != ps {
		t.Fatalf("recorded %+v", got)
	}
	ans, _ = call(t, srv.URL+"/sim/guarantee/xmstate", testKey, []byte(`{"xmname":"x"}`))
	wantFail(t, ans, wire.CodeBadParam)
}

// TestFailRate checks that FailRate 1 fails every answer, with all four
// kinds, and that only hangs and garbage leave the apply done.
func TestFailRate(t *testing.T) {
	sim, srv := newTestSim(t, nil, func(c *Config) {
		c.FailRate = 1
		c.HangFor = 300 * time.Millisecond
		c.PayDelay = time.Hour
	})
	client := &http.Client{Timeout: 100 * time.Millisecond}
	kinds := map[string]int{}
	cipher := testCipher(t)
	for i := range 40 {
		orderNo := "F" + string(rune('A'+i/26)) + string(rune('a'+i%26))
		plain, _ := json.Marshal(applyRequest(orderNo))
		text, _ := cipher.Encrypt(plain)
		body, _ := json.Marshal(wire.Request{Data: string(text)})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/sim/guarantee/apply", bytes.NewReader(body))
		req.Header.Set("appKey", testKey)
		resp, err := client.Do(req)
		var kind string
		switch {
		case err != nil:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("not a timeout: %v", err)
			}
			kind = "hang"
		default:
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var ans wire.Response
			switch {
			case resp.StatusCode == http.StatusInternalServerError:
				kind = "500"
			case json.Unmarshal(raw, &ans) != nil:
				kind = "garbage"
			case ans.Stat == 0 && ans.Errcode == wire.CodeUnavailable:
				kind = "stat0"
			default:
				t.Fatalf("answer %d %s is no failure", resp.StatusCode, raw)
			}
		}
		kinds[kind]++
		_, done := sim.Order(orderNo)
		if want := kind == "hang" || kind == "garbage"; done != want {
			t.Errorf("%s: order stored %v after %s", orderNo, done, kind)
		}
	}
	for _, k := range []string{"500", "stat0", "hang", "garbage"} {
		if kinds[k] == 0 {
			t.Errorf("no %s among %v", k, kinds)
		}
	}
	if got := sim.Stats().Injected; got != 40 {
		t.Errorf("Injected %d, want 40", got)
	}
}

func TestCallbackRetries(t *testing.T) {
	g := newFakeGateway(t)
	busy, _ := json.Marshal(wire.Response{Stat: 0, Errcode: wire.CodeUnavailable, Msg: "busy"})
	refused, _ := json.Marshal(wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "paymoney: bad"})
	g.answer = func(path string, n int) (int, []byte) {
		switch {
		case path == "/api/guarantee/paystate":
			return http.StatusOK, refused // not retried
		case n == 1:
			return http.StatusServiceUnavailable, busy
		case n == 2:
			return http.StatusOK, busy
		case n == 3:
			return http.StatusOK, []byte("<html>oops</html>")
		}
		return http.StatusOK, nil
	}
	sim, srv := newTestSim(t, g, nil)
	apply(t, srv, "CB1")
	notes := g.await(t, "/api/guarantee/applynotify", 4)
	eventually(t, "ack", func() bool { return sim.Stats().ApplyNotify == 1 })
	for _, n := range notes[1:] {
		if !bytes.Equal(n.Plain, notes[0].Plain) {
			t.Fatal("a retry sent something else")
		}
	}
	st := sim.Stats()
	if got := len(g.received("/api/guarantee/paystate")); got != 1 || st.PayState != 0 || st.GaveUp != 1 || st.Attempts != 5 {
		t.Fatalf("paystate sent %d times; stats %+v", got, st)
	}

	// Attempts are bounded.
	g2 := newFakeGateway(t)
	g2.answer = func(string, int) (int, []byte) { return http.StatusBadGateway, []byte("down") }
	sim2, srv2 := newTestSim(t, g2, func(c *Config) { c.CallbackAttempts = 3 })
	apply(t, srv2, "CB2")
	eventually(t, "give up twice", func() bool { return sim2.Stats().GaveUp == 2 })
	if got := len(g2.received("/api/guarantee/paystate")); got != 3 {
		t.Fatalf("paystate tried %d times, want 3", got)
	}
}

func TestCloseStopsLifecycles(t *testing.T) {
	g := newFakeGateway(t)
	sim, srv := newTestSim(t, g, func(c *Config) { c.PayDelay = time.Hour })
	apply(t, srv, "X1")
	start := time.Now()
	sim.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	sim.Close() // twice is fine
	apply(t, srv, "X2")
	time.Sleep(20 * time.Millisecond)
	if len(g.received("/api/guarantee/paystate")) != 0 {
		t.Fatal("callback after Close")
	}
}

func TestPadding(t *testing.T) {
	const pad = 3 << 20
	sim, srv := newTestSim(t, nil, func(c *Config) { c.PDFPadBytes = pad })
	apply(t, srv, "PAD1")
	eventually(t, "issuance", func() bool { o, _ := sim.Order("PAD1"); return o.Status == StatusIssued })
	pdf, err := sim.Letter("PAD1")
	if err != nil {
		t.Fatal(err)
	}
	if len(pdf) < pad || len(pdf) > pad+2<<10 {
		t.Fatalf("padded letter is %d bytes, want %d to %d", len(pdf), pad, pad+2<<10)
	}
	again, _ := sim.Letter("PAD1")
	if !bytes.Equal(pdf, again) {
		t.Fatal("rendering is not deterministic")
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(pdf)
	w.Close()
	if gz.Len() < len(pdf)*95/100 {
		t.Errorf("padding compresses: %d → %d", len(pdf), gz.Len())
	}
	o, _ := sim.Order("PAD1")
	checkPDF(t, pdf, "PAD1", o.GuaranteeNo)
}

func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{OrgCode: testOrg, AppKey: testKey, AppSecret: testSecret, Prefix: "/bank/"}, ln)
	}()
	url := "http://" + ln.Addr().String() + "/bank/guarantee/apply"
	ans, data := call(t, url, testKey, applyRequest("S1"))
	wantOK(t, ans)
	if res, _ := wire.ParseApplyResult(data); !strings.HasPrefix(res.QueryURL, "http://"+ln.Addr().String()+"/bank/orders/S1/") {
		t.Errorf("apply result %s", data)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no orgcode":   {AppKey: testKey, AppSecret: testSecret},
		"short secret": {OrgCode: testOrg, AppKey: testKey, AppSecret: "short"},
		"bad share":    {OrgCode: testOrg, AppKey: testKey, AppSecret: testSecret, FailRate: 1.5},
		"bad gateway":  {OrgCode: testOrg, AppKey: testKey, AppSecret: testSecret, GatewayURL: "gateway:8080"},
		"long name":    {OrgCode: testOrg, AppKey: testKey, AppSecret: testSecret, Name: strings.Repeat("银", 65)},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestASCII(t *testing.T) {
	if got := ascii("A公司\n1"); got != `A\u516c\u53f8 1` {
		t.Errorf("ascii: %q", got)
	}
	if got := groupThousands(decimal.RequireFromString("1234567.8")); got != "1,234,567.80" {
		t.Errorf("groupThousands: %q", got)
	}
}

// TestOtherCipher checks that Config.Cipher reaches both directions.
func TestOtherCipher(t *testing.T) {
	opts := crypto.Options{Mode: "cbc", Encoding: "HEX"}
	g := newFakeGateway(t)
	g.cipher, _ = crypto.New(opts, testSecret)
	sim, srv := newTestSim(t, g, func(c *Config) { c.Cipher = opts })
	c, _ := crypto.New(opts, testSecret)
	plain, _ := json.Marshal(applyRequest("O1"))
	text, _ := c.Encrypt(plain)
	ans := postRaw(t, srv.URL+"/sim/guarantee/apply", testKey, []byte(`{"data":"`+string(text)+`"}`))
	if ans.Stat != 1 || !regexp.MustCompile(`^[0-9A-F]+$`).MatchString(ans.Data) {
		t.Fatalf("answer %+v", ans)
	}
	if _, err := c.Decrypt([]byte(ans.Data)); err != nil {
		t.Fatal(err)
	}
	g.await(t, "/api/guarantee/applynotify", 1) // decrypted by the fake gateway with opts
	eventually(t, "ack", func() bool { return sim.Stats().ApplyNotify == 1 })
	// The default cipher's text does not open under CBC/HEX.
	ans, _ = call(t, srv.URL+"/sim/guarantee/apply", testKey, applyRequest("O2"))
	wantFail(t, ans, wire.CodeBadCipher)
}

func TestLatency(t *testing.T) {
	_, srv := newTestSim(t, nil, func(c *Config) { c.Latency = 40 * time.Millisecond })
	start := time.Now()
	ans, _ := call(t, srv.URL+"/sim/guarantee/cost", testKey, wire.CostRequest{DepositAmount: decimal.NewFromInt(1), OrgCode: testOrg})
	wantOK(t, ans)
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("answered in %v", d)
	}
}

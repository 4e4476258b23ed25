package handler_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model/modeltest"
)

// The personal data of the lifecycle below. Each value is distinctive, so
// that finding it anywhere in the logs can only mean it was logged whole.
const (
	piiPhone        = "13987654321"
	piiEmail        = "zhang.wei.pii@example.cn"
	piiAccountNo    = "6222020200112233445" // qyjbzh; banksim pays from it (paybankno)
	piiApplicant    = "91110108MA01ABCDE7"  // qycode
	piiTenderer     = "12100000400000123X"  // zbrcode
	piiOtherAccount = "6217000099998888777" // paybankno of a refused paystate
	opsSimSecret    = "L0g-T3st-S3cr3t!"    // app_secret: 16 bytes, AES-128
)

// opsSimGateway is a test gateway wired to a banksim institution that calls it
// back, with the logs of both sides captured.
type opsSimGateway struct {
	*handlertest.Gateway
	Sim     *banksim.Sim
	SimLogs *handlertest.Buffer
}

// opsStartSim starts banksim on a listener opened first (the gateway
// must know its URL), then the gateway, then serves banksim with the
// gateway's URL for its callbacks. The delays are short, so that a whole
// lifecycle takes well under a second.
func opsStartSim(t *testing.T, driver string) *opsSimGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inst := handlertest.Institution{OrgCode: "SIM01", Name: "sim bank", AppKey: "key-sim01-logs", AppSecret: opsSimSecret,
		BaseURL: "http://" + ln.Addr().String() + "/sim", Timeout: 5 * time.Second}
	g := handlertest.Start(t, handlertest.Options{Driver: driver, Institutions: []handlertest.Institution{inst}})

	simLogs := &handlertest.Buffer{}
	slog := logrus.New()
	slog.SetOutput(simLogs)
	slog.SetFormatter(&logrus.JSONFormatter{})
	slog.SetLevel(logrus.DebugLevel)
	sim, err := banksim.New(banksim.Config{OrgCode: inst.OrgCode, AppKey: inst.AppKey, AppSecret: inst.AppSecret,
		Prefix: "/sim", GatewayURL: g.URL, PDFInNotify: true, PayDelay: 20 * time.Millisecond,
		IssueDelay: 20 * time.Millisecond, ReleaseDelay: 20 * time.Millisecond, CallbackBackoff: 50 * time.Millisecond,
		Logger: slog})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(sim.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	// Cleanups run last-in first-out: the Sim stops calling back before
	// its server and the gateway close.
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	return &opsSimGateway{Gateway: g, Sim: sim, SimLogs: simLogs}
}

// opsApplication is an application of the bidding module with the personal data
// above; fields override entries.
func opsApplication(orderNo string, fields map[string]any) map[string]any {
	now := time.Now()
	b := map[string]any{
		"orgcode": "SIM01", "orderno": orderNo, "qyname": "北京某某建设有限公司", "qycode": piiApplicant,
		"bzjmoney": "200000.00", "xmname": "某某学校教学楼改造项目", "xmcode": "XM-LOG-1", "bdname": "第一标段",
		"bdcode": "BD-" + orderNo, "kbttime": now.Add(72 * time.Hour).UnixMilli(), "zbrname": "某某学校",
		"zbrcode": piiTenderer, "tbjztime": now.Add(48 * time.Hour).UnixMilli(), "qykh": "中国工商银行北京分行",
		"qykhzh": "北京某某建设有限公司", "qyjbzh": piiAccountNo, "jbrname": "张伟", "jbrphone": piiPhone,
		"jbremail": piiEmail,
	}
	for k, v := range fields {
		b[k] = v
	}
	return b
}

// opsOrder is what the tests read of an order.
type opsOrder struct {
	OrderNo     string      `json:"orderno"`
	Status      string      `json:"status"`
	GuaranteeNo string      `json:"bhno"`
	PaidAmount  json.Number `json:"paid_amount"`
	File        struct {
		Stored bool `json:"stored"`
	} `json:"file"`
}

// opsAwait polls the order until ok says so, or fails after 15 s.
func opsAwait(t *testing.T, g *handlertest.Gateway, orderNo, what string, ok func(opsOrder) bool) opsOrder {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, body := g.API(t, http.MethodGet, "/v1/guarantees/"+orderNo, nil)
		var o opsOrder
		if status == http.StatusOK {
			if err := json.Unmarshal(body, &o); err != nil {
				t.Fatalf("order %s: %v: %s", orderNo, err, body)
			}
			if ok(o) {
				return o
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s: not %s after 15s: %d %s", orderNo, what, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func opsWant(t *testing.T, what string, got, want int, body []byte) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: HTTP %d, want %d: %s", what, got, want, body)
	}
}

// opsLogLines parses JSON log lines.
func opsLogLines(t *testing.T, text string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// TestLifecycleLogsNoPersonalData runs a whole lifecycle through the API
// and banksim (cost, apply, pay, issue with the PDF, file, project state,
// cancel, release), plus the refusals that log what they refused, and then
// reads every line both sides logged: no phone, email, account number,
// credit code or app_secret may appear whole.
func TestLifecycleLogsNoPersonalData(t *testing.T) {
	for _, driver := range modeltest.Drivers(os.Getenv) {
		t.Run(driver, func(t *testing.T) {
			sg := opsStartSim(t, driver)
			g := sg.Gateway
			orderNo := "LOG" + strings.ToUpper(driver) + fmt.Sprint(time.Now().UnixNano()%1e9)

			status, body := g.API(t, http.MethodPost, "/v1/cost", map[string]any{"orgcode": "SIM01", "bzjmoney": "200000.00"})
			opsWant(t, "cost", status, http.StatusOK, body)

			status, body = g.API(t, http.MethodPost, "/v1/guarantees", opsApplication(orderNo, nil))
			opsWant(t, "apply", status, http.StatusCreated, body)

			// Refusals that carry the personal data in what they refuse: the
			// same orderno with another body (409), a second active order
			// of the bidder for the lot (409), an invalid phone (400).
			status, body = g.API(t, http.MethodPost, "/v1/guarantees", opsApplication(orderNo, map[string]any{"jbrphone": piiPhone + "0"}))
			opsWant(t, "apply, other body", status, http.StatusConflict, body)
			status, body = g.API(t, http.MethodPost, "/v1/guarantees", opsApplication(orderNo+"B", map[string]any{"bdcode": "BD-" + orderNo}))
			opsWant(t, "apply, second active order", status, http.StatusConflict, body)
			status, body = g.API(t, http.MethodPost, "/v1/guarantees", opsApplication(orderNo+"C",
				map[string]any{"jbrphone": strings.Repeat(piiPhone, 12), "bdcode": "BD-OTHER"}))
			opsWant(t, "apply, phone too long", status, http.StatusBadRequest, body)

			issued := opsAwait(t, g, orderNo, "issued, paid, with its file", func(o opsOrder) bool {
				return o.Status == "issued" && o.PaidAmount != "0.00" && o.PaidAmount != "" && o.File.Stored
			})

			// A paystate that is refused (paybankname missing) and one from
			// an unknown appKey: their bodies hold an account number.
			code, resp := g.Callback(t, "SIM01", "paystate", map[string]any{"orderno": orderNo, "paymoney": "300.00",
				"paytime": time.Now().UnixMilli(), "type": "1", "paybankno": piiOtherAccount})
			if code != http.StatusOK || resp.Stat != 0 || resp.Errcode != "100003" {
				t.Fatalf("paystate without paybankname: %d %+v, want stat 0 100003", code, resp)
			}
			code, resp = g.RawCallback(t, "paystate", "no-such-key", []byte(`{"data":"`+piiOtherAccount+`"}`))
			if code != http.StatusOK || resp.Errcode != "100001" {
				t.Fatalf("paystate with an unknown appKey: %d %+v, want 100001", code, resp)
			}

			status, body = g.API(t, http.MethodGet, "/v1/guarantees/"+orderNo+"/file", nil)
			opsWant(t, "file", status, http.StatusOK, body)
			if !strings.HasPrefix(string(body), "%PDF-") {
				t.Fatalf("file is not a PDF: %.20q", body)
			}
			status, body = g.API(t, http.MethodPost, "/v1/projects/state", map[string]any{"xmname": "某某学校教学楼改造项目",
				"xmcode": "XM-LOG-1", "bdname": "第一标段", "bdcode": "BD-" + orderNo,
				"kbttime": time.Now().Add(72 * time.Hour).UnixMilli(), "state": "1"})
			opsWant(t, "project state", status, http.StatusAccepted, body)
			status, body = g.API(t, http.MethodPost, "/v1/guarantees/"+orderNo+"/cancel", nil)
			opsWant(t, "cancel", status, http.StatusAccepted, body)
			opsAwait(t, g, orderNo, "cancelled", func(o opsOrder) bool { return o.Status == "cancelled" })
			status, body = g.API(t, http.MethodGet, "/v1/guarantees/"+orderNo+"/events", nil)
			opsWant(t, "events", status, http.StatusOK, body)

			gwLogs, simLogs := g.Logs.String(), sg.SimLogs.String()
			// The test means something only if the lines are there: each
			// callback, call and API request was logged with the order's
			// number, and banksim's logger was captured.
			lines := opsLogLines(t, gwLogs)
			seen := map[string]bool{}
			for _, l := range lines {
				if l["orderno"] == orderNo {
					what, _ := l["kind"].(string)
					if ep, ok := l["endpoint"].(string); ok {
						what = ep
					}
					seen[fmt.Sprint(l["msg"], "/", what)] = true
				}
			}
			for _, want := range []string{"callback/paystate", "callback/applynotify", "callback/release",
				"institution call/apply", "institution call/cancel", "request/"} {
				if !seen[want] {
					t.Errorf("gateway logs lack %q for %s; saw %v", want, orderNo, seen)
				}
			}
			if n := strings.Count(gwLogs, `"msg":"callback refused"`); n != 2 {
				t.Errorf("gateway logged %d refused callbacks, want 2", n)
			}
			if !strings.Contains(simLogs, issued.GuaranteeNo) {
				t.Errorf("banksim logs do not name the guarantee %s: is its logger captured?", issued.GuaranteeNo)
			}

			for _, raw := range []struct{ name, value string }{
				{"jbrphone", piiPhone}, {"jbremail", piiEmail}, {"qyjbzh/paybankno", piiAccountNo},
				{"paybankno of the refused paystate", piiOtherAccount}, {"qycode", piiApplicant},
				{"zbrcode", piiTenderer}, {"app_secret", opsSimSecret},
			} {
				for side, text := range map[string]string{"gateway": gwLogs, "banksim": simLogs} {
					if i := strings.Index(text, raw.value); i >= 0 {
						start := max(0, strings.LastIndexByte(text[:i], '\n')+1)
						end := i + strings.IndexByte(text[i:], '\n')
						if end < i {
							end = len(text)
						}
						t.Errorf("%s logs hold the raw %s: %s", side, raw.name, text[start:end])
					}
				}
			}
		})
	}
}

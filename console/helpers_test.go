package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
)

// The console's test users: an operator and a viewer.
const (
	opUser, opPassword         = "ops.wang", "operator-password-1"
	viewerUser, viewerPassword = "audit.li", "viewer-password-1"
)

var (
	hashesOnce       sync.Once
	opHash, viewHash string
)

// users are the console users of the test gateways, hashed once (bcrypt
// at the lowest cost the configuration accepts).
func users(t testing.TB) []config.ConsoleUser {
	hashesOnce.Do(func() {
		a, err := bcrypt.GenerateFromPassword([]byte(opPassword), config.MinBcryptCost)
		if err != nil {
			panic(err)
		}
		b, err := bcrypt.GenerateFromPassword([]byte(viewerPassword), config.MinBcryptCost)
		if err != nil {
			panic(err)
		}
		opHash, viewHash = string(a), string(b)
	})
	return []config.ConsoleUser{{Name: opUser, PasswordHash: opHash, Role: config.RoleOperator},
		{Name: viewerUser, PasswordHash: viewHash, Role: config.RoleViewer}}
}

// env is a gateway with the console on, banksim as institution SIM (it
// pays and issues by callbacks, the PDF in the notice), and an institution
// DOWN that nothing answers for.
type env struct {
	*handlertest.Gateway
	sim *banksim.Sim
}

// startEnv starts the gateway; configure may change its configuration.
func startEnv(t testing.TB, driver string, configure func(*config.Config)) *env {
	t.Helper()
	return startEnvWith(t, envOptions{Driver: driver, Configure: configure})
}

// envOptions shape startEnvWith.
type envOptions struct {
	Driver string
	// Store is an existing store (a filled database) to serve instead of
	// a fresh one.
	Store *model.Store
	// SimSecret is SIM's key (default handlertest's): a filled database's
	// SIM callbacks are sealed with config.yaml's.
	SimSecret string
	// Others are more institutions, that nothing answers for.
	Others    []handlertest.Institution
	Configure func(*config.Config)
}

// startEnvWith starts the gateway as o says.
func startEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	configure := o.Configure
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sim := handlertest.DefaultInstitution("SIM")
	sim.Name = "模拟担保公司"
	sim.BaseURL = "http://" + ln.Addr().String() + "/sim"
	if o.SimSecret != "" {
		sim.AppSecret = o.SimSecret
	}
	down := handlertest.DefaultInstitution("DOWN")
	down.Name = "停机银行"
	down.AppSecret = "fedcba9876543210"
	insts := append([]handlertest.Institution{sim, down}, o.Others...)
	g := handlertest.Start(t, handlertest.Options{Driver: o.Driver, Store: o.Store, Institutions: insts,
		Configure: func(c *config.Config) {
			c.Console.Users = users(t)
			c.Console.TimeZone = "Asia/Shanghai"
			// One retry after the first try, then dead: a dead delivery
			// in one job run.
			c.Jobs.RedeliveryBackoff = []time.Duration{time.Millisecond}
			if configure != nil {
				configure(c)
			}
		}})
	s, err := banksim.New(banksim.Config{OrgCode: sim.OrgCode, Name: sim.Name, AppKey: sim.AppKey, AppSecret: sim.AppSecret,
		Prefix: "/sim", GatewayURL: g.URL, PayDelay: 10 * time.Millisecond, IssueDelay: 10 * time.Millisecond,
		ReleaseDelay: 10 * time.Millisecond, CallbackBackoff: 50 * time.Millisecond, PDFInNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(s.Close)
	return &env{Gateway: g, sim: s}
}

// application is a bidder's apply to the API; each orderno is another
// bidder (qycode), so that several can hold a lot.
func application(org, orderNo, xmcode, bdcode string) map[string]any {
	qycode := fmt.Sprintf("9111%014d", crc32.ChecksumIEEE([]byte(orderNo)))
	deadline := time.Now().Add(7 * 24 * time.Hour).Truncate(time.Millisecond)
	return map[string]any{
		"orgcode": org, "orderno": orderNo, "qyname": "某某建设有限公司", "qycode": qycode,
		"bzjmoney": json.Number("100000.00"), "xmname": "某市政道路工程", "xmcode": xmcode, "bdname": "第一标段", "bdcode": bdcode,
		"kbttime": deadline.Add(2 * time.Hour).UnixMilli(), "zbrname": "某市交通局", "zbrcode": "11110000000000000X",
		"tbjztime": deadline.UnixMilli(), "qykh": "某银行某支行", "qykhzh": "某某建设有限公司", "qyjbzh": "6222020200112233445",
		"jbrname": "张三", "jbrphone": "13800005678", "jbremail": "zhangsan@example.cn",
	}
}

// issuedOrder applies through the API and waits until SIM issued the order
// with its PDF.
func (e *env) issuedOrder(t testing.TB, orderNo, xmcode, bdcode string) {
	t.Helper()
	if st, body := e.API(t, http.MethodPost, "/v1/guarantees", application("SIM", orderNo, xmcode, bdcode)); st != http.StatusCreated {
		t.Fatalf("apply %s: %d %s", orderNo, st, body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := e.API(t, http.MethodGet, "/v1/guarantees/"+orderNo, nil)
		var o struct {
			Status string `json:"status"`
			File   struct {
				Stored bool `json:"stored"`
			} `json:"file"`
		}
		json.Unmarshal(body, &o)
		if o.Status == "issued" && o.File.Stored {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s not issued with its PDF after 15s: %s", orderNo, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadDelivery makes a project-state delivery to DOWN that ran out of
// attempts: an order of DOWN's (its apply unanswered), the lot's final
// state pushed (the first try fails), one run of the redelivery job (the
// last try fails). It returns the delivery's id.
func (e *env) deadDelivery(t testing.TB, orderNo, xmcode, bdcode string) int64 {
	t.Helper()
	if st, body := e.API(t, http.MethodPost, "/v1/guarantees", application("DOWN", orderNo, xmcode, bdcode)); st != http.StatusAccepted {
		t.Fatalf("apply to DOWN: %d %s", st, body)
	}
	st, body := e.API(t, http.MethodPost, "/v1/projects/state", map[string]any{"xmname": "某市政道路工程", "xmcode": xmcode,
		"bdname": "第一标段", "bdcode": bdcode, "kbttime": time.Now().Add(time.Hour).UnixMilli(), "state": "2"})
	if st != http.StatusAccepted {
		t.Fatalf("project state: %d %s", st, body)
	}
	var push struct {
		Deliveries []struct {
			ID      int64  `json:"id"`
			OrgCode string `json:"orgcode"`
		} `json:"deliveries"`
	}
	json.Unmarshal(body, &push)
	var id int64
	for _, d := range push.Deliveries {
		if d.OrgCode == "DOWN" {
			id = d.ID
		}
	}
	if id == 0 {
		t.Fatalf("no delivery to DOWN in %s", body)
	}
	time.Sleep(5 * time.Millisecond) // the 1 ms back-off
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Jobs().RunOnce(ctx, "deliver_outbox"); err != nil {
		t.Fatal(err)
	}
	if d, err := e.Store.Delivery(id); err != nil || d.Status != model.DeliveryDead {
		t.Fatalf("delivery %d: %+v %v, want dead", id, d, err)
	}
	return id
}

// browser is an HTTP client with cookies, as a browser would hold them.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func newBrowser(t testing.TB, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token a page's forms carry.
func csrf(t testing.TB, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", page)
	}
	return m[1]
}

// signIn signs in through the form and returns the session's CSRF token.
func (b *browser) signIn(user, password string) string {
	b.t.Helper()
	_, page := b.get("/console/login")
	resp, body := b.post("/console/login", url.Values{"csrf": {csrf(b.t, page)}, "username": {user}, "password": {password},
		"next": {"/console/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		b.t.Fatalf("sign-in as %s: %d %s\n%s", user, resp.StatusCode, resp.Header.Get("Location"), body)
	}
	resp, page = b.get("/console/")
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("overview after sign-in: %d", resp.StatusCode)
	}
	return csrf(b.t, page)
}

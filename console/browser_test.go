package console_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/procurement/gateway/model"
)

// EnvBrowser set to 1 makes a missing browser a failure instead of a skip
// (.ci/run sets it, after installing Debian's chromium).
const EnvBrowser = "GATEWAY_BROWSER_TESTS"

// EnvScreenshots names the folder the browser test writes its screenshots
// to (docs/console holds the committed ones); unset, a temporary folder.
const EnvScreenshots = "GATEWAY_CONSOLE_SCREENSHOTS"

// chromium finds a Chromium or Chrome: $GATEWAY_CHROME, else the usual
// names on PATH.
func chromium() string {
	if p := os.Getenv("GATEWAY_CHROME"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless-shell"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// startBrowser starts a headless Chromium with a fresh profile, closed
// when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromium()
	if path == "" {
		if os.Getenv(EnvBrowser) == "1" {
			t.Fatalf("%s=1 but no Chromium found (apt-get install chromium, or set GATEWAY_CHROME)", EnvBrowser)
		}
		t.Skipf("browser test skipped: no Chromium on PATH (apt-get install chromium, or set GATEWAY_CHROME); CI installs it and sets %s=1", EnvBrowser)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true), chromedp.Flag("lang", "zh-CN"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1366, 768))
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1366, 768)); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// run runs browser steps, failing the test on the first error.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// shooter writes a screenshot of the current page at a desktop's size
// (1366×768) and at a phone's (390×844).
type shooter struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func (s shooter) shoot(name string) { s.shootAt(name, "") }

// shootAt scrolls the element sel (if any) into view at each size first.
func (s shooter) shootAt(name, sel string) {
	s.t.Helper()
	for _, size := range []struct {
		suffix string
		w, h   int64
		opts   []chromedp.EmulateViewportOption
	}{
		{"", 1366, 768, nil},
		{"-phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(1), chromedp.EmulateMobile, chromedp.EmulatePortrait}},
	} {
		run(s.t, s.ctx, "viewport", chromedp.EmulateViewport(size.w, size.h, size.opts...), chromedp.Sleep(150*time.Millisecond))
		if sel != "" {
			run(s.t, s.ctx, "scroll", chromedp.ScrollIntoView(chromedp.CSS(sel)), chromedp.Sleep(300*time.Millisecond))
		}
		png := get(s.t, s.ctx, "screenshot "+name, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join(s.dir, name+size.suffix+".png"), png, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	run(s.t, s.ctx, "viewport", chromedp.EmulateViewport(1366, 768))
}

// text is the visible text of the whole page.
func text(t *testing.T, ctx context.Context) string {
	t.Helper()
	return get(t, ctx, "page text", chromedp.Text(chromedp.CSS("body")))
}

func mustContain(t *testing.T, where, page string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("%s does not show %q", where, w)
		}
	}
}

// fetched is what a fetch from inside the page saw.
type fetched struct {
	Status      int    `json:"status"`
	Type        string `json:"type"`
	Disposition string `json:"disposition"`
	Head        string `json:"head"`
	Size        int    `json:"size"`
	Sha256      string `json:"sha256"`
}

// fetchJS fetches a URL from the page, with its cookies, and describes
// the answer: the page's own script-free CSP does not apply to DevTools.
func fetchJS(url, method, body string) string {
	return `(async () => {
  const init = {method: "` + method + `", credentials: "same-origin"};
  if ("` + method + `" === "POST") { init.body = new URLSearchParams("` + body + `"); }
  const r = await fetch("` + url + `", init);
  const b = await r.arrayBuffer();
  const d = await crypto.subtle.digest("SHA-256", b);
  return {status: r.status, type: r.headers.get("content-type") || "", disposition: r.headers.get("content-disposition") || "",
    head: String.fromCharCode(...new Uint8Array(b.slice(0, 5))), size: b.byteLength,
    sha256: Array.from(new Uint8Array(d)).map(x => x.toString(16).padStart(2, "0")).join("")};
})()`
}

// TestConsoleInBrowser drives a real Chromium through the console: sign
// in, find an order by its number, read its page (fields masked, the
// timeline with decrypted bodies, the PDF inline and as a download),
// retry a dead delivery, cancel a guarantee through its confirmation,
// resolve a finding, sign out (the session is void after), and a viewer
// refused an action. It writes a screenshot of every page at a desktop's
// and a phone's size.
func TestConsoleInBrowser(t *testing.T) {
	ctx := startBrowser(t)
	dir := os.Getenv(EnvScreenshots)
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shots := shooter{t: t, ctx: ctx, dir: dir}
	defer func() { t.Logf("screenshots in %s", dir) }()

	e := startEnv(t, "sqlite", nil)
	e.issuedOrder(t, "WEB-20261201-0001", "XM-2026-017", "BD-01")
	e.issuedOrder(t, "WEB-20261201-0002", "XM-2026-017", "BD-02")
	e.issuedOrder(t, "WEB-20261202-0003", "XM-2026-018", "BD-01")
	deadID := e.deadDelivery(t, "WEB-DOWN-0004", "XM-2026-017", "BD-01")
	// A callback under the wrong key, to be found among the refusals.
	if st, resp := e.RawCallback(t, "paystate", "key-SIM", []byte(`{"data":"bm90IHRoZSByaWdodCBrZXk="}`)); st != http.StatusOK || resp.Errcode != "100002" {
		t.Fatalf("wrong-key callback: %d %+v", st, resp)
	}
	if _, err := e.Store.InsertFinding(&model.Finding{RunDate: time.Now().UTC().Format(time.DateOnly), Kind: "premium_mismatch",
		OrderNo: "WEB-20261201-0002", Detail: "bhcost 150.00 but paid 200.00 in 1 pay record(s)"}); err != nil {
		t.Fatal(err)
	}
	base := e.URL

	// Sign in: a bookmarked page asks for it, and comes back after.
	run(t, ctx, "open the console", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)))
	if loc := get(t, ctx, "location", chromedp.Location()); !strings.Contains(loc, "/console/login?next=") {
		t.Fatalf("before sign-in the console is at %s, want the sign-in form", loc)
	}
	shots.shoot("login")
	run(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), opUser),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), opPassword),
		chromedp.Click(chromedp.CSS(`.login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.cards`)))
	overview := text(t, ctx)
	mustContain(t, "the overview", overview, "已出函 issued", "投递失败 dead", "SIM", "DOWN", opUser)
	shots.shoot("overview")

	// A newcomer finds the order by its number in one search.
	run(t, ctx, "search",
		chromedp.SendKeys(chromedp.CSS(`form.search input[name="q"]`), "WEB-20261201-0001"),
		chromedp.Submit(chromedp.CSS(`form.search`)),
		chromedp.WaitVisible(chromedp.CSS(`table.list`)))
	list := text(t, ctx)
	mustContain(t, "the search result", list, "WEB-20261201-0001", "已出函 issued")
	if strings.Contains(list, "WEB-20261201-0002") {
		t.Errorf("the search for one orderno lists another")
	}
	shots.shoot("orders")

	run(t, ctx, "open the order", chromedp.Click(chromedp.CSS(`a[href="/console/orders/WEB-20261201-0001"]`)),
		chromedp.WaitVisible(chromedp.CSS(`ol.timeline`)))
	html := get(t, ctx, "order page", chromedp.OuterHTML(chromedp.CSS("html")))
	page := text(t, ctx)
	mustContain(t, "the order page", page, "WEB-20261201-0001", "138****5678", "z*******@example.cn", "***************3445",
		"出函通知 applynotify", "支付通知 paystate", "申请 apply")
	qycode := application("SIM", "WEB-20261201-0001", "", "")["qycode"].(string)
	for _, whole := range []string{"13800005678", "zhangsan@example.cn", "6222020200112233445", qycode} {
		if strings.Contains(html, whole) {
			t.Errorf("the order page shows %s whole", whole)
		}
	}
	// The decrypted notice, its PDF as size and digest, never its Base64.
	bodies := get(t, ctx, "bodies", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("ol.timeline pre")).map(e => e.textContent).join("\n")`))
	if !strings.Contains(bodies, `"bhfile": "<`) || !strings.Contains(bodies, " bytes, sha256 ") || strings.Contains(html, "JVBERi0") {
		t.Errorf("the applynotify body is not shown with bhfile as size and sha256")
	}
	// The timeline reads oldest first.
	times := get(t, ctx, "timeline times", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("ol.timeline time")).map(e => e.textContent)`))
	if len(times) < 5 || !slices.IsSorted(times) {
		t.Errorf("timeline times %v: want at least 5, oldest first", times)
	}
	shots.shoot("order")
	// Its timeline, the first body opened.
	run(t, ctx, "open a body", chromedp.Click(chromedp.CSS(`ol.timeline details summary`)))
	shots.shootAt("order-timeline", `ol.timeline details[open]`)

	// The PDF: inline and as a download, the bytes stored.
	f, err := e.Store.FileInfo("WEB-20261201-0001")
	if err != nil {
		t.Fatal(err)
	}
	inline := get(t, ctx, "fetch the PDF", chromedp.Evaluate[fetched](fetchJS("/console/orders/WEB-20261201-0001/file", "GET", ""), chromedp.EvalAwaitPromise))
	if inline.Status != 200 || inline.Type != "application/pdf" || !strings.HasPrefix(inline.Disposition, "inline") ||
		inline.Head != "%PDF-" || inline.Sha256 != f.Sha256 || int64(inline.Size) != f.Size {
		t.Errorf("inline PDF: %+v, want the stored file (%d bytes, %s) inline", inline, f.Size, f.Sha256)
	}
	href := get(t, ctx, "download link", chromedp.AttributeValue(chromedp.CSS(`a[download]`), "href"))
	down := get(t, ctx, "fetch the download", chromedp.Evaluate[fetched](fetchJS(href.Value, "GET", ""), chromedp.EvalAwaitPromise))
	if down.Status != 200 || !strings.HasPrefix(down.Disposition, "attachment") || down.Sha256 != f.Sha256 {
		t.Errorf("download: %+v", down)
	}
	if n := get(t, ctx, "embedded PDF", chromedp.Evaluate[int](`document.querySelectorAll('object.pdf[type="application/pdf"]').length`)); n != 1 {
		t.Errorf("the PDF is not embedded in the page")
	}
	shots.shootAt("order-pdf", `object.pdf`)

	// A dead delivery, retried.
	run(t, ctx, "deliveries", chromedp.Navigate(base+"/console/deliveries"), chromedp.WaitVisible(chromedp.CSS(`table.list`)))
	mustContain(t, "the dead deliveries", text(t, ctx), "投递失败 dead", "DOWN", "流标")
	shots.shoot("deliveries")
	run(t, ctx, "retry", chromedp.Click(chromedp.CSS(`form[action="/console/deliveries/`+itoa(deadID)+`/retry"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	mustContain(t, "after the retry", text(t, ctx), "重新投递 #"+itoa(deadID)+"：完成")
	if d, _ := e.Store.Delivery(deadID); d.Status != model.DeliveryPending {
		t.Errorf("delivery %d after the retry: %s, want pending", deadID, d.Status)
	}

	// The audit of callbacks, refusals first.
	run(t, ctx, "callbacks", chromedp.Navigate(base+"/console/callbacks"), chromedp.WaitVisible(chromedp.CSS(`table.list`)))
	mustContain(t, "the callbacks", text(t, ctx), "100002", "解密失败", "已接受 accepted")
	shots.shoot("callbacks")
	run(t, ctx, "one callback", chromedp.Navigate(base+"/console/callbacks/1"), chromedp.WaitVisible(chromedp.CSS(`pre`)))
	mustContain(t, "a callback", text(t, ctx), "paymoney", "某*******")
	shots.shoot("callback")

	// A finding resolved with a note.
	run(t, ctx, "reconciliation", chromedp.Navigate(base+"/console/reconciliation"), chromedp.WaitVisible(chromedp.CSS(`form.resolve`)))
	shots.shoot("reconciliation")
	run(t, ctx, "resolve", chromedp.SendKeys(chromedp.CSS(`form.resolve input[name="note"]`), "保费以机构对账单为准，已核对"),
		chromedp.Click(chromedp.CSS(`form.resolve button`)), chromedp.WaitVisible(chromedp.CSS(`.flash.ok`)))
	mustContain(t, "the resolved finding", text(t, ctx), "已处理", opUser, "保费以机构对账单为准")

	run(t, ctx, "institutions", chromedp.Navigate(base+"/console/institutions"), chromedp.WaitVisible(chromedp.CSS(`section.inst`)))
	inst := text(t, ctx)
	mustContain(t, "the institutions", inst, "<redacted>", "key-SIM", "正常 closed")
	if strings.Contains(inst, "0123456789abcdef") {
		t.Errorf("the institutions page shows a secret")
	}
	shots.shoot("institutions")

	// Cancel, through its confirmation.
	run(t, ctx, "cancel form", chromedp.Navigate(base+"/console/orders/WEB-20261201-0002"),
		chromedp.Click(chromedp.CSS(`a[href="/console/orders/WEB-20261201-0002/cancel"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="confirm"]`)))
	shots.shoot("cancel")
	run(t, ctx, "confirm the cancel", chromedp.Click(chromedp.CSS(`input[name="confirm"]`)),
		chromedp.Click(chromedp.CSS(`.confirm button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	page = text(t, ctx)
	mustContain(t, "after the cancel", page, "注销保函：完成", "注销保函 cancel", opUser)
	if o, _ := e.Store.Order("WEB-20261201-0002"); o.Status != model.StatusCancelling && o.Status != model.StatusCancelled {
		t.Errorf("order after the cancel: %s", o.Status)
	}

	// Sign out: the session is void, even for a copy of its cookie.
	cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session string
	for _, c := range cookies.Cookies {
		if c.Name == "gw_console" {
			session = c.Value
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("session cookie: HttpOnly %v SameSite %q", c.HTTPOnly, c.SameSite)
			}
		}
	}
	run(t, ctx, "sign out", chromedp.Click(chromedp.CSS(`.who form button`)), chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)))
	mustContain(t, "after sign-out", text(t, ctx), "已退出登录")
	run(t, ctx, "back to the console", chromedp.Navigate(base+"/console/orders"), chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)))
	req, _ := http.NewRequest(http.MethodGet, base+"/console/", nil)
	req.AddCookie(&http.Cookie{Name: "gw_console", Value: session})
	if resp, _ := newBrowser(t, base).do(req); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the signed-out session's cookie still opens the console: %d", resp.StatusCode)
	}

	// A viewer reads, and is refused an action.
	run(t, ctx, "sign in as viewer",
		chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), viewerUser),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), viewerPassword),
		chromedp.Click(chromedp.CSS(`.login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.list`)))
	run(t, ctx, "viewer's order page", chromedp.Navigate(base+"/console/orders/WEB-20261201-0001"), chromedp.WaitVisible(chromedp.CSS(`ol.timeline`)))
	page = text(t, ctx)
	mustContain(t, "the viewer's order page", page, "只读账号")
	if strings.Contains(page, "立即向机构查询") || strings.Contains(page, "注销保函…") {
		t.Errorf("a viewer is offered actions")
	}
	token := get(t, ctx, "csrf", chromedp.Value(chromedp.CSS(`.who input[name="csrf"]`)))
	refused := get(t, ctx, "viewer's POST", chromedp.Evaluate[fetched](fetchJS("/console/orders/WEB-20261201-0001/query", "POST", "csrf="+token), chromedp.EvalAwaitPromise))
	if refused.Status != http.StatusForbidden {
		t.Errorf("a viewer's query: %d, want 403", refused.Status)
	}
	run(t, ctx, "viewer's cancel", chromedp.Navigate(base+"/console/orders/WEB-20261201-0001/cancel"), chromedp.WaitVisible(chromedp.CSS(`.errorpage`)))
	mustContain(t, "the viewer's refusal", text(t, ctx), "403", "operator")
	shots.shoot("refused")
	run(t, ctx, "viewer signs out", chromedp.Click(chromedp.CSS(`.who form button`)), chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)))

	if o, _ := e.Store.Order("WEB-20261201-0001"); o.Status != model.StatusIssued {
		t.Errorf("the viewer's refused actions moved the order: %s", o.Status)
	}
	acts, err := e.Store.ConsoleActions("WEB-20261201-0001")
	if err != nil {
		t.Fatal(err)
	}
	if len(acts) != 1 || acts[0].UserName != viewerUser || acts[0].Result != "forbidden" {
		t.Errorf("actions on WEB-20261201-0001: %+v, want the viewer's refused query", acts)
	}
}

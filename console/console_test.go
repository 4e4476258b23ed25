package console_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// TestConsoleOffWithoutUsers: no users configured, no console: every path
// under /console/ is 404, and the API is untouched.
func TestConsoleOffWithoutUsers(t *testing.T) {
	t.Parallel()
	g := handlertest.Start(t, handlertest.Options{Institutions: []handlertest.Institution{handlertest.DefaultInstitution("B1")}})
	b := newBrowser(t, g.URL)
	for _, p := range []string{"/console/", "/console/login", "/console/orders", "/console/static/console.css"} {
		if resp, _ := b.get(p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s = %d, want 404 with no console users", p, resp.StatusCode)
		}
	}
	if resp, _ := b.post("/console/login", url.Values{"username": {"x"}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /console/login = %d, want 404", resp.StatusCode)
	}
	if st, _ := g.API(t, http.MethodGet, "/v1/institutions", nil); st != http.StatusOK {
		t.Errorf("/v1/institutions = %d", st)
	}
}

// TestConsoleSignIn: the headers on every answer, pages only after
// sign-in, a wrong password refused with 401, and the session cookie's
// attributes (Secure only under TLS).
func TestConsoleSignIn(t *testing.T) {
	t.Parallel()
	e := startEnv(t, "sqlite", nil)
	b := newBrowser(t, e.URL)

	resp, _ := b.get("/console/orders?q=X-1")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login?next=%2Fconsole%2Forders%3Fq%3DX-1" {
		t.Fatalf("a page before sign-in: %d %q, want 303 to the form", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := b.get("/console/login")
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Cache-Control": "no-store", "Referrer-Policy": "same-origin"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the sign-in page loads a script or something from elsewhere:\n%s", page)
	}
	token := csrf(t, page)

	resp, page = b.post("/console/login", url.Values{"csrf": {token}, "username": {opUser}, "password": {"wrong-password"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(page, "用户名或密码错误") {
		t.Errorf("wrong password: %d, want 401 with a message", resp.StatusCode)
	}
	if c := cookieIn(resp, "gw_console"); c != nil {
		t.Errorf("a failed sign-in set a session cookie: %v", c)
	}

	_, page = b.get("/console/login")
	resp, _ = b.post("/console/login", url.Values{"csrf": {csrf(t, page)}, "username": {opUser}, "password": {opPassword},
		"next": {"https://evil.example/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Errorf("sign-in with a foreign next: %d %q, want 303 to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := cookieIn(resp, "gw_console")
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/console/" ||
		c.MaxAge < 8*3600-5 || c.MaxAge > 8*3600 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over HTTP, Path /console/, 8 h", c)
	}
	resp, page = b.get("/console/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, opUser) {
		t.Fatalf("overview: %d", resp.StatusCode)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("overview headers: %v", resp.Header)
	}

	// Behind a proxy that terminated TLS the cookie is Secure.
	tls := newBrowser(t, e.URL)
	req, _ := http.NewRequest(http.MethodGet, e.URL+"/console/login", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, page = tls.do(req)
	if c := cookieIn(resp, "gw_console_login"); c == nil || !c.Secure {
		t.Errorf("login cookie behind TLS: %+v, want Secure", c)
	}
	form := url.Values{"csrf": {csrf(t, page)}, "username": {viewerUser}, "password": {viewerPassword}}
	req, _ = http.NewRequest(http.MethodPost, e.URL+"/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.AddCookie(&http.Cookie{Name: "gw_console_login", Value: form.Get("csrf")})
	resp, _ = newBrowser(t, e.URL).do(req)
	if c := cookieIn(resp, "gw_console"); c == nil || !c.Secure {
		t.Errorf("session cookie behind TLS: %+v, want Secure", c)
	}
}

func cookieIn(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name && c.MaxAge >= 0 {
			return c
		}
	}
	return nil
}

// TestConsoleCSRF: every POST needs the form's token and comes from this
// origin; without, it is 403 and nothing happens.
func TestConsoleCSRF(t *testing.T) {
	t.Parallel()
	e := startEnv(t, "sqlite", nil)
	id := e.deadDelivery(t, "CSRF-DOWN-1", "XM-C", "BD-C")
	b := newBrowser(t, e.URL)

	// The sign-in form itself: its token lives in a cookie of its own.
	_, page := b.get("/console/login")
	if resp, _ := b.post("/console/login", url.Values{"username": {opUser}, "password": {opPassword}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without its token = %d, want 403", resp.StatusCode)
	}
	if resp, _ := b.post("/console/login", url.Values{"csrf": {csrf(t, page) + "x"}, "username": {opUser}, "password": {opPassword}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in with a wrong token = %d, want 403", resp.StatusCode)
	}
	token := b.signIn(opUser, opPassword)

	retry := "/console/deliveries/" + itoa(id) + "/retry"
	for name, form := range map[string]url.Values{
		"no token":    {},
		"wrong token": {"csrf": {strings.Repeat("0", len(token))}},
	} {
		if resp, _ := b.post(retry, form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: POST = %d, want 403", name, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.URL+retry, strings.NewReader(url.Values{"csrf": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, _ := b.do(req); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST = %d, want 403", resp.StatusCode)
	}
	if d, _ := e.Store.Delivery(id); d.Status != model.DeliveryDead {
		t.Fatalf("a refused POST re-armed the delivery: %s", d.Status)
	}
	// The same POST with the token does it.
	resp, _ := b.post(retry, url.Values{"csrf": {token}, "back": {"/console/deliveries?status="}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/deliveries?status=" {
		t.Fatalf("retry with the token: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if d, _ := e.Store.Delivery(id); d.Status != model.DeliveryPending {
		t.Errorf("delivery after retry: %s, want pending", d.Status)
	}
	_, page = b.get("/console/deliveries?status=")
	if !strings.Contains(page, "重新投递 #"+itoa(id)+"：完成") {
		t.Errorf("the result of the retry is not shown")
	}
}

// TestConsoleViewerRefused: a viewer sees no action and is refused one
// even with a valid token; the refusal is recorded, and nothing moves.
func TestConsoleViewerRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, "sqlite", nil)
	id := e.deadDelivery(t, "VIEW-DOWN-1", "XM-V", "BD-V")
	b := newBrowser(t, e.URL)
	token := b.signIn(viewerUser, viewerPassword)

	_, page := b.get("/console/deliveries")
	if strings.Contains(page, "/retry") {
		t.Errorf("a viewer is offered a retry")
	}
	resp, page := b.post("/console/deliveries/"+itoa(id)+"/retry", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "operator") {
		t.Errorf("viewer's retry = %d, want 403", resp.StatusCode)
	}
	if resp, _ := b.get("/console/orders/VIEW-DOWN-1/cancel"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer's cancel form = %d, want 403", resp.StatusCode)
	}
	if d, _ := e.Store.Delivery(id); d.Status != model.DeliveryDead {
		t.Errorf("the viewer's POST re-armed the delivery: %s", d.Status)
	}
	acts, err := e.Store.RecentConsoleActions(10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range acts {
		if a.UserName == viewerUser && a.Action == "retry_delivery" && a.Result == "forbidden" && a.FinishedAt != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("the viewer's attempt is not recorded: %+v", acts)
	}
	if !strings.Contains(e.Logs.String(), `"action":"retry_delivery"`) {
		t.Errorf("the viewer's attempt is not logged")
	}
}

// TestConsoleSessionsAcrossReplicas: two gateways on one database share
// sessions; a sign-out on one voids the session on both, and an expired
// session is no session.
func TestConsoleSessionsAcrossReplicas(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		a := startEnv(t, driver, nil)
		replica := handlertest.Start(t, handlertest.Options{Store: a.Store,
			Institutions: []handlertest.Institution{handlertest.DefaultInstitution("SIM")},
			Configure:    func(c *config.Config) { c.Console.Users = users(t) }})

		b := newBrowser(t, a.URL)
		token := b.signIn(opUser, opPassword)
		u, _ := url.Parse(a.URL + "/console/")
		session := b.c.Jar.Cookies(u)
		other := newBrowser(t, replica.URL)
		ru, _ := url.Parse(replica.URL + "/console/")
		other.c.Jar.SetCookies(ru, session)
		if resp, _ := other.get("/console/orders"); resp.StatusCode != http.StatusOK {
			t.Fatalf("the session on the other replica: %d, want 200", resp.StatusCode)
		}

		resp, _ := b.post("/console/logout", url.Values{"csrf": {token}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
			t.Fatalf("sign-out: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if c := cookieIn(resp, "gw_console"); c != nil {
			t.Errorf("sign-out kept the cookie: %v", c)
		}
		for name, br := range map[string]*browser{"signed-out browser": b, "other replica, old cookie": other} {
			if name == "signed-out browser" {
				br.c.Jar.SetCookies(u, session) // the old cookie, kept by whoever copied it
			}
			if resp, _ := br.get("/console/"); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("%s after sign-out: %d, want 303 to sign in", name, resp.StatusCode)
			}
			if resp, _ := br.post("/console/logout", url.Values{"csrf": {token}}); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: a POST after sign-out: %d, want 403", name, resp.StatusCode)
			}
		}

		// A session past its time is void.
		b2 := newBrowser(t, a.URL)
		b2.signIn(viewerUser, viewerPassword)
		modeltest.Exec(t, a.Store, "UPDATE console_sessions SET expires_at = ?", time.Now().Add(-time.Second))
		if resp, _ := b2.get("/console/"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("expired session: %d, want 303 to sign in", resp.StatusCode)
		}
	})
}

// TestConsoleSignInLimited: after five wrong passwords a user is refused
// with 429 and Retry-After, even with the right password, for a while;
// another user from the same address still signs in.
func TestConsoleSignInLimited(t *testing.T) {
	t.Parallel()
	e := startEnv(t, "sqlite", nil)
	b := newBrowser(t, e.URL)
	try := func(user, password string) *http.Response {
		_, page := b.get("/console/login")
		resp, _ := b.post("/console/login", url.Values{"csrf": {csrf(t, page)}, "username": {user}, "password": {password}})
		return resp
	}
	for i := range 5 {
		start := time.Now()
		if resp := try(opUser, "guess-"+itoa(int64(i))); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, resp.StatusCode)
		}
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("guess %d answered in %s: failures are not slowed", i, d)
		}
	}
	resp := try(opUser, opPassword)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("after 5 failures: %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := try(viewerUser, viewerPassword); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another user from the same address: %d, want 303", resp.StatusCode)
	}
	if strings.Contains(e.Logs.String(), "guess-") {
		t.Errorf("a guessed password reached the log")
	}
}

// TestConsoleOwnAddress: with console.addr the console has its own
// listener, and the main one serves none of it.
func TestConsoleOwnAddress(t *testing.T) {
	t.Parallel()
	e := startEnv(t, "sqlite", func(c *config.Config) { c.Console.Addr = "127.0.0.1:0" })
	if resp, _ := newBrowser(t, e.URL).get("/console/login"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the main listener serves the console: %d", resp.StatusCode)
	}
	addr := e.Gateway.Gateway.ConsoleAddr()
	if addr == nil {
		t.Fatal("no console listener")
	}
	b := newBrowser(t, "http://"+addr.String())
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Errorf("/ on the console's listener: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	b.signIn(opUser, opPassword)
	if resp, _ := b.get("/v1/institutions"); resp.StatusCode == http.StatusOK {
		t.Errorf("the console's listener serves the API")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

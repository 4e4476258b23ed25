package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/procurement/gateway/service"
)

// Cookies. Every one is HttpOnly and SameSite=Strict (another site can
// neither read them nor make the browser send them), Secure when the
// request came over TLS, and scoped to the console's paths.
const (
	sessionCookie = "gw_console"       // the session's random token
	loginCookie   = "gw_console_login" // the sign-in form's CSRF token, before there is a session
	flashCookie   = "gw_console_flash" // the result of the last action, shown once
)

// maxForm bounds a form's body: a resolution note is the longest field.
const maxForm = 64 << 10

// secure reports whether the browser reached us over TLS: directly
// (server.tls) or through a proxy that terminated it and says so. A
// forged X-Forwarded-Proto only makes the forger's own cookie Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name, path string) {
	setCookie(w, r, name, "", path, -1)
}

// session returns the request's signed-in user.
func (s *server) session(r *http.Request) (*service.Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, &service.Error{Code: service.EUnauthorized, Message: "not signed in"}
	}
	return s.Console.Session(r.Context(), c.Value)
}

func actor(r *http.Request) service.Actor {
	v := visitOf(r)
	a := service.Actor{RemoteAddr: r.RemoteAddr, RequestID: v.id}
	if v.session != nil {
		a.User, a.Role = v.session.User, v.session.Role
	}
	return a
}

// page serves a GET page to a signed-in user; anyone else is sent to sign
// in, and comes back here after.
func (s *server) page(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := visitOf(r)
		v.page = name
		sess, err := s.session(r)
		if service.ErrorCode(err) == service.EUnauthorized {
			http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v.session = sess
		v.flash = takeFlash(w, r)
		h(w, r)
	}
}

// post serves a form POST: from this origin, by a signed-in user, with
// the session's CSRF token. Anything less is 403 and does nothing.
func (s *server) post(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := visitOf(r)
		v.page = name
		if !sameOrigin(r) {
			s.forbidden(w, r, "请求来自其他站点")
			return
		}
		sess, err := s.session(r)
		if service.ErrorCode(err) == service.EUnauthorized {
			s.forbidden(w, r, "会话已失效，请重新登录")
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v.session = sess
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil || !equalTokens(r.PostFormValue("csrf"), sess.CSRF) {
			s.forbidden(w, r, "表单已过期或无效（CSRF 校验失败），请刷新页面后重试")
			return
		}
		h(w, r)
	}
}

func (s *server) forbidden(w http.ResponseWriter, r *http.Request, msg string) {
	s.Log.WithFields(map[string]any{"request_id": visitOf(r).id, "route": visitOf(r).page, "remote": r.RemoteAddr}).
		Warn("console: refused: " + msg)
	s.render(w, r, http.StatusForbidden, "error", view{Title: errorTitle(http.StatusForbidden),
		Data: errorPage{Status: http.StatusForbidden, Code: service.EForbidden, Message: msg}})
}

// sameOrigin: a browser names the page a POST comes from in Origin (and
// always does for a cross-site one); when it does, it must be us. The CSRF
// token is the real check; this one costs nothing.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func equalTokens(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// nextPage is where to go after signing in: a page of the console, never
// another site.
func nextPage(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

type loginPage struct {
	CSRF, Next, User, Error string
}

func (s *server) loginForm(w http.ResponseWriter, r *http.Request) {
	v := visitOf(r)
	v.page = "login"
	next := nextPage(r.URL.Query().Get("next"))
	if sess, err := s.session(r); err == nil && sess != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	v.flash = takeFlash(w, r)
	s.renderLogin(w, r, http.StatusOK, loginPage{Next: next})
}

// renderLogin shows the sign-in form with a fresh CSRF token, kept in a
// cookie of the form's own path until the form comes back.
func (s *server) renderLogin(w http.ResponseWriter, r *http.Request, status int, p loginPage) {
	p.CSRF = rand.Text()
	setCookie(w, r, loginCookie, p.CSRF, Prefix+"login", 3600)
	s.render(w, r, status, "login", view{Title: "登录", Data: p})
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	v := visitOf(r)
	v.page = "login"
	if !sameOrigin(r) {
		s.forbidden(w, r, "请求来自其他站点")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	c, cerr := r.Cookie(loginCookie)
	if err := r.ParseForm(); err != nil || cerr != nil || !equalTokens(r.PostFormValue("csrf"), c.Value) {
		s.forbidden(w, r, "登录表单已过期或无效（CSRF 校验失败），请刷新页面后重试")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("username"))
	next := nextPage(r.PostFormValue("next"))
	sess, err := s.Console.SignIn(r.Context(), name, r.PostFormValue("password"), r.RemoteAddr, v.id)
	var limited *service.SignInLimited
	switch {
	case errors.As(err, &limited):
		secs := int(limited.Wait.Seconds()) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.renderLogin(w, r, http.StatusTooManyRequests, loginPage{Next: next, User: name,
			Error: "登录失败次数过多，请 " + strconv.Itoa(secs) + " 秒后再试"})
		return
	case service.ErrorCode(err) == service.EUnauthorized:
		s.renderLogin(w, r, http.StatusUnauthorized, loginPage{Next: next, User: name, Error: "用户名或密码错误"})
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	v.session = sess
	clearCookie(w, r, loginCookie, Prefix+"login")
	setCookie(w, r, sessionCookie, sess.Token, Prefix, int(time.Until(sess.ExpiresAt).Seconds()))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Cookie(sessionCookie)
	if err := s.Console.SignOut(r.Context(), actor(r), c.Value); err != nil {
		s.fail(w, r, err)
		return
	}
	clearCookie(w, r, sessionCookie, Prefix)
	setFlash(w, r, "ok", "已退出登录")
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// flash is the result of an action, carried over the redirect that
// follows it (post, redirect, get) and shown once.
type flash struct {
	Kind string `json:"k"` // ok, error
	Text string `json:"t"`
}

func setFlash(w http.ResponseWriter, r *http.Request, kind, text string) {
	if len(text) > 600 {
		text = string([]rune(text)[:200]) + "…"
	}
	b, _ := json.Marshal(flash{Kind: kind, Text: text})
	setCookie(w, r, flashCookie, base64.RawURLEncoding.EncodeToString(b), Prefix, 60)
}

// takeFlash reads the flash and clears it. Whatever it says is shown as
// text: a forged one can only tell its forger something.
func takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	clearCookie(w, r, flashCookie, Prefix)
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	var f flash
	if err != nil || json.Unmarshal(b, &f) != nil || f.Text == "" {
		return nil
	}
	if f.Kind != "ok" {
		f.Kind = "error"
	}
	return &f
}

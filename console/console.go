// Package console is the operators' web console, served by the gateway
// under /console/: find any order, see its whole story, fix what is stuck.
// It is another HTTP surface beside package handler, and like it does
// transport only: sessions and their cookies, CSRF tokens, forms, and
// server-rendered html/template pages embedded in the binary, with plain
// CSS and no JavaScript; every datum and every action comes from
// service.Console. Nothing is fetched from outside the gateway.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/service"
)

//go:embed templates static
var files embed.FS

// Deps are what the console needs.
type Deps struct {
	Console *service.Console
	Log     logrus.FieldLogger
	// Institutions is the configuration of the institutions, its secrets
	// redacted (config.Config.Redacted), for the institutions page.
	Institutions []config.Institution
	// Location is the operators' time zone: times are shown in it and
	// "today" is its day.
	Location *time.Location
	// Metrics, when set, gets the pages' render-time histogram.
	Metrics prometheus.Registerer
}

// Prefix is where the console is served.
const Prefix = "/console/"

// securityHeaders go on every answer. The pages load nothing but their own
// stylesheet and run no script; no other site may frame them.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Frame-Options":         "DENY",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "same-origin",
	// Pages carry personal data, masked or not: no copy in a shared cache.
	"Cache-Control": "no-store",
}

type server struct {
	Deps
	pages   map[string]*template.Template
	static  http.Handler
	renders *prometheus.HistogramVec
}

// New returns the console's handler, for the paths under Prefix.
func New(d Deps) (http.Handler, error) {
	if d.Location == nil {
		d.Location = time.UTC
	}
	s := &server{Deps: d, pages: map[string]*template.Template{}}
	base, err := template.New("base").Funcs(s.funcs()).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	for _, n := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		s.pages[page] = t
	}
	staticFS, err := fs.Sub(files, "static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	s.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(staticFS))
	s.renders = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_console_page_duration_seconds",
		Help:    "Time to answer a console page on the server, its queries and rendering included, by page.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"page"})
	if d.Metrics != nil {
		if err := d.Metrics.Register(s.renders); err != nil {
			return nil, fmt.Errorf("console: metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	s.routes(mux)
	return s.middle(mux), nil
}

// visit is one request's state: who, since when, what it renders.
type visit struct {
	start   time.Time
	id      string // request id
	page    string // the route's name, for the metric and the log
	session *service.Session
	status  int
	flash   *flash
}

type visitKey struct{}

func withVisit(r *http.Request, v *visit) context.Context {
	return context.WithValue(r.Context(), visitKey{}, v)
}

func visitOf(r *http.Request) *visit {
	v, _ := r.Context().Value(visitKey{}).(*visit)
	return v
}

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	Session *service.Session
	Flash   *flash
	Data    any
	// Query is the search box's text, kept across pages.
	Query string
}

// render executes a page into a buffer, so that a template error becomes
// a clean 500 rather than half a page, and so that the time measured is
// the page's whole server-side cost.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, vw view) {
	v := visitOf(r)
	vw.Session = v.session
	if vw.Flash == nil {
		vw.Flash = v.flash
	}
	t := s.pages[page]
	var buf bytes.Buffer
	if t == nil {
		s.Log.WithField("page", page).Error("console: no such template")
		status = http.StatusInternalServerError
		buf.WriteString("internal error")
	} else if err := t.ExecuteTemplate(&buf, "layout", vw); err != nil {
		s.Log.WithError(err).WithField("page", page).Error("console: template failed")
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString("internal error")
	}
	// The page's server-side time, in the metric and, for whoever looks
	// at a slow page in the browser's developer tools, in Server-Timing.
	took := time.Since(v.start)
	s.renders.WithLabelValues(v.page).Observe(took.Seconds())
	w.Header().Set("Server-Timing", fmt.Sprintf("page;dur=%.1f", float64(took.Microseconds())/1000))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
	v.status = status
}

// fail renders an error page for a service error: its code decides the
// HTTP status, its message is shown, an internal cause is logged only.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := service.ErrorCode(err)
	status := statusOf(code)
	// What the operator can act on is shown; an internal failure is
	// logged, and shown only as such.
	msg := "内部错误"
	var e *service.Error
	isServiceErr := errors.As(err, &e)
	if isServiceErr && code != service.EInternal {
		msg = e.Message
	}
	entry := s.Log.WithFields(logrus.Fields{"request_id": visitOf(r).id, "code": code, "status": status})
	switch {
	case !isServiceErr:
		entry = entry.WithError(err)
	case e.Err != nil:
		entry = entry.WithError(e.Err)
	}
	if status >= 500 {
		entry.Error("console: " + msg)
	} else {
		entry.Info("console: " + msg)
	}
	s.render(w, r, status, "error", view{Title: errorTitle(status), Data: errorPage{Status: status, Code: code, Message: msg}})
}

type errorPage struct {
	Status  int
	Code    string
	Message string
}

// statusOf maps the service's error codes to HTTP, for the console.
func statusOf(code string) int {
	switch code {
	case service.EInvalid:
		return http.StatusBadRequest
	case service.EUnauthorized:
		return http.StatusUnauthorized
	case service.EForbidden:
		return http.StatusForbidden
	case service.ENotFound:
		return http.StatusNotFound
	case service.EConflict:
		return http.StatusConflict
	case service.ERateLimited:
		return http.StatusTooManyRequests
	case service.EUpstream:
		return http.StatusBadGateway
	case service.EUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func errorTitle(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "请求有误"
	case http.StatusForbidden:
		return "无权操作"
	case http.StatusNotFound:
		return "未找到"
	case http.StatusConflict:
		return "当前状态不允许"
	case http.StatusTooManyRequests:
		return "尝试过于频繁"
	case http.StatusBadGateway:
		return "金融机构未正常应答"
	case http.StatusServiceUnavailable:
		return "暂时不可用"
	}
	return "内部错误"
}

// middle sets the security headers, the request id and the access log of
// every console request, and turns a panic into a 500.
func (s *server) middle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, val := range securityHeaders {
			w.Header().Set(k, val)
		}
		v := &visit{start: time.Now(), id: requestID(r), status: http.StatusOK}
		w.Header().Set("X-Request-Id", v.id)
		rw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.Log.WithFields(logrus.Fields{"request_id": v.id, "panic": p}).Error("console: handler panicked")
				if !rw.wrote {
					http.Error(rw, "internal error", http.StatusInternalServerError)
				}
			}
			fields := logrus.Fields{"request_id": v.id, "method": r.Method, "route": v.page, "status": rw.code(),
				"latency_ms": time.Since(v.start).Milliseconds(), "remote": r.RemoteAddr}
			if v.session != nil {
				fields["user"] = v.session.User
			}
			if no := r.PathValue("orderno"); no != "" {
				fields["orderno"] = no
			}
			if v.page != "static" {
				s.Log.WithFields(fields).Info("console request")
			}
		}()
		next.ServeHTTP(rw, r.WithContext(service.WithRequestID(withVisit(r, v), v.id)))
	})
}

// requestID takes X-Request-Id when it is sane, else makes one.
func requestID(r *http.Request) string {
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "\r\n") {
		var b [8]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	return id
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// message is what a service error says to the operator.
func message(err error) string {
	var e *service.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "内部错误"
}

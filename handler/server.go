// Package handler is the gateway's HTTP surface (gin): the institutions'
// callbacks, the bidding module's /v1 API and the operations endpoints. A
// handler does transport only: body limits, authentication of the bidding
// module, reading the bytes, one service call, writing the answer. No SQL,
// no cipher.
package handler

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/service"
)

// Deps are what the server needs.
type Deps struct {
	Service *service.Service
	Log     logrus.FieldLogger
	Tokens  []string     // bearer tokens of the bidding module
	Metrics http.Handler // /metrics; nil serves 404
	// Body limits of the callbacks.
	NotifyBodyLimit   int64
	CallbackBodyLimit int64
}

// OpenAPI describes the bidding module's API (docs/api.md in prose); it is
// served at /openapi.yaml, and the tests hold the routes and the answers
// to it.
//
//go:embed openapi.yaml
var OpenAPI []byte

// readyTimeout bounds the database ping of /readyz: a probe must answer
// well within a load balancer's own timeout.
const readyTimeout = 2 * time.Second

type server struct {
	Deps
	tokens [][sha256.Size]byte // digests of the bearer tokens
}

// NewServer returns the gateway's HTTP handler.
func NewServer(d Deps) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	s := &server{Deps: d}
	for _, t := range d.Tokens {
		if t != "" {
			s.tokens = append(s.tokens, sha256.Sum256([]byte(t)))
		}
	}
	r := gin.New()
	// gin trusts X-Forwarded-For from anyone by default; the logged client
	// address is the TCP peer instead, as the callbacks' allowlist uses.
	_ = r.SetTrustedProxies(nil)
	r.Use(s.requestID, s.accessLog, s.recover)
	s.routes(r)
	return r
}

type ctxKey int

const logKey ctxKey = 0

// requestID accepts X-Request-Id (bounded) or makes one, returns it, and
// puts a logger carrying it into the request's context.
func (s *server) requestID(c *gin.Context) {
	id := c.GetHeader("X-Request-Id")
	if id == "" || len(id) > 64 || strings.ContainsAny(id, "\r\n") {
		var b [8]byte
		rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	c.Header("X-Request-Id", id)
	c.Set("request_id", id)
	entry := s.Log.WithField("request_id", id)
	// The service logs with its own logger; the id in the context lets it
	// put request_id on its lines too (outbound calls made for the request).
	ctx := service.WithRequestID(c.Request.Context(), id)
	c.Request = c.Request.WithContext(context.WithValue(ctx, logKey, entry))
	c.Next()
}

func (s *server) logger(c *gin.Context) logrus.FieldLogger {
	if l, ok := c.Request.Context().Value(logKey).(logrus.FieldLogger); ok {
		return l
	}
	return s.Log
}

// accessLog writes one line per API and operations request; callbacks log
// their own richer line in the service.
func (s *server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	// Probes and scrapes come every few seconds and say nothing; a failed
	// /readyz logs its own warning.
	switch p := c.FullPath(); {
	case strings.HasPrefix(p, "/api/guarantee/"), p == "/metrics", p == "/healthz", p == "/readyz":
		return
	}
	fields := logrus.Fields{"method": c.Request.Method, "route": c.FullPath(), "status": c.Writer.Status(),
		"latency_ms": time.Since(start).Milliseconds(), "remote": c.ClientIP()}
	// The order's number, so that "what happened to order X" finds the
	// API requests about it as well as its callbacks and calls.
	if no := c.Param("orderno"); no != "" {
		fields["orderno"] = no
	}
	s.logger(c).WithFields(fields).Info("request")
}

// recover answers a panic with 500 and logs it, never the request body.
func (s *server) recover(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.logger(c).WithField("panic", p).Error("handler panicked")
			c.AbortWithStatusJSON(http.StatusInternalServerError, apiError{Error: apiErrorBody{Code: service.EInternal, Message: "internal error"}})
		}
	}()
	c.Next()
}

// auth checks the bidding module's bearer token in constant time.
func (s *server) auth(c *gin.Context) {
	h := c.GetHeader("Authorization")
	const prefix = "Bearer "
	ok := false
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		// Digests have one length: ConstantTimeCompare returns at once on
		// a length mismatch, which would tell a token's length.
		got := sha256.Sum256([]byte(h[len(prefix):]))
		for _, t := range s.tokens {
			if subtle.ConstantTimeCompare(got[:], t[:]) == 1 {
				ok = true
			}
		}
	}
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="gateway"`)
		c.AbortWithStatusJSON(http.StatusUnauthorized, apiError{Error: apiErrorBody{Code: service.EUnauthorized, Message: "missing or wrong bearer token"}})
		return
	}
	c.Next()
}

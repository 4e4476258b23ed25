package handler

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/wire"
)

// callback takes one institution callback. Its sender is judged from the
// headers first (appKey, source address, rate: service.AdmitCallback), and
// a refused one is answered at once, its body never read; so is a body
// declared over the route's limit. A body for which the memory budget has
// no room within a second is dropped as it comes and answered 503
// (docs/decisions.md §33, §35). Otherwise the body is read within the
// limit and handed, raw, to the service, which decrypts, validates and
// stores it; the answer is the generic response.
func (s *server) callback(kind string, limit int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		in := service.CallbackInput{Kind: kind, AppKey: c.GetHeader("appKey"), RemoteAddr: c.Request.RemoteAddr,
			RequestID: requestIDOf(c), Size: c.Request.ContentLength}
		in.Admission = s.Service.AdmitCallback(in.AppKey, in.RemoteAddr)
		switch {
		case !in.Admission.Admitted():
		case c.Request.ContentLength > limit:
			// A declared length over the limit is refused before a byte
			// is read; an undeclared one is cut at the limit below.
			in.Oversize = true
		default:
			size := c.Request.ContentLength
			if size < 0 {
				size = limit // undeclared: it may be as large as the limit
			}
			release, ok := s.Service.ReserveBody(c.Request.Context(), kind, size)
			if !ok {
				// A known sender: its body is read and dropped, which
				// costs no memory, so that it gets the 503 and its
				// Retry-After rather than a connection reset in the
				// middle of its upload (most clients read no answer before
				// they sent the whole body).
				io.Copy(io.Discard, http.MaxBytesReader(c.Writer, c.Request.Body, limit))
				in.Busy = true
				break
			}
			defer release()
			body, err := readBody(c, limit)
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				in.Oversize = true
			case err != nil:
				c.JSON(http.StatusBadRequest, wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "body could not be read"})
				return
			default:
				in.Body = body
				s.reply(c, s.Service.HandleCallback(c.Request.Context(), in), false)
				return
			}
		}
		s.reply(c, s.Service.HandleCallback(c.Request.Context(), in), true)
	}
}

// readBody reads the request's body within limit in one allocation of its
// declared size (at most the limit) instead of doubling through a 30 MiB
// notice; ReadFrom wants MinRead spare bytes to see the end without
// growing.
func readBody(c *gin.Context, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	if n := c.Request.ContentLength; n > 0 {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	return buf.Bytes(), err
}

// reply writes the service's answer. A body not taken closes the
// connection after the answer: what the sender still sends is not read,
// and the connection could not carry another request after it anyway.
func (s *server) reply(c *gin.Context, r service.Reply, unread bool) {
	if r.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(r.RetryAfter.Seconds()))))
	}
	if unread {
		c.Header("Connection", "close")
	}
	c.JSON(r.HTTPStatus, r.Body)
}

// requestIDOf is the request's id, set by the requestID middleware.
func requestIDOf(c *gin.Context) string {
	id, _ := c.Get("request_id")
	s, _ := id.(string)
	return s
}

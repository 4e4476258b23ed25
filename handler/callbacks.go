package handler

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/wire"
)

// callback reads one institution callback within its body limit and hands
// the raw bytes to the service, which identifies, decrypts, validates and
// stores it; the answer is the generic response.
func (s *server) callback(kind string, limit int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		// A declared length over the limit is refused before a byte is
		// read; an undeclared one is cut at the limit by MaxBytesReader.
		if c.Request.ContentLength > limit {
			s.tooLarge(c, kind, limit)
			return
		}
		var buf bytes.Buffer
		if n := c.Request.ContentLength; n > 0 {
			// One allocation of the declared size (at most the limit)
			// instead of doubling through a 30 MiB notice; ReadFrom wants
			// MinRead spare bytes to see the end without growing.
			buf.Grow(int(n) + bytes.MinRead)
		}
		if _, err := buf.ReadFrom(http.MaxBytesReader(c.Writer, c.Request.Body, limit)); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.tooLarge(c, kind, limit)
				return
			}
			c.JSON(http.StatusBadRequest, wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "body could not be read"})
			return
		}
		rid, _ := c.Get("request_id")
		id, _ := rid.(string)
		reply := s.Service.HandleCallback(c.Request.Context(), service.CallbackInput{
			Kind: kind, AppKey: c.GetHeader("appKey"), Body: buf.Bytes(),
			RemoteAddr: c.Request.RemoteAddr, RequestID: id,
		})
		c.JSON(reply.HTTPStatus, reply.Body)
	}
}

// tooLarge answers a body over the route's limit: 413 with stat 0. The body
// is not read; the refusal is audited, counted and logged by the service
// like any other, with the declared size.
func (s *server) tooLarge(c *gin.Context, kind string, limit int64) {
	rid, _ := c.Get("request_id")
	id, _ := rid.(string)
	reply := s.Service.HandleCallback(c.Request.Context(), service.CallbackInput{
		Kind: kind, AppKey: c.GetHeader("appKey"), RemoteAddr: c.Request.RemoteAddr, RequestID: id,
		Oversize: true, Size: c.Request.ContentLength,
	})
	// The rest of the body is not read: close the connection after the answer.
	c.Header("Connection", "close")
	c.JSON(reply.HTTPStatus, reply.Body)
}

package handler

import (
	"errors"
	"io"
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
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.logger(c).WithField("kind", kind).WithField("limit", limit).Warn("callback body over the limit")
				c.JSON(http.StatusRequestEntityTooLarge, wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "body too large"})
				return
			}
			c.JSON(http.StatusBadRequest, wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "body could not be read"})
			return
		}
		rid, _ := c.Get("request_id")
		reply := s.Service.HandleCallback(c.Request.Context(), service.CallbackInput{
			Kind: kind, AppKey: c.GetHeader("appKey"), Body: body,
			RemoteAddr: c.Request.RemoteAddr, RequestID: rid.(string),
		})
		c.JSON(reply.HTTPStatus, reply.Body)
	}
}

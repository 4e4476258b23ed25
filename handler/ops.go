package handler

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"
)

func (s *server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz asks the store whether it takes work, with a short timeout: a load
// balancer stops sending callbacks to an instance that could not store
// them (the database down, or a Galera node out of the primary component,
// which still answers pings).
func (s *server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), readyTimeout)
	defer cancel()
	if err := s.Service.Ready(ctx); err != nil {
		s.logger(c).WithError(err).Warn("not ready")
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "unavailable", "database": "unreachable"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "database": "ok"})
}

func (s *server) metrics(c *gin.Context) {
	if s.Metrics == nil {
		c.Status(http.StatusNotFound)
		return
	}
	s.Metrics.ServeHTTP(c.Writer, c.Request)
}

func (s *server) openapi(c *gin.Context) {
	c.Data(http.StatusOK, "application/yaml", OpenAPI)
}

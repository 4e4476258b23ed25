package handler

import "github.com/gin-gonic/gin"

// routes is the whole HTTP surface, readable as a table.
func (s *server) routes(r *gin.Engine) {
	// Institutions' callbacks (docs/protocol.md §3.2.3, §3.2.4, §3.2.9).
	r.POST("/api/guarantee/paystate", s.callback("paystate", s.CallbackBodyLimit))
	r.POST("/api/guarantee/applynotify", s.callback("applynotify", s.NotifyBodyLimit))
	r.POST("/api/guarantee/release", s.callback("release", s.CallbackBodyLimit))

	// The bidding module's API (docs/api.md).
	v1 := r.Group("/v1", s.auth, s.releaseBody)
	v1.POST("/guarantees", s.apply)
	v1.GET("/guarantees", s.list)
	v1.GET("/guarantees/:orderno", s.get)
	v1.POST("/guarantees/:orderno/refresh", s.refresh)
	v1.GET("/guarantees/:orderno/file", s.file)
	v1.POST("/guarantees/:orderno/cancel", s.cancel)
	v1.GET("/guarantees/:orderno/events", s.events)
	v1.POST("/cost", s.cost)
	v1.GET("/quotes", s.quotes)
	v1.POST("/projects/state", s.pushProjectState)
	v1.GET("/projects/state/:id", s.projectState)
	v1.POST("/deliveries/:id/retry", s.retryDelivery)
	v1.POST("/verify", s.verify)
	v1.GET("/reconciliation", s.reconciliation)
	v1.GET("/institutions", s.institutions)

	// Operations.
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", s.metrics)
	r.GET("/openapi.yaml", s.openapi)

	// Anything else answers in the error shape of docs/api.md, not gin's text.
	r.NoRoute(s.notFound)
}

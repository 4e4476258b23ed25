package console

import "net/http"

// routes is the whole console, readable as a table. Every page is a GET at
// a stable URL (its filters in the query string, so that it can be
// bookmarked and pasted); every action is a POST with the session's CSRF
// token, answered by a redirect to the page it was taken from.
func (s *server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /console/login", s.loginForm)
	mux.HandleFunc("POST /console/login", s.login)
	mux.HandleFunc("POST /console/logout", s.post("logout", s.logout))

	mux.HandleFunc("GET /console/{$}", s.page("overview", s.overview))
	mux.HandleFunc("GET /console/orders", s.page("orders", s.orders))
	mux.HandleFunc("GET /console/orders/{orderno}", s.page("order", s.order))
	mux.HandleFunc("GET /console/orders/{orderno}/file", s.page("file", s.file))
	mux.HandleFunc("GET /console/orders/{orderno}/cancel", s.page("cancel", s.cancelForm))
	mux.HandleFunc("GET /console/deliveries", s.page("deliveries", s.deliveries))
	mux.HandleFunc("GET /console/callbacks", s.page("callbacks", s.callbacks))
	mux.HandleFunc("GET /console/callbacks/{id}", s.page("callback", s.callback))
	mux.HandleFunc("GET /console/reconciliation", s.page("reconciliation", s.reconciliation))
	mux.HandleFunc("GET /console/institutions", s.page("institutions", s.institutions))

	// Operators' actions (a viewer's is refused with 403, and recorded).
	mux.HandleFunc("POST /console/orders/{orderno}/query", s.post("query", s.queryNow))
	mux.HandleFunc("POST /console/orders/{orderno}/pull", s.post("pull", s.pullNow))
	mux.HandleFunc("POST /console/orders/{orderno}/cancel", s.post("cancel", s.cancel))
	mux.HandleFunc("POST /console/deliveries/{id}/retry", s.post("retry_delivery", s.retryDelivery))
	mux.HandleFunc("POST /console/deliveries/retry", s.post("retry_deliveries", s.retryDeliveries))
	mux.HandleFunc("POST /console/reconciliation/{id}/resolve", s.post("resolve_finding", s.resolveFinding))

	mux.HandleFunc("GET /console/static/", s.staticFile)
	mux.HandleFunc("/console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
	})
	mux.HandleFunc("/console/", s.notFound)
}

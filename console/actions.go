package console

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/procurement/gateway/service"
)

// The operators' actions: each calls one service.Console method with who
// asks (which records and logs it), then goes back to the page it came
// from with the result shown once. A viewer's attempt is answered 403.

func (s *server) queryNow(w http.ResponseWriter, r *http.Request) {
	no := r.PathValue("orderno")
	msg, err := s.Console.QueryNow(r.Context(), actor(r), no)
	s.done(w, r, "向金融机构查询", msg, err, orderURL(no))
}

func (s *server) pullNow(w http.ResponseWriter, r *http.Request) {
	no := r.PathValue("orderno")
	msg, err := s.Console.PullNow(r.Context(), actor(r), no)
	s.done(w, r, "下载保函文件", msg, err, orderURL(no))
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	no := r.PathValue("orderno")
	if r.PostFormValue("confirm") != "yes" {
		setFlash(w, r, "error", "注销未执行：请在确认页勾选并确认")
		http.Redirect(w, r, orderURL(no)+"/cancel", http.StatusSeeOther)
		return
	}
	msg, err := s.Console.Cancel(r.Context(), actor(r), no)
	s.done(w, r, "注销保函", msg, err, orderURL(no))
}

func (s *server) retryDelivery(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, &service.Error{Code: service.ENotFound, Message: "no such delivery"})
		return
	}
	msg, err := s.Console.RetryDelivery(r.Context(), actor(r), id)
	s.done(w, r, "重新投递 #"+strconv.FormatInt(id, 10), msg, err, back(r, Prefix+"deliveries"))
}

func (s *server) retryDeliveries(w http.ResponseWriter, r *http.Request) {
	msg, err := s.Console.RetryDeliveries(r.Context(), actor(r), r.PostFormValue("orgcode"))
	s.done(w, r, "全部重新投递", msg, err, back(r, Prefix+"deliveries"))
}

func (s *server) resolveFinding(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, &service.Error{Code: service.ENotFound, Message: "no such finding"})
		return
	}
	msg, err := s.Console.ResolveFinding(r.Context(), actor(r), id, r.PostFormValue("note"))
	s.done(w, r, "处理对账差异 #"+strconv.FormatInt(id, 10), msg, err, back(r, Prefix+"reconciliation"))
}

// done ends an action: 403 for a viewer, else back to the page with the
// result to show.
func (s *server) done(w http.ResponseWriter, r *http.Request, what, msg string, err error, to string) {
	switch code := service.ErrorCode(err); {
	case err == nil:
		setFlash(w, r, "ok", what+"：完成。"+msg)
	case code == service.EForbidden:
		s.forbidden(w, r, what+"需要操作员（operator）权限")
		return
	case code == service.EInternal:
		s.fail(w, r, err)
		return
	default:
		setFlash(w, r, "error", what+"：未完成（"+code+"）。"+message(err))
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func orderURL(orderNo string) string { return Prefix + "orders/" + url.PathEscape(orderNo) }

// back is the page a form says it came from, if it is one of ours.
func back(r *http.Request, fallback string) string {
	if b := r.PostFormValue("back"); b != "" {
		if n := nextPage(b); n != Prefix || b == Prefix {
			return n
		}
	}
	return fallback
}

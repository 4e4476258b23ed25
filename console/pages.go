package console

import (
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/service"
)

// pageSize is how many rows a list shows at a time.
const pageSize = 50

// dayStart is the start of the operators' day: "today" on the pages.
func (s *server) dayStart() time.Time {
	now := time.Now().In(s.Location)
	return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, s.Location)
}

func (s *server) today() string { return s.dayStart().Format(time.DateOnly) }

// dayRange reads a from-to pair of dates (YYYY-MM-DD, the operators' days,
// both included) as [start of from, start of the day after to).
func (s *server) dayRange(from, to string) (time.Time, time.Time, string) {
	var f, t time.Time
	if from != "" {
		d, err := time.ParseInLocation(time.DateOnly, from, s.Location)
		if err != nil {
			return f, t, "起始日期应为 YYYY-MM-DD"
		}
		f = d
	}
	if to != "" {
		d, err := time.ParseInLocation(time.DateOnly, to, s.Location)
		if err != nil {
			return f, t, "截止日期应为 YYYY-MM-DD"
		}
		t = d.AddDate(0, 0, 1)
	}
	return f, t, ""
}

// orgCodes are the configured institutions, for the filters' choices.
func (s *server) orgCodes() []string {
	out := make([]string, 0, len(s.Institutions))
	for _, in := range s.Institutions {
		out = append(out, in.OrgCode)
	}
	return out
}

type overviewPage struct {
	*service.Overview
	Today    string
	Statuses []model.Status
	Flags    []model.Flag
}

func (s *server) overview(w http.ResponseWriter, r *http.Request) {
	o, err := s.Console.Overview(r.Context(), s.dayStart())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "overview", view{Title: "概览", Nav: "overview",
		Data: overviewPage{Overview: o, Today: s.today(), Statuses: model.AllStatuses, Flags: model.AllFlags}})
}

type ordersPage struct {
	Q, Status, OrgCode, Flag, From, To, Cursor string
	Error                                      string
	Rows                                       *service.OrderRows
	Next                                       string // the next page's URL
	Statuses                                   []model.Status
	Flags                                      []model.Flag
	OrgCodes                                   []string
}

func (s *server) orders(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := ordersPage{Q: q.Get("q"), Status: q.Get("status"), OrgCode: q.Get("orgcode"), Flag: q.Get("flag"),
		From: q.Get("from"), To: q.Get("to"), Cursor: q.Get("cursor"), Statuses: model.AllStatuses,
		Flags: model.AllFlags, OrgCodes: s.orgCodes()}
	vw := view{Title: "订单", Nav: "orders", Query: p.Q}
	from, to, msg := s.dayRange(p.From, p.To)
	if msg != "" {
		p.Error = msg
		vw.Data = p
		s.render(w, r, http.StatusBadRequest, "orders", vw)
		return
	}
	rows, err := s.Console.Orders(r.Context(), service.ListQuery{Search: p.Q, Status: p.Status, OrgCode: p.OrgCode,
		Flag: p.Flag, From: from, To: to, Cursor: p.Cursor, Limit: pageSize})
	if service.ErrorCode(err) == service.EInvalid {
		p.Error = message(err)
		vw.Data = p
		s.render(w, r, http.StatusBadRequest, "orders", vw)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Rows = rows
	if rows.NextCursor != "" {
		p.Next = withParam(r.URL, "cursor", rows.NextCursor)
	}
	vw.Data = p
	s.render(w, r, http.StatusOK, "orders", vw)
}

// withParam is the request's own URL with one parameter set.
func withParam(u *url.URL, key, value string) string {
	q := u.Query()
	q.Set(key, value)
	return u.Path + "?" + q.Encode()
}

type orderPage struct {
	*service.OrderDetail
	Operator bool
}

func (s *server) order(w http.ResponseWriter, r *http.Request) {
	d, err := s.Console.OrderDetail(r.Context(), r.PathValue("orderno"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "order", view{Title: "订单 " + d.Order.OrderNo, Nav: "orders",
		Data: orderPage{OrderDetail: d, Operator: visitOf(r).session.Role == service.RoleOperator}})
}

// file serves the stored PDF, inline (the order page embeds it, a click
// opens it in the browser) or, with ?download=1, as an attachment. It
// never pulls: that is the operators' "pull now".
func (s *server) file(w http.ResponseWriter, r *http.Request) {
	f, err := s.Console.StoredFile(r.Context(), r.PathValue("orderno"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	disposition := "inline"
	if r.URL.Query().Get("download") != "" {
		disposition = "attachment"
	}
	// RFC 6266: the name is the orderno, given ASCII-safe by mime.
	w.Header().Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": f.OrderNo + ".pdf"}))
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Length", strconv.Itoa(len(f.Content)))
	// The order page (this origin, and only it) may frame the PDF.
	w.Header().Set("X-Frame-Options", "SAMEORIGIN")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'self'")
	w.Write(f.Content)
	visitOf(r).status = http.StatusOK
}

func (s *server) cancelForm(w http.ResponseWriter, r *http.Request) {
	if visitOf(r).session.Role != service.RoleOperator {
		s.forbidden(w, r, "注销保函需要操作员（operator）权限")
		return
	}
	d, err := s.Console.OrderDetail(r.Context(), r.PathValue("orderno"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "cancel", view{Title: "注销保函 " + d.Order.OrderNo, Nav: "orders",
		Data: orderPage{OrderDetail: d, Operator: true}})
}

type deliveriesPage struct {
	Status, OrgCode string
	Page            *service.DeliveryPage
	Next            string
	Back            string // this page, to come back to after an action
	OrgCodes        []string
	Operator        bool
}

func (s *server) deliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := q.Get("status")
	if _, given := q["status"]; !given {
		status = model.DeliveryDead // what waits for an operator
	}
	p := deliveriesPage{Status: status, OrgCode: q.Get("orgcode"), Back: r.URL.RequestURI(), OrgCodes: s.orgCodes(),
		Operator: visitOf(r).session.Role == service.RoleOperator}
	page, err := s.Console.Deliveries(r.Context(), service.DeliveryQuery{Status: status, OrgCode: p.OrgCode,
		Cursor: q.Get("cursor"), Limit: pageSize})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Page = page
	if page.NextCursor != "" {
		p.Next = withParam(r.URL, "cursor", page.NextCursor)
	}
	s.render(w, r, http.StatusOK, "deliveries", view{Title: "项目状态投递", Nav: "deliveries", Data: p})
}

type callbacksPage struct {
	Result, OrgCode, Errcode, Kind, OrderNo, From, To string
	Error                                             string
	Refusals                                          []model.CallbackCount
	Page                                              *service.CallbackPage
	Next                                              string
	Today                                             string
	OrgCodes                                          []string
	Results, Kinds, Errcodes                          []string
}

func (s *server) callbacks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := callbacksPage{Result: q.Get("result"), OrgCode: q.Get("orgcode"), Errcode: q.Get("errcode"), Kind: q.Get("kind"),
		OrderNo: q.Get("orderno"), From: q.Get("from"), To: q.Get("to"), Today: s.today(), OrgCodes: s.orgCodes(),
		Results: []string{model.CallbackRejected, model.CallbackAccepted, model.CallbackDuplicate, model.CallbackLate},
		Kinds:   []string{service.KindPayState, service.KindApplyNotify, service.KindRelease}, Errcodes: errcodeList}
	vw := view{Title: "回调审计", Nav: "callbacks"}
	refusals, err := s.Console.Refusals(r.Context(), s.dayStart())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Refusals = refusals
	from, to, msg := s.dayRange(p.From, p.To)
	if msg != "" {
		p.Error = msg
		vw.Data = p
		s.render(w, r, http.StatusBadRequest, "callbacks", vw)
		return
	}
	page, err := s.Console.Callbacks(r.Context(), service.CallbackQuery{OrgCode: p.OrgCode, Kind: p.Kind, Result: p.Result,
		Errcode: p.Errcode, OrderNo: p.OrderNo, From: from, To: to, Cursor: q.Get("cursor"), Limit: pageSize})
	if service.ErrorCode(err) == service.EInvalid {
		p.Error = message(err)
		vw.Data = p
		s.render(w, r, http.StatusBadRequest, "callbacks", vw)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Page = page
	if page.NextCursor != "" {
		p.Next = withParam(r.URL, "cursor", page.NextCursor)
	}
	vw.Data = p
	s.render(w, r, http.StatusOK, "callbacks", vw)
}

func (s *server) callback(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, &service.Error{Code: service.ENotFound, Message: "no such callback"})
		return
	}
	c, err := s.Console.CallbackDetail(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "callback", view{Title: "回调 #" + strconv.FormatInt(id, 10), Nav: "callbacks", Data: c})
}

type reconciliationPage struct {
	*service.FindingsDay
	Operator bool
}

func (s *server) reconciliation(w http.ResponseWriter, r *http.Request) {
	day, err := s.Console.FindingsOn(r.Context(), r.URL.Query().Get("date"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "reconciliation", view{Title: "对账 " + day.Date, Nav: "reconciliation",
		Data: reconciliationPage{FindingsDay: day, Operator: visitOf(r).session.Role == service.RoleOperator}})
}

type institutionsPage struct {
	Items []institutionItem
	Today string
}

type institutionItem struct {
	Config config.Institution // secrets redacted
	Health *service.InstitutionHealth
}

func (s *server) institutions(w http.ResponseWriter, r *http.Request) {
	health, err := s.Console.Health(r.Context(), s.dayStart())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p := institutionsPage{Today: s.today()}
	for _, in := range s.Institutions {
		it := institutionItem{Config: in}
		if i := slices.IndexFunc(health, func(h service.InstitutionHealth) bool { return h.OrgCode == in.OrgCode }); i >= 0 {
			it.Health = &health[i]
		}
		p.Items = append(p.Items, it)
	}
	s.render(w, r, http.StatusOK, "institutions", view{Title: "金融机构", Nav: "institutions", Data: p})
}

func (s *server) staticFile(w http.ResponseWriter, r *http.Request) {
	visitOf(r).page = "static"
	w.Header().Set("Cache-Control", "public, max-age=3600")
	s.static.ServeHTTP(w, r)
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	v := visitOf(r)
	v.page = "not_found"
	if sess, err := s.session(r); err == nil {
		v.session = sess
	}
	s.render(w, r, http.StatusNotFound, "error", view{Title: errorTitle(http.StatusNotFound),
		Data: errorPage{Status: http.StatusNotFound, Code: service.ENotFound, Message: "没有这个页面"}})
}

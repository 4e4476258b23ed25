package service

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// The views of the operators' console's pages. Each page is a constant
// number of queries, every one served by an index in proportion to what
// the page shows (model/console.go names the indexes); personal data is
// masked here, so that no page can show it whole.

// timelineBodies is how many of an order's latest callbacks are shown
// with their decrypted bodies: an institution that repeats a notice with a
// PDF a hundred times must not make the page read a hundred PDFs.
const timelineBodies = 20

// recentActions is how many operators' actions the overview lists.
const recentActions = 10

// Overview is the console's first page.
type Overview struct {
	State        State
	Institutions []InstitutionHealth
	// Unknown counts today's callbacks whose appKey named no institution.
	Unknown      map[string]int64
	FindingsDate string // the latest reconciliation date with findings
	OpenFindings int64  // its unresolved findings
	Actions      []ActionView
}

// InstitutionHealth is how an institution is doing, seen from here.
type InstitutionHealth struct {
	OrgCode string
	Name    string
	Enabled bool
	// Today counts the callbacks received since the day's start, by result.
	Today map[string]int64
	// LastCallback is when its latest accepted callback came.
	LastCallback *time.Time
	// Calls and Failed count the calls made to it in the last hour, and
	// those that failed (neither ok nor a refusal with stat 0).
	Calls, Failed int64
	// Breaker is this replica's circuit breaker: closed, half-open, open.
	Breaker string
}

// ActionView is one operator's action.
type ActionView struct {
	ID         int64
	At         time.Time
	User, Role string
	Action     string
	OrderNo    string
	Target     string
	Result     string
	Detail     string
}

// Overview gathers the overview: orders and deliveries by status, today's
// callbacks by institution (since dayStart, the start of the operators'
// day), each institution's health, open findings and the latest actions.
// The counts are the last ones of /metrics (Service.LastState, State.At
// says when): a page view does not count a million orders. Only before
// any count has succeeded does it count itself. Returns EUnavailable.
func (c *Console) Overview(ctx context.Context, dayStart time.Time) (*Overview, error) {
	state, ok := c.s.LastState()
	if !ok {
		var err error
		if state, err = c.s.State(ctx); err != nil {
			return nil, err
		}
	}
	health, unknown, err := c.health(ctx, dayStart)
	if err != nil {
		return nil, err
	}
	st := c.s.store.With(ctx)
	o := &Overview{State: state, Institutions: health, Unknown: unknown}
	if o.FindingsDate, err = st.LatestFindingDate(); err != nil {
		return nil, storeErr("overview", err)
	}
	if o.FindingsDate != "" {
		if o.OpenFindings, err = st.CountOpenFindings(o.FindingsDate); err != nil {
			return nil, storeErr("overview", err)
		}
	}
	acts, err := st.RecentConsoleActions(recentActions)
	if err != nil {
		return nil, storeErr("overview", err)
	}
	for _, a := range acts {
		o.Actions = append(o.Actions, actionView(a))
	}
	return o, nil
}

// Health returns each configured institution's health (see Overview).
// Returns EUnavailable.
func (c *Console) Health(ctx context.Context, dayStart time.Time) ([]InstitutionHealth, error) {
	h, _, err := c.health(ctx, dayStart)
	return h, err
}

// health is 2 + one query per institution: today's callbacks and the last
// hour's calls in one range read each, and the latest accepted callback of
// each institution in one index descent each.
func (c *Console) health(ctx context.Context, dayStart time.Time) ([]InstitutionHealth, map[string]int64, error) {
	st := c.s.store.With(ctx)
	cbs, err := st.CountCallbacksSince(dayStart)
	if err != nil {
		return nil, nil, storeErr("health", err)
	}
	calls, err := st.CountCallsSince(c.s.now().Add(-time.Hour))
	if err != nil {
		return nil, nil, storeErr("health", err)
	}
	byOrg := map[string]*InstitutionHealth{}
	out := make([]InstitutionHealth, 0, len(c.s.insts.All()))
	for _, in := range c.s.insts.All() {
		h := InstitutionHealth{OrgCode: in.OrgCode, Name: in.Name, Enabled: !in.Disabled, Today: map[string]int64{}}
		if in.Client != nil {
			h.Breaker = in.Client.BreakerState()
		}
		if h.LastCallback, err = st.LastAcceptedCallback(in.OrgCode); err != nil {
			return nil, nil, storeErr("health", err)
		}
		out = append(out, h)
	}
	for i := range out {
		byOrg[out[i].OrgCode] = &out[i]
	}
	unknown := map[string]int64{}
	for _, n := range cbs {
		if h := byOrg[n.OrgCode]; h != nil {
			h.Today[n.Result] += n.N
		} else {
			unknown[n.Result] += n.N
		}
	}
	for _, n := range calls {
		if h := byOrg[n.OrgCode]; h != nil {
			h.Calls += n.N
			if n.Result != "ok" && n.Result != "refused" {
				h.Failed += n.N
			}
		}
	}
	return out, unknown, nil
}

// OrderRow is one line of the console's list of orders.
type OrderRow struct {
	OrderNo       string
	OrgCode       string
	Status        model.Status
	Flag          string
	GuaranteeNo   string
	ApplicantName string
	ApplicantCode string // masked
	ProjectCode   string
	LotCode       string
	DepositAmount decimal.Decimal
	FileStored    bool
	CreatedAt     time.Time
}

// OrderRows is one page of orders, newest first.
type OrderRows struct {
	Items      []OrderRow
	NextCursor string
}

// Orders lists orders as GET /v1/guarantees does (Service.List: the same
// filters, indexes and keyset cursor), with personal data masked. Returns
// EInvalid (status, flag, limit, cursor), EUnavailable.
func (c *Console) Orders(ctx context.Context, q ListQuery) (*OrderRows, error) {
	page, err := c.s.List(ctx, q)
	if err != nil {
		return nil, err
	}
	out := &OrderRows{Items: make([]OrderRow, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, v := range page.Items {
		out.Items = append(out.Items, OrderRow{OrderNo: v.OrderNo, OrgCode: v.OrgCode, Status: v.Status, Flag: v.Flag,
			GuaranteeNo: v.GuaranteeNo, ApplicantName: v.ApplicantName, ApplicantCode: MaskCreditCode(v.ApplicantCode),
			ProjectCode: v.ProjectCode, LotCode: v.LotCode, DepositAmount: v.DepositAmount.Decimal,
			FileStored: v.File.Stored, CreatedAt: v.CreatedAt.Time})
	}
	return out, nil
}

// OrderDetail is everything about one order, for its page.
type OrderDetail struct {
	Order    model.Order // personal data masked
	File     *FileView   // nil when no PDF is stored
	Payments []PaymentView
	Timeline []TimelineEntry
	// BodiesShown is how many of the latest callbacks carry their body;
	// Callbacks counts them all.
	BodiesShown, Callbacks int
	// What an operator can ask for now.
	CanQuery, CanPull, CanCancel bool
}

// PaymentView is one pay or refund of an order.
type PaymentView struct {
	Kind         string // "1" pay, "2" refund
	Amount       decimal.Decimal
	PaidAt       time.Time
	PayerName    string // masked
	PayerAccount string // masked
	CallbackID   int64
}

// TimelineEntry is one line of an order's history: an event, a callback
// (with its body), a call, or an operator's action.
type TimelineEntry struct {
	EventView
	At   time.Time
	Body *CallbackBody // callbacks: the decrypted body, when shown
	// Actions: who.
	User, Role string
}

// OrderDetail returns an order with its file, payments and its whole
// timeline oldest first: events, callbacks (the latest with their
// decrypted, masked bodies), calls and operators' actions. Returns
// ENotFound, EUnavailable.
func (c *Console) OrderDetail(ctx context.Context, orderNo string) (*OrderDetail, error) {
	st := c.s.store.With(ctx)
	o, err := st.Order(orderNo)
	if err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	d := &OrderDetail{Order: maskOrder(*o)}
	if f, err := st.FileInfo(orderNo); err == nil {
		d.File = &FileView{Stored: true, Size: f.Size, Sha256: f.Sha256}
	} else if !errors.Is(err, model.ErrNotFound) {
		return nil, storeErr("file of "+orderNo, err)
	}
	pays, err := st.Payments(orderNo)
	if err != nil {
		return nil, storeErr("payments of "+orderNo, err)
	}
	for _, p := range pays {
		d.Payments = append(d.Payments, PaymentView{Kind: p.Kind, Amount: p.Amount, PaidAt: p.PaidAt,
			PayerName: MaskName(p.PayerName), PayerAccount: MaskAccount(p.PayerAccount), CallbackID: p.CallbackID})
	}
	evs, err := c.s.Events(ctx, orderNo)
	if err != nil {
		return nil, err
	}
	var cbIDs []int64
	for _, e := range evs {
		if e.Source == "callback" {
			cbIDs = append(cbIDs, e.ID)
		}
	}
	d.Callbacks = len(cbIDs)
	cbIDs = cbIDs[max(0, len(cbIDs)-timelineBodies):]
	d.BodiesShown = len(cbIDs)
	bodies, err := st.CallbackBodies(cbIDs)
	if err != nil {
		return nil, storeErr("callbacks of "+orderNo, err)
	}
	shown := map[int64]bool{}
	for _, id := range cbIDs {
		shown[id] = true
	}
	for _, e := range evs {
		t := TimelineEntry{EventView: e, At: e.At.Time}
		if e.Source == "callback" && shown[e.ID] {
			inst, _ := c.s.insts.ByOrgCode(e.OrgCode)
			b := showBody(inst, bodies[e.ID], e.bodyKept)
			t.Body = &b
		}
		d.Timeline = append(d.Timeline, t)
	}
	acts, err := st.ConsoleActions(orderNo)
	if err != nil {
		return nil, storeErr("actions on "+orderNo, err)
	}
	for _, a := range acts {
		d.Timeline = append(d.Timeline, TimelineEntry{At: a.CreatedAt, User: a.UserName, Role: a.Role,
			EventView: EventView{ID: a.ID, At: wire.Millis{Time: a.CreatedAt}, Source: "action", Kind: "action", Name: a.Action,
				Result: a.Result, Detail: a.Detail}})
	}
	// An action is placed when it began, before the calls and changes it
	// caused; Events' order stands for the rest.
	sort.SliceStable(d.Timeline, func(i, j int) bool {
		ti, tj := d.Timeline[i].At.Truncate(time.Millisecond), d.Timeline[j].At.Truncate(time.Millisecond)
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return d.Timeline[i].Source == "action" && d.Timeline[j].Source != "action"
	})
	_, configured := c.s.insts.ByOrgCode(o.OrgCode)
	d.CanQuery = configured && o.QueryURL != ""
	d.CanPull = configured && d.File == nil && issuedOrLater(o.Status) && o.GuaranteeNo.String != "" && o.PullURL != ""
	d.CanCancel = configured && next(o.Status, evCancelAccepted).act == actMove && o.CancelURL != "" && o.GuaranteeNo.String != ""
	return d, nil
}

// maskOrder masks an order's personal data as the logs do.
func maskOrder(o model.Order) model.Order {
	o.ApplicantCode = MaskCreditCode(o.ApplicantCode)
	o.AccountNo = MaskAccount(o.AccountNo)
	o.ContactName = MaskName(o.ContactName)
	o.ContactPhone = MaskPhone(o.ContactPhone)
	o.ContactEmail = MaskEmail(o.ContactEmail)
	o.RequestHash = ""
	return o
}

// StoredFile returns an order's stored PDF, pulling nothing (a page view
// must not call an institution: pulling is an operator's action). Returns
// ENotFound (no such order or no PDF stored), EUnavailable.
func (c *Console) StoredFile(ctx context.Context, orderNo string) (*model.GuaranteeFile, error) {
	f, err := c.s.store.With(ctx).File(orderNo)
	if err != nil {
		return nil, storeErr("file of "+orderNo, err)
	}
	return f, nil
}

func actionView(a model.ConsoleAction) ActionView {
	return ActionView{ID: a.ID, At: a.CreatedAt, User: a.UserName, Role: a.Role, Action: a.Action, OrderNo: a.OrderNo,
		Target: a.Target, Result: a.Result, Detail: a.Detail}
}

// DeliveryQuery filters the console's deliveries.
type DeliveryQuery struct {
	Status  string // pending, delivered, dead; "" every one
	OrgCode string
	Cursor  string
	Limit   int
}

// DeliveryItem is one delivery with the project state it carries.
type DeliveryItem struct {
	ID, PushID    int64
	OrgCode       string
	Status        string
	Attempts      int
	NextAttemptAt *time.Time
	LastError     string
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
	ProjectCode   string
	LotCode       string
	ProjectName   string
	State         string // xmstate: 1 awarded, 2 failed tender, 3 terminated, 4 re-tender
}

// DeliveryPage is one page of deliveries, newest first, and how many dead
// ones the filter's institution has (what "retry every one" would re-arm).
type DeliveryPage struct {
	Items      []DeliveryItem
	NextCursor string
	Dead       int64
}

// Deliveries lists project-state deliveries newest first with a keyset
// cursor. Returns EInvalid (status, limit, cursor), EUnavailable.
func (c *Console) Deliveries(ctx context.Context, q DeliveryQuery) (*DeliveryPage, error) {
	if q.Status != "" && !slices.Contains([]string{model.DeliveryPending, model.DeliveryDelivered, model.DeliveryDead}, q.Status) {
		return nil, errf(EInvalid, "status", "unknown delivery status %q", q.Status)
	}
	limit, before, err := pageArgs(q.Limit, q.Cursor)
	if err != nil {
		return nil, err
	}
	st := c.s.store.With(ctx)
	rows, err := st.ListDeliveries(model.DeliveryFilter{Status: q.Status, OrgCode: q.OrgCode, BeforeID: before, Limit: limit + 1})
	if err != nil {
		return nil, storeErr("deliveries", err)
	}
	p := &DeliveryPage{}
	if len(rows) > limit {
		rows = rows[:limit]
		p.NextCursor = strconv.FormatInt(rows[limit-1].ID, 36)
	}
	for _, r := range rows {
		p.Items = append(p.Items, DeliveryItem{ID: r.ID, PushID: r.PushID, OrgCode: r.OrgCode, Status: r.Status,
			Attempts: r.Attempts, NextAttemptAt: r.NextAttemptAt, LastError: r.LastError, DeliveredAt: r.DeliveredAt,
			CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, ProjectCode: r.ProjectCode, LotCode: r.LotCode,
			ProjectName: r.ProjectName, State: r.State})
	}
	if p.Dead, err = st.CountDeadDeliveries(q.OrgCode); err != nil {
		return nil, storeErr("deliveries", err)
	}
	return p, nil
}

// pageArgs reads a page's limit (default 50, at most 500) and keyset cursor.
func pageArgs(limit int, cursor string) (int, int64, error) {
	if limit == 0 {
		limit = 50
	}
	if limit < 1 || limit > 500 {
		return 0, 0, errf(EInvalid, "limit", "limit must be 1 to 500")
	}
	var before int64
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 36, 64)
		if err != nil || n <= 0 {
			return 0, 0, errf(EInvalid, "cursor", "malformed cursor")
		}
		before = n
	}
	return limit, before, nil
}

// CallbackQuery filters the console's audit of callbacks.
type CallbackQuery struct {
	OrgCode, Kind, Result, Errcode, OrderNo string
	From, To                                time.Time // received in [from, to); zero is open
	Cursor                                  string
	Limit                                   int
}

// CallbackItem is one callback's audit record, without its body.
type CallbackItem struct {
	ID          int64
	OrgCode     string
	Kind        string
	OrderNo     string
	GuaranteeNo string
	Result      string
	Errcode     string
	Msg         string
	RemoteAddr  string
	RequestID   string
	BodySize    int64
	BodySha256  string
	ReceivedAt  time.Time
	Body        *CallbackBody // CallbackDetail only
}

// CallbackPage is one page of callbacks, newest first.
type CallbackPage struct {
	Items      []CallbackItem
	NextCursor string
}

// Callbacks lists the audit of callbacks newest first with a keyset
// cursor (model.ListCallbacks). Returns EInvalid (result, limit, cursor),
// EUnavailable.
func (c *Console) Callbacks(ctx context.Context, q CallbackQuery) (*CallbackPage, error) {
	if q.Result != "" && !slices.Contains([]string{model.CallbackAccepted, model.CallbackDuplicate, model.CallbackLate,
		model.CallbackRejected}, q.Result) {
		return nil, errf(EInvalid, "result", "unknown result %q", q.Result)
	}
	limit, before, err := pageArgs(q.Limit, q.Cursor)
	if err != nil {
		return nil, err
	}
	rows, err := c.s.store.With(ctx).ListCallbacks(model.CallbackFilter{OrgCode: q.OrgCode, Kind: q.Kind, Result: q.Result,
		Errcode: q.Errcode, OrderNo: q.OrderNo, From: q.From, To: q.To, BeforeID: before, Limit: limit + 1})
	if err != nil {
		return nil, storeErr("callbacks", err)
	}
	p := &CallbackPage{}
	if len(rows) > limit {
		rows = rows[:limit]
		p.NextCursor = strconv.FormatInt(rows[limit-1].ID, 36)
	}
	for _, r := range rows {
		p.Items = append(p.Items, callbackItem(r))
	}
	return p, nil
}

func callbackItem(r model.Callback) CallbackItem {
	return CallbackItem{ID: r.ID, OrgCode: r.OrgCode, Kind: r.Kind, OrderNo: r.OrderNo, GuaranteeNo: r.GuaranteeNo,
		Result: r.Result, Errcode: r.Errcode, Msg: r.Msg, RemoteAddr: r.RemoteAddr, RequestID: r.RequestID,
		BodySize: r.BodySize, BodySha256: r.BodySha256, ReceivedAt: r.ReceivedAt}
}

// Refusals counts the callbacks refused since `since` by institution and
// errcode, most first: "100002 fifteen times from BANK01 today" reads as
// a wrong key at once. Returns EUnavailable.
func (c *Console) Refusals(ctx context.Context, since time.Time) ([]model.CallbackCount, error) {
	n, err := c.s.store.With(ctx).CountRefusalsSince(since)
	if err != nil {
		return nil, storeErr("refusals", err)
	}
	return n, nil
}

// CallbackDetail returns one callback with its body decrypted and masked.
// Returns ENotFound, EUnavailable.
func (c *Console) CallbackDetail(ctx context.Context, id int64) (*CallbackItem, error) {
	r, err := c.s.store.With(ctx).Callback(id)
	if err != nil {
		return nil, storeErr("callback "+strconv.FormatInt(id, 10), err)
	}
	it := callbackItem(*r)
	inst, _ := c.s.insts.ByOrgCode(r.OrgCode)
	b := showBody(inst, r.Body, bodyKept(r.BodySha256, r.BodySize))
	it.Body = &b
	return &it, nil
}

// FindingsDay is one day of reconciliation findings, with the days before
// and after that have any.
type FindingsDay struct {
	Date, Prev, Next string
	Items            []model.FindingRecord
	Open             int
}

// FindingsOn returns the findings of a day (YYYY-MM-DD; "" the latest day
// with findings, else today). Returns EInvalid (date), EUnavailable.
func (c *Console) FindingsOn(ctx context.Context, date string) (*FindingsDay, error) {
	st := c.s.store.With(ctx)
	if date == "" {
		latest, err := st.LatestFindingDate()
		if err != nil {
			return nil, storeErr("findings", err)
		}
		date = latest
		if date == "" {
			date = c.s.now().Format(time.DateOnly)
		}
	}
	if d, err := time.Parse(time.DateOnly, date); err != nil || d.Format(time.DateOnly) != date {
		return nil, errf(EInvalid, "date", "date must be a day as YYYY-MM-DD")
	}
	items, err := st.FindingRecords(date)
	if err != nil {
		return nil, storeErr("findings", err)
	}
	day := &FindingsDay{Date: date, Items: items}
	for _, f := range items {
		if f.ResolvedAt == nil {
			day.Open++
		}
	}
	if day.Prev, day.Next, err = st.FindingDates(date); err != nil {
		return nil, storeErr("findings", err)
	}
	return day, nil
}

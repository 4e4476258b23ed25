package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// checkOrderNo refuses an orderno of the API that is not of its form
// (wire.CheckAPIOrderNo): EInvalid naming orderno, rather than a lookup of
// a string that no order can have.
func checkOrderNo(orderNo string) error {
	if fe := wire.CheckAPIOrderNo("orderno", orderNo); fe != nil {
		return invalid(fe)
	}
	return nil
}

// View returns the order as stored. Returns EInvalid (orderno), ENotFound,
// EUnavailable.
func (s *Service) View(ctx context.Context, orderNo string) (*OrderView, error) {
	if err := checkOrderNo(orderNo); err != nil {
		return nil, err
	}
	o, err := s.store.With(ctx).Order(orderNo)
	if err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	return s.view(ctx, o)
}

func (s *Service) view(ctx context.Context, o *model.Order) (*OrderView, error) {
	f, err := s.store.With(ctx).FileInfo(o.OrderNo)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return nil, storeErr("file of "+o.OrderNo, err)
	}
	return viewOf(o, f), nil
}

// ListQuery is GET /v1/guarantees' filter (and the console's).
type ListQuery struct {
	ProjectCode, LotCode, Status, OrgCode, ApplicantCode, Flag string
	// Search is an orderno, bhno, qycode or xmcode, or the start of a qyname.
	Search string
	// From and To bound the orders' creation: [from, to); zero is open.
	From, To time.Time
	Limit    int
	Cursor   string
}

// OrderPage is one page of orders, newest first.
type OrderPage struct {
	Items      []*OrderView `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// List returns orders newest first with a keyset cursor (stable while new
// orders arrive). Returns EInvalid (status, limit, cursor), EUnavailable.
func (s *Service) List(ctx context.Context, q ListQuery) (*OrderPage, error) {
	if q.Status != "" && !slices.Contains(model.AllStatuses, model.Status(q.Status)) {
		return nil, errf(EInvalid, "status", "unknown status %q", q.Status)
	}
	if q.Flag != "" && !slices.Contains(model.AllFlags, model.Flag(q.Flag)) {
		return nil, errf(EInvalid, "flag", "unknown flag %q", q.Flag)
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 500 {
		return nil, errf(EInvalid, "limit", "limit must be 1 to 500")
	}
	var before int64
	if q.Cursor != "" {
		n, err := strconv.ParseInt(q.Cursor, 36, 64)
		if err != nil || n <= 0 {
			return nil, errf(EInvalid, "cursor", "malformed cursor")
		}
		before = n
	}
	// One more than asked tells whether a next page exists, so that the
	// last page carries no cursor to an empty one.
	orders, err := s.store.With(ctx).ListOrders(model.OrderFilter{ProjectCode: q.ProjectCode, LotCode: q.LotCode,
		Status: model.Status(q.Status), OrgCode: q.OrgCode, ApplicantCode: q.ApplicantCode, Flag: model.Flag(q.Flag),
		Search: q.Search, CreatedFrom: q.From, CreatedTo: q.To,
		BeforeID: before, Limit: q.Limit + 1})
	if err != nil {
		return nil, storeErr("list", err)
	}
	more := len(orders) > q.Limit
	if more {
		orders = orders[:q.Limit]
	}
	nos := make([]string, len(orders))
	for i := range orders {
		nos[i] = orders[i].OrderNo
	}
	files, err := s.store.With(ctx).FileInfos(nos)
	if err != nil {
		return nil, storeErr("list", err)
	}
	page := &OrderPage{Items: make([]*OrderView, 0, len(orders))}
	for i := range orders {
		page.Items = append(page.Items, viewOf(&orders[i], files[orders[i].OrderNo]))
	}
	if more {
		page.NextCursor = strconv.FormatInt(orders[len(orders)-1].ID, 36)
	}
	return page, nil
}

// Refresh asks the order's queryurl now and applies the answer, as the poll
// job does. Returns EInvalid (orderno), ENotFound, EConflict (no queryurl
// yet, or one off the institution's origins), EUpstream, EUnavailable.
func (s *Service) Refresh(ctx context.Context, orderNo string) (*OrderView, error) {
	if err := checkOrderNo(orderNo); err != nil {
		return nil, err
	}
	o, err := s.store.With(ctx).Order(orderNo)
	if err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	inst, ok := s.insts.ByOrgCode(o.OrgCode)
	if !ok || o.QueryURL == "" {
		return nil, errf(EConflict, "", "order %s has no queryurl yet (status %s)", orderNo, o.Status)
	}
	if err := s.query(ctx, inst, o); err != nil {
		return nil, err
	}
	return s.View(ctx, orderNo)
}

// query calls queryurl and applies the answer in one transaction.
func (s *Service) query(ctx context.Context, inst *Institution, o *model.Order) error {
	res, err := inst.Client.Query(ctx, o.QueryURL, o.OrderNo)
	if client.KindOf(err) == client.KindURLRefused {
		return s.urlRefused(ctx, inst, o, "queryurl", err)
	}
	if err != nil {
		return upstream(inst, err)
	}
	p := progress{state: res.Status, guaranteeNo: res.GuaranteeNo, remark: res.Describe, source: "query", issuedAt: res.DealtAt}
	if res.Status != wire.NotifyIssued {
		p.issuedAt = time.Time{}
	}
	err = s.store.InTx(model.WithOp(ctx, "query"), func(tx model.Queries) error {
		cur, err := tx.Order(o.OrderNo)
		if err != nil {
			return err
		}
		if _, err = s.applyProgress(tx, cur, p); err != nil || cur.Flag != model.FlagURLRefused {
			return err
		}
		// Its queryurl was called after all (its origin since allowed).
		_, err = tx.UpdateOrder(o.OrderNo, model.OrderChange{}.Flag(model.FlagNone), model.OrderGuard{})
		return err
	})
	var ce *callbackErr
	if errors.As(err, &ce) {
		if ce.code == wire.CodeConflict {
			return &Error{Code: EConflict, Message: ce.msg, Err: err}
		}
		return &Error{Code: EUnavailable, Message: ce.msg, Err: err}
	}
	if err != nil {
		return storeErr("query "+o.OrderNo, err)
	}
	return nil
}

// upstream maps an institution's failure for the API.
func upstream(inst *Institution, err error) error {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Kind == client.KindURLRefused {
		return &Error{Code: EConflict, Message: fmt.Sprintf("%s: %s; not called", inst.OrgCode, callCause(err)), Err: err}
	}
	if errors.As(err, &ce) && ce.Kind == client.KindRefused {
		return &Error{Code: EUpstream, Message: fmt.Sprintf("%s answered errcode %s: %s", inst.OrgCode, ce.Errcode, ce.Msg), Err: err}
	}
	kind := client.KindOf(err)
	if kind == "" {
		kind = "error"
	}
	return &Error{Code: EUpstream, Message: fmt.Sprintf("%s did not answer usefully (%s)", inst.OrgCode, kind), Err: err}
}

// Cancel asks the institution's cancelurl to cancel an issued guarantee
// (baohanno = bhno). stat 1 → cancelling; the release callback ends it.
// Returns EInvalid (orderno), ENotFound, EConflict (not issued, no cancelurl
// or bhno, or a cancelurl off the institution's origins), EUpstream (stat 0
// or no answer: status unchanged), EUnavailable.
func (s *Service) Cancel(ctx context.Context, orderNo string) (*OrderView, error) {
	if err := checkOrderNo(orderNo); err != nil {
		return nil, err
	}
	o, err := s.store.With(ctx).Order(orderNo)
	if err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	switch {
	case next(o.Status, evCancelAccepted).act != actMove:
		return nil, errf(EConflict, "", "order %s is %s; only an issued guarantee can be cancelled", orderNo, o.Status)
	case o.CancelURL == "":
		return nil, errf(EConflict, "", "the institution gave no cancelurl for order %s", orderNo)
	case o.GuaranteeNo.String == "":
		return nil, errf(EConflict, "", "order %s has no guarantee number yet", orderNo)
	}
	inst, ok := s.insts.ByOrgCode(o.OrgCode)
	if !ok {
		return nil, errf(EConflict, "", "institution %s is no longer configured", o.OrgCode)
	}
	// Once sent, what the institution answers is recorded even if the
	// bidding module stops waiting; the call is bounded by its timeout.
	ctx = context.WithoutCancel(ctx)
	err = inst.Client.Cancel(ctx, o.CancelURL, o.OrderNo, o.GuaranteeNo.String)
	if client.KindOf(err) == client.KindURLRefused {
		return nil, s.urlRefused(ctx, inst, o, "cancelurl", err)
	}
	if err != nil {
		return nil, upstream(inst, err)
	}
	change := model.OrderChange{}.NotDue()
	if o.Flag == model.FlagURLRefused {
		change = change.Flag(model.FlagNone) // its cancelurl was called after all
	}
	err = s.store.InTx(model.WithOp(ctx, "cancel"), func(tx model.Queries) error {
		to := model.StatusCancelling
		moved, err := tx.MoveOrder(orderNo, movesFrom(evCancelAccepted, to), to, change)
		if err != nil || !moved {
			return err
		}
		return tx.AddEvent(&model.Event{OrderNo: orderNo, Kind: model.EventStatus, Name: "cancel",
			FromStatus: string(o.Status), ToStatus: string(to), Detail: "cancelurl accepted"})
	})
	if err != nil {
		return nil, storeErr("cancel "+orderNo, err)
	}
	return s.View(ctx, orderNo)
}

// File returns the guarantee PDF. Not yet stored but issued with a bhno and
// a pullurl: pulled now, checked to be a PDF, stored with its sha256.
// Returns EInvalid (orderno), ENotFound, EConflict (not issued, no bhno
// yet, or a pullurl off the institution's origins), EUpstream (the
// institution failed, or sent no readable PDF), EUnavailable.
func (s *Service) File(ctx context.Context, orderNo string) (*model.GuaranteeFile, error) {
	if err := checkOrderNo(orderNo); err != nil {
		return nil, err
	}
	f, err := s.store.With(ctx).File(orderNo)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, model.ErrNotFound) {
		return nil, storeErr("file of "+orderNo, err)
	}
	o, err := s.store.With(ctx).Order(orderNo)
	if err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	if !issuedOrLater(o.Status) || o.GuaranteeNo.String == "" || o.PullURL == "" {
		return nil, errf(EConflict, "", "order %s is %s and has no guarantee file yet", orderNo, o.Status)
	}
	inst, ok := s.insts.ByOrgCode(o.OrgCode)
	if !ok {
		return nil, errf(EConflict, "", "institution %s is no longer configured", o.OrgCode)
	}
	if err := s.pull(ctx, inst, o); err != nil {
		return nil, err
	}
	f, err = s.store.With(ctx).File(orderNo)
	if err != nil {
		return nil, storeErr("file of "+orderNo, err)
	}
	return f, nil
}

func issuedOrLater(st model.Status) bool {
	return st == model.StatusIssued || st == model.StatusCancelling || st == model.StatusCancelled || st == model.StatusSurrendered
}

// pull fetches the PDF through pullurl and stores it once.
//
// A file that is not a readable PDF is not stored: it is counted, the
// order gets an event, and the pull is tried again on the job's back-off
// (docs/decisions.md §37).
func (s *Service) pull(ctx context.Context, inst *Institution, o *model.Order) error {
	res, err := inst.Client.Pull(ctx, o.PullURL, o.OrderNo, o.GuaranteeNo.String)
	switch {
	case client.KindOf(err) == client.KindURLRefused:
		return s.urlRefused(ctx, inst, o, "pullurl", err)
	case errors.Is(err, wire.ErrNotPDF):
		s.metrics.FileRefused(inst.OrgCode, "pull")
		ev := &model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "file_refused",
			Detail: truncate("pulled file not stored: "+callCause(err)+"; pulled again later", 512)}
		if eerr := s.store.Do(model.WithOp(context.WithoutCancel(ctx), "pull"), func(q model.Queries) error {
			ev.ID = 0
			return q.AddEvent(ev)
		}); eerr != nil {
			s.logger(ctx).WithError(eerr).WithField("orderno", o.OrderNo).Error("file_refused event not stored")
		}
		return upstream(inst, err)
	case err != nil:
		return upstream(inst, err)
	}
	err = s.store.InTx(model.WithOp(ctx, "pull"), func(tx model.Queries) error {
		err := tx.InsertFile(fileRow(o.OrderNo, o.GuaranteeNo.String, "pull", res.File))
		if errors.Is(err, model.ErrDuplicate) {
			err = nil // stored meanwhile by a callback or another pull
		} else if err == nil {
			err = tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "file",
				Detail: fmt.Sprintf("guarantee PDF pulled (%d bytes)", len(res.File))})
		}
		if err != nil {
			return err
		}
		_, err = tx.UpdateOrder(o.OrderNo, model.OrderChange{}.FilePending(false).Flag(model.FlagNone).NotDue().Attempts(0), model.OrderGuard{})
		return err
	})
	if err != nil {
		return storeErr("pull "+o.OrderNo, err)
	}
	return nil
}

// Verification is the answer of 验真.
type Verification struct {
	Match       bool         `json:"match"`
	Sha256      string       `json:"sha256"`
	OrderNo     string       `json:"orderno,omitempty"`
	GuaranteeNo string       `json:"bhno,omitempty"`
	OrgCode     string       `json:"orgcode,omitempty"`
	Status      model.Status `json:"status,omitempty"`
	// Valid: the guarantee still stands (issued, or cancelling and not yet
	// cancelled or surrendered), and the file is a readable PDF.
	Valid bool `json:"valid"`
	// Note says why a file that matches is not valid, when it is not.
	Note string `json:"note,omitempty"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// Verify (验真) tells whether a file is a guarantee we received, by its
// sha256, and whether it still stands and is a readable PDF. body is the PDF itself or
// {"sha256": "..."}. Returns EInvalid, EUnavailable.
func (s *Service) Verify(ctx context.Context, body []byte) (*Verification, error) {
	var sum string
	var file []byte // the bytes of the file, once read
	switch {
	case wire.IsPDF(body):
		h := sha256.Sum256(body)
		sum = hex.EncodeToString(h[:])
		file = body // the stored file's bytes, should it match: same digest
	default:
		var req struct {
			Sha256 string `json:"sha256"`
		}
		if json.Unmarshal(body, &req) != nil || !sha256Hex.MatchString(req.Sha256) {
			return nil, errf(EInvalid, "sha256", "send the PDF itself, or {\"sha256\": \"<64 hex digits>\"}")
		}
		sum = hexLower(req.Sha256)
	}
	files, err := s.store.With(ctx).FilesBySha256(sum)
	if err != nil {
		return nil, storeErr("verify", err)
	}
	v := &Verification{Sha256: sum}
	for _, f := range files {
		o, err := s.store.With(ctx).Order(f.OrderNo)
		if err != nil {
			return nil, storeErr("verify", err)
		}
		v.Match, v.OrderNo, v.GuaranteeNo, v.OrgCode, v.Status = true, o.OrderNo, o.GuaranteeNo.String, o.OrgCode, o.Status
		v.Valid = o.Status == model.StatusIssued || o.Status == model.StatusCancelling
		if v.Valid {
			break
		}
	}
	if v.Valid {
		// A file is a guarantee only if it is a document: one stored
		// before files were checked may be a few bytes that merely start
		// like a PDF (docs/decisions.md §37).
		if file == nil {
			f, err := s.store.With(ctx).File(v.OrderNo)
			if err != nil {
				return nil, storeErr("verify", err)
			}
			file = f.Content
		}
		if err := wire.CheckPDF(file); err != nil {
			v.Valid, v.Note = false, truncate("the stored file is not a readable PDF: "+err.Error(), 256)
		}
	}
	return v, nil
}

func hexLower(s string) string {
	b, _ := hex.DecodeString(s)
	return hex.EncodeToString(b)
}

// Events returns everything that happened to an order, oldest first: its
// status changes and notes, every callback about it, every call made for it.
// Returns EInvalid (orderno), ENotFound, EUnavailable.
func (s *Service) Events(ctx context.Context, orderNo string) ([]EventView, error) {
	if err := checkOrderNo(orderNo); err != nil {
		return nil, err
	}
	st := s.store.With(ctx)
	if _, err := st.Order(orderNo); err != nil {
		return nil, storeErr("order "+orderNo, err)
	}
	evs, err := st.Events(orderNo)
	if err != nil {
		return nil, storeErr("events", err)
	}
	cbs, err := st.Callbacks(orderNo)
	if err != nil {
		return nil, storeErr("events", err)
	}
	calls, err := st.Calls(orderNo)
	if err != nil {
		return nil, storeErr("events", err)
	}
	out := make([]EventView, 0, len(evs)+len(cbs)+len(calls))
	for _, e := range evs {
		out = append(out, EventView{ID: e.ID, At: wire.Millis{Time: e.CreatedAt}, Source: "event", Kind: e.Kind, Name: e.Name,
			From: e.FromStatus, To: e.ToStatus, Detail: e.Detail})
	}
	for _, c := range cbs {
		out = append(out, EventView{ID: c.ID, At: wire.Millis{Time: c.ReceivedAt}, Source: "callback", Kind: model.EventCallback, Name: c.Kind,
			OrgCode: c.OrgCode, Result: c.Result, Errcode: c.Errcode, Detail: c.Msg, bodyKept: bodyKept(c.BodySha256, c.BodySize)})
	}
	for _, c := range calls {
		// The record is written when the answer is in; the status change
		// the answer caused follows within the same millisecond, so the
		// call is placed at its start, before it.
		sent := c.CreatedAt.Add(-time.Duration(c.LatencyMs) * time.Millisecond)
		out = append(out, EventView{ID: c.ID, At: wire.Millis{Time: sent}, Source: "call", Kind: model.EventCall, Name: c.Endpoint,
			OrgCode: c.OrgCode, Result: c.Result, Errcode: c.Errcode, HTTPStatus: c.HTTPStatus, LatencyMs: c.LatencyMs,
			URL: c.URL, Detail: c.Error})
	}
	// Records of one millisecond keep a sensible order: what came in, what
	// we did about it, then what we called.
	rank := map[string]int{"callback": 0, "event": 1, "call": 2}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := out[i].At.Truncate(time.Millisecond), out[j].At.Truncate(time.Millisecond)
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return rank[out[i].Source] < rank[out[j].Source]
	})
	return out, nil
}

// Quote is one institution's fee estimate, or why there is none.
type Quote struct {
	OrgCode     string       `json:"orgcode"`
	Name        string       `json:"name,omitempty"`
	Money       *wire.Amount `json:"money,omitempty"`
	Description string       `json:"describe,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// Cost asks one institution's /guarantee/cost. Returns EInvalid, EUpstream.
func (s *Service) Cost(ctx context.Context, body []byte) (*Quote, error) {
	var req struct {
		OrgCode       string          `json:"orgcode"`
		DepositAmount json.RawMessage `json:"bzjmoney"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errf(EInvalid, "body", "not a JSON object")
	}
	amount, ferr := wire.ParseMoney("bzjmoney", req.DepositAmount)
	if ferr != nil {
		return nil, invalid(ferr)
	}
	inst, ok := s.insts.ByOrgCode(req.OrgCode)
	if !ok || inst.Disabled {
		return nil, errf(EInvalid, "orgcode", "unknown or disabled institution %q", req.OrgCode)
	}
	q := s.quote(ctx, inst, amount)
	if q.Error != "" {
		return nil, &Error{Code: EUpstream, Message: q.Error}
	}
	return &q, nil
}

// Quotes asks every enabled institution at once. Each is bounded by its own
// timeout, so one that hangs shows as an error item without holding the
// others. Returns EInvalid.
func (s *Service) Quotes(ctx context.Context, deposit string) ([]Quote, error) {
	amount, ferr := wire.ParseMoney("bzjmoney", json.RawMessage(strconv.Quote(deposit)))
	if ferr != nil {
		return nil, invalid(ferr)
	}
	var insts []*Institution
	for _, in := range s.insts.All() {
		if !in.Disabled {
			insts = append(insts, in)
		}
	}
	out := make([]Quote, len(insts))
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.quote(ctx, in, amount)
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *Service) quote(ctx context.Context, inst *Institution, amount decimal.Decimal) Quote {
	// The whole quote, retries included, fits in the institution's timeout.
	ctx, cancel := context.WithTimeout(ctx, inst.Timeout)
	defer cancel()
	q := Quote{OrgCode: inst.OrgCode, Name: inst.Name}
	res, err := inst.Client.Cost(ctx, wire.CostRequest{DepositAmount: amount, OrgCode: inst.OrgCode})
	if err != nil {
		var e *Error
		errors.As(upstream(inst, err), &e)
		q.Error = e.Message
		return q
	}
	if res.Fee != nil {
		q.Money = &wire.Amount{Decimal: *res.Fee}
	}
	q.Description = res.Description
	return q
}

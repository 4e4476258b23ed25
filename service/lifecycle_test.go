package service

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// fakeClient is an institution that answers the apply and the cancel as
// told, without a network: the table test is about what the service does
// with an answer, and the real client's answers are tested in client/.
type fakeClient struct {
	InstitutionClient // any other call panics: the test makes none
	apply             func() (wire.ApplyResult, error)
}

func (f fakeClient) Apply(context.Context, wire.ApplyRequest) (wire.ApplyResult, error) {
	return f.apply()
}
func (f fakeClient) Cancel(context.Context, string, string, string) error { return nil }
func (f fakeClient) BreakerState() string                                 { return "closed" }
func (f fakeClient) CheckURL(string, string) error                        { return nil }

// lifecycleFixture is a service over a real store with one institution.
type lifecycleFixture struct {
	svc   *Service
	store *model.Store
	inst  *Institution
	n     int
}

func newLifecycleFixture(t *testing.T, store *model.Store) *lifecycleFixture {
	log := logrus.New()
	log.SetOutput(io.Discard)
	f := &lifecycleFixture{store: store, inst: &Institution{OrgCode: "BANKA", Timeout: time.Second}}
	f.svc = New(store, NewRegistry([]*Institution{f.inst}), SettingsFrom(config.Default()), log, nil)
	return f
}

// order stores an order in status st, with a bhno and the URLs an apply
// answer hands out, and returns its orderno.
func (f *lifecycleFixture) order(t *testing.T, st model.Status) string {
	t.Helper()
	f.n++
	no := fmt.Sprintf("LC%03d", f.n)
	now := time.Now().UTC()
	o := &model.Order{OrderNo: no, OrgCode: f.inst.OrgCode, Status: st, RequestHash: "h",
		GuaranteeNo:   sql.NullString{String: "BH-" + no, Valid: true},
		ApplicantName: "某某建设有限公司", ApplicantCode: fmt.Sprintf("91110000MA%08d", f.n),
		DepositAmount: decimal.RequireFromString("10000.00"), ProjectName: "道路工程", ProjectCode: "XM1",
		LotName: "一标段", LotCode: "BD1", OpeningAt: now.Add(72 * time.Hour), DeadlineAt: now.Add(48 * time.Hour),
		TendererName: "某某局", TendererCode: "12110000000000000X", AccountBank: "某银行", AccountName: "某某建设有限公司",
		AccountNo: "6222000011112222", ContactName: "张三", ContactPhone: "13800005678", ContactEmail: "a@b.cn",
		QueryURL: "http://127.0.0.1:9/q", PullURL: "http://127.0.0.1:9/p", CancelURL: "http://127.0.0.1:9/c"}
	if st == model.StatusApplying || st == model.StatusProcessing || st == model.StatusApplyRejected {
		o.GuaranteeNo = sql.NullString{} // not issued: no bhno yet
	}
	if err := f.store.CreateOrder(o); err != nil {
		t.Fatal(err)
	}
	return no
}

// notice is an applynotify of state for orderNo; an issuance carries the
// order's bhno (or other, when given) and, unless noFile, one fixed PDF.
func (f *lifecycleFixture) notice(orderNo, state, other string, noFile bool) *batchJob {
	bf := &batchFixture{}
	bhno := ""
	if state == wire.NotifyIssued {
		bhno = "BH-" + orderNo
		if other != "" {
			bhno = other + orderNo
		}
	}
	j := bf.notice(f.inst, orderNo, state, bhno, noFile)
	if j.notice.File != nil {
		// The same bytes on both paths, so that the files compare.
		j.notice.File = []byte("%PDF-1.4\n% the letter\n%%EOF\n")
		j.key = dedupKey(KindApplyNotify, f.inst.OrgCode, orderNo, state, bhno, fmt.Sprintf("%x", sha256Sum(j.notice.File)))
	}
	return j
}

// TestLifecycleTable walks every (status, event) pair of the lifecycle
// table through every path that takes the event, and checks that the
// order ends where the table says. The applynotify events go through both
// the one-by-one path and the group commit (a batch with a plain notice
// beside it, so that it is a batch), and the two must leave the same rows:
// order, file, events and callbacks.
func TestLifecycleTable(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, store *model.Store) {
		f := newLifecycleFixture(t, store)
		ctx := context.Background()
		bf := &batchFixture{store: store}
		status := func(no string) model.Status { return bf.order(t, no).Status }

		notices := []struct {
			name   string
			ev     event
			state  string
			other  string // the prefix of another bhno than the order's
			noFile bool
		}{
			{"processing", evProcessing, wire.NotifyProcessing, "", false},
			{"failed", evFailed, wire.NotifyFailed, "", false},
			{"issued with its PDF", evIssued, wire.NotifyIssued, "", false},
			{"issued without its PDF", evIssued, wire.NotifyIssued, "", true},
			{"issued as another bhno", evIssued, wire.NotifyIssued, "BH-OTHER-", false},
		}
		for _, st := range model.AllStatuses {
			for _, nc := range notices {
				t.Run(string(st)+"/"+nc.name, func(t *testing.T) {
					alone, batched, filler := f.order(t, st), f.order(t, st), f.order(t, model.StatusProcessing)
					ja := f.notice(alone, nc.state, nc.other, nc.noFile)
					errAlone := f.svc.notifyOne(ctx, ja.in, ja.out, ja.notice, ja.key)

					jb := f.notice(batched, nc.state, nc.other, nc.noFile)
					f.svc.noticeBatch([]*batchJob{f.notice(filler, wire.NotifyProcessing, "", false), jb})
					errBatched := jb.err
					if !jb.handled {
						errBatched = f.svc.notifyOne(ctx, jb.in, jb.out, jb.notice, jb.key)
					}

					ta := strings.ReplaceAll(bf.trail(t, alone), alone, "X")
					tb := strings.ReplaceAll(bf.trail(t, batched), batched, "X")
					ea := strings.ReplaceAll(errString(errAlone), alone, "X")
					eb := strings.ReplaceAll(errString(errBatched), batched, "X")
					if ta != tb || ea != eb || ja.out.result != jb.out.result {
						t.Errorf("the paths differ.\none by one (%v, %s):\n%s\nbatched (handled %v; %v, %s):\n%s",
							errAlone, ja.out.result, ta, jb.handled, errBatched, jb.out.result, tb)
					}
					r := next(st, nc.ev)
					want := st
					if r.act == actMove {
						want = r.to
					}
					// An issuance told again under another bhno contradicts the stored one.
					refused := r.act == actRefuse || r.act == actComplete && nc.other != ""
					if got := status(alone); got != want || refused != isCode(errAlone, wire.CodeConflict) {
						t.Errorf("%s after %s: %s (%v), want %s (refused %v)", st, nc.name, got, errAlone, want, refused)
					}
					if r.act == actLate && ja.out.result != model.CallbackLate {
						t.Errorf("%s after %s: result %s, want late", st, nc.name, ja.out.result)
					}
				})
			}
		}

		t.Run("release", func(t *testing.T) {
			for _, st := range model.AllStatuses {
				for _, rc := range []struct {
					ev    event
					state string
				}{{evSurrendered, wire.ReleaseSurrendered}, {evCancelled, wire.ReleaseCancelled}} {
					no := f.order(t, st)
					if st == model.StatusApplying || st == model.StatusProcessing || st == model.StatusApplyRejected {
						// A release names a bhno: give this one a bhno to find it by.
						if _, err := store.UpdateOrder(no, model.OrderChange{}.GuaranteeNo("BH-"+no), model.OrderGuard{}); err != nil {
							t.Fatal(err)
						}
					}
					out := &receipt{inst: f.inst, result: model.CallbackAccepted}
					err := f.svc.release(ctx, CallbackInput{Kind: KindRelease, Body: []byte(no + rc.state)}, out,
						wire.Release{GuaranteeNo: "BH-" + no, State: rc.state})
					r := next(st, rc.ev)
					want := st
					if r.act == actMove {
						want = r.to
					}
					if got := status(no); got != want || (r.act != actMove) != isCode(err, wire.CodeConflict) {
						t.Errorf("%s after release %s: %s (%v), want %s", st, rc.state, got, err, want)
					}
				}
			}
		})

		t.Run("apply answer", func(t *testing.T) {
			links := wire.ApplyResult{ContinueURL: "https://bank.example/go", QueryURL: "https://bank.example/q",
				PullURL: "https://bank.example/p", CancelURL: "https://bank.example/c"}
			for _, st := range model.AllStatuses {
				for _, ac := range []struct {
					ev     event
					answer func() (wire.ApplyResult, error)
				}{
					{evApplyAccepted, func() (wire.ApplyResult, error) { return links, nil }},
					{evApplyRefused, func() (wire.ApplyResult, error) {
						return wire.ApplyResult{}, &client.Error{Kind: client.KindRefused, Errcode: "E1", Msg: "no"}
					}},
				} {
					no := f.order(t, st)
					f.inst.Client = fakeClient{apply: ac.answer}
					o := bf.order(t, no)
					_, err := f.svc.sendApply(ctx, f.inst, o)
					r := next(st, ac.ev)
					want := st
					if r.act == actMove {
						want = r.to
					}
					got := bf.order(t, no)
					if got.Status != want || r.act == actRefuse {
						t.Errorf("%s after %s: %s (%v), want %s (the table refuses no apply answer)", st, ac.ev, got.Status, err, want)
					}
					if ac.ev == evApplyAccepted && got.ContinueURL != links.ContinueURL {
						t.Errorf("%s after %s: the URLs were not kept", st, ac.ev)
					}
				}
			}
		})

		t.Run("cancel", func(t *testing.T) {
			f.inst.Client = fakeClient{}
			for _, st := range model.AllStatuses {
				no := f.order(t, st)
				_, err := f.svc.Cancel(ctx, no)
				r := next(st, evCancelAccepted)
				want := st
				if r.act == actMove {
					want = r.to
				}
				if got := status(no); got != want || (r.act != actMove) != (ErrorCode(err) == EConflict) {
					t.Errorf("%s after a cancel: %s (%v), want %s", st, got, err, want)
				}
			}
		})
	})
}

// TestLifecycleTableIsWhole: every status has a row, and a move goes to a
// status that exists; movesFrom agrees with the table.
func TestLifecycleTableIsWhole(t *testing.T) {
	for _, st := range model.AllStatuses {
		if _, ok := lifecycle[st]; !ok {
			t.Errorf("no row for %s", st)
		}
		for _, ev := range events {
			r := next(st, ev)
			if r.act == actMove && !slicesContains(model.AllStatuses, r.to) {
				t.Errorf("%s/%s moves to unknown %q", st, ev, r.to)
			}
			if r.act == actMove && !slicesContains(movesFrom(ev, r.to), st) {
				t.Errorf("movesFrom(%s, %s) lacks %s", ev, r.to, st)
			}
		}
	}
}

func errString(err error) string {
	var ce *callbackErr
	if errors.As(err, &ce) {
		return ce.code + " " + ce.msg
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func isCode(err error, code string) bool {
	var ce *callbackErr
	return errors.As(err, &ce) && ce.code == code
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func slicesContains[T comparable](s []T, v T) bool { return slices.Contains(s, v) }

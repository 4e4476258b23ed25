package loadtest

import (
	"context"
	"fmt"
	"strings"

	"github.com/procurement/gateway/model"
)

// Audit is the database check of one run: every acknowledged callback must
// have taken effect exactly once, and no repeat a second time.
type Audit struct {
	Acked     int // distinct callbacks acknowledged (stat 1) at least once
	NotAcked  int // distinct callbacks never acknowledged
	Lost      int // acknowledged, but no effect stored
	Doubled   int // more than one effect (payment row, accepted row, file) for one callback
	Unlinked  int // payment rows not tied to their accepted callback row
	StoredNak int // stored although never acknowledged (the sender would retry; harmless)
	// RepeatsAcked counts acknowledged requests beyond the first per
	// callback; DuplicateRows the audit rows the gateway wrote for repeats.
	RepeatsAcked  int
	DuplicateRows int64
	Problems      []string // the first few, for the report
}

// OK reports whether nothing was lost or doubled.
func (a *Audit) OK() bool { return a.Lost == 0 && a.Doubled == 0 && a.Unlinked == 0 }

const maxProblems = 10

func (a *Audit) problem(format string, args ...any) {
	if len(a.Problems) < maxProblems {
		a.Problems = append(a.Problems, fmt.Sprintf(format, args...))
	}
}

// verify reads what the run left in the database and holds it against the
// answers: per order, the paystate's payment row and accepted callback row,
// the applynotify's accepted row, guarantee number and file.
func verify(ctx context.Context, store *model.Store, p *plan, answers []answer) (*Audit, error) {
	trails, err := store.With(ctx).OrderTrails(p.runID)
	if err != nil {
		return nil, err
	}
	acks := make([]int, len(p.callbacks))
	for i, r := range p.requests {
		if i < len(answers) && answers[i].ok() {
			acks[r.cb]++
		}
	}
	a := &Audit{}
	for _, tr := range trails {
		for k, n := range tr.Callbacks {
			if strings.HasSuffix(k, "/"+model.CallbackDuplicate) {
				a.DuplicateRows += n
			}
		}
	}
	for i, cb := range p.callbacks {
		tr := trails[cb.orderNo]
		if tr == nil {
			tr = &model.OrderTrail{OrderNo: cb.orderNo, Callbacks: map[string]int64{}}
		}
		// effects: how many times the callback took effect; consistent:
		// its rows agree with each other (no file without its accepted row).
		var effects int64
		var consistent bool
		switch cb.kind {
		case kindPayState:
			effects = max(tr.Payments, tr.Callbacks["paystate/accepted"])
			consistent = tr.Payments == tr.Callbacks["paystate/accepted"] && tr.PaymentKeys == tr.Payments
			a.Unlinked += int(tr.PaymentsUnlinked)
			if tr.PaymentsUnlinked > 0 {
				a.problem("%s: %d payment rows not tied to their accepted callback", cb.orderNo, tr.PaymentsUnlinked)
			}
		case kindApplyNotify:
			effects = max(tr.Files, tr.Callbacks["applynotify/accepted"])
			issued := tr.Status == model.StatusIssued && tr.GuaranteeNo == "BH-"+cb.orderNo
			consistent = tr.Files == tr.Callbacks["applynotify/accepted"] && (effects == 0) != issued
		}
		acked := acks[i] > 0
		if acked {
			a.Acked++
			a.RepeatsAcked += acks[i] - 1
		} else {
			a.NotAcked++
		}
		switch {
		case effects > 1:
			a.Doubled++
			a.problem("%s %s: stored %d times", cb.orderNo, cb.kind, effects)
		case acked && effects == 0:
			a.Lost++
			a.problem("%s %s: acknowledged but not stored", cb.orderNo, cb.kind)
		case acked && !consistent:
			a.Lost++
			a.problem("%s %s: acknowledged but stored incompletely (%+v)", cb.orderNo, cb.kind, *tr)
		case !acked && effects == 1:
			a.StoredNak++
		}
	}
	return a, nil
}

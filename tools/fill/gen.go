package fill

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// shape is what becomes of an order: its status and, for a few, the flag
// that waits for an operator or the discrepancy planted in it.
type shape uint8

const (
	sIssued      shape = iota // issued, PDF stored
	sCancelled                // issued, then released: 注销
	sSurrendered              // issued, then released: 退保, half of them refunded
	sCancelling               // issued, cancelurl accepted, release not yet received
	sFailed                   // the institution declined after accepting
	sRejected                 // the apply was refused
	sStale                    // processing long after the bid opening: flagged, not polled
	sUnconfirmed              // applying, no definite answer after every retry: flagged
	sPullFailed               // issued, the PDF not pulled after many tries: flagged, still pulled hourly
	sProcessing               // due: polled
	sApplying                 // due: the apply is re-sent
	sPending                  // issued, PDF to pull: due
)

// The mix of shapes, per 10,000 orders: one for orders older than a week,
// whose story has ended (or stopped, flagged), one for the last week's,
// many still in flight.
var (
	oldMix = []weighted[shape]{{sIssued, 7540}, {sCancelled, 600}, {sSurrendered, 400}, {sCancelling, 10},
		{sFailed, 700}, {sRejected, 670}, {sStale, 50}, {sUnconfirmed, 10}, {sPullFailed, 20}}
	recentMix = []weighted[shape]{{sProcessing, 5000}, {sApplying, 1000}, {sPending, 2000}, {sIssued, 1500},
		{sFailed, 250}, {sRejected, 250}}
)

// recent is the age under which an order may still be in flight.
const recent = 7 * 24 * time.Hour

type weighted[T any] struct {
	v T
	w int
}

func pick[T any](rng *rand.Rand, ws []weighted[T]) T {
	total := 0
	for _, w := range ws {
		total += w.w
	}
	n := rng.IntN(total)
	for _, w := range ws {
		if n < w.w {
			return w.v
		}
		n -= w.w
	}
	return ws[len(ws)-1].v
}

// Discrepancies a fill plants on purpose, one order each, for the
// reconciliation to find (service/reconcile.go's finding kinds).
const (
	PlantIssuedUnpaid      = "issued_unpaid"
	PlantPremiumMismatch   = "premium_mismatch"
	PlantRefundWhileIssued = "refund_while_issued"
	PlantPaidNotIssued     = "paid_not_issued"
	PlantRefundExceedsPaid = "refund_exceeds_paid"
	PlantOrphanPayment     = "orphan_payment" // found as paid_not_issued, of an orderno no order has
)

var plantKinds = []string{PlantIssuedUnpaid, PlantPremiumMismatch, PlantRefundWhileIssued, PlantPaidNotIssued,
	PlantRefundExceedsPaid, PlantOrphanPayment}

// Planted is one discrepancy planted on purpose.
type Planted struct {
	Kind    string // Plant*
	Finding string // the kind of finding the reconciliation files for it
	OrderNo string
}

// chunk is a run of consecutive orders and every row they bring.
type chunk struct {
	idx     int
	rows    [numTables]rows
	planted []Planted
	shapes  [sPending + 1]int
	spent   [numTables + 1]time.Duration // in INSERTs, by table, and the commit
	due     int
}

// gen makes one chunk's rows. Everything is drawn from rng, seeded by the
// fill's seed and the chunk's index, so a fill is the same whatever the
// number of workers.
type gen struct {
	o    *Options
	rng  *rand.Rand
	c    *chunk
	inst []inst
	pdf  pdfFile
	now  time.Time
	proj *project
	// plants maps an order's index in the run to the discrepancy it carries.
	plants map[int]string
}

// project is the lot of bidders the orders of a run come in.
type project struct {
	name, code          string
	lots                int
	tenderer            int
	deposit             int64 // cents
	deadline, opening   time.Time
	a0                  int
	members, left       int
	lotOrgs             [3]uint64 // the institutions (bit per index) holding an order of each lot
	contact, contactIdx int
}

type pdfFile struct {
	lit   string // SQL literal
	sha   string
	size  int64
	bytes []byte // for applynotify bodies
}

// order makes order k of the run (id its id) and its rows.
func (g *gen) order(k int, id int64) {
	o, rng, now := g.o, g.rng, g.now
	c := g.c
	created := o.Now.Add(-o.Span).Add(time.Duration((float64(k) + rng.Float64()) / float64(o.Orders) * float64(o.Span-time.Minute)))
	created = created.Truncate(time.Millisecond)
	age := now.Sub(created)
	var sh shape
	if age < recent {
		sh = pick(rng, recentMix)
	} else {
		sh = pick(rng, oldMix)
		if (sh == sStale || sh == sUnconfirmed || sh == sPullFailed) && age < 60*24*time.Hour {
			sh = sIssued // a flag waits weeks before anyone looks: older orders only
		}
	}
	plant := g.plants[k]
	switch plant {
	case PlantIssuedUnpaid, PlantPremiumMismatch, PlantRefundWhileIssued, PlantOrphanPayment:
		sh = sIssued
	case PlantPaidNotIssued:
		sh = sFailed
	case PlantRefundExceedsPaid:
		sh = sSurrendered
	}
	c.shapes[sh]++

	if g.proj == nil || g.proj.left == 0 {
		g.newProject(created)
	}
	p := g.proj
	member := p.members - p.left
	p.left--
	lot := rng.IntN(p.lots)
	ii := pickInst(rng, g.inst)
	in := &g.inst[ii]
	p.lotOrgs[lot] |= 1 << ii
	a := (p.a0 + member*7919) % numApplicants // distinct within the project: one active order per bidder and lot

	no := o.Prefix + fmt.Sprintf("%010d", id)
	gno := ""
	issued := sh == sIssued || sh == sCancelled || sh == sSurrendered || sh == sCancelling || sh == sPullFailed || sh == sPending
	if issued {
		gno = "BH" + in.code + created.Format("20060102") + strconv.FormatInt(id, 10)
	}
	rate := int64(1000 + rng.IntN(21)*100) // micro: 0.1% .. 0.3%
	premium := max(p.deposit*rate/1_000_000, 20000)
	paid, refunded := int64(0), int64(0)

	ev := &c.rows[tEvents]
	calls := &c.rows[tCalls]
	t := created
	step := func(lo, hi time.Duration) time.Time {
		t = t.Add(lo + time.Duration(rng.Int64N(int64(hi-lo)+1))).Truncate(time.Millisecond)
		if t.After(now) {
			t = now
		}
		return t
	}
	event := func(kind, name string, from, to model.Status, detail string, refTab, refIdx int) {
		r := null()
		if refIdx >= 0 {
			r = ref(refTab, refIdx)
		}
		ev.add(str(no), str(kind), str(name), str(string(from)), str(string(to)), str(detail), r, at(t))
	}
	call := func(endpoint, url string, stat int, result, errText string) {
		st, code, status := num(int64(stat)), "000000", int64(200)
		switch {
		case result != "ok":
			st, code, status = null(), "", 0
			if result == "http" {
				status = 502
			}
		case stat == 0:
			code = "200002"
		}
		calls.add(str(in.code), str(no), str(endpoint), str(url), num(1), num(status), st, str(code), str(result),
			str(errText), num(int64(30+rng.IntN(900))), num(int64(300+rng.IntN(600))), num(int64(60+rng.IntN(300))), at(t))
	}
	// pay adds a paystate callback, its payment and its event.
	pay := func(kind string, cents int64) {
		step(5*time.Minute, 6*time.Hour)
		msg := wire.PayState{OrderNo: no, Amount: decimal.New(cents, -2), PaidAt: t, Kind: kind,
			PayerName: applicantName(a), PayerAccount: accountNo(a)}
		key := dedupKey("paystate", in.code, no, kind, strconv.FormatInt(t.UnixMilli(), 10), moneyText(cents))
		cb := g.callback(in, "paystate", no, "", &key, msg, model.CallbackAccepted, t)
		c.rows[tPayments].add(str(key), str(no), str(in.code), str(kind), money(cents), at(t), str(applicantName(a)),
			str(accountNo(a)), ref(tCallbacks, cb), at(t))
		what := "pay"
		if kind == wire.PayKindRefund {
			what, refunded = "refund", refunded+cents
		} else {
			paid += cents
		}
		event(model.EventNote, what, "", "", fmt.Sprintf("%s %s yuan at %s from %s", what, moneyText(cents),
			t.Format(time.RFC3339), maskAccount(accountNo(a))), tCallbacks, cb)
		if rng.IntN(100) < 3 { // the institution sent it twice
			t2 := t.Add(time.Duration(1+rng.IntN(60)) * time.Second)
			g.callback(in, "paystate", no, "", nil, msg, model.CallbackDuplicate, t2)
		}
	}

	// Quotes first, for some, then the apply.
	if rng.IntN(100) < 30 {
		t = created.Add(-time.Duration(1+rng.IntN(30)) * time.Minute)
		call("cost", in.base+"/guarantee/cost", 1, "ok", "")
		t = created
	}
	status := model.StatusApplying
	event(model.EventStatus, "apply", "", model.StatusApplying, "received from the bidding module", 0, -1)
	step(200*time.Millisecond, 3*time.Second)
	var queryURL, pullURL, cancelURL, continueURL, remark string
	var next *time.Time
	attempts := 0
	flag := model.FlagNone
	move := func(name string, to model.Status, detail string, refTab, refIdx int) {
		event(model.EventStatus, name, status, to, detail, refTab, refIdx)
		status = to
	}
	due := func(d time.Duration) {
		n := now.Add(d).Truncate(time.Millisecond)
		next = &n
	}
	switch sh {
	case sApplying, sUnconfirmed:
		call("apply", in.base+"/guarantee/apply", 0, "timeout", "context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
		if sh == sApplying {
			attempts = 1 + rng.IntN(3)
			due(time.Duration(rng.IntN(40)-20) * time.Minute)
		} else {
			attempts, flag = 10, model.FlagApplyUnconfirmed
			step(time.Hour, 24*time.Hour)
			event(model.EventNote, string(model.FlagApplyUnconfirmed), "", "", "no definite answer to the apply after 10 attempts; flagged for operators", 0, -1)
		}
	case sRejected:
		call("apply", in.base+"/guarantee/apply", 0, "ok", "")
		remark = "投标人资料不全,不予受理"
		move("apply", model.StatusApplyRejected, remark, 0, -1)
	default:
		call("apply", in.base+"/guarantee/apply", 1, "ok", "")
		base := in.base + "/eg/" + no
		continueURL, queryURL, pullURL, cancelURL = base+"/continue", base+"/query", base+"/pull", base+"/cancel"
		move("apply", model.StatusProcessing, "accepted by the institution", 0, -1)
	}

	switch sh {
	case sProcessing:
		if rng.IntN(100) < 30 {
			step(10*time.Minute, 2*time.Hour)
			call("query", queryURL, 1, "ok", "")
		}
		attempts = rng.IntN(4)
		due(time.Duration(rng.IntN(40)-20) * time.Minute)
	case sStale:
		step(time.Hour, 6*time.Hour)
		call("query", queryURL, 1, "ok", "")
		t = p.opening.Add(72 * time.Hour)
		flag = model.FlagStale
		event(model.EventNote, "stale", "", "", "still processing 72h0m0s after the bid opening; polling stopped, flagged for operators", 0, -1)
	case sFailed:
		if plant == PlantPaidNotIssued || rng.IntN(100) < 15 {
			pay(wire.PayKindPay, premium)
		}
		step(10*time.Minute, 24*time.Hour)
		call("query", queryURL, 1, "ok", "")
		remark = "审核未通过"
		move("query", model.StatusFailed, remark, 0, -1)
		if paid > 0 && plant != PlantPaidNotIssued {
			pay(wire.PayKindRefund, paid)
		}
	}

	var issuedAt time.Time
	fileSource := ""
	if issued {
		if plant != PlantIssuedUnpaid {
			amount := premium
			if plant == PlantPremiumMismatch {
				amount = premium - 5000
			}
			pay(wire.PayKindPay, amount)
		}
		step(10*time.Minute, 24*time.Hour)
		issuedAt = t
		remark = "审核通过,保函已开具"
		switch {
		case sh == sPending || sh == sPullFailed:
			call("query", queryURL, 1, "ok", "")
			move("query", model.StatusIssued, remark, 0, -1)
			step(time.Second, 10*time.Second)
			call("pull", pullURL, 0, "http", "http 502 from the institution")
			if sh == sPending {
				attempts = 1 + rng.IntN(3)
				due(time.Duration(rng.IntN(40)-20) * time.Minute)
			} else {
				attempts, flag = 30, model.FlagPullFailed
				event(model.EventNote, "pull_failed", "", "", "the guarantee PDF could not be pulled in 30 attempts; still tried hourly", 0, -1)
				due(time.Duration(rng.IntN(60)) * time.Minute)
			}
		case rng.IntN(100) < 25:
			fileSource = "notify"
			msg := wire.ApplyNotify{OrderNo: no, GuaranteeNo: gno, State: wire.NotifyIssued, Remark: remark,
				PremiumRate: decimal.New(rate, -6), Premium: decimal.New(premium, -2), IssuerName: in.name,
				IssuerAddress: in.address, IssuerPhone: in.phone, IssuedAt: t, File: g.pdf.bytes}
			key := dedupKey("applynotify", in.code, no, wire.NotifyIssued, gno, g.pdf.sha)
			cb := g.callback(in, "applynotify", no, gno, &key, msg, model.CallbackAccepted, t)
			move("applynotify", model.StatusIssued, remark, tCallbacks, cb)
		default:
			fileSource = "pull"
			call("query", queryURL, 1, "ok", "")
			move("query", model.StatusIssued, remark, 0, -1)
			step(time.Second, 10*time.Second)
			call("pull", pullURL, 1, "ok", "")
		}
		if fileSource != "" {
			c.rows[tFiles].add(str(no), str(gno), str(g.pdf.sha), num(g.pdf.size), str(fileSource), raw(g.pdf.lit), at(t))
		}
		switch sh {
		case sCancelled, sSurrendered:
			step(30*24*time.Hour, 200*24*time.Hour)
			state := wire.ReleaseCancelled
			to := model.StatusCancelled
			if sh == sSurrendered {
				state, to = wire.ReleaseSurrendered, model.StatusSurrendered
			}
			key := dedupKey("release", in.code, gno, state)
			cb := g.callback(in, "release", no, gno, &key, release{wire.Release{GuaranteeNo: gno, State: state}}, model.CallbackAccepted, t)
			move("release", to, "", tCallbacks, cb)
			switch {
			case plant == PlantRefundExceedsPaid:
				pay(wire.PayKindRefund, paid+10000)
			case sh == sSurrendered && rng.IntN(2) == 0:
				pay(wire.PayKindRefund, paid/2)
			}
		case sCancelling:
			step(30*24*time.Hour, 60*24*time.Hour)
			call("cancel", cancelURL, 1, "ok", "")
			move("cancel", model.StatusCancelling, "cancel accepted by the institution", 0, -1)
		}
		if plant == PlantRefundWhileIssued {
			pay(wire.PayKindRefund, 5000)
		}
	}
	if plant != "" {
		finding := plant
		if plant == PlantOrphanPayment {
			finding = PlantPaidNotIssued
			// A payment of an orderno the gateway never had, tied to its
			// own accepted paystate.
			orphan := o.Prefix + "X" + fmt.Sprintf("%09d", id)
			t2 := t
			key := dedupKey("paystate", in.code, orphan, wire.PayKindPay, strconv.FormatInt(t2.UnixMilli(), 10), "300.00")
			msg := wire.PayState{OrderNo: orphan, Amount: decimal.New(30000, -2), PaidAt: t2, Kind: wire.PayKindPay,
				PayerName: applicantName(a), PayerAccount: accountNo(a)}
			cb := g.callback(in, "paystate", orphan, "", &key, msg, model.CallbackAccepted, t2)
			c.rows[tPayments].add(str(key), str(orphan), str(in.code), str(wire.PayKindPay), money(30000), at(t2),
				str(applicantName(a)), str(accountNo(a)), ref(tCallbacks, cb), at(t2))
			c.planted = append(c.planted, Planted{Kind: plant, Finding: finding, OrderNo: orphan})
		} else {
			c.planted = append(c.planted, Planted{Kind: plant, Finding: finding, OrderNo: no})
		}
	}
	if next != nil {
		c.due++
	}

	active := null()
	if status.Active() {
		active = num(1)
	}
	gnoVal, rateVal, premVal, issuedVal := null(), null(), null(), null()
	issuerName, issuerAddr, issuerPhone := "", "", ""
	if issued {
		gnoVal, rateVal, premVal, issuedVal = str(gno), raw(decimal.New(rate, -6).StringFixed(6)), money(premium), at(issuedAt)
		issuerName, issuerAddr, issuerPhone = in.name, in.address, in.phone
	}
	nextVal := null()
	if next != nil {
		nextVal = at(*next)
	}
	h := sha256.Sum256([]byte(no))
	contact := p.contact + member
	c.rows[tOrders].add(str(no), str(in.code), str(string(status)), active, gnoVal, str(hex.EncodeToString(h[:])),
		str(applicantName(a)), str(applicantCode(a)), money(p.deposit), str(p.name), str(p.code), str(lotNames[lot]),
		str(p.code+"-"+strconv.Itoa(lot+1)), at(p.opening), str(tendererName(p.tenderer)), str(tendererCode(p.tenderer)),
		at(p.deadline), str(banks[a%len(banks)]), str(applicantName(a)), str(accountNo(a)),
		str(personName(contact)), str(fmt.Sprintf("13%09d", (int64(a)*104729)%1_000_000_000)), str(fmt.Sprintf("bid%05d@example.cn", a)),
		str(continueURL), str(queryURL), str(pullURL), str(cancelURL),
		rateVal, premVal, str(issuerName), str(issuerAddr), str(issuerPhone), issuedVal, str(remark),
		money(paid), money(refunded), boolInt(sh == sPending || sh == sPullFailed), nextVal, num(int64(attempts)),
		str(string(flag)), at(created), at(t))
}

// release marshals a wire.Release, which has no MarshalJSON of its own.
type release struct{ wire.Release }

func (r release) MarshalJSON() ([]byte, error) { return json.Marshal(r.Release) }

// callback adds the audit row of a callback with its sealed body.
func (g *gen) callback(in *inst, kind, no, gno string, key *string, msg json.Marshaler, result string, t time.Time) int {
	plain, err := msg.MarshalJSON()
	if err != nil {
		panic(fmt.Sprintf("fill: marshal %s: %v", kind, err)) // only the types above: cannot fail
	}
	text, err := in.cipher.Encrypt(plain)
	if err != nil {
		panic(fmt.Sprintf("fill: encrypt %s: %v", kind, err))
	}
	// The envelope: base64 needs no JSON escape.
	body := `{"data":"` + string(text) + `"}`
	k := null()
	if key != nil {
		k = str(*key)
	}
	var rid [8]byte
	for i := range rid {
		rid[i] = byte(g.rng.Uint32())
	}
	return g.c.rows[tCallbacks].add(str(in.code), str(kind), str(no), str(gno), k, str(body),
		str(sha256Hex([]byte(body))), num(int64(len(body))), str(result), str("000000"), str(""),
		str(in.addr), str(hex.EncodeToString(rid[:])), at(t))
}

// newProject starts the project the next orders bid on.
func (g *gen) newProject(created time.Time) {
	g.endProject()
	rng := g.rng
	n := g.c.rows[tOrders].n
	deposits := []int64{5_000, 10_000, 20_000, 50_000, 80_000, 100_000, 200_000, 300_000, 500_000, 800_000}
	p := &project{
		name:     cities[rng.IntN(len(cities))] + works[rng.IntN(len(works))],
		code:     fmt.Sprintf("%sXM%s%07d", g.o.Prefix, created.Format("2006"), int64(g.c.idx)*int64(g.o.Chunk)+int64(n)+g.o.firstOrderID),
		lots:     1 + rng.IntN(3),
		tenderer: rng.IntN(400),
		deposit:  deposits[rng.IntN(len(deposits))] * 100,
		a0:       rng.IntN(numApplicants),
		members:  1 + rng.IntN(16),
		contact:  rng.IntN(256),
	}
	p.left = p.members
	p.deadline = created.Add(time.Duration(2+rng.IntN(19)) * 24 * time.Hour).Truncate(time.Hour)
	p.opening = p.deadline.Add(time.Duration(rng.IntN(3)) * time.Hour)
	g.proj = p
}

// endProject announces the final state of some of the last project's lots
// (opened a while ago) to the institutions holding an order of each.
func (g *gen) endProject() {
	p := g.proj
	if p == nil {
		return
	}
	g.proj = nil
	rng, now := g.rng, g.now
	for lot := 0; lot < p.lots; lot++ {
		if p.lotOrgs[lot] == 0 || rng.IntN(100) >= 37 || !p.opening.Add(24*time.Hour).Before(now) {
			continue
		}
		created := p.opening.Add(time.Duration(1+rng.IntN(10*24)) * time.Hour)
		if created.After(now) {
			created = now.Add(-time.Minute)
		}
		state := pick(rng, []weighted[string]{{"1", 70}, {"2", 15}, {"3", 5}, {"4", 10}})
		push := g.c.rows[tPushes].add(str(p.name), str(p.code), str(lotNames[lot]), str(p.code+"-"+strconv.Itoa(lot+1)),
			at(p.opening), str(state), at(created))
		for i := range g.inst {
			if p.lotOrgs[lot]&(1<<i) == 0 {
				continue
			}
			in := &g.inst[i]
			var status, lastErr string
			attempts, next, delivered, updated := int64(1), null(), null(), created
			switch r := rng.IntN(100); {
			case r < 95:
				status = model.DeliveryDelivered
				updated = created.Add(time.Duration(50+rng.IntN(2000)) * time.Millisecond)
				delivered = at(updated)
			case r < 98:
				status, attempts, lastErr = model.DeliveryDead, 12, "http 502 from the institution"
				updated = created.Add(48 * time.Hour)
			default:
				status, attempts, lastErr = model.DeliveryPending, int64(1+rng.IntN(5)), "timeout"
				next = at(now.Add(time.Duration(rng.IntN(60)-30) * time.Minute).Truncate(time.Millisecond))
			}
			if updated.After(now) {
				updated = now
			}
			g.c.rows[tDeliveries].add(ref(tPushes, push), str(in.code), str(status), num(attempts), next, str(lastErr),
				delivered, at(created), at(updated))
		}
	}
}

// dedupKey is the gateway's key of "the same callback" of one institution
// (service/callbacks.go), so that a filled callback sent again is a repeat.
func dedupKey(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x1f")))
	return hex.EncodeToString(h[:])
}

// maskAccount keeps the last four digits, as the gateway's events do.
func maskAccount(s string) string {
	if len(s) <= 4 {
		return s
	}
	return strings.Repeat("*", len(s)-4) + s[len(s)-4:]
}

func pickInst(rng *rand.Rand, ins []inst) int {
	total := 0
	for _, in := range ins {
		total += in.weight
	}
	n := rng.IntN(total)
	for i, in := range ins {
		if n < in.weight {
			return i
		}
		n -= in.weight
	}
	return len(ins) - 1
}

package loadtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// Callback kinds, as the gateway's paths name them.
const (
	kindPayState    = "paystate"
	kindApplyNotify = "applynotify"
)

// callback is one distinct callback of the plan: the effect that must be
// stored exactly once however many times it is sent.
type callback struct {
	kind    string
	orderNo string
	body    []byte // the envelope, as sent
}

// request is one POST of the load: a callback, or a repeat of one.
type request struct {
	cb  int // index into plan.callbacks
	dup bool
}

// plan is the whole load: the orders it needs, the distinct callbacks, and
// the order in which they (and their repeats) are sent.
type plan struct {
	runID     string // orderno prefix of this run
	orders    []*model.Order
	callbacks []callback
	requests  []request
	dups      int
}

// Amounts and parties of the simulated payments and issuances.
var (
	premium = decimal.RequireFromString("200.00")
	rate    = decimal.RequireFromString("0.0015")
	deposit = decimal.RequireFromString("100000.00")
)

// newPlan lays out n requests of which a share dup repeat an earlier one.
// Each order gets a paystate and an applynotify (issued, with a small PDF),
// the paystate sent first as an institution would; the repeats go anywhere
// after their original, some right behind it so that both are in flight at
// once, which is the race the dedup keys exist for.
func newPlan(runID string, n int, dup float64, org string, cipher crypto.Cipher, rng *rand.Rand) (*plan, error) {
	dups := int(float64(n)*dup + 0.5)
	if n > 0 && dups >= n {
		dups = n - 1
	}
	unique := n - dups
	p := &plan{runID: runID, dups: dups}
	now := time.Now().UTC().Truncate(time.Millisecond)
	nOrders := (unique + 1) / 2
	for i := range nOrders {
		p.orders = append(p.orders, newOrder(runID, i, org, now))
	}

	// The distinct callbacks in a random order, then each order's paystate
	// moved ahead of its applynotify.
	type slot struct{ order, kind int }
	slots := make([]slot, 0, unique)
	for i := range unique {
		slots = append(slots, slot{order: i / 2, kind: i % 2})
	}
	rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
	first := make(map[int]int, nOrders) // order → index of its first slot
	for i, s := range slots {
		if j, seen := first[s.order]; !seen {
			first[s.order] = i
		} else if s.kind == 0 {
			slots[i], slots[j] = slots[j], slots[i]
		}
	}

	for i, s := range slots {
		o := p.orders[s.order]
		var msg any
		kind := kindPayState
		if s.kind == 0 {
			msg = wire.PayState{OrderNo: o.OrderNo, Amount: premium, PaidAt: now.Add(time.Duration(i) * time.Millisecond),
				Kind: wire.PayKindPay, PayerName: o.AccountName, PayerAccount: o.AccountNo}
		} else {
			kind = kindApplyNotify
			msg = issuance(o, now, letter(o.OrderNo, 0, rng))
		}
		body, err := seal(cipher, msg)
		if err != nil {
			return nil, err
		}
		p.callbacks = append(p.callbacks, callback{kind: kind, orderNo: o.OrderNo, body: body})
	}

	// Position keys: the distinct callbacks at 0, 1, 2, ...; a repeat of
	// callback i somewhere in (i, unique].
	type keyed struct {
		at  float64
		req request
	}
	all := make([]keyed, 0, n)
	for i := range p.callbacks {
		all = append(all, keyed{float64(i), request{cb: i}})
	}
	for range dups {
		i := rng.IntN(unique)
		at := float64(i) + 0.5 + rng.Float64()*float64(unique-i)
		all = append(all, keyed{at, request{cb: i, dup: true}})
	}
	slices.SortStableFunc(all, func(a, b keyed) int { return cmp.Compare(a.at, b.at) })
	for _, k := range all {
		p.requests = append(p.requests, k.req)
	}
	return p, nil
}

// newOrder is an order as the gateway holds it after an accepted apply:
// processing, waiting for the institution's callbacks. The next check is a
// day away so that no polling job touches it during the test.
func newOrder(runID string, i int, org string, now time.Time) *model.Order {
	no := runID + fmt.Sprintf("%06d", i)
	h := sha256.Sum256([]byte(no))
	next := now.Add(24 * time.Hour)
	return &model.Order{
		OrderNo: no, OrgCode: org, Status: model.StatusProcessing, RequestHash: hex.EncodeToString(h[:]),
		ApplicantName: "压测投标企业" + strconv.Itoa(i), ApplicantCode: "LTQY" + no,
		DepositAmount: deposit, ProjectName: "压测项目", ProjectCode: "LTXM-" + runID,
		LotName: "一标段", LotCode: "BD-1",
		OpeningAt: now.Add(48 * time.Hour), DeadlineAt: now.Add(24 * time.Hour),
		TendererName: "压测招标人", TendererCode: "11110000000000000Y",
		AccountBank: "压测银行", AccountName: "压测投标企业" + strconv.Itoa(i), AccountNo: fmt.Sprintf("6222%012d", i),
		ContactName: "张三", ContactPhone: "13800000000", ContactEmail: "loadtest@example.cn",
		NextCheckAt: &next,
	}
}

// issuance is the applynotify of an issued guarantee carrying pdf.
func issuance(o *model.Order, at time.Time, pdf []byte) wire.ApplyNotify {
	return wire.ApplyNotify{OrderNo: o.OrderNo, GuaranteeNo: "BH-" + o.OrderNo, State: wire.NotifyIssued,
		Remark: "审核通过,保函已开具(压测)", PremiumRate: rate, Premium: premium,
		IssuerName: "压测担保公司", IssuerAddress: "北京市海淀区压测路1号", IssuerPhone: "010-00000000",
		IssuedAt: at, File: pdf}
}

// seal encrypts msg's JSON into the envelope an institution posts.
func seal(c crypto.Cipher, msg any) ([]byte, error) {
	plain, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("loadtest: marshal: %w", err)
	}
	text, err := c.Encrypt(plain)
	if err != nil {
		return nil, fmt.Errorf("loadtest: encrypt: %w", err)
	}
	return json.Marshal(wire.Request{Data: string(text)})
}

// createOrders stores the plan's orders directly, a few at a time.
func createOrders(ctx context.Context, store *model.Store, orders []*model.Order) error {
	const workers = 8
	next := make(chan *model.Order)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := store.With(ctx)
			for o := range next {
				if err := st.CreateOrder(o); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, o := range orders {
		select {
		case next <- o:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	// Let the workers finish (a failed one has left; drain what the rest send).
	go func() { wg.Wait(); close(errc) }()
	for e := range errc {
		if err == nil {
			err = e
		}
	}
	if err != nil {
		return fmt.Errorf("loadtest: create orders: %w", err)
	}
	return nil
}

// letter is a small but well-formed one-page PDF naming the order, padded
// with an incompressible stream to a little over size bytes when size is
// larger.
// Every letter differs (the orderno is in it), as real ones do, so that 验真
// by sha256 finds the right order.
func letter(orderNo string, size int, rng *rand.Rand) []byte {
	var b bytes.Buffer
	var offsets []int
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	text := fmt.Sprintf("BT /F1 14 Tf 72 770 Td (Load test guarantee %s) Tj ET", orderNo)
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>")
	obj(fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(text), text))
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
	if pad := size - b.Len(); pad > 0 {
		// An unreferenced stream object: readers skip it, the bytes count.
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length %d >>\nstream\n", len(offsets), pad)
		chunk := make([]byte, 64<<10)
		for left := pad; left > 0; left -= len(chunk) {
			for i := 0; i+8 <= len(chunk); i += 8 {
				v := rng.Uint64()
				for k := range 8 {
					chunk[i+k] = byte(v >> (8 * k))
				}
			}
			b.Write(chunk[:min(left, len(chunk))])
		}
		b.WriteString("\nendstream\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

package loadtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"time"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
)

// Targets of issue 6, printed beside the figures.
const (
	TargetThroughputRatio = 0.8 // ours / baseline, at least
	TargetP99Ratio        = 1.2 // ours / baseline, at most
	TargetHeapPerBody     = 5.0 // peak heap growth / request body, under
)

// printLoad writes the load's figures and returns what failed.
func (r *Report) printLoad(w io.Writer) (fails []string) {
	fmt.Fprintf(w, "  %-9s %8s %8s %7s %9s %9s %9s %9s %9s\n", "", "requests", "acked", "errors", "req/s", "p50", "p95", "p99", "max")
	row := func(ph *Phase) {
		fmt.Fprintf(w, "  %-9s %8d %8d %7d %9.1f %9s %9s %9s %9s\n", ph.Name, ph.Requests, ph.OK, ph.ErrorCount(),
			ph.Throughput(), ms(ph.P50), ms(ph.P95), ms(ph.P99), ms(ph.Max))
		for _, l := range ph.errorLines() {
			fmt.Fprintf(w, "      %s\n", l)
		}
		if ph.Cut {
			fmt.Fprintf(w, "      cut by the time bound after %d of %d\n", ph.Completed, ph.Requests)
		}
	}
	row(r.Ours)
	if r.Base != nil {
		row(r.Base)
	}
	for _, ph := range []*Phase{r.Ours, r.Base} {
		if ph == nil || ph.Completed == 0 || ph.CPU.Self == 0 {
			continue
		}
		per := func(d time.Duration) string {
			return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)/float64(ph.Completed))
		}
		db := "database server not measured"
		switch {
		case r.Driver == "sqlite":
			db = "SQLite runs inside the endpoint's process"
		case ph.CPU.DBKnown:
			db = "database server " + per(ph.CPU.DB)
		}
		self := "this process (client and endpoint)" // the baseline always runs here
		switch {
		case ph == r.Ours && r.InProcess:
			self = "this process (client and gateway)"
		case ph == r.Ours:
			self = "this process (client only)"
		}
		fmt.Fprintf(w, "  CPU per request, %s: %s %s, %s\n", ph.Name, self, per(ph.CPU.Self), db)
	}
	if r.Base != nil {
		if r.Base.Throughput() > 0 && r.Base.P99 > 0 {
			tr := r.Ours.Throughput() / r.Base.Throughput()
			p99 := float64(r.Ours.P99) / float64(r.Base.P99)
			fmt.Fprintf(w, "  ours/baseline: throughput %.2f (target ≥ %.2f %s), p99 %.2f× (target ≤ %.2f× %s)\n",
				tr, TargetThroughputRatio, mark(tr >= TargetThroughputRatio), p99, TargetP99Ratio, mark(p99 <= TargetP99Ratio))
		}
		fmt.Fprintf(w, "  baseline stored %d rows for %d acknowledgements %s\n", r.BaseRows, r.Base.OK, mark(r.BaseRows == int64(r.Base.OK)))
		if r.Base.ErrorCount() > 0 || r.Base.Cut || r.BaseRows != int64(r.Base.OK) {
			fails = append(fails, "the baseline had errors")
		}
	}
	a := r.Audit
	fmt.Fprintf(w, "  database: %d of %d distinct callbacks acknowledged; %d lost, %d doubled %s\n",
		a.Acked, a.Acked+a.NotAcked, a.Lost, a.Doubled+a.Unlinked, mark(a.OK()))
	twice := ", none took effect twice"
	if a.Doubled > 0 {
		twice = ""
	}
	fmt.Fprintf(w, "            %d repeats acknowledged, %d audited as duplicates%s\n", a.RepeatsAcked, a.DuplicateRows, twice)
	if a.StoredNak > 0 {
		fmt.Fprintf(w, "            %d stored though not acknowledged (the sender would send again: a duplicate)\n", a.StoredNak)
	}
	for _, p := range a.Problems {
		fmt.Fprintf(w, "            ✗ %s\n", p)
	}
	if !a.OK() {
		fails = append(fails, fmt.Sprintf("%d callbacks lost, %d doubled", a.Lost, a.Doubled+a.Unlinked))
	}
	if n := r.Ours.ErrorCount(); n > 0 {
		fails = append(fails, fmt.Sprintf("%d callbacks not acknowledged", n))
	}
	if r.Ours.Cut {
		fails = append(fails, "the time bound cut the load")
	}
	return fails
}

func (p *Probe) print(w io.Writer) (fails []string) {
	fmt.Fprintf(w, "big PDF: one applynotify with a %s PDF (request body %s): %s in %s, file stored %s\n",
		mib(uint64(p.PDFBytes)), mib(uint64(p.BodyBytes)), p.Answer, ms(p.Took), mark(p.Stored))
	if h := p.Heap; h != nil {
		ratio := float64(h.PeakGrowth) / float64(p.BodyBytes)
		fmt.Fprintf(w, "  heap: peak growth %s = %.2f× the body (target < %.0f× %s), %.2f× the PDF; allocated during the request %s (%.2f× the body); %d GCs, %d samples\n",
			mib(h.PeakGrowth), ratio, TargetHeapPerBody, mark(ratio < TargetHeapPerBody),
			float64(h.PeakGrowth)/float64(p.PDFBytes), mib(h.Allocated), float64(h.Allocated)/float64(p.BodyBytes), h.GCs, h.Samples)
	} else {
		fmt.Fprintln(w, "  heap: not measured (the gateway is not in this process; start it with --mysql or --sqlite instead of --url)")
	}
	if !p.Accepted || !p.Stored {
		fails = append(fails, "the big PDF was not accepted and stored")
	}
	return fails
}

// probe sends one applynotify with a PDF of cfg.PDFBytes for an order of its
// own, alone, and checks the file arrived whole.
func probe(ctx context.Context, cfg Config, store *model.Store, cipher crypto.Cipher, runID string, rng *mrand.Rand) (*Probe, error) {
	o := newOrder(runID+"P", 0, cfg.OrgCode, time.Now().UTC().Truncate(time.Millisecond))
	if err := store.With(ctx).CreateOrder(o); err != nil {
		return nil, fmt.Errorf("loadtest: probe order: %w", err)
	}
	pr := &Probe{}
	body, sum, err := func() ([]byte, string, error) {
		// The PDF and the plain JSON go out of scope here: only the body
		// stays alive into the measurement.
		pdf := letter(o.OrderNo, cfg.PDFBytes, rng)
		pr.PDFBytes = len(pdf)
		h := sha256.Sum256(pdf)
		b, err := seal(cipher, issuance(o, time.Now(), pdf))
		return b, hex.EncodeToString(h[:]), err
	}()
	if err != nil {
		return nil, err
	}
	pr.BodyBytes = len(body)
	d := newDriver(cfg.AppKey, 1, nil)
	defer d.close()
	url := cfg.URL + "/api/guarantee/" + kindApplyNotify
	var a answer
	if cfg.InProcess {
		h := measureHeap(func() { a = d.post(ctx, url, body) })
		pr.Heap = &h
	} else {
		a = d.post(ctx, url, body)
	}
	pr.Took, pr.Accepted = a.took, a.ok()
	switch {
	case a.err != nil:
		pr.Answer = "failed: " + a.err.Error()
	default:
		pr.Answer = fmt.Sprintf("HTTP %d stat %d errcode %s", a.status, a.stat, a.errcode)
	}
	if f, err := store.With(ctx).FileInfo(o.OrderNo); err == nil {
		pr.Stored = f.Size == int64(pr.PDFBytes) && f.Sha256 == sum
	}
	return pr, nil
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func mib(n uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

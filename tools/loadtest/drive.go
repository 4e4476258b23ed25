package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/procurement/gateway/wire"
)

// answer is what one request got back.
type answer struct {
	sent    bool // a response (of any kind) came back
	status  int
	stat    int
	errcode string
	err     error
	took    time.Duration
}

// ok is the acknowledgement the sender may rely on: HTTP 200 and stat 1.
func (a answer) ok() bool { return a.sent && a.status == http.StatusOK && a.stat == 1 }

// Phase is the outcome of driving the requests against one endpoint.
type Phase struct {
	Name      string
	Requests  int // planned
	Completed int // answered (anything) or failed in transport
	OK        int // HTTP 200, stat 1
	Errors    map[string]int
	Elapsed   time.Duration
	// Latency percentiles over every answered request.
	P50, P95, P99, Max time.Duration
	Cut                bool // stopped by the time bound before the end
	CPU                CPU  // processor time spent while it ran

	answers []answer
}

// Throughput is answered requests per second.
func (p *Phase) Throughput() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Completed) / p.Elapsed.Seconds()
}

// ErrorCount sums the errors.
func (p *Phase) ErrorCount() int {
	n := 0
	for _, c := range p.Errors {
		n += c
	}
	return n
}

// driver sends requests with a fixed number of workers over kept-alive
// connections, the way a busy institution's callback sender would.
type driver struct {
	client   *http.Client
	appKey   string
	workers  int
	progress io.Writer // nil: no bar
}

func newDriver(appKey string, workers int, progress io.Writer) *driver {
	tr := &http.Transport{
		Proxy:               nil, // loopback only, whatever HTTP_PROXY says
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		MaxConnsPerHost:     workers,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &driver{client: &http.Client{Transport: tr, Timeout: 2 * time.Minute}, appKey: appKey, workers: workers, progress: progress}
}

func (d *driver) close() { d.client.CloseIdleConnections() }

// phase is one endpoint's share of the load, possibly driven in several
// rounds interleaved with another endpoint's.
type phase struct {
	ph    *Phase
	base  string
	bar   *progressbar.ProgressBar
	meter *cpuMeter
}

func (d *driver) newPhase(name, base string, p *plan, meter *cpuMeter) *phase {
	ph := &phase{base: base, meter: meter, ph: &Phase{Name: name, Requests: len(p.requests), Errors: map[string]int{},
		answers: make([]answer, len(p.requests))}}
	if d.progress != nil {
		ph.bar = progressbar.NewOptions(len(p.requests), progressbar.OptionSetWriter(d.progress),
			progressbar.OptionSetDescription(fmt.Sprintf("%-8s", name)), progressbar.OptionShowCount(),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("req"), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30), progressbar.OptionOnCompletion(func() { fmt.Fprintln(d.progress) }))
	}
	return ph
}

// run posts the requests [lo, hi) of p to the phase's base +
// "/api/guarantee/<kind>", measuring each round trip, and adds the wall
// time to the phase. It stops early when ctx ends.
func (d *driver) run(ctx context.Context, ph *phase, p *plan, lo, hi int) {
	var next atomic.Int64
	next.Store(int64(lo))
	var wg sync.WaitGroup
	cpu0 := ph.meter.read()
	start := time.Now()
	for range d.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= hi {
					return
				}
				cb := p.callbacks[p.requests[i].cb]
				ph.ph.answers[i] = d.post(ctx, ph.base+"/api/guarantee/"+cb.kind, cb.body)
				if ph.bar != nil {
					ph.bar.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	ph.ph.Elapsed += time.Since(start)
	ph.ph.CPU.add(cpu0, ph.meter.read())
}

// finish closes the bar and summarizes the answers.
func (ph *phase) finish(cut bool) *Phase {
	if ph.bar != nil && !ph.bar.IsFinished() {
		ph.bar.Exit()
	}
	ph.ph.summarize(cut)
	return ph.ph
}

// post makes one callback POST and reads the generic response.
func (d *driver) post(ctx context.Context, url string, body []byte) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", d.appKey)
	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	a := answer{sent: true, status: resp.StatusCode, took: time.Since(start)}
	if err != nil {
		a.err = err
		return a
	}
	var r wire.Response
	if err := json.Unmarshal(raw, &r); err != nil {
		a.err = fmt.Errorf("answer is not the generic response: %.80q", raw)
		return a
	}
	a.stat, a.errcode = r.Stat, r.Errcode
	return a
}

// summarize counts the answers and takes the latency percentiles.
func (ph *Phase) summarize(cut bool) {
	var lat []time.Duration
	for _, a := range ph.answers {
		switch {
		case a.ok():
			ph.OK++
		case !a.sent && a.err == nil:
			continue // never sent: the time bound cut the phase
		case !a.sent:
			ph.Errors["transport: "+shortErr(a.err)]++
		case a.err != nil:
			ph.Errors[fmt.Sprintf("HTTP %d: %s", a.status, shortErr(a.err))]++
		default:
			ph.Errors[fmt.Sprintf("HTTP %d stat %d errcode %s", a.status, a.stat, a.errcode)]++
		}
		ph.Completed++
		if a.sent {
			lat = append(lat, a.took)
		}
	}
	ph.Cut = cut && ph.Completed < ph.Requests
	slices.Sort(lat)
	ph.P50, ph.P95, ph.P99 = percentile(lat, 50), percentile(lat, 95), percentile(lat, 99)
	if len(lat) > 0 {
		ph.Max = lat[len(lat)-1]
	}
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 80 {
		s = s[i+2:]
	}
	return s
}

// errorLines lists a phase's errors, most frequent first.
func (ph *Phase) errorLines() []string {
	keys := make([]string, 0, len(ph.Errors))
	for k := range ph.Errors {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if ph.Errors[keys[i]] != ph.Errors[keys[j]] {
			return ph.Errors[keys[i]] > ph.Errors[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%d × %s", ph.Errors[k], k)
	}
	return out
}

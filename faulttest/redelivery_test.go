package faulttest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
)

// TestRedelivery: the bidding module pushes project states while the
// institution is dead — it answers 503, resets the connection, answers
// garbage, stalls past the timeout before its headers or in its body, or
// refuses with stat 0. The gateway keeps each push, and its redelivery job
// (running in the real binary) delivers every one once the institution is
// back:
//
//   - phase A, the same process throughout: the circuit breaker opens, the
//     gateway stops calling the dead institution, and after the breaker's
//     open period (30 s, not configurable at the gateway) it recovers and
//     delivers what waited;
//   - phase B, the gateway is killed (-9) while deliveries wait, the
//     institution comes back, a new process delivers them all.
//
// The institution acknowledges each push exactly once, and no delivery
// runs out of attempts.
func TestRedelivery(t *testing.T) {
	faultGate(t)
	t.Parallel() // it mostly waits out the breaker: the other subprocess tests run beside it
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	store := openStore(t, "mysql", dsn)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	orders := seedOrders(t, store, faultInst.OrgCode, "RED", 6)

	inst := newFlakyInstitution(t, faultInst)
	in := faultInst
	in.BaseURL = inst.srv.URL
	// Jobs on, the outbox every second; the back-off is short and long
	// enough to outlast the breaker's 30 s; a killed instance's lease runs
	// out in 5 s. The other jobs have nothing to do and are kept quiet.
	jobs := "  poll_pending: \"@every 1h\"\n  recover_applying: \"@every 1h\"\n  pull_files: \"@every 1h\"\n" +
		"  deliver_outbox: \"@every 1s\"\n  reconcile: \"0 2 * * *\"\n" +
		"  redelivery_backoff: [1s, 1s" + strings.Repeat(", 2s", 40) + "]\n  lease: 5s\n"
	setupA := setup{DSN: dsn, Institutions: []institution{in}, Jobs: jobs}
	setupA.Timeout = time.Second
	g := startGateway(t, setupA)

	push := func(orderNo string) int64 {
		t.Helper()
		o, err := store.Order(orderNo)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"xmname":%q,"xmcode":%q,"bdname":%q,"bdcode":%q,"kbttime":%d,"state":"2"}`,
			o.ProjectName, o.ProjectCode, o.LotName, o.LotCode, o.OpeningAt.UnixMilli())
		status, out := apiCall(t, http.MethodPost, g.URL()+"/v1/projects/state", []byte(body))
		var v pushView
		if err := json.Unmarshal(out, &v); status != http.StatusAccepted || err != nil || len(v.Deliveries) != 1 {
			t.Fatalf("push %s: HTTP %d %s", o.ProjectCode, status, out)
		}
		if d := v.Deliveries[0]; d.Status != "pending" || d.Attempts != 1 || d.LastError == "" || d.NextAttemptAt == nil {
			t.Errorf("push %s while the institution is dead: delivery %+v; want pending after 1 attempt, with its error and next attempt", o.ProjectCode, d)
		}
		return v.ID
	}
	view := func(id int64) pushView {
		t.Helper()
		status, out := apiCall(t, http.MethodGet, fmt.Sprintf("%s/v1/projects/state/%d", g.URL(), id), nil)
		var v pushView
		if err := json.Unmarshal(out, &v); status != http.StatusOK || err != nil || len(v.Deliveries) != 1 {
			t.Fatalf("project state %d: HTTP %d %s", id, status, out)
		}
		return v
	}
	allDelivered := func(ids []int64) bool {
		for _, id := range ids {
			if d := view(id).Deliveries[0]; d.Status != "delivered" {
				if d.Status == "dead" {
					t.Fatalf("delivery of push %d is dead: %+v", id, d)
				}
				return false
			}
		}
		return true
	}

	// Phase A.
	start := time.Now()
	inst.setDown(true)
	var idsA []int64
	for _, no := range orders[:3] {
		idsA = append(idsA, push(no))
	}
	// The breaker opens: the job's attempts are refused without a call.
	if !waitFor(15*time.Second, func() bool { return countCalls(t, db, "circuit_open") > 0 }) {
		t.Fatalf("no attempt refused by an open breaker within 15s; institution saw %d requests", inst.count())
	}
	openAt := time.Now()
	seen := inst.count()
	time.Sleep(3 * time.Second) // deliveries are due every 1–2 s meanwhile
	if n := inst.count(); n != seen {
		t.Errorf("the dead institution got %d more requests while the breaker was open", n-seen)
	}
	backAt := time.Now()
	inst.setDown(false)
	if !waitFor(50*time.Second, func() bool { return allDelivered(idsA) }) {
		t.Fatalf("phase A: not every push delivered within 50s of the institution's return")
	}
	doneA := time.Now()
	failedA := countCalls(t, db, "")
	openA := countCalls(t, db, "circuit_open")

	// Phase B. The institution refuses with stat 0 (busy), which does not
	// open the breaker, so that the job's next attempt reaches it.
	inst.setFaults("stat 0")
	inst.setDown(true)
	var idsB []int64
	for _, no := range orders[3:] {
		idsB = append(idsB, push(no))
	}
	// Kill the gateway in the middle of a redelivery attempt: the
	// institution holds every request until the gateway gives up, so the
	// dead process leaves a delivery under its lease.
	inst.setHang(true)
	if !waitFor(15*time.Second, func() bool { return inst.hanging() > 0 }) {
		t.Fatal("no redelivery attempt reached the institution within 15s")
	}
	g.kill()
	inst.setHang(false)
	inst.setDown(false)
	killedAt := time.Now()
	if _, err := g.start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(30*time.Second, func() bool { return allDelivered(idsB) }) {
		t.Fatalf("phase B: not every push delivered within 30s of the restart")
	}
	doneB := time.Now()

	// Every push acknowledged by the institution exactly once.
	got := inst.delivered()
	for _, no := range orders {
		key := "XM-" + no + "|BD-1|2"
		if got[key] != 1 {
			t.Errorf("push of %s acknowledged %d times by the institution; want exactly 1", key, got[key])
		}
	}
	for _, id := range append(idsA, idsB...) {
		if d := view(id).Deliveries[0]; d.Status != "delivered" || d.LastError != "" || d.NextAttemptAt != nil {
			t.Errorf("push %d: delivery %+v; want delivered, no error, nothing scheduled", id, d)
		}
	}
	t.Logf("phase A: breaker open %v after the pushes, institution back %v later, all 3 delivered %v after its return (%d calls recorded, %d refused by the breaker)",
		openAt.Sub(start).Round(time.Millisecond), backAt.Sub(openAt).Round(time.Millisecond),
		doneA.Sub(backAt).Round(time.Millisecond), failedA, openA)
	t.Logf("phase B: killed during an attempt, with 3 deliveries waiting; all 3 delivered %v after the restart; institution saw %d requests, faults %v",
		doneB.Sub(killedAt).Round(time.Millisecond), inst.count(), inst.faultCounts())
}

// pushView is the API's answer about a project-state push (docs/api.md).
type pushView struct {
	ID         int64 `json:"id"`
	Deliveries []struct {
		ID            int64  `json:"id"`
		OrgCode       string `json:"orgcode"`
		Status        string `json:"status"`
		Attempts      int    `json:"attempts"`
		NextAttemptAt *int64 `json:"next_attempt_at"`
		LastError     string `json:"last_error"`
	} `json:"deliveries"`
}

// countCalls counts the recorded xmstate calls with that result ("" for all).
func countCalls(t *testing.T, db *sql.DB, result string) int {
	t.Helper()
	q, args := "SELECT COUNT(*) FROM outbound_calls WHERE endpoint = 'xmstate'", []any{}
	if result != "" {
		q += " AND result = ?"
		args = append(args, result)
	}
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func apiCall(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// flakyInstitution serves /guarantee/xmstate. While down it fails each
// request in turn in one of the ways a dead or sick institution does; when
// up it checks the envelope with the real cipher and acknowledges.
type flakyInstitution struct {
	t      testing.TB
	srv    *httptest.Server
	cipher crypto.Cipher
	appKey string

	mu     sync.Mutex
	down   bool
	kinds  []string // the faults while down, in turn
	hang   bool     // hold every request until the caller gives up
	held   int      // requests being held now
	n      int
	faults map[string]int
	acked  map[string]int // xmcode|bdcode|state → stat 1 answers
}

var faultKinds = []string{"503", "reset", "garbage", "slow headers", "slow body", "stat 0"}

func newFlakyInstitution(t testing.TB, in institution) *flakyInstitution {
	f := &flakyInstitution{t: t, cipher: in.cipher(t), appKey: in.AppKey, kinds: faultKinds,
		faults: map[string]int{}, acked: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flakyInstitution) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *flakyInstitution) setFaults(kinds ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kinds = kinds
}

func (f *flakyInstitution) setHang(hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = hang
}

func (f *flakyInstitution) hanging() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *flakyInstitution) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *flakyInstitution) delivered() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.acked {
		out[k] = v
	}
	return out
}

func (f *flakyInstitution) faultCounts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.faults {
		out[k] = v
	}
	return out
}

func (f *flakyInstitution) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.n++
	down, n := f.down, f.n
	fault := ""
	switch {
	case f.hang:
		fault = "hang"
		f.held++
		defer func() {
			f.mu.Lock()
			f.held--
			f.mu.Unlock()
		}()
	case down:
		fault = f.kinds[n%len(f.kinds)]
	}
	if fault != "" {
		f.faults[fault]++
	}
	f.mu.Unlock()

	if r.URL.Path != "/guarantee/xmstate" || r.Header.Get("appKey") != f.appKey {
		f.t.Errorf("institution got %s with appKey %q", r.URL.Path, r.Header.Get("appKey"))
		http.NotFound(w, r)
		return
	}
	ct, err := wire.Ciphertext(body)
	if err != nil {
		f.t.Errorf("xmstate envelope: %v", err)
		return
	}
	plain, err := f.cipher.Decrypt(ct)
	if err != nil {
		f.t.Errorf("xmstate does not decrypt: %v", err)
		return
	}
	ps, err := wire.ParseProjectState(plain)
	if err != nil {
		f.t.Errorf("xmstate parameters: %v", err)
		return
	}
	stall := func() {
		select {
		case <-r.Context().Done():
		case <-time.After(1500 * time.Millisecond): // past the gateway's 1 s timeout
		}
	}
	switch fault {
	case "":
		f.mu.Lock()
		f.acked[ps.ProjectCode+"|"+ps.LotCode+"|"+ps.State]++
		f.mu.Unlock()
		w.Write([]byte(`{"stat":1,"errcode":"000000","msg":"成功","data":""}`))
	case "503":
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
	case "reset":
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
		}
	case "garbage":
		w.Write([]byte("<html><body>502 Bad Gateway</body></html>"))
	case "slow headers":
		stall()
		http.Error(w, "too late", http.StatusServiceUnavailable)
	case "slow body":
		w.Write([]byte(`{"stat":1,"errc`))
		http.NewResponseController(w).Flush()
		stall()
		w.Write([]byte(`ode":"000000","msg":"","data":""}`))
	case "hang":
		<-r.Context().Done()
	case "stat 0":
		w.Write([]byte(`{"stat":0,"errcode":"E500","msg":"系统繁忙","data":""}`))
	}
}

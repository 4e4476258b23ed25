package handler_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"
	"golang.org/x/time/rate"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/service"
	"github.com/procurement/gateway/wire"
)

// opsScrape reads /metrics as Prometheus would.
func opsScrape(t *testing.T, g *handlertest.Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(g.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return fams
}

// opsMetric finds the series of family name with exactly these labels:
// a counter's or gauge's value, a histogram's sample count.
func opsMetric(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// TestOpsMetrics runs a small lifecycle against banksim and reads /metrics:
// callbacks and calls are counted under the right institution, kind or
// endpoint, result and errcode, with their latency; the gauges counted
// in the database show the order where it is; the Go and process collectors
// are there.
func TestOpsMetrics(t *testing.T) {
	for _, driver := range modeltest.Drivers(os.Getenv) {
		t.Run(driver, func(t *testing.T) {
			sg := opsStartSim(t, driver)
			g := sg.Gateway
			status, body := g.API(t, http.MethodPost, "/v1/cost", map[string]any{"orgcode": "SIM01", "bzjmoney": "50000.00"})
			opsWant(t, "cost", status, http.StatusOK, body)
			code, resp := g.Callback(t, "SIM01", "paystate", map[string]any{"orderno": "NO-SUCH-ORDER", "paymoney": "300.00",
				"paytime": time.Now().UnixMilli(), "type": "2"})
			if code != http.StatusOK || resp.Errcode != wire.CodeUnknown {
				t.Fatalf("paystate of an unknown order: %d %+v", code, resp)
			}
			orderNo := "MET-" + strings.ToUpper(driver)
			status, body = g.API(t, http.MethodPost, "/v1/guarantees", opsApplication(orderNo, nil))
			opsWant(t, "apply", status, http.StatusCreated, body)
			opsAwait(t, g, orderNo, "issued", func(o opsOrder) bool { return o.Status == "issued" })

			// The order reads issued as soon as the notice commits; the
			// notice is counted just after, when its answer is written.
			sim := "SIM01"
			notified := map[string]string{"institution": sim, "kind": "applynotify", "result": "accepted", "errcode": "000000"}
			// The gauges are the last count's (metrics.state_interval, 30 s
			// here): count now, as the background counter would in time.
			if _, err := g.Service.State(context.Background()); err != nil {
				t.Fatal(err)
			}
			fams := opsScrape(t, g)
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); fams = opsScrape(t, g) {
				if n, _ := opsMetric(fams, "gateway_callbacks_total", notified); n >= 1 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, c := range []struct {
				name   string
				metric string
				labels map[string]string
				want   float64
			}{
				{"refused callback", "gateway_callbacks_total",
					map[string]string{"institution": sim, "kind": "paystate", "result": "rejected", "errcode": "200001"}, 1},
				{"accepted paystate", "gateway_callbacks_total",
					map[string]string{"institution": sim, "kind": "paystate", "result": "accepted", "errcode": "000000"}, 1},
				{"accepted applynotify", "gateway_callbacks_total",
					map[string]string{"institution": sim, "kind": "applynotify", "result": "accepted", "errcode": "000000"}, 1},
				{"paystate latencies", "gateway_callback_duration_seconds", map[string]string{"institution": sim, "kind": "paystate"}, 2},
				{"cost call", "gateway_institution_calls_total", map[string]string{"institution": sim, "endpoint": "cost", "result": "ok"}, 1},
				{"apply call", "gateway_institution_calls_total", map[string]string{"institution": sim, "endpoint": "apply", "result": "ok"}, 1},
				{"cost latency", "gateway_institution_call_duration_seconds", map[string]string{"institution": sim, "endpoint": "cost"}, 1},
				{"orders issued", "gateway_orders", map[string]string{"status": "issued"}, 1},
				{"orders processing", "gateway_orders", map[string]string{"status": "processing"}, 0},
				{"deliveries dead", "gateway_deliveries", map[string]string{"status": "dead"}, 0},
				{"database up", "gateway_database_up", map[string]string{}, 1},
			} {
				t.Run(c.name, func(t *testing.T) {
					got, ok := opsMetric(fams, c.metric, c.labels)
					if !ok {
						t.Fatalf("%s%v not exposed", c.metric, c.labels)
					}
					if got != c.want {
						t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
					}
				})
			}
			// A burst of distinct payments at once is group-committed, and
			// the batches are counted by kind and result.
			const burst = 48
			bodies := make([][]byte, burst)
			for i := range bodies {
				bodies[i] = envelope(t, g.Cipher(sim), payParams(orderNo, wire.PayKindPay, fmt.Sprintf("%d.00", i+1),
					time.Now().Add(time.Duration(-i)*time.Second)))
			}
			for i, a := range postAtOnce(g.URL, "paystate", "key-sim01-logs", bodies) {
				if a != "200/1/000000" {
					t.Errorf("burst paystate %d answered %s", i, a)
				}
			}
			fams = opsScrape(t, g)
			batched := map[string]string{"kind": "paystate", "result": "committed"}
			if n, ok := opsMetric(fams, "gateway_callback_batch_size", batched); !ok || n < 1 {
				t.Errorf("gateway_callback_batch_size%v = %v (exposed %v): %d paystates at once made no batch", batched, n, ok, burst)
			}
			if n, _ := opsMetric(fams, "gateway_callbacks_total", map[string]string{"institution": sim, "kind": "paystate",
				"result": "accepted", "errcode": "000000"}); n != 1+burst {
				t.Errorf("accepted paystates after the burst: %v, want %d", n, 1+burst)
			}

			// The runtime and process series deploy/grafana's dashboard reads.
			for _, name := range []string{"go_goroutines", "go_gc_duration_seconds", "go_memstats_heap_inuse_bytes",
				"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "gateway_orders_flagged"} {
				if _, ok := fams[name]; !ok {
					t.Errorf("%s not exposed", name)
				}
			}
		})
	}
}

// TestOpsHealthAndReadiness: /healthz says the process is up whatever the
// database does; /readyz asks the store (it reads a table) and answers 503
// once the store is closed, and /metrics then reports gateway_database_up 0.
func TestOpsHealthAndReadiness(t *testing.T) {
	for _, driver := range modeltest.Drivers(os.Getenv) {
		t.Run(driver, func(t *testing.T) {
			store := modeltest.Open(t, driver, os.Getenv)
			g := handlertest.Start(t, handlertest.Options{Store: store,
				Institutions: []handlertest.Institution{handlertest.DefaultInstitution("BANK01")}})
			get := func(path string) (int, map[string]any) {
				t.Helper()
				resp, err := http.Get(g.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var m map[string]any
				if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				return resp.StatusCode, m
			}
			for _, c := range []struct {
				name       string
				closeFirst bool
				path       string
				want       int
				wantStatus string
			}{
				{"healthz while up", false, "/healthz", http.StatusOK, "ok"},
				{"readyz while up", false, "/readyz", http.StatusOK, "ready"},
				{"readyz after the store closed", true, "/readyz", http.StatusServiceUnavailable, "unavailable"},
				{"healthz after the store closed", true, "/healthz", http.StatusOK, "ok"},
			} {
				if c.closeFirst {
					store.Close()
				}
				code, m := get(c.path)
				if code != c.want || m["status"] != c.wantStatus {
					t.Errorf("%s: %s answered %d %v, want %d status %q", c.name, c.path, code, m, c.want, c.wantStatus)
				}
			}
			if up, ok := opsMetric(opsScrape(t, g), "gateway_database_up", map[string]string{}); !ok || up != 0 {
				t.Errorf("gateway_database_up = %v (exposed %v) after the store closed, want 0", up, ok)
			}
		})
	}
}

// opsFailingInstitution answers every call with HTTP 500.
func opsFailingInstitution(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestOpsRequestID: X-Request-Id is accepted and echoed, made when absent or
// unusable, and every line logged while serving the request carries it:
// the access line, the API error line, and the service's lines about the
// outbound calls it made (with their retries) and about a callback.
func TestOpsRequestID(t *testing.T) {
	inst := handlertest.DefaultInstitution("BANK01")
	inst.BaseURL = opsFailingInstitution(t)
	inst.Retries = 1
	g := handlertest.Start(t, handlertest.Options{Institutions: []handlertest.Institution{inst}})
	cost, _ := json.Marshal(map[string]any{"orgcode": "BANK01", "bzjmoney": "1000.00"})
	ct, err := g.Cipher("BANK01").Encrypt([]byte(`{"orderno":"NOPE","paymoney":"1.00","paytime":1700000000000,"type":"2"}`))
	if err != nil {
		t.Fatal(err)
	}
	callback, _ := json.Marshal(wire.Request{Data: string(ct)})
	isHexID := func(s string) bool { _, err := hex.DecodeString(s); return len(s) == 16 && err == nil }

	for _, c := range []struct {
		name      string
		path      string
		body      []byte
		sent      string
		wantEcho  bool
		wantLines int // at least
		wantMsgs  []string
	}{
		{"API call, id given", "/v1/cost", cost, "req-cost-0001", true, 4,
			[]string{"institution call failed", "request"}},
		{"API call, no id", "/v1/cost", cost, "", false, 4, []string{"institution call failed", "request"}},
		{"API call, id too long", "/v1/cost", cost, strings.Repeat("x", 65), false, 4, []string{"institution call failed", "request"}},
		{"callback, id given", "/api/guarantee/paystate", callback, "cb-req-0002", true, 1, []string{"callback refused"}},
		{"callback, no id", "/api/guarantee/paystate", callback, "", false, 1, []string{"callback refused"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(g.Logs.String())
			req, _ := http.NewRequest(http.MethodPost, g.URL+c.path, bytes.NewReader(c.body))
			req.Header.Set("Authorization", "Bearer "+handlertest.Token)
			req.Header.Set("appKey", inst.AppKey)
			req.Header.Set("Content-Type", "application/json")
			if c.sent != "" {
				req.Header.Set("X-Request-Id", c.sent)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			id := resp.Header.Get("X-Request-Id")
			switch {
			case c.wantEcho && id != c.sent:
				t.Fatalf("X-Request-Id answered %q, want %q echoed", id, c.sent)
			case !c.wantEcho && !isHexID(id):
				t.Fatalf("X-Request-Id answered %q, want a generated 16-hex-digit id", id)
			}
			// Every line is written before the answer leaves (the access
			// line by the middleware, the rest by the handler).
			lines := opsLogLines(t, g.Logs.String()[before:])
			if len(lines) < c.wantLines {
				t.Fatalf("%d lines logged, want at least %d", len(lines), c.wantLines)
			}
			msgs := map[string]bool{}
			for _, l := range lines {
				msgs[l["msg"].(string)] = true
				if l["request_id"] != id {
					t.Errorf("line without request_id %q: %v", id, l)
				}
			}
			for _, m := range c.wantMsgs {
				if !msgs[m] {
					t.Errorf("no %q line; got %v", m, msgs)
				}
			}
		})
	}
}

// opsCallback posts a paystate of institution org, encrypted with its
// cipher, with X-Forwarded-For when forwardedFor is set.
func opsCallback(t *testing.T, g *handlertest.Gateway, org string, params any, forwardedFor string) (int, wire.Response) {
	t.Helper()
	plain, _ := json.Marshal(params)
	ct, err := g.Cipher(org).Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.Request{Data: string(ct)})
	in, _ := g.Service.Institutions().ByOrgCode(org)
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/guarantee/paystate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", in.AppKey)
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
		req.Header.Set("X-Real-IP", forwardedFor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r wire.Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("paystate answered %d, not the generic response: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, r
}

// TestOpsCallbackAdmission: an institution's optional source allowlist and
// rate limit refuse callbacks before anything is decrypted, with stat 0,
// and the refusals are counted in gateway_callbacks_total. The allowlist
// judges the TCP peer: a forwarding header naming an allowed address does
// not get a callback in.
func TestOpsCallbackAdmission(t *testing.T) {
	unknownOrder := map[string]any{"orderno": "NOPE", "paymoney": "1.00", "paytime": time.Now().UnixMilli(), "type": "2"}
	type answer struct {
		http    int
		errcode string
	}
	admitted := answer{http.StatusOK, wire.CodeUnknown} // through admission, then 200001
	for _, c := range []struct {
		name         string
		allow        []string
		limiter      *rate.Limiter
		forwardedFor string // sent as X-Forwarded-For, which must not count
		want         []answer
	}{
		{"source outside the allowlist", []string{"10.0.0.0/8", "192.168.0.0/16"}, nil, "",
			[]answer{{http.StatusOK, wire.CodeBadAppKey}, {http.StatusOK, wire.CodeBadAppKey}}},
		{"allowed address only in X-Forwarded-For", []string{"10.0.0.0/8"}, nil, "10.1.2.3",
			[]answer{{http.StatusOK, wire.CodeBadAppKey}}},
		{"source inside the allowlist", []string{"10.0.0.0/8", "127.0.0.0/8"}, nil, "", []answer{admitted, admitted}},
		{"over the rate limit", nil, rate.NewLimiter(rate.Every(time.Hour), 2), "",
			[]answer{admitted, admitted, {http.StatusTooManyRequests, "500002"}, {http.StatusTooManyRequests, "500002"}}},
		{"allowed and under the limit", []string{"127.0.0.1/32"}, rate.NewLimiter(rate.Every(time.Hour), 3), "",
			[]answer{admitted, admitted, admitted}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := handlertest.Start(t, handlertest.Options{Institutions: []handlertest.Institution{handlertest.DefaultInstitution("BANK01")}})
			// Set before the first request: the server reads these only
			// while serving one.
			in, _ := g.Service.Institutions().ByOrgCode("BANK01")
			for _, cidr := range c.allow {
				_, n, err := net.ParseCIDR(cidr)
				if err != nil {
					t.Fatal(err)
				}
				in.Allow = append(in.Allow, n)
			}
			in.Limiter = c.limiter
			wantCount := map[string]float64{}
			for i, w := range c.want {
				code, resp := opsCallback(t, g, "BANK01", unknownOrder, c.forwardedFor)
				if code != w.http || resp.Stat != 0 || resp.Errcode != w.errcode {
					t.Errorf("callback %d: HTTP %d stat %d errcode %s, want HTTP %d stat 0 errcode %s",
						i+1, code, resp.Stat, resp.Errcode, w.http, w.errcode)
				}
				wantCount[w.errcode]++
			}
			fams := opsScrape(t, g)
			for errcode, n := range wantCount {
				got, _ := opsMetric(fams, "gateway_callbacks_total", map[string]string{"institution": "BANK01",
					"kind": service.KindPayState, "result": "rejected", "errcode": errcode})
				if got != n {
					t.Errorf("gateway_callbacks_total{errcode=%q} = %v, want %v", errcode, got, n)
				}
			}
		})
	}
}

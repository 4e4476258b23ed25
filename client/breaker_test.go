package client_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/procurement/gateway/client"
)

// Behaviours a test institution can be switched between.
const (
	behaveOK int32 = iota
	behave500
	behaveRefuse // stat 0
	behaveHang
	behaveGarbage
)

// switchable is an institution whose behaviour the test changes between
// calls.
func switchable(t *testing.T, mode *atomic.Int32) *institution {
	return newInstitution(t, func(in *institution, w http.ResponseWriter, r *http.Request, hit int) {
		switch mode.Load() {
		case behaveOK:
			okWith(t, map[string]string{"status": "2"})(in, w, r, hit)
		case behave500:
			writeJSON(w, 500, "")
		case behaveRefuse:
			writeJSON(w, 200, `{"stat":0,"errcode":"200001","msg":"unknown orderno"}`)
		case behaveHang:
			hang(in, w, r, hit)
		case behaveGarbage:
			writeJSON(w, 200, "<html>")
		}
	})
}

// TestBreaker walks one institution's breaker through its states: stat 0
// answers do not count, consecutive failures of any kind open it, an open
// breaker sends nothing (and says so in the records), and it closes again
// when the institution is back, after one probe in half-open. Another
// institution on the same transport is not affected.
func TestBreaker(t *testing.T) {
	checkNoLeak(t)
	const openFor = 150 * time.Millisecond
	var mode atomic.Int32
	in := switchable(t, &mode)
	c, rec, hc := newClient(t, in.URL(""), func(cfg *client.Config) {
		cfg.Timeout, cfg.Retries, cfg.BreakerFailures, cfg.BreakerOpenFor = 100*time.Millisecond, 0, 3, openFor
	})
	var otherMode atomic.Int32
	other := switchable(t, &otherMode)
	otherCfg := testConfig(t, "ORG2", other.URL(""), appSecret)
	otherCfg.Timeout, otherCfg.BreakerFailures, otherCfg.BreakerOpenFor = 100*time.Millisecond, 3, openFor
	otherClient := client.New(otherCfg, hc, rec)

	steps := []struct {
		name      string
		wait      time.Duration // before the call
		mode      int32
		want      client.Kind // "" for success
		sent      bool        // the institution saw the call
		wantState string      // after the call
	}{
		{"stat 0 is an answer, not a failure", 0, behaveRefuse, client.KindRefused, true, "closed"},
		{"stat 0 again", 0, behaveRefuse, client.KindRefused, true, "closed"},
		{"stat 0 a third time", 0, behaveRefuse, client.KindRefused, true, "closed"},
		{"first failure: 500", 0, behave500, client.KindHTTP, true, "closed"},
		{"second failure: timeout", 0, behaveHang, client.KindUnknown, true, "closed"},
		{"a success resets the count", 0, behaveOK, "", true, "closed"},
		{"failure 1 of 3: garbage", 0, behaveGarbage, client.KindBadAnswer, true, "closed"},
		{"failure 2 of 3: 500", 0, behave500, client.KindHTTP, true, "closed"},
		{"failure 3 of 3: timeout opens it", 0, behaveHang, client.KindUnknown, true, "open"},
		{"open: not sent", 0, behaveOK, client.KindCircuitOpen, false, "open"},
		{"open: still not sent", 0, behaveOK, client.KindCircuitOpen, false, "open"},
		{"half-open probe fails: open again", openFor + 30*time.Millisecond, behave500, client.KindHTTP, true, "open"},
		{"open again: not sent", 0, behaveOK, client.KindCircuitOpen, false, "open"},
		{"half-open probe answered: closed", openFor + 30*time.Millisecond, behaveOK, "", true, "closed"},
		{"closed: calls go through", 0, behaveOK, "", true, "closed"},
	}
	for _, st := range steps {
		time.Sleep(st.wait)
		mode.Store(st.mode)
		before, recsBefore := len(in.requests()), len(rec.all())
		_, err := c.Query(context.Background(), in.URL("/q"), "G1")
		if client.KindOf(err) != st.want {
			t.Fatalf("%s: err = %v, want kind %q", st.name, err, st.want)
		}
		if sent := len(in.requests()) > before; sent != st.sent {
			t.Errorf("%s: sent = %v, want %v", st.name, sent, st.sent)
		}
		if s := c.BreakerState(); s != st.wantState {
			t.Errorf("%s: breaker %s, want %s", st.name, s, st.wantState)
		}
		recs := rec.all()[recsBefore:]
		if len(recs) != 1 {
			t.Fatalf("%s: %d records, want 1", st.name, len(recs))
		}
		if want := string(st.want); (want == "" && recs[0].Result != "ok") || (want != "" && recs[0].Result != want) {
			t.Errorf("%s: record result %q", st.name, recs[0].Result)
		}
		if st.want == client.KindCircuitOpen && (recs[0].HTTPStatus != 0 || recs[0].Error == "" || recs[0].OrgCode != "ORG1") {
			t.Errorf("%s: record %+v", st.name, recs[0])
		}
		// The other institution on the same transport is not affected.
		if _, err := otherClient.Query(context.Background(), other.URL("/q"), "G1"); err != nil {
			t.Fatalf("%s: the other institution: %v", st.name, err)
		}
		if s := otherClient.BreakerState(); s != "closed" {
			t.Errorf("%s: the other institution's breaker is %s", st.name, s)
		}
	}
	// Apply too is refused unsent while the breaker is open.
	mode.Store(behave500)
	for range 3 {
		c.Query(context.Background(), in.URL("/q"), "G1")
	}
	before := len(in.requests())
	if _, err := c.Apply(context.Background(), applyRequest()); client.KindOf(err) != client.KindCircuitOpen {
		t.Errorf("Apply with the breaker open = %v", err)
	}
	if len(in.requests()) != before {
		t.Error("Apply was sent with the breaker open")
	}
}

// TestBreakerTripsMidRetry: when an attempt opens the breaker, the retry it
// refuses is recorded, and the caller gets the failure that was seen (here
// an unknown outcome), not a "circuit open" that would say nothing was sent.
func TestBreakerTripsMidRetry(t *testing.T) {
	tests := []struct {
		name string
		mode int32
		want client.Kind
	}{
		{"timeout then breaker", behaveHang, client.KindUnknown},
		{"500 then breaker", behave500, client.KindHTTP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			var mode atomic.Int32
			mode.Store(tc.mode)
			in := switchable(t, &mode)
			c, rec, _ := newClient(t, in.URL(""), func(cfg *client.Config) {
				cfg.Timeout, cfg.Retries, cfg.BreakerFailures, cfg.BreakerOpenFor = 100*time.Millisecond, 2, 1, time.Minute
			})
			_, err := c.Query(context.Background(), in.URL("/q"), "G1")
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Kind != tc.want {
				t.Fatalf("err = %v, want kind %q", err, tc.want)
			}
			if n := len(in.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			recs := rec.all()
			if len(recs) != 2 || recs[0].Result != string(tc.want) || recs[1].Result != string(client.KindCircuitOpen) ||
				recs[1].Attempt != 2 {
				t.Errorf("records %+v", recs)
			}
		})
	}
}

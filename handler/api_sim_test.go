package handler_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/procurement/gateway/banksim"
	"github.com/procurement/gateway/handler/handlertest"
)

// apiStartSim starts a gateway with banksim as its one institution, SIM02:
// the bidder pays and the institution decides on its own, by callbacks.
// The notice leaves the PDF out, so the gateway has to pull it.
func apiStartSim(t *testing.T, driver string) (*handlertest.Gateway, *banksim.Sim) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inst := handlertest.DefaultInstitution("SIM02")
	inst.BaseURL = "http://" + ln.Addr().String() + "/sim"
	g := handlertest.Start(t, handlertest.Options{Driver: driver, Institutions: []handlertest.Institution{inst}})
	sim, err := banksim.New(banksim.Config{OrgCode: inst.OrgCode, AppKey: inst.AppKey, AppSecret: inst.AppSecret,
		Prefix: "/sim", GatewayURL: g.URL, PayDelay: 10 * time.Millisecond, IssueDelay: 10 * time.Millisecond,
		ReleaseDelay: 10 * time.Millisecond, CallbackBackoff: 50 * time.Millisecond, GuaranteeNoPrefix: "BHAPI"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(sim.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	// Last in, first out: the Sim stops calling back before its server closes.
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	return g, sim
}

// apiAwait polls the order until ok, for at most 10 s.
func apiAwait(t *testing.T, g *handlertest.Gateway, orderNo, what string, ok func(apiOrder) bool) apiOrder {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o := apiGet(t, g, orderNo)
		if ok(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s not %s after 10s: %+v", orderNo, what, o)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAPIWithBankSim runs the bidding module's whole story against the
// simulated institution: quote, apply, payment and issuance by callbacks,
// the PDF pulled on demand, 验真, the project's final state, cancellation
// and the order's history.
func TestAPIWithBankSim(t *testing.T) {
	handlertest.ForEachDriver(t, func(t *testing.T, driver string) {
		t.Parallel()
		g, sim := apiStartSim(t, driver)

		st, body := g.API(t, http.MethodGet, "/v1/quotes?bzjmoney=100000", nil)
		quotes := apiDecode[struct{ Items []apiQuote }](t, apiWant(t, st, body, http.StatusOK)).Items
		if len(quotes) != 1 || quotes[0].Money.String() != "200.00" || quotes[0].Error != "" {
			t.Errorf("quotes %+v, want SIM02's minimum fee", quotes)
		}

		st, body = apiApply(t, g, apiApplication("SIM02", "SIMAPI1", "QYSIM", "XM-S", "BD-S"))
		o := apiDecode[apiOrder](t, apiWant(t, st, body, http.StatusCreated))
		// The simulator calls back after 10 ms: on a busy machine its
		// notices can land before the apply's own answer is stored, and the
		// order is then already further on. Never behind processing.
		if (o.Status != "processing" && o.Status != "issued") || o.Continueurl == "" {
			t.Fatalf("applied: %+v", o)
		}
		o = apiAwait(t, g, "SIMAPI1", "issued and paid", func(o apiOrder) bool {
			return o.Status == "issued" && o.Bhno != ""
		})
		if o.File.Stored {
			t.Fatal("the file is stored though the notice carried none")
		}
		simOrder, _ := sim.Order("SIMAPI1")
		if o.Bhno != simOrder.GuaranteeNo {
			t.Errorf("bhno %s, the institution issued %s", o.Bhno, simOrder.GuaranteeNo)
		}

		st, pdf := g.API(t, http.MethodGet, "/v1/guarantees/SIMAPI1/file", nil)
		apiWant(t, st, pdf, http.StatusOK)
		letter, err := sim.Letter("SIMAPI1")
		if err != nil || string(letter) != string(pdf) {
			t.Fatalf("the file is not the institution's letter (%d bytes, %d expected, %v)", len(pdf), len(letter), err)
		}
		if n := sim.Stats().Pull; n != 1 {
			t.Errorf("%d pulls, want 1", n)
		}

		verify := func() (match, valid bool) {
			st, body := g.API(t, http.MethodPost, "/v1/verify", pdf)
			v := apiDecode[struct {
				Match   bool   `json:"match"`
				OrderNo string `json:"orderno"`
				Bhno    string `json:"bhno"`
				Valid   bool   `json:"valid"`
			}](t, apiWant(t, st, body, http.StatusOK))
			if v.Match && (v.OrderNo != "SIMAPI1" || v.Bhno != o.Bhno) {
				t.Errorf("verified as %+v", v)
			}
			return v.Match, v.Valid
		}
		if match, valid := verify(); !match || !valid {
			t.Errorf("验真 of the issued letter: match %v valid %v", match, valid)
		}

		st, body = g.API(t, http.MethodPost, "/v1/projects/state", apiProjectState("XM-S", "BD-S", "1"))
		p := apiDecode[apiPush](t, apiWant(t, st, body, http.StatusAccepted))
		if len(p.Deliveries) != 1 || p.Deliveries[0].Status != "delivered" {
			t.Errorf("deliveries %+v", p.Deliveries)
		}
		if ps := sim.ProjectStates(); len(ps) != 1 || ps[0].ProjectCode != "XM-S" || ps[0].State != "1" {
			t.Errorf("the institution received %+v", ps)
		}

		st, body = g.API(t, http.MethodPost, "/v1/guarantees/SIMAPI1/cancel", nil)
		apiWant(t, st, body, http.StatusAccepted)
		apiAwait(t, g, "SIMAPI1", "cancelled", func(o apiOrder) bool { return o.Status == "cancelled" })
		if match, valid := verify(); !match || valid {
			t.Errorf("验真 of the cancelled letter: match %v valid %v", match, valid)
		}

		st, body = g.API(t, http.MethodGet, "/v1/guarantees/SIMAPI1/events", nil)
		var names []string
		for _, e := range apiDecode[struct {
			Items []struct {
				Source, Name string
			}
		}](t, apiWant(t, st, body, http.StatusOK)).Items {
			if e.Source != "event" {
				names = append(names, e.Source+" "+e.Name)
			}
		}
		for _, want := range []string{"call apply", "callback paystate", "callback applynotify", "call pull",
			"call cancel", "callback release"} {
			if !slices.Contains(names, want) {
				t.Errorf("history %q lacks %q", names, want)
			}
		}
		sum := sha256.Sum256(pdf)
		if o := apiGet(t, g, "SIMAPI1"); o.File.Sha256 != hex.EncodeToString(sum[:]) {
			t.Errorf("file %+v", o.File)
		}
		var paid struct {
			Paid json.Number `json:"paid_amount"`
		}
		_, body = g.API(t, http.MethodGet, "/v1/guarantees/SIMAPI1", nil)
		if json.Unmarshal(body, &paid); paid.Paid.String() != "200.00" {
			t.Errorf("paid_amount %s, want the premium 200.00", paid.Paid)
		}
	})
}

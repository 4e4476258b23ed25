package faulttest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/wire"
)

// FuzzCallback posts arbitrary plaintext, encrypted with the institution's
// real cipher, to the real handler and service (in process, on SQLite), as
// each of the three callbacks. The answer must always be a well-formed
// generic response: HTTP 200 with stat 1 and 000000, or stat 0 with an
// errcode of docs/decisions.md §7 and a message; never a 500, never a 503 on a
// healthy store. Since the envelope is right, the refusal is never 100001
// or 100002, and it is 100003 exactly when the wire parser refuses the
// plaintext, or when a paystate the parser takes would bring its order's
// paid sum beyond DECIMAL(18,2) (docs/decisions.md §36), which only the
// stored order can tell. CI runs it for a bounded time:
//
//	go test ./faulttest -run '^$' -fuzz '^FuzzCallback$' -fuzztime 10s
func FuzzCallback(f *testing.F) {
	gw := handlertest.Start(f, handlertest.Options{Driver: "sqlite",
		Institutions: []handlertest.Institution{corpusFault, corpusOther}})
	seedCorpusOrders(f, gw.Store)
	kinds := []string{"paystate", "applynotify", "release"}
	parse := map[string]func([]byte) error{
		"paystate":    func(b []byte) error { _, err := wire.ParsePayState(b); return err },
		"applynotify": func(b []byte) error { _, err := wire.ParseApplyNotify(b); return err },
		"release":     func(b []byte) error { _, err := wire.ParseRelease(b); return err },
	}
	index := map[string]uint8{"paystate": 0, "applynotify": 1, "release": 2}
	f.Add(uint8(0), corpusJSON(f, basePayState(), nil))
	f.Add(uint8(1), corpusJSON(f, baseNotify(), nil))
	f.Add(uint8(2), corpusJSON(f, baseRelease(), nil))
	for _, tc := range corpusCases(f) {
		if tc.plain != nil {
			f.Add(index[tc.kind], tc.plain)
		}
	}
	known := map[string]bool{wire.CodeBadParam: true, wire.CodeUnknown: true, wire.CodeConflict: true}

	f.Fuzz(func(t *testing.T, k uint8, plain []byte) {
		kind := kinds[int(k)%len(kinds)]
		body := envelopeOf(t, corpusFault.AppSecret, plain)
		status, resp := gw.RawCallback(t, kind, corpusFault.AppKey, body)
		if status == http.StatusRequestEntityTooLarge && len(body) > 64<<10 && kind != "applynotify" {
			return
		}
		if status != http.StatusOK {
			t.Fatalf("%s answered HTTP %d %+v", kind, status, resp)
		}
		switch {
		case resp.Stat == 1 && resp.Errcode == wire.CodeOK:
		case resp.Stat == 0 && known[resp.Errcode] && resp.Msg != "":
		default:
			t.Fatalf("%s answered a malformed generic response %+v", kind, resp)
		}
		if resp.Data != "" {
			t.Fatalf("%s answered with data %q", kind, resp.Data)
		}
		perr := parse[kind](plain)
		sum := kind == "paystate" && perr == nil && resp.Errcode == wire.CodeBadParam &&
			strings.HasPrefix(resp.Msg, "invalid parameter paymoney:") && strings.Contains(resp.Msg, "beyond DECIMAL(18,2)")
		if (perr != nil) != (resp.Errcode == wire.CodeBadParam) && !sum {
			t.Fatalf("%s: the parser says %v, the gateway answered %+v", kind, perr, resp)
		}
	})
}

package handler_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/handler/handlertest"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

// stubMode is how a stub institution answers one endpoint.
type stubMode int

const (
	stubOK      stubMode = iota // stat 1 with the endpoint's data
	stubRefuse                  // stat 0 with Errcode and Msg
	stubHang                    // no answer until the caller gives up
	stub500                     // HTTP 500
	stubGarbage                 // HTTP 200 with a body that is no generic response
	stubReset                   // the connection is closed after the request was read
)

// stubAnswer configures one endpoint of a stub institution.
type stubAnswer struct {
	Mode         stubMode
	Data         any // stat 1: the response parameters; nil: the endpoint's default
	Errcode, Msg string
	Delay        time.Duration // before answering
	// Hold, when not nil, keeps the answer back until it is closed: a test
	// sees which requests are in flight at once.
	Hold chan struct{}
}

// Endpoints of a stub institution: apply, cost and xmstate under its base
// URL (as the client calls them), and the per-order URLs apply hands out.
const (
	epApply   = "apply"
	epCost    = "cost"
	epXMState = "xmstate"
	epQuery   = "query"
	epPull    = "pull"
	epCancel  = "cancel"
)

// stubInst is an institution on httptest: it checks the appKey, decrypts
// the envelope with the real cipher, answers each endpoint as told and
// keeps what it received, so a test can count calls and read parameters.
type stubInst struct {
	Spec handlertest.Institution
	URL  string
	PDF  []byte // what pull answers by default

	cipher crypto.Cipher
	stop   chan struct{}

	mu       sync.Mutex
	answers  map[string]stubAnswer
	received map[string][]map[string]any
}

// newStubInst starts a stub institution for org with the given timeout (0:
// handlertest's default). It is closed when the test ends.
func newStubInst(t testing.TB, org string, timeout time.Duration) *stubInst {
	t.Helper()
	spec := handlertest.DefaultInstitution(org)
	spec.Timeout = timeout
	c, err := crypto.New(spec.Cipher, spec.AppSecret)
	if err != nil {
		t.Fatal(err)
	}
	s := &stubInst{Spec: spec, cipher: c, stop: make(chan struct{}), PDF: stubPDF(org, 12<<10),
		answers: map[string]stubAnswer{}, received: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	for path, ep := range map[string]string{"/guarantee/apply": epApply, "/guarantee/cost": epCost,
		"/guarantee/xmstate": epXMState, "/order/query": epQuery, "/order/pull": epPull, "/order/cancel": epCancel} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, ep) })
	}
	srv := httptest.NewServer(mux)
	s.URL = srv.URL
	s.Spec.BaseURL = srv.URL
	// Cleanups run last-in first-out: hanging answers end before Close
	// waits for them.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(s.stop) })
	return s
}

// stubPDF returns a guarantee letter of about size bytes, distinct per
// label.
func stubPDF(label string, size int) []byte {
	h := fnv.New64a()
	h.Write([]byte(label))
	return pdftest.Letter(label, size, h.Sum64())
}

// set configures how endpoint ep answers from now on.
func (s *stubInst) set(ep string, a stubAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[ep] = a
}

// calls counts the requests endpoint ep received.
func (s *stubInst) calls(ep string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received[ep])
}

// last returns the decrypted parameters of ep's last request.
func (s *stubInst) last(t testing.TB, ep string) map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.received[ep]
	if len(got) == 0 {
		t.Fatalf("%s received no %s request", s.Spec.OrgCode, ep)
	}
	return got[len(got)-1]
}

func (s *stubInst) serve(w http.ResponseWriter, r *http.Request, ep string) {
	raw, _ := io.ReadAll(r.Body)
	if r.Header.Get("appKey") != s.Spec.AppKey {
		s.reply(w, wire.Response{Stat: 0, Errcode: wire.CodeBadAppKey, Msg: "unknown appKey"})
		return
	}
	ct, err := wire.Ciphertext(raw)
	var plain []byte
	if err == nil {
		plain, err = s.cipher.Decrypt(ct)
	}
	var params map[string]any
	if err == nil {
		// Numbers stay as sent, so a test can check money's two decimals.
		d := json.NewDecoder(bytes.NewReader(plain))
		d.UseNumber()
		err = d.Decode(&params)
	}
	if err != nil {
		s.reply(w, wire.Response{Stat: 0, Errcode: wire.CodeBadCipher, Msg: "does not decrypt"})
		return
	}
	s.mu.Lock()
	s.received[ep] = append(s.received[ep], params)
	a := s.answers[ep]
	s.mu.Unlock()

	if a.Hold != nil {
		select {
		case <-a.Hold:
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		}
	}
	if a.Delay > 0 {
		select {
		case <-time.After(a.Delay):
		case <-r.Context().Done():
			return
		}
	}
	switch a.Mode {
	case stubHang:
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
	case stub500:
		http.Error(w, "internal error", http.StatusInternalServerError)
	case stubGarbage:
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>502 Bad Gateway</html>")
	case stubReset:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case stubRefuse:
		s.reply(w, wire.Response{Stat: 0, Errcode: a.Errcode, Msg: a.Msg})
	default:
		data := a.Data
		if data == nil {
			data = s.defaultData(ep, params)
		}
		resp := wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功"}
		if data != nil {
			plain, _ := json.Marshal(data)
			enc, err := s.cipher.Encrypt(plain)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			resp.Data = string(enc)
		}
		s.reply(w, resp)
	}
}

// defaultData is what an institution that works answers.
func (s *stubInst) defaultData(ep string, params map[string]any) any {
	switch ep {
	case epApply:
		orderNo, _ := params["orderno"].(string)
		return map[string]any{"continueurl": s.URL + "/continue/" + orderNo, "queryurl": s.URL + "/order/query",
			"pullurl": s.URL + "/order/pull", "cancelurl": s.URL + "/order/cancel"}
	case epCost:
		return map[string]any{"money": json.Number("150.00")}
	case epQuery:
		return map[string]any{"status": 2, "describe": "办理中"}
	case epPull:
		return map[string]any{"name": "保函", "file": base64.StdEncoding.EncodeToString(s.PDF)}
	}
	return nil // xmstate, cancel: the generic response alone
}

func (s *stubInst) reply(w http.ResponseWriter, resp wire.Response) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	json.NewEncoder(w).Encode(resp)
}

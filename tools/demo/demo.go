// Package demo walks one guarantee through its whole lifecycle against a
// running gateway whose institution is a banksim that calls back: quotes,
// apply, payment, issuance, PDF download, 验真, project state, cancel and
// release. It prints each step and what came back, and fails if any step
// did not hold. It speaks to the gateway over HTTP only, as the bidding
// module would; the payment, the issuance and the release are banksim's
// callbacks, which the demo sees arrive through the API.
package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// Config names the gateway and the institution to walk through.
type Config struct {
	URL     string // the gateway's base URL
	Token   string // a bearer token of its api.tokens
	OrgCode string // an institution that calls back (banksim)
	// Wait bounds each step that waits for a callback (default 15s).
	Wait time.Duration
	Out  io.Writer
}

// Deposit is the bid deposit of the demo's application, in yuan.
const Deposit = "100000.00"

// order is the part of the gateway's order view the demo reads.
type order struct {
	OrderNo     string      `json:"orderno"`
	OrgCode     string      `json:"orgcode"`
	Status      string      `json:"status"`
	GuaranteeNo string      `json:"bhno"`
	ContinueURL string      `json:"continueurl"`
	Premium     json.Number `json:"bhcost"`
	Paid        json.Number `json:"paid_amount"`
	Issuer      string      `json:"sellername"`
	Cancellable bool        `json:"cancellable"`
	File        struct {
		Stored bool   `json:"stored"`
		Size   int64  `json:"size"`
		Sha256 string `json:"sha256"`
	} `json:"file"`
}

// walk is the state carried from step to step.
type walk struct {
	cfg         Config
	client      *http.Client
	orderNo     string
	projectCode string
	lotCode     string
	opening     int64
	order       order
	pdf         []byte
}

type step struct {
	name string
	run  func(ctx context.Context) (string, error)
}

// Run walks the lifecycle, printing one line per step. It stops at the
// first step that fails (the rest depend on it) and returns its error.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Wait <= 0 {
		cfg.Wait = 15 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	now := time.Now()
	w := &walk{cfg: cfg, client: &http.Client{Timeout: 30 * time.Second},
		orderNo: "DEMO" + now.Format("20060102150405"), projectCode: "XM-DEMO-" + now.Format("150405"), lotCode: "BD-1",
		opening: now.Add(25 * time.Hour).UnixMilli()}
	steps := []step{
		{"quotes", w.quotes},
		{"apply", w.apply},
		{"payment", w.payment},
		{"issuance", w.issuance},
		{"PDF download", w.download},
		{"验真 (verify)", w.verify},
		{"project state", w.projectState},
		{"cancel", w.cancel},
		{"release", w.release},
		{"history", w.history},
	}
	for i, s := range steps {
		start := time.Now()
		got, err := s.run(ctx)
		took := time.Since(start).Round(time.Millisecond)
		if err != nil {
			fmt.Fprintf(cfg.Out, "✗ %2d %s %s (%v)\n", i+1, pad(s.name, 14), err, took)
			for j := i + 1; j < len(steps); j++ {
				fmt.Fprintf(cfg.Out, "- %2d %s skipped\n", j+1, pad(steps[j].name, 14))
			}
			return fmt.Errorf("demo: step %d (%s) failed: %w", i+1, s.name, err)
		}
		fmt.Fprintf(cfg.Out, "✓ %2d %s %s (%v)\n", i+1, pad(s.name, 14), got, took)
	}
	fmt.Fprintf(cfg.Out, "all %d steps held\n", len(steps))
	return nil
}

func (w *walk) quotes(ctx context.Context) (string, error) {
	var res struct {
		Items []struct {
			OrgCode  string      `json:"orgcode"`
			Name     string      `json:"name"`
			Money    json.Number `json:"money"`
			Describe string      `json:"describe"`
			Error    string      `json:"error"`
		} `json:"items"`
	}
	if err := w.call(ctx, http.MethodGet, "/v1/quotes?bzjmoney="+Deposit, nil, http.StatusOK, &res); err != nil {
		return "", err
	}
	for _, q := range res.Items {
		if q.OrgCode != w.cfg.OrgCode {
			continue
		}
		switch {
		case q.Error != "":
			return "", fmt.Errorf("GET /v1/quotes: %s answered with an error: %s", q.OrgCode, q.Error)
		case q.Money != "":
			return fmt.Sprintf("GET /v1/quotes?bzjmoney=%s → %s %s quotes %s 元", Deposit, q.OrgCode, q.Name, q.Money), nil
		default:
			return fmt.Sprintf("GET /v1/quotes?bzjmoney=%s → %s %s: %s", Deposit, q.OrgCode, q.Name, q.Describe), nil
		}
	}
	return "", fmt.Errorf("GET /v1/quotes: no quote from %s among %d", w.cfg.OrgCode, len(res.Items))
}

func (w *walk) apply(ctx context.Context) (string, error) {
	deadline := time.Now().Add(24 * time.Hour).UnixMilli()
	body := map[string]any{
		"orgcode": w.cfg.OrgCode, "orderno": w.orderNo,
		"qyname": "某某建设工程有限公司", "qycode": "91110108MA01DEMO0X", "bzjmoney": Deposit,
		"xmname": "某区政府办公楼改造工程(演示)", "xmcode": w.projectCode, "bdname": "第一标段", "bdcode": w.lotCode,
		"kbttime": w.opening, "tbjztime": deadline,
		"zbrname": "某区机关事务管理局", "zbrcode": "11110108000000000Y",
		"qykh": "中国工商银行北京海淀支行", "qykhzh": "某某建设工程有限公司", "qyjbzh": "0200001234567890123",
		"jbrname": "张三", "jbrphone": "13800005678", "jbremail": "zhangsan@example.cn",
	}
	if err := w.call(ctx, http.MethodPost, "/v1/guarantees", body, http.StatusCreated, &w.order); err != nil {
		return "", err
	}
	if w.order.Status != "processing" || w.order.ContinueURL == "" {
		return "", fmt.Errorf("POST /v1/guarantees: status %q, continueurl %q; want processing with a continueurl", w.order.Status, w.order.ContinueURL)
	}
	return fmt.Sprintf("POST /v1/guarantees → 201, order %s %s, the bidder continues at %s", w.orderNo, w.order.Status, w.order.ContinueURL), nil
}

func (w *walk) payment(ctx context.Context) (string, error) {
	err := w.waitOrder(ctx, "a paystate callback (paid_amount > 0)", func(o order) bool { return o.Paid != "" && o.Paid != "0" && o.Paid != "0.00" })
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("paystate from %s → paid_amount %s 元, status %s", w.cfg.OrgCode, w.order.Paid, w.order.Status), nil
}

func (w *walk) issuance(ctx context.Context) (string, error) {
	err := w.waitOrder(ctx, "an applynotify callback (status issued, file stored)", func(o order) bool {
		return o.Status == "issued" && o.GuaranteeNo != "" && o.File.Stored
	})
	if err != nil {
		return "", err
	}
	o := w.order
	return fmt.Sprintf("applynotify from %s → status issued, bhno %s, premium %s 元, PDF %d bytes sha256 %s…",
		o.Issuer, o.GuaranteeNo, o.Premium, o.File.Size, o.File.Sha256[:min(12, len(o.File.Sha256))]), nil
}

func (w *walk) download(ctx context.Context) (string, error) {
	path := "/v1/guarantees/" + url.PathEscape(w.orderNo) + "/file"
	resp, raw, err := w.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s → %d: %s", path, resp.StatusCode, brief(raw))
	}
	ct := resp.Header.Get("Content-Type")
	sum := sha256.Sum256(raw)
	switch {
	case ct != "application/pdf":
		return "", fmt.Errorf("GET %s: Content-Type %q, want application/pdf", path, ct)
	case !bytes.HasPrefix(raw, []byte("%PDF-")):
		return "", fmt.Errorf("GET %s: the body does not start with %%PDF-", path)
	case hex.EncodeToString(sum[:]) != w.order.File.Sha256:
		return "", fmt.Errorf("GET %s: sha256 %x differs from the order's %s", path, sum, w.order.File.Sha256)
	}
	w.pdf = raw
	return fmt.Sprintf("GET %s → 200 %s, %d bytes, sha256 matches the order", path, ct, len(raw)), nil
}

func (w *walk) verify(ctx context.Context) (string, error) {
	type verdict struct {
		Match       bool   `json:"match"`
		OrderNo     string `json:"orderno"`
		GuaranteeNo string `json:"bhno"`
		Status      string `json:"status"`
		Valid       bool   `json:"valid"`
	}
	var v verdict
	if err := w.call(ctx, http.MethodPost, "/v1/verify", w.pdf, http.StatusOK, &v); err != nil {
		return "", err
	}
	if !v.Match || !v.Valid || v.OrderNo != w.orderNo || v.GuaranteeNo != w.order.GuaranteeNo {
		return "", fmt.Errorf("POST /v1/verify (the PDF): %+v; want a valid match of %s", v, w.orderNo)
	}
	// A forged copy: one byte changed in the middle.
	forged := bytes.Clone(w.pdf)
	forged[len(forged)/2] ^= 0x20
	var f verdict
	if err := w.call(ctx, http.MethodPost, "/v1/verify", forged, http.StatusOK, &f); err != nil {
		return "", err
	}
	if f.Match {
		return "", fmt.Errorf("POST /v1/verify (a changed copy): matched %s; want no match", f.OrderNo)
	}
	return fmt.Sprintf("POST /v1/verify (the PDF) → match, order %s, bhno %s, %s, valid; a copy with one byte changed → no match",
		v.OrderNo, v.GuaranteeNo, v.Status), nil
}

func (w *walk) projectState(ctx context.Context) (string, error) {
	body := map[string]any{"xmname": "某区政府办公楼改造工程(演示)", "xmcode": w.projectCode, "bdname": "第一标段",
		"bdcode": w.lotCode, "kbttime": w.opening, "state": "1"}
	var res struct {
		ID         int64 `json:"id"`
		Deliveries []struct {
			OrgCode   string `json:"orgcode"`
			Status    string `json:"status"`
			LastError string `json:"last_error"`
		} `json:"deliveries"`
	}
	if err := w.call(ctx, http.MethodPost, "/v1/projects/state", body, http.StatusAccepted, &res); err != nil {
		return "", err
	}
	for _, d := range res.Deliveries {
		if d.OrgCode != w.cfg.OrgCode {
			continue
		}
		if d.Status != "delivered" {
			return "", fmt.Errorf("POST /v1/projects/state: delivery to %s is %s (%s), want delivered", d.OrgCode, d.Status, d.LastError)
		}
		return fmt.Sprintf("POST /v1/projects/state (state 1, awarded) → 202, push %d, xmstate delivered to %s", res.ID, d.OrgCode), nil
	}
	return "", fmt.Errorf("POST /v1/projects/state: no delivery to %s among %d", w.cfg.OrgCode, len(res.Deliveries))
}

func (w *walk) cancel(ctx context.Context) (string, error) {
	path := "/v1/guarantees/" + url.PathEscape(w.orderNo) + "/cancel"
	var o order
	if err := w.call(ctx, http.MethodPost, path, nil, http.StatusAccepted, &o); err != nil {
		return "", err
	}
	if o.Status != "cancelling" && o.Status != "cancelled" { // the release may already be in
		return "", fmt.Errorf("POST %s: status %s, want cancelling", path, o.Status)
	}
	w.order = o
	return fmt.Sprintf("POST %s → 202, status %s (cancelurl accepted)", path, o.Status), nil
}

func (w *walk) release(ctx context.Context) (string, error) {
	if err := w.waitOrder(ctx, "a release callback (status cancelled)", func(o order) bool { return o.Status == "cancelled" }); err != nil {
		return "", err
	}
	return fmt.Sprintf("release (state 1, 注销) from %s → status %s", w.cfg.OrgCode, w.order.Status), nil
}

func (w *walk) history(ctx context.Context) (string, error) {
	var res struct {
		Items []struct {
			Source string `json:"source"`
			Name   string `json:"name"`
			To     string `json:"to_status"`
			Result string `json:"outcome"`
		} `json:"items"`
	}
	path := "/v1/guarantees/" + url.PathEscape(w.orderNo) + "/events"
	if err := w.call(ctx, http.MethodGet, path, nil, http.StatusOK, &res); err != nil {
		return "", err
	}
	var statuses []string
	callbacks := map[string]bool{}
	for _, e := range res.Items {
		if e.To != "" {
			statuses = append(statuses, e.To)
		}
		if e.Source == "callback" && e.Result == "accepted" {
			callbacks[e.Name] = true
		}
	}
	want := []string{"applying", "processing", "issued", "cancelling", "cancelled"}
	if strings.Join(statuses, ",") != strings.Join(want, ",") {
		return "", fmt.Errorf("GET %s: statuses %v, want %v", path, statuses, want)
	}
	for _, k := range []string{"paystate", "applynotify", "release"} {
		if !callbacks[k] {
			return "", fmt.Errorf("GET %s: no accepted %s callback in the history", path, k)
		}
	}
	return fmt.Sprintf("GET %s → %d entries; statuses %s; paystate, applynotify and release callbacks accepted",
		path, len(res.Items), strings.Join(statuses, " → ")), nil
}

// waitOrder polls the order until cond holds or Wait runs out.
func (w *walk) waitOrder(ctx context.Context, what string, cond func(order) bool) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Wait)
	defer cancel()
	path := "/v1/guarantees/" + url.PathEscape(w.orderNo)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var o order
		if err := w.call(ctx, http.MethodGet, path, nil, http.StatusOK, &o); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no %s within %v (order %s)", what, w.cfg.Wait, w.order.Status)
			}
			return err
		}
		w.order = o
		if cond(o) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s within %v: order is %s, paid %s", what, w.cfg.Wait, o.Status, o.Paid)
		case <-tick.C:
		}
	}
}

// call sends body (nil, []byte as is, or JSON of anything else), expects
// the status, and decodes the answer into out.
func (w *walk) call(ctx context.Context, method, path string, body any, want int, out any) error {
	var raw []byte
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		raw, ct = b, "application/pdf"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		raw, ct = j, "application/json"
	}
	resp, ans, err := w.do(ctx, method, path, raw, ct)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s → %d, want %d: %s", method, path, resp.StatusCode, want, brief(ans))
	}
	if err := json.Unmarshal(ans, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the expected JSON: %v", method, path, err)
	}
	return nil
}

func (w *walk) do(ctx context.Context, method, path string, body []byte, contentType string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.cfg.URL+path, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return resp, raw, nil
}

// pad fills s to width terminal columns; CJK characters take two.
func pad(s string, width int) string {
	cols := 0
	for _, r := range s {
		if r >= 0x1100 && unicode.In(r, unicode.Han, unicode.Hangul, unicode.Hiragana, unicode.Katakana) {
			cols += 2
		} else {
			cols++
		}
	}
	return s + strings.Repeat(" ", max(0, width-cols))
}

// brief shortens an answer for an error message.
func brief(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

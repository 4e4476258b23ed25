package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/wire"
)

// The fuzz targets of the decoders an institution's bytes reach. Each must
// never panic, must fail only with a *wire.FieldError naming a field (or
// ErrEnvelope), and whatever it accepts must obey the rules of
// docs/decisions.md — money non-negative with at most two decimals and within
// DECIMAL(18,2), times in range and in UTC, string(n) lengths in runes of
// valid UTF-8, required fields not blank, codes among their values — and
// must survive our own MarshalJSON and a second parse unchanged.
//
// CI runs each for a bounded time, one at a time, e.g.
//
//	go test ./wire -run '^$' -fuzz '^FuzzParsePayState$' -fuzztime 10s

var (
	minTime  = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime  = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	maxMoney = decimal.New(1, 16) // DECIMAL(18,2)
	maxRate  = decimal.New(1, 12) // DECIMAL(18,6)
)

func FuzzCiphertext(f *testing.F) {
	for _, s := range []string{
		`{"data":"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8PbVg="}`,
		`"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8PbVg="`,
		"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8PbVg=",
		"  \n{\"data\" : \"abc\"}\r\n", `{"data":""}`, `{"data":null}`, `{"data":1}`, `{"Data":"x"}`,
		`{"data":"a","data":"b"}`, `""`, `"\u0000"`, `{`, `"`, "", " ", "\xff\xfe", `{"data":"\ud800"}`,
		`{"data":` + strings.Repeat("[", 100) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ct, err := wire.Ciphertext(body)
		if err != nil {
			if !errors.Is(err, wire.ErrEnvelope) {
				t.Fatalf("error %v does not wrap ErrEnvelope", err)
			}
			return
		}
		if len(ct) == 0 {
			t.Fatal("accepted with an empty ciphertext")
		}
		trimmed := strings.TrimSpace(string(body))
		switch trimmed[0] {
		case '{', '"':
			// What came out of JSON comes back out of the object form.
			again, err := wire.Ciphertext(mustJSON(t, wire.Request{Data: string(ct)}))
			if err != nil || string(again) != string(ct) {
				t.Fatalf("re-wrapped %q gave %q, %v", ct, again, err)
			}
		default:
			if string(ct) != trimmed {
				t.Fatalf("bare text %q gave %q", trimmed, ct)
			}
		}
	})
}

func FuzzParsePayState(f *testing.F) {
	for _, s := range []string{
		`{"orderno":"A1","paymoney":"100.00","paytime":1767225600000,"type":"1","paybankname":"某某","paybankno":"6222"}`,
		`{"orderno":"A1","paymoney":100,"paytime":"1767225600","type":2}`,
		`{"orderno":"A1","paymoney":"0.5","paytime":"2026-01-01 10:00:00","type":"2","paybankname":null}`,
		`{"orderno":"A1","paymoney":"100.001","paytime":1767225600000,"type":"1","paybankname":"a","paybankno":"b"}`,
		`{"orderno":"A1","paymoney":1e2,"paytime":0,"type":"3"}`,
		`{"orderno":"A1","paymoney":"-1","paytime":-1,"type":"1"}`,
		`{"orderno":"` + strings.Repeat("订", 33) + `","paymoney":"1","paytime":1767225600000,"type":"2"}`,
		`{"orderno":" ","paymoney":"NaN","paytime":"x","type":[]}`,
		`[]`, `null`, `{}`, "\xff", `{"orderno":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		p, err := wire.ParsePayState(plain)
		if err != nil {
			checkFieldError(t, err)
			return
		}
		checkStr(t, "orderno", p.OrderNo, 32, true)
		checkMoney(t, "paymoney", p.Amount)
		checkTime(t, "paytime", p.PaidAt, true)
		checkCode(t, "type", p.Kind, wire.PayKindPay, wire.PayKindRefund)
		pay := p.Kind == wire.PayKindPay
		checkStr(t, "paybankname", p.PayerName, 64, pay)
		checkStr(t, "paybankno", p.PayerAccount, 64, pay)

		again, err := wire.ParsePayState(mustJSON(t, p))
		if err != nil {
			t.Fatalf("our own form of %+v does not parse: %v", p, err)
		}
		if again.OrderNo != p.OrderNo || !again.Amount.Equal(p.Amount) || !again.PaidAt.Equal(p.PaidAt) ||
			again.Kind != p.Kind || again.PayerName != p.PayerName || again.PayerAccount != p.PayerAccount {
			t.Fatalf("round trip changed %+v into %+v", p, again)
		}
	})
}

func FuzzParseApplyNotify(f *testing.F) {
	for _, s := range []string{
		`{"orderno":"A1","bhno":"BH1","staus":"1","info":"ok","bhrate":"0.005","bhcost":"500.00","sellername":"s","selleraddress":"a","sellerphone":"p","bhcretime":1767225600000,"bhfile":"JVBERi0xLjQK"}`,
		`{"orderno":"A1","status":2,"bhrate":0.005,"bhcost":500,"sellername":"s","selleraddress":"a","sellerphone":"p"}`,
		`{"orderno":"A1","staus":"0","bhrate":"1","bhcost":"1","sellername":"s","selleraddress":"","sellerphone":"p","bhfile":""}`,
		`{"orderno":"A1","staus":"1","bhno":"B","bhrate":"0.0000001","bhcost":"1","sellername":"s","selleraddress":"a","sellerphone":"p"}`,
		`{"orderno":"A1","staus":"1","bhno":"B","bhrate":"1","bhcost":"1","sellername":"s","selleraddress":"a","sellerphone":"p","bhfile":"aGVsbG8="}`,
		`{"orderno":"A1","staus":"1","bhno":"B","bhrate":"1","bhcost":"1","sellername":"s","selleraddress":"a","sellerphone":"p","bhfile":"JVBERi0xLjQK=="}`,
		`{"orderno":"A1","staus":"1","staus":"2"}`, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		n, err := wire.ParseApplyNotify(plain)
		if err != nil {
			checkFieldError(t, err)
			return
		}
		checkStr(t, "orderno", n.OrderNo, 32, true)
		checkCode(t, "staus", n.State, wire.NotifyFailed, wire.NotifyIssued, wire.NotifyProcessing)
		issued := n.State == wire.NotifyIssued
		checkStr(t, "bhno", n.GuaranteeNo, 64, issued)
		checkStr(t, "info", n.Remark, 512, false)
		checkRate(t, "bhrate", n.PremiumRate)
		checkMoney(t, "bhcost", n.Premium)
		checkStr(t, "sellername", n.IssuerName, 64, true)
		checkStr(t, "selleraddress", n.IssuerAddress, 256, true)
		checkStr(t, "sellerphone", n.IssuerPhone, 64, true)
		checkTime(t, "bhcretime", n.IssuedAt, false)
		if n.File != nil && !wire.IsPDF(n.File) {
			t.Fatalf("bhfile accepted but not a PDF: %q", n.File)
		}
		var want []string
		if issued && n.IssuedAt.IsZero() {
			want = append(want, "bhcretime")
		}
		if issued && n.File == nil {
			want = append(want, "bhfile")
		}
		if strings.Join(n.Missing, ",") != strings.Join(want, ",") {
			t.Fatalf("missing %v, want %v", n.Missing, want)
		}

		again, err := wire.ParseApplyNotify(mustJSON(t, n))
		if err != nil {
			t.Fatalf("our own form of %+v does not parse: %v", n, err)
		}
		if again.OrderNo != n.OrderNo || again.GuaranteeNo != n.GuaranteeNo || again.State != n.State ||
			again.Remark != n.Remark || !again.PremiumRate.Equal(n.PremiumRate) || !again.Premium.Equal(n.Premium) ||
			again.IssuerName != n.IssuerName || again.IssuerAddress != n.IssuerAddress || again.IssuerPhone != n.IssuerPhone ||
			!again.IssuedAt.Equal(n.IssuedAt) || string(again.File) != string(n.File) ||
			strings.Join(again.Missing, ",") != strings.Join(n.Missing, ",") {
			t.Fatalf("round trip changed %+v into %+v", n, again)
		}
	})
}

func FuzzParseRelease(f *testing.F) {
	for _, s := range []string{
		`{"bhno":"BH1","state":"1"}`, `{"bhno":"BH1","state":0}`, `{"bhno":"BH1","state":"2"}`,
		`{"bhno":"","state":"1"}`, `{"bhno":1,"state":"1"}`, `{"bhno":"` + strings.Repeat("号", 65) + `","state":"0"}`,
		`{"bhno":"BH1","state":"1","extra":{"a":[1,2,3]}}`, `{"state":"1"}`, `[]`, `1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		r, err := wire.ParseRelease(plain)
		if err != nil {
			checkFieldError(t, err)
			return
		}
		checkStr(t, "bhno", r.GuaranteeNo, 64, true)
		checkCode(t, "state", r.State, wire.ReleaseSurrendered, wire.ReleaseCancelled)
		again, err := wire.ParseRelease(mustJSON(t, r))
		if err != nil || again != r {
			t.Fatalf("round trip changed %+v into %+v (%v)", r, again, err)
		}
	})
}

func FuzzParseApplyRequest(f *testing.F) {
	valid := `{"orgcode":"BANK01","qyname":"某某建设有限公司","qycode":"91110000100000000X","bzjmoney":"100000.00",` +
		`"orderno":"DEMO-1","xmname":"办公楼","xmcode":"XM-1","bdname":"一标段","bdcode":"BD-1","kbttime":1767229200000,` +
		`"zbrname":"某局","zbrcode":"11110000000000000Y","tbjztime":"2026-01-01 08:00:00","qykh":"工商银行",` +
		`"qykhzh":"某某建设有限公司","qyjbzh":"6222020200112233445","jbrname":"张三","jbrphone":"13800005678","jbremail":"z@example.cn"}`
	for _, s := range []string{
		valid,
		strings.Replace(valid, `"100000.00"`, `0`, 1),
		strings.Replace(valid, `"100000.00"`, `"1e5"`, 1),
		strings.Replace(valid, `"orderno":"DEMO-1",`, ``, 1),
		strings.Replace(valid, `"jbremail":"z@example.cn"`, `"jbremail":"`+strings.Repeat("z", 129)+`"`, 1),
		`{}`, `{"orgcode":1}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, plain []byte, withOrgCode bool) {
		a, err := wire.ParseApplyRequest(plain, withOrgCode)
		if err != nil {
			checkFieldError(t, err)
			return
		}
		if withOrgCode {
			checkStr(t, "orgcode", a.OrgCode, 128, true)
		} else if a.OrgCode != "" {
			t.Fatalf("the institution's form read an orgcode %q", a.OrgCode)
		}
		checkStr(t, "orderno", a.OrderNo, 32, !withOrgCode)
		checkMoney(t, "bzjmoney", a.DepositAmount)
		if !a.DepositAmount.IsPositive() {
			t.Fatalf("bzjmoney %s accepted; it must be positive", a.DepositAmount)
		}
		for _, s := range []struct {
			field, v string
			max      int
		}{{"qyname", a.ApplicantName, 64}, {"qycode", a.ApplicantCode, 32}, {"xmname", a.ProjectName, 256},
			{"xmcode", a.ProjectCode, 128}, {"bdname", a.LotName, 256}, {"bdcode", a.LotCode, 128},
			{"zbrname", a.TendererName, 128}, {"zbrcode", a.TendererCode, 32}, {"qykh", a.AccountBank, 128},
			{"qykhzh", a.AccountName, 128}, {"qyjbzh", a.AccountNo, 32}, {"jbrname", a.ContactName, 128},
			{"jbrphone", a.ContactPhone, 128}, {"jbremail", a.ContactEmail, 128}} {
			checkStr(t, s.field, s.v, s.max, true)
		}
		checkTime(t, "kbttime", a.OpeningAt, true)
		checkTime(t, "tbjztime", a.DeadlineAt, true)
		if a.OrderNo == "" {
			return // the gateway makes one; the institution's form needs it
		}
		again, err := wire.ParseApplyRequest(mustJSON(t, a), false)
		if err != nil {
			t.Fatalf("our own form of %+v does not parse: %v", a, err)
		}
		again.OrgCode = a.OrgCode
		if !again.DepositAmount.Equal(a.DepositAmount) || !again.OpeningAt.Equal(a.OpeningAt) || !again.DeadlineAt.Equal(a.DeadlineAt) {
			t.Fatalf("round trip changed %+v into %+v", a, again)
		}
		again.DepositAmount, again.OpeningAt, again.DeadlineAt = a.DepositAmount, a.OpeningAt, a.DeadlineAt
		if again != a {
			t.Fatalf("round trip changed %+v into %+v", a, again)
		}
	})
}

func FuzzParseQueryResult(f *testing.F) {
	for _, s := range []string{
		`{"status":2,"describe":"办理中"}`, `{"status":"1","describe":"ok","dealtime":1767225600000,"bhno":"BH1"}`,
		`{"status":"0","describe":"","dealtime":null}`, `{"status":3}`, `{"status":"1","dealtime":"2026-13-01 00:00:00"}`,
		`{"status":1,"describe":"` + strings.Repeat("述", 513) + `"}`, `{"describe":"x"}`, `{"status":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		q, err := wire.ParseQueryResult(plain)
		if err != nil {
			checkFieldError(t, err)
			return
		}
		checkCode(t, "status", q.Status, wire.NotifyFailed, wire.NotifyIssued, wire.NotifyProcessing)
		checkStr(t, "describe", q.Describe, 512, false)
		checkTime(t, "dealtime", q.DealtAt, false)
		checkStr(t, "bhno", q.GuaranteeNo, 64, false)
		again, err := wire.ParseQueryResult(mustJSON(t, q))
		if err != nil {
			t.Fatalf("our own form of %+v does not parse: %v", q, err)
		}
		if again.Status != q.Status || again.Describe != q.Describe || !again.DealtAt.Equal(q.DealtAt) || again.GuaranteeNo != q.GuaranteeNo {
			t.Fatalf("round trip changed %+v into %+v", q, again)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %+v: %v", v, err)
	}
	return b
}

func checkFieldError(t *testing.T, err error) {
	t.Helper()
	var fe *wire.FieldError
	if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
		t.Fatalf("error %v (%T) is not a FieldError naming a field", err, err)
	}
}

func checkStr(t *testing.T, field, s string, max int, required bool) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%s accepted as invalid UTF-8: %q", field, s)
	}
	if n := utf8.RuneCountInString(s); n > max {
		t.Fatalf("%s accepted with %d characters, max %d", field, n, max)
	}
	if required && strings.TrimSpace(s) == "" {
		t.Fatalf("required %s accepted blank: %q", field, s)
	}
}

func checkMoney(t *testing.T, field string, d decimal.Decimal) {
	t.Helper()
	if d.IsNegative() || !d.Equal(d.Truncate(2)) || !d.LessThan(maxMoney) {
		t.Fatalf("%s accepted as %s: money is non-negative, at most two decimals, below 10^16", field, d)
	}
}

func checkRate(t *testing.T, field string, d decimal.Decimal) {
	t.Helper()
	if d.IsNegative() || !d.Equal(d.Truncate(6)) || !d.LessThan(maxRate) {
		t.Fatalf("%s accepted as %s: a rate is non-negative, at most six decimals, below 10^12", field, d)
	}
}

func checkTime(t *testing.T, field string, tm time.Time, required bool) {
	t.Helper()
	if tm.IsZero() {
		if required {
			t.Fatalf("required %s accepted as the zero time", field)
		}
		return
	}
	if tm.Location() != time.UTC || tm.Before(minTime) || !tm.Before(maxTime) {
		t.Fatalf("%s accepted as %v: times are in UTC, from 2000 to 2100", field, tm)
	}
}

func checkCode(t *testing.T, field, v string, allowed ...string) {
	t.Helper()
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	t.Fatalf("%s accepted as %q, want one of %v", field, v, allowed)
}

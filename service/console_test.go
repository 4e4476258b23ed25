package service

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire"
)

// TestPresentJSON: a decrypted payload is shown in the order the sender
// wrote it, numbers as sent, personal data masked wherever it sits, a
// PDF as its size and digest; anything but one JSON object is not shown.
func TestPresentJSON(t *testing.T) {
	pdf := []byte("%PDF-1.4 a letter of guarantee")
	sum := sha256.Sum256(pdf)
	b64 := base64.StdEncoding.EncodeToString(pdf)
	tests := []struct {
		name  string
		plain string
		state string
		want  string // the JSON shown
		files []EmbeddedFile
	}{
		{"paystate", `{"orderno":"A-1","paymoney":100.10,"paytime":1700000000000,"type":"1","paybankname":"张三","paybankno":"6222020200112233445"}`,
			BodyShown, `{
  "orderno": "A-1",
  "paymoney": 100.10,
  "paytime": 1700000000000,
  "type": "1",
  "paybankname": "张*",
  "paybankno": "***************3445"
}`, nil},
		{"applynotify with its PDF", `{"orderno":"A-1","staus":"1","bhfile":"` + b64 + `","sellerphone":"010-1"}`, BodyShown,
			`{
  "orderno": "A-1",
  "staus": "1",
  "bhfile": "<` + fmt.Sprint(len(pdf)) + ` bytes, sha256 ` + hex.EncodeToString(sum[:]) + `>",
  "sellerphone": "010-1"
}`, []EmbeddedFile{{Field: "bhfile", Size: len(pdf), Sha256: hex.EncodeToString(sum[:]), PDF: true}}},
		{"nested and numeric personal data", `{"a":{"jbrphone":"13800005678","list":[{"qyjbzh":6222020200112233445}]},"e":[],"n":null,"b":true}`, BodyShown,
			`{
  "a": {
    "jbrphone": "138****5678",
    "list": [
      {
        "qyjbzh": "***************3445"
      }
    ]
  },
  "e": [],
  "n": null,
  "b": true
}`, nil},
		{"html stays text", `{"info":"<b>&</b>"}`, BodyShown, `{
  "info": "<b>&</b>"
}`, nil},
		{"array", `[{"jbrphone":"13800005678"}]`, BodyNotJSON, "", nil},
		{"not JSON", `orderno=A-1`, BodyNotJSON, "", nil},
		{"two objects", `{"a":1}{"jbrphone":"13800005678"}`, BodyNotJSON, "", nil},
		{"truncated", `{"a":1,"jbrphone":"1380`, BodyNotJSON, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := presentJSON([]byte(tt.plain))
			if b.State != tt.state || b.JSON != tt.want {
				t.Errorf("presentJSON = %s\n%s\nwant %s\n%s", b.State, b.JSON, tt.state, tt.want)
			}
			if tt.state == BodyShown && !json.Valid([]byte(b.JSON)) {
				t.Errorf("the JSON shown is not JSON: %s", b.JSON)
			}
			if fmt.Sprint(b.Files) != fmt.Sprint(tt.files) {
				t.Errorf("files %+v, want %+v", b.Files, tt.files)
			}
			if strings.Contains(b.JSON, "13800005678") || strings.Contains(b.JSON, "6222020200112233445") {
				t.Errorf("personal data shown whole: %s", b.JSON)
			}
		})
	}
}

// TestShowBody: a stored body is decrypted with its institution's cipher;
// what cannot be says why.
func TestShowBody(t *testing.T) {
	c, err := crypto.New(crypto.Options{}, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	inst := &Institution{OrgCode: "B1", Cipher: c}
	ct, err := c.Encrypt([]byte(`{"orderno":"A-1","paybankno":"6222020200112233445"}`))
	if err != nil {
		t.Fatal(err)
	}
	env, _ := json.Marshal(wire.Request{Data: string(ct)})
	other, _ := crypto.New(crypto.Options{}, "fedcba9876543210")
	for name, tt := range map[string]struct {
		inst  *Institution
		raw   []byte
		kept  bool
		state string
	}{
		"decrypted":          {inst, env, true, BodyShown},
		"not kept":           {inst, nil, false, BodyNotKept},
		"removed":            {inst, nil, true, BodyRemoved},
		"removed, on sqlite": {inst, []byte{}, true, BodyRemoved},
		"no institution":     {nil, env, true, BodyNoCipher},
		"not envelope":       {inst, []byte(`{"data":1}`), true, BodyNotEnvelope},
		"other key":          {&Institution{Cipher: other}, env, true, BodyNotDecrypted},
	} {
		t.Run(name, func(t *testing.T) {
			b := showBody(tt.inst, tt.raw, tt.kept)
			if b.State != tt.state {
				t.Errorf("state %s, want %s", b.State, tt.state)
			}
			if tt.state == BodyShown && !strings.Contains(b.JSON, `"paybankno": "***************3445"`) {
				t.Errorf("body %s", b.JSON)
			}
		})
	}
}

func TestMaskName(t *testing.T) {
	for in, want := range map[string]string{"张三": "张*", "欧阳娜娜": "欧***", "某某建设有限公司": "某*******", "Li": "L*", "": "", "王": "*"} {
		if got := MaskName(in); got != want {
			t.Errorf("MaskName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSignInLimits: failures empty a user's bucket and an address's; an
// empty one refuses (saying how long to wait) without taking anything; a
// success gives its reservation back; addresses of one IPv6 /64 share a
// bucket.
func TestSignInLimits(t *testing.T) {
	l := newSignInLimits()
	for i := range userFailBurst {
		if wait := l.wait("ops", "10.0.0.1"); wait > 0 {
			t.Fatalf("failure %d refused", i)
		}
		l.fail("ops", "10.0.0.1")
	}
	if wait := l.wait("ops", "10.0.0.2"); wait <= 0 || wait > userFailEvery {
		t.Errorf("after %d failures: wait %s, want up to %s", userFailBurst, wait, userFailEvery)
	}
	// Another user from the same address is not held by ops's failures.
	if wait := l.wait("li", "10.0.0.1"); wait > 0 {
		t.Errorf("another user refused: wait %s", wait)
	}

	l = newSignInLimits()
	for i := range addrFailBurst {
		user := fmt.Sprintf("user%d", i)
		if wait := l.wait(user, addrKey("[2001:db8::1]:4000")); wait > 0 {
			t.Fatalf("failure %d from the address refused", i)
		}
		l.fail(user, addrKey("[2001:db8::1]:4000"))
	}
	if wait := l.wait("someone", addrKey("[2001:db8::ffff]:5000")); wait <= 0 || wait > addrFailEvery {
		t.Errorf("the same /64 after %d failures: wait %s", addrFailBurst, wait)
	}
	if wait := l.wait("someone", addrKey("[2001:db8:0:1::1]:5000")); wait > 0 {
		t.Errorf("another /64 refused")
	}

	// A full map keeps working: idle buckets are dropped, then all share one.
	l = newSignInLimits()
	now := time.Now()
	for i := range maxLimiters {
		l.bucket(l.addrs, fmt.Sprint(i), addrFailEvery, addrFailBurst, now).AllowN(now, 1)
	}
	if b := l.bucket(l.addrs, "new", addrFailEvery, addrFailBurst, now); b != l.overflow {
		t.Errorf("a full map of busy buckets made another")
	}
	if len(l.addrs) != maxLimiters {
		t.Errorf("%d buckets, want at most %d", len(l.addrs), maxLimiters)
	}
}

func TestTokens(t *testing.T) {
	tok, id, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	if !wellFormedToken(tok) || len(id) != 64 || id == tok || tokenID(tok) != id {
		t.Errorf("token %q id %q", tok, id)
	}
	for _, bad := range []string{"", "x", strings.Repeat("!", 43), tok + "A", id} {
		if wellFormedToken(bad) {
			t.Errorf("%q taken as a token", bad)
		}
	}
}

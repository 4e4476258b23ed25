package wire

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/wire/pdftest"
)

// BenchmarkNoticePDFCheck measures what checking the PDF of an issuance
// notice costs against decrypting that notice: a 10 MiB letter, in a
// notice of ~17.8 MiB (the body's base64 of the ciphertext of the JSON
// that holds the PDF's base64). Each iteration decrypts the body, then
// parses the notice the way the gateway does (JSON, base64 of the file)
// without the check, then checks the PDF (CheckPDF); it reports each
// phase's time and check/decrypt, the ratio asked about:
//
//	go test -run '^$' -bench NoticePDFCheck -benchtime 20x ./wire/
func BenchmarkNoticePDFCheck(b *testing.B) {
	c, err := crypto.New(crypto.Options{}, "0123456789abcdef")
	if err != nil {
		b.Fatal(err)
	}
	pdf := pdftest.Letter("BH-BENCH", 10<<20, 1)
	plain := []byte(`{"orderno":"B1","bhno":"BH-BENCH","staus":"1","bhrate":"0.005","bhcost":"500.00","sellername":"s",` +
		`"selleraddress":"a","sellerphone":"p","bhcretime":1767225600000,"bhfile":"` + base64.StdEncoding.EncodeToString(pdf) + `"}`)
	ct, err := c.Encrypt(plain)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ct)))
	var decrypt, parse, check time.Duration
	for b.Loop() {
		t0 := time.Now()
		p, err := c.Decrypt(ct)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		r, ferr := newReader(p)
		if ferr != nil {
			b.Fatal(ferr)
		}
		raw := r.raw("bhfile")
		text := raw[1 : len(raw)-1]
		file := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
		k, err := base64.StdEncoding.Decode(file, text)
		if err != nil {
			b.Fatal(err)
		}
		file = file[:k]
		t2 := time.Now()
		if err := CheckPDF(file); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		decrypt, parse, check = decrypt+t1.Sub(t0), parse+t2.Sub(t1), check+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(decrypt.Microseconds())/n, "decrypt-µs/op")
	b.ReportMetric(float64(parse.Microseconds())/n, "parse-µs/op")
	b.ReportMetric(float64(check.Microseconds())/n, "check-µs/op")
	b.ReportMetric(float64(check)/float64(decrypt), "check/decrypt")
}

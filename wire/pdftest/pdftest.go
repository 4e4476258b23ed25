// Package pdftest makes guarantee letters for tests: small but well-formed
// PDFs that wire.CheckPDF accepts, padded to any size, each different.
package pdftest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Letter returns a one-page PDF naming label, padded with an unreferenced
// stream to a little over size bytes when size is larger than the page
// itself. The padding is 4 KiB of noise from seed, repeated: distinct per
// seed, and cheap to make at tens of MiB under the race detector.
func Letter(label string, size int, seed uint64) []byte {
	var b bytes.Buffer
	b.Grow(size + 1024)
	var offsets []int
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	label = strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(label)
	text := fmt.Sprintf("BT /F1 14 Tf 72 770 Td (Guarantee letter %s) Tj ET", label)
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>")
	obj(fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(text), text))
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
	if pad := size - b.Len(); pad > 0 {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length %d >>\nstream\n", len(offsets), pad)
		noise := make([]byte, min(pad, 4096))
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for i := range noise {
			noise[i] = byte(r.Uint32())
		}
		for left := pad; left > 0; left -= len(noise) {
			b.Write(noise[:min(left, len(noise))])
		}
		b.WriteString("\nendstream\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

package fill

import (
	"testing"
	"time"
)

func BenchmarkChunk(b *testing.B) {
	opt := Options{Orders: 1_000_000, Seed: 1, Now: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}
	if err := opt.defaults(); err != nil {
		b.Fatal(err)
	}
	ins, err := opt.insts()
	if err != nil {
		b.Fatal(err)
	}
	pdf := letter(opt.FileBytes)
	f := &filler{o: &opt, ins: ins, pdf: pdfFile{lit: blobLiteral(pdf), sha: sha256Hex(pdf), size: int64(len(pdf)), bytes: pdf},
		plants: map[int]string{}, chunks: 1000}
	var bases [numTables]int64
	var buf []byte
	ch := &chunk{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.make(i%1000, ch)
		for ti := range tables {
			r := &ch.rows[ti]
			ncol := len(tables[ti].cols)
			buf = buf[:0]
			for row := 0; row < r.n; row++ {
				for _, v := range r.vals[row*ncol : (row+1)*ncol] {
					buf = appendVal(buf, v, &bases)
				}
			}
		}
	}
}

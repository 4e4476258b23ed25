package crypto

import (
	"crypto/aes"
	"encoding/base64"
	"strconv"
	"testing"
)

// benchSizes are the payloads of the envelope benchmarks: a typical JSON
// request and a large one (a guarantee PDF in base64, say).
var benchSizes = []int{1 << 10, 1 << 20}

func benchName(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}

func benchPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

func benchCipher(b *testing.B) Cipher {
	b.Helper()
	c, err := New(Options{}, "1234567890abcdef")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkRawAESBlock is the baseline: crypto/aes block encryption over the
// payload in an ECB-style loop, nothing else. The envelope benchmarks report
// MB/s of plaintext too, so their ratio to this one is the envelope's cost.
func BenchmarkRawAESBlock(b *testing.B) { benchRawAES(b, false) }

// BenchmarkRawAESRoundTrip is the baseline of BenchmarkEnvelopeRoundTrip:
// the block cipher encrypting and then decrypting the payload, nothing else.
func BenchmarkRawAESRoundTrip(b *testing.B) { benchRawAES(b, true) }

func benchRawAES(b *testing.B, roundTrip bool) {
	block, err := aes.NewCipher([]byte("1234567890abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			src := benchPayload(n)
			ct, back := make([]byte, n), make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				for i := 0; i < n; i += aes.BlockSize {
					block.Encrypt(ct[i:i+aes.BlockSize], src[i:i+aes.BlockSize])
				}
				if roundTrip {
					for i := 0; i < n; i += aes.BlockSize {
						block.Decrypt(back[i:i+aes.BlockSize], ct[i:i+aes.BlockSize])
					}
				}
			}
		})
	}
}

// BenchmarkEnvelopeEncrypt: pad, encrypt (AES-128-ECB) and base64-encode.
func BenchmarkEnvelopeEncrypt(b *testing.B) {
	c := benchCipher(b)
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			src := benchPayload(n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encrypt(src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEnvelopeDecrypt: base64-decode, decrypt and unpad.
func BenchmarkEnvelopeDecrypt(b *testing.B) {
	c := benchCipher(b)
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			text, err := c.Encrypt(benchPayload(n))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decrypt(text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEnvelopeRoundTrip: Encrypt then Decrypt, so twice the block
// cipher work of BenchmarkRawAESBlock per byte.
func BenchmarkEnvelopeRoundTrip(b *testing.B) {
	c := benchCipher(b)
	for _, n := range benchSizes {
		b.Run(benchName(n), func(b *testing.B) {
			src := benchPayload(n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				text, err := c.Encrypt(src)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Decrypt(text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStdBase64 is context for the envelope ratios: the standard
// library's base64 codec alone over the ciphertext of each payload. On
// amd64 it costs about as much per byte as AES-NI one block at a time, which
// bounds what an envelope built on it can reach relative to
// BenchmarkRawAESBlock.
func BenchmarkStdBase64(b *testing.B) {
	for _, n := range benchSizes {
		src := benchPayload(n + blockSize)
		enc := make([]byte, base64.StdEncoding.EncodedLen(len(src)))
		base64.StdEncoding.Encode(enc, src)
		dec := make([]byte, len(src))
		b.Run("Encode/"+benchName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				base64.StdEncoding.Encode(enc, src)
			}
		})
		b.Run("Decode/"+benchName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := base64.StdEncoding.Decode(dec, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

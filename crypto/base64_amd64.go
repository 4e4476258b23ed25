//go:build amd64

package crypto

import (
	"encoding/base64"

	"github.com/cloudwego/base64x"
)

// On amd64 the envelope's base64 goes through cloudwego/base64x (SIMD,
// already in the module graph through gin's JSON codec): the standard
// library's encoder is slower per byte than AES-NI itself, and would make
// base64 the envelope's bottleneck. Other architectures (Kunpeng servers,
// for one) use the standard library: base64_other.go.

func b64EncodedLen(n int) int { return base64.StdEncoding.EncodedLen(n) }

func b64DecodedLen(n int) int { return max(base64.StdEncoding.DecodedLen(n), base64x.StdEncoding.DecodedLen(n)) }

func b64Encode(dst, src []byte) { base64x.StdEncoding.Encode(dst, src) }

// b64Decode tries the fast decoder, and on any complaint lets the standard
// one decide, so that exactly the inputs the standard library accepts are
// accepted, with its error messages.
func b64Decode(dst, src []byte) (int, error) {
	if n, err := base64x.StdEncoding.Decode(dst, src); err == nil {
		return n, nil
	}
	return base64.StdEncoding.Decode(dst, src)
}

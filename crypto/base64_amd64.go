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

func b64DecodedLen(n int) int {
	return max(base64.StdEncoding.DecodedLen(n), base64x.StdEncoding.DecodedLen(n))
}

func b64Encode(dst, src []byte) { base64x.StdEncoding.Encode(dst, src) }

// b64Decode hands the fast decoder only padded input (a length that is a
// multiple of 4, as every standard ciphertext is): its native code writes
// without bounds checks and, given unpadded input, wrote past the buffer
// the standard DecodedLen sizes (found by FuzzDecrypt). On padded input
// the output is at most len/4*3 bytes, exactly what dst holds. Anything
// else, and any complaint, goes to the standard library, so that exactly
// the inputs it accepts are accepted, with its error messages.
func b64Decode(dst, src []byte) (int, error) {
	if len(src)%4 == 0 && len(dst) >= len(src)/4*3 {
		if n, err := base64x.StdEncoding.Decode(dst, src); err == nil && n <= len(dst) {
			return n, nil
		}
	}
	return base64.StdEncoding.Decode(dst, src)
}

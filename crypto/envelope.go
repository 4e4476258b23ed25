package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/subtle"
	"fmt"
	"sync"
)

// envelope is the Cipher built by New. It holds only immutable state (the
// block cipher, whose Encrypt and Decrypt are safe for concurrent use, and
// the IV, copied into a fresh cipher.BlockMode per call), so one envelope
// serves all requests of an institution concurrently.
type envelope struct {
	block cipher.Block
	cbc   bool
	iv    [blockSize]byte
	enc   encoding
}

// scratchLen is the ciphertext encrypted and encoded at a time: whole AES
// blocks (16) and whole base64 groups (3), so that the pieces of text join
// up exactly as one encoding of the whole would.
const scratchLen = 48 * 64

var scratchPool = sync.Pool{New: func() any { return new([scratchLen]byte) }}

// Encrypt pads plain with PKCS#7, encrypts it and returns the encoded text.
//
// It makes one allocation, the text itself. The ciphertext goes through a
// pooled scratch of scratchLen bytes, encrypted straight from plain and
// encoded into its place in the text piece by piece; only the last
// (padded) block is copied.
func (c *envelope) Encrypt(plain []byte) ([]byte, error) {
	n := len(plain)
	full := n - n%blockSize
	padded := full + blockSize // PKCS#7 always adds 1..16 bytes
	out := make([]byte, c.enc.encodedLen(padded))

	scratch := scratchPool.Get().(*[scratchLen]byte)
	defer scratchPool.Put(scratch)
	var cbc cipher.BlockMode
	if c.cbc {
		cbc = cipher.NewCBCEncrypter(c.block, c.iv[:]) // the chain carries over between calls
	}
	w := 0
	for off := 0; off < padded; off += scratchLen {
		end := min(off+scratchLen, padded)
		ct := scratch[:end-off]
		whole := min(end, full) - off // the blocks of this piece taken whole from plain
		if cbc != nil {
			cbc.CryptBlocks(ct[:whole], plain[off:off+whole])
		} else {
			// ECB has no mode in the standard library (deliberately): one
			// block at a time, each independent.
			for i := 0; i < whole; i += blockSize {
				c.block.Encrypt(ct[i:i+blockSize], plain[off+i:off+i+blockSize])
			}
		}
		if end == padded {
			last := ct[whole:]
			copy(last, plain[full:])
			pad := byte(padded - n)
			for i := n - full; i < blockSize; i++ {
				last[i] = pad
			}
			if cbc != nil {
				cbc.CryptBlocks(last, last)
			} else {
				c.block.Encrypt(last, last)
			}
		}
		m := c.enc.encodedLen(len(ct))
		c.enc.encode(out[w:w+m], ct)
		w += m
	}
	return out, nil
}

// Decrypt decodes text (the configured encoding, or hex in either case),
// decrypts it in place and strips the PKCS#7 padding. Every failure wraps
// ErrDecrypt; malformed input never panics.
func (c *envelope) Decrypt(text []byte) ([]byte, error) {
	text = bytes.TrimSpace(text)
	if len(text) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrDecrypt)
	}
	buf, err := c.enc.decode(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	if len(buf) == 0 || len(buf)%blockSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %d-byte blocks", ErrDecrypt, len(buf), blockSize)
	}

	if c.cbc {
		cipher.NewCBCDecrypter(c.block, c.iv[:]).CryptBlocks(buf, buf)
	} else {
		for i := 0; i < len(buf); i += blockSize {
			b := buf[i : i+blockSize]
			c.block.Decrypt(b, b)
		}
	}

	n, ok := unpad(buf)
	if !ok {
		// Also what a wrong key (another institution's ciphertext) gives
		// in all but about 1 case in 256.
		return nil, fmt.Errorf("%w: bad padding", ErrDecrypt)
	}
	return buf[:n:n], nil
}

// unpad checks the PKCS#7 padding of buf (a non-empty whole number of
// blocks) and returns the length of the plaintext. The check looks at the
// whole last block whatever the padding byte says, so that its timing does
// not tell a caller how much of a forged padding was right (a padding
// oracle would let anyone who can submit ciphertexts decrypt CBC traffic).
func unpad(buf []byte) (int, bool) {
	n := len(buf)
	p := int(buf[n-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, blockSize)
	for k := 1; k <= blockSize; k++ {
		inPad := subtle.ConstantTimeLessOrEq(k, p)
		eq := subtle.ConstantTimeByteEq(buf[n-k], byte(p))
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	if good != 1 {
		return 0, false
	}
	return n - p, true
}

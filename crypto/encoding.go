package crypto

import (
	"errors"
	"fmt"
)

// encoding is the text form of the ciphertext.
type encoding uint8

const (
	encBase64   encoding = iota // standard alphabet, padded (Java's Base64.getEncoder)
	encHexLower                 // Hutool encryptHex
	encHexUpper                 // the hand-written parseByte2HexStr of many Java samples
)

const (
	hexLower = "0123456789abcdef"
	hexUpper = "0123456789ABCDEF"
)

func (e encoding) encodedLen(n int) int {
	if e == encBase64 {
		return b64EncodedLen(n)
	}
	return 2 * n
}

// encode writes the encoding of src into dst, which has encodedLen(len(src)) bytes.
func (e encoding) encode(dst, src []byte) {
	switch e {
	case encBase64:
		b64Encode(dst, src)
	case encHexLower:
		encodeHex(dst, src, hexLower)
	case encHexUpper:
		encodeHex(dst, src, hexUpper)
	}
}

// encodeHex is hex.Encode with a choice of case; writing the upper case
// directly saves the bytes.ToUpper copy.
func encodeHex(dst, src []byte, digits string) {
	_ = dst[2*len(src)-1] // one bounds check for the loop
	for i, v := range src {
		dst[2*i] = digits[v>>4]
		dst[2*i+1] = digits[v&0x0f]
	}
}

// decode returns the bytes that text (trimmed, non-empty) encodes, in a
// fresh buffer that the caller may decrypt in place.
//
// Hex in either case is always accepted (Hutool's decryptStr does the
// same). A base64 cipher takes text as hex when it has an even length and
// only hex digits, and as base64 otherwise: a padded base64 ciphertext
// almost always has a '=', '+', '/' or a letter past 'f' in its first few
// characters, so the scan stops early on the common path.
func (e encoding) decode(text []byte) ([]byte, error) {
	if e != encBase64 || looksHex(text) {
		return decodeHex(text)
	}
	buf := make([]byte, b64DecodedLen(len(text)))
	n, err := b64Decode(buf, text)
	if err != nil {
		return nil, fmt.Errorf("not base64 or hex: %w", err)
	}
	return buf[:n], nil
}

func looksHex(text []byte) bool {
	if len(text)%2 != 0 {
		return false
	}
	for _, c := range text {
		if _, ok := fromHexChar(c); !ok {
			return false
		}
	}
	return true
}

// decodeHex decodes hex of either case (mixed too, as encoding/hex does).
func decodeHex(text []byte) ([]byte, error) {
	if len(text)%2 != 0 {
		return nil, errors.New("odd-length hex")
	}
	buf := make([]byte, len(text)/2)
	for i := range buf {
		hi, ok1 := fromHexChar(text[2*i])
		lo, ok2 := fromHexChar(text[2*i+1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("invalid hex character near offset %d", 2*i)
		}
		buf[i] = hi<<4 | lo
	}
	return buf, nil
}

func fromHexChar(c byte) (byte, bool) {
	if d := c - '0'; d < 10 {
		return d, true
	}
	if d := (c | 0x20) - 'a'; d < 6 { // c|0x20 folds 'A'-'F' onto 'a'-'f'
		return d + 10, true
	}
	return 0, false
}

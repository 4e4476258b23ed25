// Package crypto implements the envelope ciphers of docs/decisions.md §2: AES (ECB or
// CBC, PKCS#7) or SM4, keyed by the institution's app_secret either raw or
// derived like Java's SHA1PRNG, with the ciphertext carried as base64 or hex.
//
// A Cipher is built once per institution and is safe for concurrent use.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"

	"github.com/emmansun/gmsm/sm4"
)

// Options selects the cipher of one institution. The zero value is the
// default of docs/decisions.md: AES/ECB/PKCS5Padding, raw key, standard base64.
type Options struct {
	Algorithm string // "aes" (default) | "sm4"
	Mode      string // "ecb" (default) | "cbc"
	IV        string // "key" (default: the key bytes) | a 16-character string
	Encoding  string // "base64" (default) | "hex" | "HEX"
	Key       string // "raw" (default) | "sha1prng"
	KeyBits   int    // 128 (default) | 256, only with Key == "sha1prng"
}

// ErrDecrypt is wrapped by every Decrypt failure: bad encoding, a length that
// is not a whole number of blocks, or bad padding.
var ErrDecrypt = errors.New("crypto: ciphertext does not decrypt")

// Cipher encrypts to and decrypts from the encoded text form.
type Cipher interface {
	// Encrypt pads and encrypts plain and returns the encoded ciphertext.
	Encrypt(plain []byte) ([]byte, error)
	// Decrypt accepts the configured encoding and, as docs/decisions.md §2 says,
	// hex in either case as well; errors wrap ErrDecrypt.
	Decrypt(text []byte) ([]byte, error)
}

// blockSize is the block size of both AES and SM4.
const blockSize = 16

// New validates opts and secret (its length must fit the algorithm) and
// returns a cipher with the block cipher built once.
//
// Algorithm, Mode and Key are matched case-insensitively; Encoding is not,
// since "hex" and "HEX" differ. KeyBits only matters with Key "sha1prng": a
// raw key's size is the secret's length, so KeyBits is then only checked to
// be a valid value (a config layer may fill in the default 128).
func New(opts Options, secret string) (Cipher, error) {
	o, err := normalize(opts)
	if err != nil {
		return nil, err
	}
	key, err := deriveKey(o, secret)
	if err != nil {
		return nil, err
	}

	var block cipher.Block
	switch o.Algorithm {
	case "aes":
		block, err = aes.NewCipher(key)
	case "sm4":
		block, err = sm4.NewCipher(key)
	}
	if err != nil { // unreachable: deriveKey checked the length
		return nil, fmt.Errorf("crypto: %s: %w", o.Algorithm, err)
	}

	c := &envelope{block: block, cbc: o.Mode == "cbc"}
	switch o.Encoding {
	case "base64":
		c.enc = encBase64
	case "hex":
		c.enc = encHexLower
	case "HEX":
		c.enc = encHexUpper
	}
	if c.cbc {
		// Java's new IvParameterSpec(key.getBytes()) uses the key bytes
		// themselves as the IV; with a 16-character IV string its UTF-8 bytes.
		if o.IV == "key" {
			// Java refuses an IV that is not one block ("Wrong IV length"),
			// so iv=key only exists with 16-byte keys; PHP and crypto-js
			// would silently truncate a longer key. Refuse rather than guess.
			if len(key) != blockSize {
				return nil, fmt.Errorf("crypto: option iv \"key\" needs a 16-byte key, the %s key is %d bytes: set a 16-character iv", o.Algorithm, len(key))
			}
			copy(c.iv[:], key)
		} else {
			copy(c.iv[:], o.IV)
		}
	}
	return c, nil
}

// normalize fills in defaults and checks every option, naming the one that
// is wrong.
func normalize(opts Options) (Options, error) {
	o := opts
	lowerOr := func(v, def string) string {
		v = strings.ToLower(strings.TrimSpace(v))
		if v == "" {
			return def
		}
		return v
	}
	o.Algorithm = lowerOr(o.Algorithm, "aes")
	o.Mode = lowerOr(o.Mode, "ecb")
	o.Key = lowerOr(o.Key, "raw")
	if o.IV == "" {
		o.IV = "key"
	}
	if o.Encoding == "" {
		o.Encoding = "base64"
	}
	if o.KeyBits == 0 {
		o.KeyBits = 128
	}

	switch o.Algorithm {
	case "aes", "sm4":
	default:
		return o, fmt.Errorf("crypto: option algorithm %q is not one of aes, sm4", opts.Algorithm)
	}
	switch o.Mode {
	case "ecb", "cbc":
	default:
		return o, fmt.Errorf("crypto: option mode %q is not one of ecb, cbc", opts.Mode)
	}
	switch o.Encoding {
	case "base64", "hex", "HEX":
	default:
		return o, fmt.Errorf("crypto: option encoding %q is not one of base64, hex, HEX", opts.Encoding)
	}
	switch o.Key {
	case "raw", "sha1prng":
	default:
		return o, fmt.Errorf("crypto: option key %q is not one of raw, sha1prng", opts.Key)
	}
	if o.KeyBits != 128 && o.KeyBits != 256 {
		return o, fmt.Errorf("crypto: option key_bits %d is not one of 128, 256", opts.KeyBits)
	}
	// Checked whatever the mode, so that a typo surfaces when the config
	// loads rather than when someone switches the institution to CBC. The IV
	// is the string's bytes, as Java's iv.getBytes(UTF_8); it must make
	// exactly one block.
	if o.IV != "key" && len(o.IV) != blockSize {
		return o, fmt.Errorf("crypto: option iv must be \"key\" or a 16-byte string, got %d bytes", len(o.IV))
	}
	return o, nil
}

// deriveKey returns the key bytes for the normalized options o: the UTF-8
// bytes of secret for "raw", or the first KeyBits/8 bytes of Java's SHA1PRNG
// seeded with secret for "sha1prng" (what KeyGenerator.init(bits, sr) does).
// The secret itself never appears in an error.
func deriveKey(o Options, secret string) ([]byte, error) {
	if secret == "" {
		return nil, errors.New("crypto: secret is empty")
	}
	var key []byte
	switch o.Key {
	case "raw":
		key = []byte(secret)
	case "sha1prng":
		key = sha1PRNG([]byte(secret), o.KeyBits/8)
	}
	switch o.Algorithm {
	case "aes":
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("crypto: aes key is %d bytes, want 16, 24 or 32", n)
		}
	case "sm4":
		if n := len(key); n != 16 {
			return nil, fmt.Errorf("crypto: sm4 key is %d bytes, want 16", n)
		}
	}
	return key, nil
}

package crypto

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecrypt feeds arbitrary text to Decrypt of several ciphers. Decrypt
// must never panic, must fail only with ErrDecrypt, and whatever it accepts
// must survive Encrypt + Decrypt unchanged.
func FuzzDecrypt(f *testing.F) {
	ciphers := []struct {
		name string
		c    Cipher
	}{
		{"aes-ecb-base64", mustNew(f, Options{}, vecSecret)},
		{"aes-cbc-ivkey-hex", mustNew(f, Options{Mode: "cbc", Encoding: "hex"}, vecSecret)},
		{"aes256-sha1prng-cbc-iv-base64", mustNew(f, Options{Mode: "cbc", IV: "0102030405060708", Key: "sha1prng", KeyBits: 256}, vecSecret)},
		{"sm4-ecb-HEX", mustNew(f, Options{Algorithm: "sm4", Encoding: "HEX"}, vecSecret)},
		{"sm4-cbc-base64", mustNew(f, Options{Algorithm: "sm4", Mode: "cbc"}, vecSecret)},
	}

	for _, seed := range []string{
		// The vectors of docs/decisions.md §2, in base64 and hex.
		"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8PbVg=",
		"nrfH9ATyXw61JMs7/8GGAzbYP1z1eGDfH9q6BLn5X20=",
		"txFa79l2xdDg7LBJ3nfuyVq3EHEnj+OodmnVd29y1nI=",
		"5rh3uYymMtD+tBpMaUsbOe7Cwt6+I3LHtmFQrXdYCqg=",
		"d9BHnvc18C75oVPTmXE/jhE75IrZ19R60GfzxzD9a70=",
		"2293bb75096b1cdb5d7204d7b6d47cb602dec5652c0215f93af69f009f0f6d58",
		"2293BB75096B1CDB5D7204D7B6D47CB602DEC5652C0215F93AF69F009F0F6D58",
		"At7FZSwCFfk69p8Anw9tWA==",
		// Malformed.
		"", " ", "\r\n", "=", "====", "A", "AB", "ABC=", "!!!!",
		"IpO7dQlrHNtdcgTXttR8tg==",
		"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8PbVg",
		"IpO7dQlrHNtdcgTXttR8tgLexWUsAhX5OvafAJ8P",
		"2293bb75096b1cdb5d7204d7b6d47cb602dec5652c0215f93af69f009f0f6d5",
		"2293bb75096b1cdb5d7204d7b6d47cb602dec5652c0215f93af69f009f0f6dzz",
		"00000000000000000000000000000000",
		"\x00\xff\xfe",
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, text []byte) {
		in := bytes.Clone(text)
		for _, cc := range ciphers {
			plain, err := cc.c.Decrypt(text)
			if !bytes.Equal(text, in) {
				t.Fatalf("%s: Decrypt modified its input", cc.name)
			}
			if err != nil {
				if !errors.Is(err, ErrDecrypt) {
					t.Fatalf("%s: error %v does not wrap ErrDecrypt", cc.name, err)
				}
				continue
			}
			again, err := cc.c.Encrypt(plain)
			if err != nil {
				t.Fatalf("%s: Encrypt(%x): %v", cc.name, plain, err)
			}
			back, err := cc.c.Decrypt(again)
			if err != nil {
				t.Fatalf("%s: Decrypt(Encrypt(%x)) = %v", cc.name, plain, err)
			}
			if !bytes.Equal(back, plain) {
				t.Fatalf("%s: round trip gave %x, want %x", cc.name, back, plain)
			}
		}
	})
}

//go:build !amd64

package crypto

import "encoding/base64"

func b64EncodedLen(n int) int { return base64.StdEncoding.EncodedLen(n) }

func b64DecodedLen(n int) int { return base64.StdEncoding.DecodedLen(n) }

func b64Encode(dst, src []byte) { base64.StdEncoding.Encode(dst, src) }

func b64Decode(dst, src []byte) (int, error) { return base64.StdEncoding.Decode(dst, src) }

package service

import (
	"strings"
	"unicode/utf8"
)

// Masking for logs and event details: personal data never appears whole.

// MaskPhone keeps the first 3 and last 4 digits: 138****5678.
func MaskPhone(s string) string { return maskMiddle(s, 3, 4) }

// MaskAccount keeps the last 4 digits of a bank account: ************1234.
func MaskAccount(s string) string { return maskMiddle(s, 0, 4) }

// MaskCreditCode keeps the first 2 and last 2 of a unified social credit code.
func MaskCreditCode(s string) string { return maskMiddle(s, 2, 2) }

// MaskEmail keeps the first letter of the local part and the domain: a***@b.cn.
func MaskEmail(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 {
		return maskMiddle(s, 1, 0)
	}
	return maskMiddle(s[:at], 1, 0) + s[at:]
}

// maskMiddle keeps head and tail runes and stars the rest; a value too short
// to keep anything is starred whole.
func maskMiddle(s string, head, tail int) string {
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return ""
	}
	if n <= head+tail {
		return strings.Repeat("*", n)
	}
	r := []rune(s)
	return string(r[:head]) + strings.Repeat("*", n-head-tail) + string(r[n-tail:])
}

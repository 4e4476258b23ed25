package fill

import (
	"strconv"
	"time"
)

// The rows are written as SQL text by hand, not through placeholders: a
// statement of a thousand rows of forty columns would be prepared, run and
// closed for each batch, and the driver would box every value. A value is
// one of a few kinds, kept flat in its table's slice without an allocation
// per row.

type kind uint8

const (
	kNull kind = iota
	kStr       // a string, escaped when written
	kInt       // an integer
	kTime      // milliseconds since the epoch, written as DATETIME(3) in UTC
	kRaw       // SQL text written as is: a decimal, a pre-escaped blob
	kRef       // the id of a row of this chunk in table tab: its base plus i
)

type val struct {
	k   kind
	tab uint8
	i   int64
	s   string
}

func str(s string) val       { return val{k: kStr, s: s} }
func num(i int64) val        { return val{k: kInt, i: i} }
func raw(s string) val       { return val{k: kRaw, s: s} }
func at(t time.Time) val     { return val{k: kTime, i: t.UnixMilli()} }
func ref(tab int, i int) val { return val{k: kRef, tab: uint8(tab), i: int64(i)} }
func null() val              { return val{} }

// money writes cents as a DECIMAL(18,2) literal.
func money(cents int64) val { return val{k: kRaw, s: moneyText(cents)} }

func moneyText(cents int64) string {
	neg := cents < 0
	if neg {
		cents = -cents
	}
	s := strconv.FormatInt(cents/100, 10) + "." + strconv.FormatInt(100+cents%100, 10)[1:]
	if neg {
		s = "-" + s
	}
	return s
}

func boolInt(b bool) val {
	if b {
		return num(1)
	}
	return num(0)
}

// appendVal writes v as SQL; bases are the first ids of this chunk's rows,
// by table, for the kRef values.
func appendVal(b []byte, v val, bases *[numTables]int64) []byte {
	switch v.k {
	case kNull:
		return append(b, "NULL"...)
	case kStr:
		return appendQuoted(b, v.s)
	case kInt:
		return strconv.AppendInt(b, v.i, 10)
	case kTime:
		return appendTime(b, v.i)
	case kRaw:
		return append(b, v.s...)
	case kRef:
		return strconv.AppendInt(b, bases[v.tab]+v.i, 10)
	}
	panic("fill: unknown value kind")
}

// appendTime writes milliseconds since the epoch as a DATETIME(3) literal
// in UTC ('2006-01-02 15:04:05.000'), without time.Format's layout walk.
func appendTime(b []byte, ms int64) []byte {
	t := time.UnixMilli(ms).UTC()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	b = append(b, '\'')
	b = appendDigits(b, y, 4)
	b = append(b, '-')
	b = appendDigits(b, int(mo), 2)
	b = append(b, '-')
	b = appendDigits(b, d, 2)
	b = append(b, ' ')
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, mi, 2)
	b = append(b, ':')
	b = appendDigits(b, s, 2)
	b = append(b, '.')
	b = appendDigits(b, int(((ms%1000)+1000)%1000), 3)
	return append(b, '\'')
}

func appendDigits(b []byte, v, width int) []byte {
	var d [8]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:width]...)
}

// special marks the bytes a string literal escapes.
var special = [256]bool{0: true, '\'': true, '\\': true, '\n': true, '\r': true, 0x1a: true}

// appendQuoted writes s as a MySQL string literal (NO_BACKSLASH_ESCAPES
// unset, which is the default and what the gateway's DSN leaves alone).
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '\'')
	for {
		i := 0
		for i < len(s) && !special[s[i]] {
			i++
		}
		b = append(b, s[:i]...)
		if i == len(s) {
			return append(b, '\'')
		}
		switch c := s[i]; c {
		case 0:
			b = append(b, '\\', '0')
		case '\'':
			b = append(b, '\\', '\'')
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case 0x1a:
			b = append(b, '\\', 'Z')
		}
		s = s[i+1:]
	}
}

// blobLiteral is bytes as a _binary string literal, for kRaw.
func blobLiteral(p []byte) string {
	b := append([]byte("_binary"), appendQuoted(nil, string(p))...)
	return string(b)
}

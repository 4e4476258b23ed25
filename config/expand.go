package config

import (
	"errors"
	"fmt"
	"strings"
)

// expand replaces every ${NAME} in s with getenv(NAME), and ${NAME:-word}
// with word when NAME is unset or empty; $${ stands for a literal ${. A
// ${NAME} without a default whose variable is unset or empty expands to ""
// and NAME is returned in unset, so that validation can say which variable
// to set if the field turns out to be required.
//
// A default cannot contain "}". A "$" not followed by "{" is kept as it is
// (passwords and DSNs may contain one).
func expand(s string, getenv func(string) string) (out string, unset []string, err error) {
	if !strings.Contains(s, "${") {
		return s, nil, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", nil, errors.New(`unterminated "${" (write "$${" for a literal "${")`)
			}
			inner := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(inner, ":-")
			if !validVarName(name) {
				return "", nil, fmt.Errorf(`invalid variable name %q in "${...}"`, name)
			}
			v := getenv(name)
			if v == "" {
				if hasDef {
					v = def
				} else {
					unset = append(unset, name)
				}
			}
			b.WriteString(v)
			i += 2 + end + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), unset, nil
}

// validVarName reports whether name is a portable environment variable name.
func validVarName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

package wire

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Origin returns the origin of an absolute http(s) URL, as
// scheme://host:port with the scheme and host in lower case, the default
// port written out and a trailing dot of the host dropped, so that two
// spellings of one server compare equal: "HTTPS://Bank.Example/q" and
// "https://bank.example:443/p" are both "https://bank.example:443". The
// gateway calls an institution's per-order URLs only on its own origins
// (docs/decisions.md §39).
func Origin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	switch scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return "", fmt.Errorf("not an absolute http(s) URL")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return "", fmt.Errorf("has no host")
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

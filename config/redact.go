package config

import (
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// redacted replaces a secret when a config is printed.
const redacted = "<redacted>"

// Redaction is driven by the secret tag of a string or []string field:
//
//	secret:"true"        the value is shown as <redacted>
//	secret:"unless=WORD" likewise, unless the value is WORD (cipher iv "key")
//	secret:"dsn"         a DSN with its password (and any parameter named
//	                     like a password, secret, token or key) redacted
//
// An empty secret stays empty, so that a missing one is visible.

// Redacted returns a deep copy of c with every secret replaced.
func (c Config) Redacted() Config {
	return redactCopy(reflect.ValueOf(c)).Interface().(Config)
}

// String prints the config as YAML with the secrets redacted; fmt and
// logging of a Config (or *Config) therefore never show a secret.
func (c Config) String() string { return redactedYAML(c) }

// GoString is String, so that %#v does not show secrets either.
func (c Config) GoString() string { return c.String() }

// String prints the institution as YAML with app_secret redacted.
func (in Institution) String() string { return redactedYAML(in) }

// String prints the database section with the DSN's password redacted.
func (d Database) String() string { return redactedYAML(d) }

// String prints the API section with the tokens redacted.
func (a API) String() string { return redactedYAML(a) }

// String prints the cipher options, a literal IV redacted.
func (c Cipher) String() string { return redactedYAML(c) }

func redactedYAML(v any) string {
	n := toNode(redactCopy(reflect.ValueOf(v)))
	if n == nil {
		return ""
	}
	var b strings.Builder
	if err := yamlEncode(&b, n); err != nil {
		return "<config: " + err.Error() + ">"
	}
	return b.String()
}

func yamlEncode(w io.Writer, n *yaml.Node) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return err
	}
	return enc.Close()
}

// redactCopy returns a deep copy of v with the secret fields redacted.
func redactCopy(v reflect.Value) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := redactCopy(v.Field(i))
			if mode, ok := f.Tag.Lookup("secret"); ok {
				fv = redactSecret(fv, mode)
			}
			out.Field(i).Set(fv)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			p := reflect.New(v.Type().Elem())
			p.Elem().Set(redactCopy(v.Elem()))
			out.Set(p)
		}
	case reflect.Slice:
		if !v.IsNil() {
			s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			for i := 0; i < v.Len(); i++ {
				s.Index(i).Set(redactCopy(v.Index(i)))
			}
			out.Set(s)
		}
	default:
		out.Set(v)
	}
	return out
}

// redactSecret applies the secret tag's mode to a string or []string.
func redactSecret(v reflect.Value, mode string) reflect.Value {
	switch {
	case v.Kind() == reflect.String:
		v.SetString(redactString(v.String(), mode))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		for i := 0; i < v.Len(); i++ {
			v.Index(i).SetString(redactString(v.Index(i).String(), mode))
		}
	case mode == "false":
	default:
		panic("config: secret tag on a " + v.Type().String())
	}
	return v
}

func redactString(s, mode string) string {
	switch {
	case s == "" || mode == "false":
		return s
	case mode == "dsn":
		return RedactDSN(s)
	case strings.HasPrefix(mode, "unless="):
		if s == strings.TrimPrefix(mode, "unless=") {
			return s
		}
	}
	return redacted
}

// RedactDSN returns dsn with its password replaced by <redacted>, as in
// user:<redacted>@tcp(127.0.0.1:3306)/gateway?parseTime=true, and the
// value of any parameter named like a password, secret, token or key
// redacted too. The password is found as the MySQL driver finds it: the
// text between the first ':' and the last '@' before the last '/'.
func RedactDSN(dsn string) string {
	out := dsn
	slash := strings.LastIndexByte(out, '/')
	if slash < 0 {
		slash = len(out)
	}
	if at := strings.LastIndexByte(out[:slash], '@'); at >= 0 {
		if colon := strings.IndexByte(out[:at], ':'); colon >= 0 {
			out = out[:colon+1] + redacted + out[at:]
		}
	}
	if q := strings.IndexByte(out, '?'); q >= 0 {
		params := strings.Split(out[q+1:], "&")
		for i, p := range params {
			k, _, ok := strings.Cut(p, "=")
			if !ok {
				continue
			}
			lk := strings.ToLower(k)
			for _, w := range []string{"pass", "pwd", "secret", "token", "key", "auth"} {
				if strings.Contains(lk, w) {
					params[i] = k + "=" + redacted
					break
				}
			}
		}
		out = out[:q+1] + strings.Join(params, "&")
	}
	return out
}

// toNode builds the YAML of v by its yaml tags, durations written short
// ("1m", not "1m0s"); nil pointers and nil lists are left out.
func toNode(v reflect.Value) *yaml.Node {
	if v.Type() == durationType {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: formatDuration(time.Duration(v.Int()))}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return toNode(v.Elem())
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, f := range structFields(v.Type()) {
			child := toNode(v.FieldByIndex(f.Index))
			if child == nil {
				continue
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: f.Name}, child)
		}
		return n
	case reflect.Slice:
		if v.IsNil() {
			return nil
		}
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if isScalarType(v.Type().Elem()) {
			n.Style = yaml.FlowStyle
		}
		for i := 0; i < v.Len(); i++ {
			if child := toNode(v.Index(i)); child != nil {
				n.Content = append(n.Content, child)
			}
		}
		return n
	case reflect.String:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.String()}
	case reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v.Bool())}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v.Int(), 10)}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(v.Uint(), 10)}
	case reflect.Float32, reflect.Float64:
		// Untagged, so that 0 is written "0" rather than "!!float 0".
		return &yaml.Node{Kind: yaml.ScalarNode, Value: strconv.FormatFloat(v.Float(), 'g', -1, 64)}
	}
	return nil
}

// formatDuration is d.String() without zero trailing units: 1m, 1h30m, 90s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The YAML is parsed into a yaml.Node tree and mapped onto Config here
// rather than by yaml.Unmarshal, so that
//   - ${NAME} is expanded in each scalar after parsing: a secret containing
//     '#', '"' or ": " cannot change the structure of the document;
//   - every problem (unknown key, duplicate key, bad value) is reported at
//     once, with its field path and line;
//   - the fields given a value are known, so that an explicit 0 (retries: 0,
//     pay_delay: 0s) is kept while an absent field gets its default.

var durationType = reflect.TypeOf(time.Duration(0))

type decoder struct {
	getenv func(string) string
	errs   []error
	// set holds the paths given a non-null value, by YAML or environment.
	set map[string]bool
	// unset maps a path to the ${NAME}s in its value whose variable was
	// unset or empty.
	unset map[string][]string
}

func newDecoder(getenv func(string) string) *decoder {
	return &decoder{getenv: getenv, set: map[string]bool{}, unset: map[string][]string{}}
}

func (d *decoder) errorf(path string, n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path == "" {
		path = "(top level)"
	}
	d.errs = append(d.errs, fmt.Errorf("%s: %s (line %d)", path, msg, n.Line))
}

// decode stores n into v, the field at path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // as if absent: the default applies
	}
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.set[path] = true
		d.decode(n, v.Elem(), path)
	case v.Kind() == reflect.Struct:
		d.set[path] = true
		d.mapping(n, v, path)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, path)
	default:
		d.scalar(n, v, path)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(path, n, "want a mapping (key: value), got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	// Merge keys (<<: *anchor) first, so that the mapping's own keys win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			val := n.Content[i+1]
			for val.Kind == yaml.AliasNode && val.Alias != nil {
				val = val.Alias
			}
			if val.Kind == yaml.SequenceNode {
				for _, m := range val.Content {
					d.decode(m, v, path)
				}
			} else {
				d.decode(val, v, path)
			}
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(path, k, "a key must be a plain name, got %s", kindName(k))
			continue
		}
		name := k.Value
		fpath := joinPath(path, name)
		if line, dup := seen[name]; dup {
			d.errorf(fpath, k, "duplicate key (first at line %d)", line)
			continue
		}
		seen[name] = k.Line
		f, ok := fieldByName(fields, name)
		if !ok {
			d.errorf(fpath, k, "unknown key (known keys here: %s)", knownKeys(fields))
			continue
		}
		d.decode(val, v.FieldByIndex(f.Index), fpath)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	elem := v.Type().Elem()
	if n.Kind == yaml.ScalarNode && isScalarType(elem) {
		// A single string is a comma-separated list, as in the environment:
		// tokens: "${GATEWAY_API_TOKENS}".
		s, ok := d.expandScalar(n, path)
		if !ok || strings.TrimSpace(s) == "" {
			return
		}
		list, err := parseList(v.Type(), s)
		if err != nil {
			d.errorf(path, n, "%v", err)
			return
		}
		v.Set(list)
		d.set[path] = true
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(path, n, "want a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		d.decode(e, s.Index(i), indexPath(path, i))
	}
	v.Set(s)
	d.set[path] = true
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(path, n, "want a single value, got %s", kindName(n))
		return
	}
	s, ok := d.expandScalar(n, path)
	if !ok {
		return
	}
	if s == "" && v.Kind() != reflect.String {
		return // e.g. timeout: "${BANK01_TIMEOUT}" unset: the default applies
	}
	if err := setScalar(v, s); err != nil {
		d.errorf(path, n, "%v", err)
		return
	}
	d.set[path] = true
}

// expandScalar expands ${NAME} in the scalar n and records the unset names.
func (d *decoder) expandScalar(n *yaml.Node, path string) (string, bool) {
	s, unset, err := expand(n.Value, d.getenv)
	if err != nil {
		d.errorf(path, n, "%v", err)
		return "", false
	}
	if len(unset) > 0 {
		d.unset[path] = append(d.unset[path], unset...)
	}
	return s, true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	default:
		return "something else"
	}
}

// field is one exported struct field and its YAML name.
type field struct {
	Name  string // the yaml tag's name
	Index []int
	Tag   reflect.StructTag
	Type  reflect.Type
}

func structFields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{Name: name, Index: f.Index, Tag: f.Tag, Type: f.Type})
	}
	return out
}

func fieldByName(fields []field, name string) (field, bool) {
	for _, f := range fields {
		if f.Name == name {
			return f, true
		}
	}
	return field{}, false
}

func knownKeys(fields []field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// isScalarType reports whether setScalar handles t.
func isScalarType(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// setScalar parses s into v: the one conversion used for YAML values and
// environment overrides alike. Its errors quote s; no secret field has a
// type whose parse can fail (they are strings).
func setScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid duration %q (write e.g. 500ms, 30s, 5m, 1h)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid unsigned integer %q", s)
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("cannot set a %s from text", v.Type())
	}
	return nil
}

// parseList parses a comma-separated list into a new slice of type t;
// blanks around items and empty items are dropped.
func parseList(t reflect.Type, s string) (reflect.Value, error) {
	var items []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			items = append(items, p)
		}
	}
	list := reflect.MakeSlice(t, len(items), len(items))
	for i, item := range items {
		if err := setScalar(list.Index(i), item); err != nil {
			return reflect.Value{}, fmt.Errorf("item %d: %w", i+1, err)
		}
	}
	return list, nil
}

package config

import (
	"fmt"
	"reflect"
	"strings"
)

// EnvPrefix starts the name of every environment override.
const EnvPrefix = "GATEWAY"

// Environment overrides, applied after the YAML and before defaults and
// validation. The variable of a field is the path of YAML keys, uppercased
// and joined by "_", under GATEWAY:
//
//	GATEWAY_SERVER_ADDR, GATEWAY_SERVER_TLS_CERT_FILE, GATEWAY_DATABASE_DSN,
//	GATEWAY_JOBS_POLL_PENDING, GATEWAY_LOG_LEVEL, GATEWAY_SIM_PAY_DELAY
//
// Lists of values are comma-separated: GATEWAY_API_TOKENS="t1,t2",
// GATEWAY_JOBS_POLL_BACKOFF="1m,2m,5m". An institution is addressed by its
// orgcode, uppercased with every character other than A-Z and 0-9 turned into
// "_": GATEWAY_INSTITUTIONS_BANK01_APP_SECRET,
// GATEWAY_INSTITUTIONS_BANK01_CIPHER_MODE. Overrides change institutions that
// the file lists; they do not add any. A section the file leaves out (sim,
// server.tls) is created when one of its variables is set. An empty variable
// counts as unset.

// applyEnv applies the overrides to c, recording the paths it sets in d.set
// and dropping their ${NAME} hints. Its errors name the variable.
func (d *decoder) applyEnv(c *Config) {
	o := &overrider{decoder: d, used: map[string]string{}}
	o.walk(reflect.ValueOf(c).Elem(), EnvPrefix, "")
}

type overrider struct {
	*decoder
	used map[string]string // variable -> the path it set
}

// walk applies the overrides under prefix to the struct v at path and
// reports whether any applied.
func (o *overrider) walk(v reflect.Value, prefix, path string) bool {
	applied := false
	for _, f := range structFields(v.Type()) {
		name := prefix + "_" + envName(f.Name)
		fpath := joinPath(path, f.Name)
		fv := v.FieldByIndex(f.Index)
		switch t := f.Type; {
		case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
			if fv.IsNil() {
				tmp := reflect.New(t.Elem())
				if o.walk(tmp.Elem(), name, fpath) {
					fv.Set(tmp)
					o.set[fpath] = true
					applied = true
				}
			} else if o.walk(fv.Elem(), name, fpath) {
				applied = true
			}
		case t.Kind() == reflect.Struct:
			if o.walk(fv, name, fpath) {
				applied = true
			}
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			key := f.Tag.Get("envkey")
			if key == "" {
				continue // no way to name an element
			}
			kf, ok := fieldByName(structFields(t.Elem()), key)
			if !ok || kf.Type.Kind() != reflect.String {
				panic(fmt.Sprintf("config: envkey %q of %s is not a string field", key, fpath))
			}
			for i := 0; i < fv.Len(); i++ {
				elem := fv.Index(i)
				id := elem.FieldByIndex(kf.Index).String()
				if id == "" {
					continue
				}
				if o.walk(elem, name+"_"+envName(id), indexPath(fpath, i)) {
					applied = true
				}
			}
		case t.Kind() == reflect.Slice && isScalarType(t.Elem()):
			if o.value(name, fpath, func(s string) error {
				list, err := parseList(t, s)
				if err == nil {
					fv.Set(list)
				}
				return err
			}) {
				applied = true
			}
		case isScalarType(t):
			if o.value(name, fpath, func(s string) error { return setScalar(fv, s) }) {
				applied = true
			}
		}
	}
	return applied
}

// value applies variable name, if set, to the field at path with set.
func (o *overrider) value(name, path string, set func(string) error) bool {
	s := o.getenv(name)
	if s == "" {
		return false
	}
	if prev, ok := o.used[name]; ok && prev != path {
		o.errs = append(o.errs, fmt.Errorf("%s: ambiguous, it names both %s and %s (rename an orgcode)", name, prev, path))
		return false
	}
	o.used[name] = path
	if err := set(s); err != nil {
		o.errs = append(o.errs, fmt.Errorf("%s: %v (overriding %s)", name, err, path))
		return false
	}
	o.set[path] = true
	for p := range o.unset {
		if p == path || strings.HasPrefix(p, path+"[") {
			delete(o.unset, p)
		}
	}
	return true
}

// envName turns a YAML key or an orgcode into its part of a variable name:
// uppercase, anything but A-Z and 0-9 becomes "_".
func envName(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range strings.ToUpper(s) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b = append(b, byte(r))
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

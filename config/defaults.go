package config

import (
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
)

// MaxCallbackBatch bounds server.callback_batch.
const MaxCallbackBatch = 1000

// MaxDatabaseRetries bounds database.retries: past it the pauses alone add
// up to tens of seconds, beyond any caller's patience.
const MaxDatabaseRetries = 30

// defaultSQLiteDSN is database.dsn when the driver is sqlite and none is given.
const defaultSQLiteDSN = "data/gateway.db"

// computed are the defaults that depend on other values or on the machine,
// as the configuration table documents them; applyDefaults sets them.
var computed = map[string]string{
	"server.public_base_url": "http://127.0.0.1:<port of server.addr> (https with server.tls)",
	"server.instance":        "<host name>:<process id>",
	"database.dsn":           "`" + defaultSQLiteDSN + "` with sqlite; none with mysql",
}

// Default returns a Config with every default filled in and nothing else:
// no institution, no token. Code that builds a Config (tests, the demo, the
// load test) starts from it.
func Default() *Config {
	c := &Config{}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills in every zero field that has a default. Load does
// this itself, keeping a number, duration or list written explicitly as 0
// or empty (retries: 0); ApplyDefaults, for a Config built in code, cannot
// tell and treats every zero as absent.
func (c *Config) ApplyDefaults() { c.applyDefaults(nil) }

// applyDefaults fills in the defaults of the fields not in set (paths given
// a value by YAML or environment), then the computed ones. An empty string
// always gets its default.
func (c *Config) applyDefaults(set map[string]bool) {
	fillDefaults(reflect.ValueOf(c).Elem(), "", set)
	s := &c.Server
	if s.PublicBaseURL == "" {
		if p := port(s.Addr); p != "" {
			scheme := "http"
			if s.TLS != nil && s.TLS.CertFile != "" {
				scheme = "https"
			}
			s.PublicBaseURL = scheme + "://127.0.0.1:" + p
		}
	}
	if s.Instance == "" {
		host, _ := os.Hostname()
		s.Instance = host + ":" + strconv.Itoa(os.Getpid())
	}
	if c.Database.Driver == "sqlite" && c.Database.DSN == "" {
		c.Database.DSN = defaultSQLiteDSN
	}
}

// fillDefaults sets each zero field of the struct v at path from its
// `default` tag: strings whenever empty, other values only when not given
// explicitly (set). It goes into nested structs, pointers to structs that
// exist (an absent sim section stays absent) and every element of a list
// of structs.
func fillDefaults(v reflect.Value, path string, set map[string]bool) {
	for _, f := range structFields(v.Type()) {
		fv := v.FieldByIndex(f.Index)
		fpath := joinPath(path, f.Name)
		switch t := f.Type; {
		case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
			if !fv.IsNil() {
				fillDefaults(fv.Elem(), fpath, set)
			}
		case t.Kind() == reflect.Struct:
			fillDefaults(fv, fpath, set)
		case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
			for i := 0; i < fv.Len(); i++ {
				fillDefaults(fv.Index(i), indexPath(fpath, i), set)
			}
		default:
			tag, ok := f.Tag.Lookup("default")
			if !ok || !fv.IsZero() || set[fpath] && t.Kind() != reflect.String {
				continue
			}
			if err := setDefault(fv, tag); err != nil {
				panic(fmt.Sprintf("config: default of %s: %v", fpath, err)) // a wrong tag; TestDefaultTags catches it
			}
		}
	}
}

func setDefault(v reflect.Value, tag string) error {
	if v.Kind() == reflect.Slice {
		list, err := parseList(v.Type(), tag)
		if err == nil {
			v.Set(list)
		}
		return err
	}
	return setScalar(v, tag)
}

// Option is one configuration key as the configuration table documents it.
type Option struct {
	// Path is the key: sections joined by ".", institutions[] for a key of
	// every institution.
	Path string
	// Default is the value filled in when the key is absent, as written in
	// its tag, or how it is computed; "" when it has none.
	Default string
	Secret  bool
}

// Options lists every key of the configuration, in the order of the
// structs, with its default: what the README's table must show.
func Options() []Option {
	var out []Option
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for _, f := range structFields(t) {
			fpath := joinPath(path, f.Name)
			switch ft := f.Type; {
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), fpath)
			case ft.Kind() == reflect.Struct:
				walk(ft, fpath)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), fpath+"[]")
			default:
				o := Option{Path: fpath, Secret: f.Tag.Get("secret") != ""}
				if d, ok := f.Tag.Lookup("default"); ok {
					o.Default = "`" + d + "`"
				} else if d, ok := computed[fpath]; ok {
					o.Default = d
				}
				out = append(out, o)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// port returns the port of a host:port address, or "".
func port(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if _, err := strconv.Atoi(p); err != nil {
		return ""
	}
	return p
}

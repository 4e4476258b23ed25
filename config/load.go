package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultPath is the config file read when neither -config nor
// GATEWAY_CONFIG names one.
const DefaultPath = "config.yaml"

// Path resolves the config file: the -config flag's value, else
// GATEWAY_CONFIG, else config.yaml.
func Path(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv("GATEWAY_CONFIG"); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads the config file at path and returns it complete: ${NAME}
// expanded from getenv (nil: os.Getenv), environment overrides applied
// (env.go), defaults filled in, validated. Its error, an *Error, lists
// every problem found, each naming its field; no secret is ever in it.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(data, getenv)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return nil, err
	}
	return c, nil
}

// Parse is Load of a config already read.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	return parse(data, getenv)
}

func parse(data []byte, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, &Error{Problems: []error{err}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, &Error{Problems: []error{errors.New("more than one YAML document (remove the second \"---\")")}}
	}

	c := &Config{}
	d := newDecoder(getenv)
	if len(doc.Content) > 0 {
		d.decode(doc.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	d.applyEnv(c)
	if len(d.errs) > 0 {
		return nil, &Error{Problems: d.errs}
	}
	c.applyDefaults(d.set)
	if errs := c.validate(d.unset); len(errs) > 0 {
		return nil, &Error{Problems: errs}
	}
	return c, nil
}

// Error is a config that cannot be used: every problem found, each naming
// the field (or the environment variable) at fault.
type Error struct {
	File     string // the config file, if known
	Problems []error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	if len(e.Problems) == 1 {
		b.WriteString(": " + e.Problems[0].Error())
		return b.String()
	}
	fmt.Fprintf(&b, ": %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *Error) Unwrap() []error { return e.Problems }

// Institution returns the institution with orgcode, disabled or not.
func (c *Config) Institution(orgcode string) (*Institution, bool) {
	for i := range c.Institutions {
		if c.Institutions[i].OrgCode == orgcode {
			return &c.Institutions[i], true
		}
	}
	return nil, false
}

package config

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeTable holds the README's configuration table to the code:
// every key of Config has exactly one row, its default cell says what the
// key's `default` tag (or the computed default) says, "—" when it has
// none, and no row names a key that does not exist.
func TestReadmeTable(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README.md has no \"## Configuration\" section")
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	rows := map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 3 {
			t.Errorf("row with fewer than three cells: %s", line)
			continue
		}
		key := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		if _, dup := rows[key]; dup {
			t.Errorf("two rows for %s", key)
		}
		rows[key] = cells[1]
	}
	options := Options()
	if len(options) < 50 {
		t.Fatalf("only %d options found: the walk is broken", len(options))
	}
	known := map[string]bool{}
	for _, o := range options {
		known[o.Path] = true
		want := o.Default
		if want == "" {
			want = "—"
		}
		got, ok := rows[o.Path]
		switch {
		case !ok:
			t.Errorf("README's configuration table has no row for %s (default %s)", o.Path, want)
		case got != want:
			t.Errorf("README says the default of %s is %s; the code says %s", o.Path, got, want)
		}
	}
	for key := range rows {
		if !known[key] {
			t.Errorf("README's configuration table has a row for %s, which is no key", key)
		}
	}
}

// TestDefaultTags: every default tag parses into its field, and a config
// of nothing but the defaults (and the keys that have none) validates.
func TestDefaultTags(t *testing.T) {
	c := Default()
	c.API.Tokens = []string{"tok-0123456789abcdef"}
	c.Institutions = []Institution{{OrgCode: "B", Name: "B", BaseURL: "http://b.example", AppKey: "k", AppSecret: "1234567890abcdef"}}
	c.Sim = &Sim{OrgCode: "B"}
	c.ApplyDefaults() // panics on a tag that does not parse
	if err := c.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

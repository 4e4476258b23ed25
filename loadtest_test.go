package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model/modeltest"
)

// TestLoadtestCommand runs `gateway loadtest` as the README shows it, small:
// the gateway started in process over each database, the load, the
// baseline and a PDF probe, and the report's verdicts.
func TestLoadtestCommand(t *testing.T) {
	for _, driver := range []string{"sqlite", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			drv, dsn := modeltest.DSN(t, driver, os.Getenv)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var stdout, stderr syncBuffer
			args := []string{"loadtest", "--" + drv, dsn, "--n", "80", "--c", "8", "--baseline", "--rounds", "2",
				"--pdf-mib", "0.25", "--log", filepath.Join(t.TempDir(), "gateway.log"), "--timeout", "60s"}
			if err := run(ctx, args, envOf(nil), &stdout, &stderr); err != nil {
				t.Fatalf("loadtest: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, want := range []string{"80 callbacks (38 paystate, 38 applynotify, 4 repeats) for 38 orders",
				"in this process), database " + drv, "0 lost, 0 doubled ✓", "baseline stored 80 rows for 80 acknowledgements ✓",
				"file stored ✓", "heap: peak growth"} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(stderr.String(), "100%") {
				t.Errorf("no progress bar on stderr:\n%s", stderr.String())
			}
		})
	}
}

func TestLoadtestCommandRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a remote gateway", []string{"--url", "http://192.0.2.1:8080", "--sqlite", "x.db"}, "loopback only"},
		{"a gateway without its database", []string{"--url", "http://127.0.0.1:8080"}, "name the gateway's database"},
		{"two databases", []string{"--mysql", "root@tcp(127.0.0.1:3306)/x", "--sqlite", "x.db"}, "not both"},
		{"no bound", []string{"--url", "http://127.0.0.1:1", "--sqlite", "x.db", "--timeout", "0s"}, "timeout"},
		{"a fill of SQLite", []string{"--fill", "10", "--sqlite", "x.db"}, "--fill takes --mysql DSN alone"},
		{"a fill of a remote server", []string{"--fill", "10", "--mysql", "root@tcp(192.0.2.1:3306)/x"}, "not a loopback address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			err := run(context.Background(), append([]string{"loadtest"}, tc.args...), envOf(nil), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one with %q", err, tc.want)
			}
		})
	}
}

// TestLoadtestFillCommand fills a fresh database as docs/operations.md
// shows it, small, then refuses to fill it again unless told to append.
func TestLoadtestFillCommand(t *testing.T) {
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fill := func(extra ...string) (string, error) {
		var stdout, stderr syncBuffer
		args := append([]string{"loadtest", "--fill", "300", "--mysql", dsn, "--fill-now", "2026-12-07T00:00:00Z"}, extra...)
		err := run(ctx, args, envOf(nil), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	out, err := fill()
	if err != nil {
		t.Fatalf("fill: %v\n%s", err, out)
	}
	for _, want := range []string{"filled 300 orders (ids 1..300, seed 1, history up to 2026-12-07T00:00:00Z)", "guarantee_files"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if out, err := fill(); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a second fill: err = %v, want the database refused as not empty\n%s", err, out)
	}
	if out, err := fill("--fill-append"); err != nil || !strings.Contains(out, "ids 301..600") {
		t.Errorf("--fill-append: %v\n%s", err, out)
	}
}

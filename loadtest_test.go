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

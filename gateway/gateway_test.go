package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/gateway"
)

// testConfig is a valid config on a temporary SQLite, with one institution.
func testConfig(t *testing.T) *config.Config {
	cfg := config.Default()
	cfg.Server.Addr, cfg.Server.PublicBaseURL, cfg.Server.Instance = "127.0.0.1:0", "http://127.0.0.1", "test"
	cfg.Database.DSN = filepath.Join(t.TempDir(), "gw.db")
	cfg.API.Tokens = []string{"a-token-of-our-own-0123456789"}
	cfg.Institutions = []config.Institution{{OrgCode: "SIM", Name: "sim", BaseURL: "http://127.0.0.1:9/sim",
		AppKey: "sim-app-key", AppSecret: "0123456789abcdef"}}
	cfg.Jobs.Disabled = true
	cfg.ApplyDefaults()
	return cfg
}

func build(t *testing.T, cfg *config.Config) (*gateway.Gateway, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	log.SetFormatter(&logrus.JSONFormatter{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := gateway.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, &logs
}

func gauge(t *testing.T, g *gateway.Gateway, name string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	g.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestInsecureDefaults: each secret shipped with the gateway that is still
// in force (the README's API token, the simulator's secret) is a warning
// at start naming its key, never its value, and gateway_insecure_defaults
// counts them; with secrets of one's own, no warning and 0. Before, the
// gateway started silently on them.
func TestInsecureDefaults(t *testing.T) {
	cfg := testConfig(t)
	cfg.API.Tokens = append(cfg.API.Tokens, config.ShippedAPIToken)
	cfg.Institutions[0].AppSecret = config.ShippedSimSecret
	g, logs := build(t, cfg)
	out := logs.String()
	for _, key := range []string{`"key":"api.tokens[1]"`, `"key":"institutions[SIM].app_secret"`} {
		if !strings.Contains(out, key) || !strings.Contains(out, `"level":"warning"`) {
			t.Errorf("no warning naming %s:\n%s", key, out)
		}
	}
	if strings.Contains(out, config.ShippedAPIToken) || strings.Contains(out, config.ShippedSimSecret) {
		t.Error("the warning shows the secret itself")
	}
	if v := gauge(t, g, "gateway_insecure_defaults"); v != "2" {
		t.Errorf("gateway_insecure_defaults = %q, want 2", v)
	}

	g, logs = build(t, testConfig(t))
	if strings.Contains(logs.String(), "shipped with the gateway") {
		t.Errorf("a warning with secrets of one's own:\n%s", logs)
	}
	if v := gauge(t, g, "gateway_insecure_defaults"); v != "0" {
		t.Errorf("gateway_insecure_defaults = %q, want 0", v)
	}
}

// TestUnreachableMySQLNamesTheDSN: a MySQL that cannot be reached at start
// is an error that names database.dsn, the key to fix, and not the
// password in it.
func TestUnreachableMySQLNamesTheDSN(t *testing.T) {
	cfg := testConfig(t)
	cfg.Database.Driver = "mysql"
	cfg.Database.DSN = "gateway:s3cret-pw@tcp(127.0.0.1:1)/gateway?parseTime=true&timeout=2s"
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := gateway.New(ctx, cfg, log)
	if err == nil {
		g.Close()
		t.Fatal("a gateway was built on a MySQL nobody listens for")
	}
	if !strings.HasPrefix(err.Error(), "database.dsn: ") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("error %q; want one that starts with database.dsn and hides the password", err)
	}
}

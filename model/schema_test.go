package model_test

import (
	"context"
	"database/sql"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// schemaFile is the DBA's copy of the schema (deploy/mysql/schema.sql).
const schemaFile = "../deploy/mysql/schema.sql"

// lineDiff is a minimal line diff (longest common subsequence): lines only
// in a are prefixed "-", only in b "+", common ones " ".
func lineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			sb.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] > lcs[i+1][j]):
			sb.WriteString("+ " + y[j] + "\n")
			j++
		default:
			sb.WriteString("- " + x[i] + "\n")
			i++
		}
	}
	return sb.String()
}

// TestSchemaFileMatchesMigrations loads deploy/mysql/schema.sql into one
// fresh MariaDB database and runs the migrations in another: every table
// must come out the same (SHOW CREATE TABLE), and the gateway must find
// nothing to migrate in the database built from the file.
func TestSchemaFileMatchesMigrations(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	script, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func(dsn string, multi bool) *sql.DB {
		t.Helper()
		cfg, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MultiStatements = multi
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	migrate := func(dsn string) ([]string, error) {
		t.Helper()
		s, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 2, MaxIdle: 2, MaxLifetime: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Migrate(ctx)
	}

	_, migratedDSN := modeltest.DSN(t, "mysql", os.Getenv)
	if applied, err := migrate(migratedDSN); err != nil || len(applied) == 0 {
		t.Fatalf("migrating an empty database applied %v: %v", applied, err)
	}
	_, fileDSN := modeltest.DSN(t, "mysql", os.Getenv)
	if _, err := open(fileDSN, true).ExecContext(ctx, string(script)); err != nil {
		t.Fatalf("loading %s: %v", schemaFile, err)
	}

	want := modeltest.CreateTables(t, ctx, open(migratedDSN, false))
	got := modeltest.CreateTables(t, ctx, open(fileDSN, false))
	if len(want) == 0 {
		t.Fatal("the migrations made no tables")
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		w, inMig := want[n]
		g, inFile := got[n]
		switch {
		case !inFile:
			t.Errorf("table %s: made by the migrations, missing from %s", n, schemaFile)
		case !inMig:
			t.Errorf("table %s: in %s, not made by the migrations", n, schemaFile)
		case w != g:
			t.Errorf("table %s differs (- migrations, + %s):\n%s", n, schemaFile, lineDiff(w, g))
		}
	}

	// Installed from the file, the database is up to date for the gateway:
	// goose's table says so, and a serving instance changes nothing.
	if applied, err := migrate(fileDSN); err != nil || len(applied) != 0 {
		t.Errorf("the gateway still migrates the database built from %s (applied %v, %v): record the newest version in %s",
			schemaFile, applied, err, modeltest.GooseTable)
	}
}

func TestLineDiff(t *testing.T) {
	for _, c := range []struct{ name, a, b, want string }{
		{"equal", "x\ny", "x\ny", "  x\n  y\n"},
		{"line changed", "x\ny\nz", "x\nY\nz", "  x\n- y\n+ Y\n  z\n"},
		{"line added", "x\nz", "x\ny\nz", "  x\n+ y\n  z\n"},
		{"line removed", "x\ny\nz", "x\nz", "  x\n- y\n  z\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := lineDiff(c.a, c.b); got != c.want {
				t.Errorf("lineDiff:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
}

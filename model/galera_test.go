package model_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// TestGaleraRequirements holds the schema to what a Galera cluster needs
// (docs/operations.md, "On a Galera cluster"): every table the migrations
// and goose make is InnoDB, the only engine it replicates, and has a
// primary key, by which rows are certified and applied on the other nodes
// (without one, every row event is a full scan there).
func TestGaleraRequirements(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	s := modeltest.Open(t, "mysql", os.Getenv)
	// goose makes its lock table the first time the lock is taken, which
	// migrating did.
	rows, err := s.DB().Query(`SELECT t.table_name, t.engine,
		EXISTS (SELECT 1 FROM information_schema.table_constraints c
			WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name AND c.constraint_type = 'PRIMARY KEY')
		FROM information_schema.tables t WHERE t.table_schema = DATABASE() ORDER BY t.table_name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var name, engine string
		var pk bool
		if err := rows.Scan(&name, &engine, &pk); err != nil {
			t.Fatal(err)
		}
		seen[name] = true
		if engine != "InnoDB" {
			t.Errorf("table %s is %s; Galera replicates InnoDB tables only", name, engine)
		}
		if !pk {
			t.Errorf("table %s has no primary key", name)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"orders", "callbacks", "payments", "goose_db_version", "goose_lock"} {
		if !seen[want] {
			t.Errorf("table %s not found among %v", want, seen)
		}
	}
}

// TestInterleavedIDs runs the multi-row inserts whose rows' ids are used
// afterwards with ids as a Galera node hands them out: every third, from an
// offset (auto_increment_increment is the cluster's size): a project
// state's deliveries, claimed by id at once, and a group commit's
// callbacks, to which the payments point. On MariaDB GORM reads the ids of
// a multi-row insert back with RETURNING; on MySQL it counts them from the
// first by one, and only the store's own read-back keeps them right.
func TestInterleavedIDs(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	ctx := context.Background()
	s, err := model.Open(ctx, "mysql", dsn+"&auto_increment_increment=3&auto_increment_offset=2",
		model.Pool{MaxOpen: 2, MaxIdle: 1, MaxLifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	var ds []model.Delivery
	err = s.InTx(ctx, func(tx model.Queries) (err error) {
		ds, err = tx.InsertPush(&model.ProjectStatePush{ProjectName: "p", ProjectCode: "XM", LotName: "l", LotCode: "BD",
			OpeningAt: time.Now(), State: "2"}, []string{"A", "B", "C"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	for _, d := range ds {
		got, err := s.Delivery(d.ID)
		if err != nil || got.OrgCode != d.OrgCode || got.PushID != d.PushID {
			t.Errorf("delivery of %s handed out with id %d, which is %+v (%v)", d.OrgCode, d.ID, got, err)
		}
	}

	keys := []string{"k1", "k2", "k3", "k4"}
	cbs := make([]*model.Callback, len(keys))
	for i := range keys {
		cbs[i] = &model.Callback{OrgCode: "A", Kind: "paystate", OrderNo: "O1", DedupKey: &keys[i], Result: model.CallbackAccepted}
	}
	if err := s.InsertCallbacks(cbs); err != nil {
		t.Fatal(err)
	}
	for i, c := range cbs {
		got, err := s.Callback(c.ID)
		if err != nil || got.DedupKey == nil || *got.DedupKey != keys[i] {
			t.Errorf("callback %s handed out with id %d, which is %+v (%v)", keys[i], c.ID, got, err)
		}
	}
	if cbs[1].ID-cbs[0].ID != 3 {
		t.Errorf("ids %d, %d: the session did not hand out every third id; the test proves nothing", cbs[0].ID, cbs[1].ID)
	}
}

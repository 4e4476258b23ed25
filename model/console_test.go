package model_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// TestConsoleSessions: a session is found until it expires, and not after
// it is deleted; expired ones are swept.
func TestConsoleSessions(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC().Truncate(time.Millisecond)
		live := &model.ConsoleSession{ID: strings.Repeat("a", 64), UserName: "ops", CSRF: "c1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		old := &model.ConsoleSession{ID: strings.Repeat("b", 64), UserName: "ops", CSRF: "c2", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Minute)}
		for _, x := range []*model.ConsoleSession{live, old} {
			if err := s.InsertConsoleSession(x); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ConsoleSession(live.ID, now)
		if err != nil || got.UserName != "ops" || got.CSRF != "c1" || !got.ExpiresAt.Equal(live.ExpiresAt) {
			t.Fatalf("live session: %+v %v", got, err)
		}
		if _, err := s.ConsoleSession(live.ID, now.Add(2*time.Hour)); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a session past its expiry: %v, want not found", err)
		}
		if _, err := s.ConsoleSession(old.ID, now); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("an expired session: %v, want not found", err)
		}
		if n, err := s.DeleteExpiredConsoleSessions(now); err != nil || n != 1 {
			t.Errorf("swept %d expired sessions (%v), want 1", n, err)
		}
		if ok, err := s.DeleteConsoleSession(live.ID); !ok || err != nil {
			t.Errorf("sign-out: %v %v", ok, err)
		}
		if _, err := s.ConsoleSession(live.ID, now); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a deleted session: %v, want not found", err)
		}
	})
}

// TestConsoleActions: an action is recorded started, then finished; an
// order's actions come oldest first, the recent ones newest first.
func TestConsoleActions(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		var ids []int64
		for i, act := range []string{"query", "pull", "retry_delivery"} {
			order := "A1"
			if act == "retry_delivery" {
				order = ""
			}
			a := &model.ConsoleAction{UserName: "ops", Role: "operator", Action: act, OrderNo: order,
				Result: model.ConsoleActionStarted, CreatedAt: time.Now().Add(time.Duration(i) * time.Millisecond)}
			if err := s.InsertConsoleAction(a); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, a.ID)
		}
		if err := s.FinishConsoleAction(ids[0], "ok", "queried", time.Now()); err != nil {
			t.Fatal(err)
		}
		acts, err := s.ConsoleActions("A1")
		if err != nil || len(acts) != 2 || acts[0].Action != "query" || acts[1].Action != "pull" {
			t.Fatalf("actions on A1: %+v %v", acts, err)
		}
		if acts[0].Result != "ok" || acts[0].Detail != "queried" || acts[0].FinishedAt == nil ||
			acts[1].Result != model.ConsoleActionStarted || acts[1].FinishedAt != nil {
			t.Errorf("results: %+v", acts)
		}
		recent, err := s.RecentConsoleActions(2)
		if err != nil || len(recent) != 2 || recent[0].ID != ids[2] || recent[1].ID != ids[1] {
			t.Errorf("recent actions: %+v %v", recent, err)
		}
	})
}

// TestFindingResolution: findings by day with the days around, the first
// resolution stands, open ones are counted.
func TestFindingResolution(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		if d, err := s.LatestFindingDate(); err != nil || d != "" {
			t.Errorf("latest date of no findings: %q %v", d, err)
		}
		for _, f := range []model.Finding{
			{RunDate: "2026-11-30", Kind: "issued_unpaid", OrderNo: "A1", Detail: "x"},
			{RunDate: "2026-12-02", Kind: "issued_unpaid", OrderNo: "A1", Detail: "x"},
			{RunDate: "2026-12-02", Kind: "premium_mismatch", OrderNo: "A2", Detail: "y"},
			{RunDate: "2026-12-05", Kind: "issued_unpaid", OrderNo: "A1", Detail: "x"},
		} {
			if _, err := s.InsertFinding(&f); err != nil {
				t.Fatal(err)
			}
		}
		if d, err := s.LatestFindingDate(); err != nil || d != "2026-12-05" {
			t.Errorf("latest date: %q %v", d, err)
		}
		prev, next, err := s.FindingDates("2026-12-02")
		if err != nil || prev != "2026-11-30" || next != "2026-12-05" {
			t.Errorf("around 2026-12-02: %q %q %v", prev, next, err)
		}
		if prev, next, _ := s.FindingDates("2026-12-05"); prev != "2026-12-02" || next != "" {
			t.Errorf("around 2026-12-05: %q %q", prev, next)
		}
		day, err := s.FindingRecords("2026-12-02")
		if err != nil || len(day) != 2 || day[0].ResolvedAt != nil {
			t.Fatalf("findings of 2026-12-02: %+v %v", day, err)
		}
		at := time.Now().UTC().Truncate(time.Millisecond)
		if ok, err := s.ResolveFinding(day[1].ID, "ops", "refunded offline, 已核对", at); !ok || err != nil {
			t.Fatalf("resolve: %v %v", ok, err)
		}
		if ok, err := s.ResolveFinding(day[1].ID, "li", "again", at); ok || err != nil {
			t.Errorf("a second resolution: %v %v, want refused", ok, err)
		}
		f, err := s.FindingRecordByID(day[1].ID)
		if err != nil || f.ResolvedBy != "ops" || f.Note != "refunded offline, 已核对" || f.ResolvedAt == nil || !f.ResolvedAt.Equal(at) {
			t.Errorf("resolved finding: %+v %v", f, err)
		}
		if n, err := s.CountOpenFindings("2026-12-02"); err != nil || n != 1 {
			t.Errorf("open findings: %d %v, want 1", n, err)
		}
		// The API's own view of findings is unchanged.
		if fs, err := s.Findings("2026-12-02"); err != nil || len(fs) != 2 {
			t.Errorf("Findings: %+v %v", fs, err)
		}
		if _, err := s.FindingRecordByID(9999); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("no such finding: %v", err)
		}
	})
}

// pushDeliveries stores a push with a delivery per orgcode and puts each
// in the status its orgcode's prefix names, as the gateway leaves them.
func pushDeliveries(t *testing.T, s *model.Store, lot string, orgs ...string) []model.Delivery {
	t.Helper()
	p := &model.ProjectStatePush{ProjectName: "项目", ProjectCode: "XM1", LotName: "标段", LotCode: lot,
		OpeningAt: time.Now(), State: "2"}
	ds, err := s.InsertPush(p, orgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		status := strings.SplitN(d.OrgCode, "-", 2)[0]
		if status == model.DeliveryPending {
			continue
		}
		if ok, err := s.ClaimDelivery(d.ID, "t", time.Now().Add(time.Second), time.Now().Add(time.Minute)); !ok || err != nil {
			t.Fatalf("claim %d: %v %v", d.ID, ok, err)
		}
		if _, err := s.RecordDeliveryAttempt(d.ID, "t", model.DeliveryAttempt{Attempts: 15, Status: status, LastError: "e", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ds[i].Status = status
	}
	return ds
}

// TestListDeliveries: newest first, by status and institution, paged by
// id; the dead ones re-armed in batches.
func TestListDeliveries(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		pushDeliveries(t, s, "BD1", "dead-A", "delivered-A", "pending-A")
		pushDeliveries(t, s, "BD2", "dead-A", "dead-B", "delivered-B")
		ids := func(rows []model.DeliveryRow) []string {
			var out []string
			for _, r := range rows {
				out = append(out, r.OrgCode+"/"+r.LotCode)
			}
			return out
		}
		for _, tc := range []struct {
			f    model.DeliveryFilter
			want []string
		}{
			{model.DeliveryFilter{Limit: 10}, []string{"delivered-B/BD2", "dead-B/BD2", "dead-A/BD2", "pending-A/BD1", "delivered-A/BD1", "dead-A/BD1"}},
			{model.DeliveryFilter{Status: model.DeliveryDead, Limit: 10}, []string{"dead-B/BD2", "dead-A/BD2", "dead-A/BD1"}},
			{model.DeliveryFilter{Status: model.DeliveryDead, OrgCode: "dead-A", Limit: 10}, []string{"dead-A/BD2", "dead-A/BD1"}},
			{model.DeliveryFilter{Status: model.DeliveryPending, Limit: 10}, []string{"pending-A/BD1"}},
			{model.DeliveryFilter{Status: model.DeliveryDelivered, Limit: 1}, []string{"delivered-B/BD2"}},
		} {
			rows, err := s.ListDeliveries(tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rows); !slices.Equal(got, tc.want) {
				t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
			}
			for _, r := range rows {
				if r.ProjectCode != "XM1" || r.State != "2" || r.PushID == 0 {
					t.Errorf("row without its push: %+v", r)
				}
			}
		}
		all, _ := s.ListDeliveries(model.DeliveryFilter{Limit: 2})
		rest, _ := s.ListDeliveries(model.DeliveryFilter{Limit: 10, BeforeID: all[1].ID})
		if len(rest) != 4 || rest[0].ID >= all[1].ID {
			t.Errorf("the page after %d: %v", all[1].ID, ids(rest))
		}

		if n, err := s.CountDeadDeliveries(""); err != nil || n != 3 {
			t.Errorf("dead: %d %v", n, err)
		}
		if n, _ := s.CountDeadDeliveries("dead-B"); n != 1 {
			t.Errorf("dead of dead-B: %d", n)
		}
		first, err := s.DeadDeliveryIDs("", 0, 2)
		if err != nil || len(first) != 2 {
			t.Fatalf("dead ids: %v %v", first, err)
		}
		n, err := s.RearmDeadDeliveries(append(first, all[0].ID), time.Now()) // all[0] is delivered: untouched
		if err != nil || n != 2 {
			t.Errorf("re-armed %d (%v), want 2", n, err)
		}
		if n, _ := s.RearmDeadDeliveries(first, time.Now()); n != 0 {
			t.Errorf("re-armed %d again, want 0", n)
		}
		after, _ := s.DeadDeliveryIDs("", first[1], 10)
		if len(after) != 1 {
			t.Errorf("dead after %d: %v", first[1], after)
		}
		if d, _ := s.Delivery(all[0].ID); d.Status != model.DeliveryDelivered {
			t.Errorf("a delivered one was re-armed: %s", d.Status)
		}
	})
}

// TestDeliveriesExplain: on MariaDB a list of deliveries by status reads
// that status's rows through ix_deliveries_due, and the delivered ones,
// which pile up, in index order without a sort.
func TestDeliveriesExplain(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	s := modeltest.Open(t, "mysql", os.Getenv)
	var orgs []string
	for i := range 300 {
		orgs = append(orgs, fmt.Sprintf("delivered-%03d", i))
	}
	for i := range 10 {
		orgs = append(orgs, fmt.Sprintf("dead-%03d", i), fmt.Sprintf("pending-%03d", i))
	}
	for lot := range 5 {
		p := &model.ProjectStatePush{ProjectName: "项目", ProjectCode: "XM1", LotName: "标段", LotCode: fmt.Sprint("BD", lot),
			OpeningAt: time.Now(), State: "2"}
		if _, err := s.InsertPush(p, orgs); err != nil {
			t.Fatal(err)
		}
	}
	// As the redelivery job leaves them (TestListDeliveries goes its way).
	for _, status := range []string{model.DeliveryDead, model.DeliveryDelivered} {
		modeltest.Exec(t, s, "UPDATE deliveries SET status = ?, attempts = 15, next_attempt_at = NULL WHERE org_code LIKE ?",
			status, status+"-%")
	}
	modeltest.Exec(t, s, "ANALYZE TABLE deliveries")
	for _, status := range []string{model.DeliveryDead, model.DeliveryDelivered} {
		query := s.DeliveriesSQL(model.DeliveryFilter{Status: status, Limit: 51})
		for _, row := range explain(t, s.DB(), query) {
			// The dead ones are few and may be sorted; the delivered ones
			// pile up and must come in index order.
			// Either index serves: (status, next_attempt_at) and (status)
			// both end in the primary key.
			if row["type"] == "ALL" || row["key"] != "ix_deliveries_due" && row["key"] != "ix_deliveries_status" ||
				status == model.DeliveryDelivered && strings.Contains(row["Extra"], "filesort") {
				t.Errorf("%s deliveries: %v\n%s", status, row, query)
			}
		}
	}
}

// TestConsoleCounts: today's callbacks and the last hour's calls by
// institution and result, refusals by errcode, an institution's latest
// accepted callback, and bodies by id.
func TestConsoleCounts(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		now := time.Now().UTC().Truncate(time.Millisecond)
		day := now.Add(-time.Hour)
		cb := func(org, result, errcode string, at time.Time, body []byte) int64 {
			c := &model.Callback{OrgCode: org, Kind: "paystate", Result: result, Errcode: errcode, BodySha256: "x",
				BodySize: int64(len(body)), Body: body, ReceivedAt: at}
			if err := s.InsertCallback(c); err != nil {
				t.Fatal(err)
			}
			return c.ID
		}
		cb("B1", model.CallbackAccepted, "000000", day.Add(-time.Hour), nil) // yesterday, for these counts
		last := now.Add(-time.Minute)
		keep := cb("B1", model.CallbackAccepted, "000000", last, []byte("body-1"))
		cb("B1", model.CallbackRejected, "100002", now, []byte("x"))
		cb("B1", model.CallbackRejected, "100002", now, nil)
		cb("B2", model.CallbackRejected, "100003", now, nil)
		cb("", model.CallbackRejected, "100001", now, nil)

		counts, err := s.CountCallbacksSince(day)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, c := range counts {
			got[c.OrgCode+"/"+c.Result] = c.N
		}
		if fmt.Sprint(got) != fmt.Sprint(map[string]int64{"/rejected": 1, "B1/accepted": 1, "B1/rejected": 2, "B2/rejected": 1}) {
			t.Errorf("today's callbacks: %v", got)
		}
		refusals, err := s.CountRefusalsSince(day)
		if err != nil || len(refusals) != 3 || refusals[0].OrgCode != "B1" || refusals[0].Errcode != "100002" || refusals[0].N != 2 {
			t.Errorf("refusals: %+v %v", refusals, err)
		}
		if at, err := s.LastAcceptedCallback("B1"); err != nil || at == nil || !at.Equal(last) {
			t.Errorf("last accepted of B1: %v %v, want %v", at, err, last)
		}
		if at, err := s.LastAcceptedCallback("B2"); err != nil || at != nil {
			t.Errorf("last accepted of B2: %v %v, want none", at, err)
		}
		bodies, err := s.CallbackBodies([]int64{keep, keep + 2, 9999})
		if err != nil || len(bodies) != 1 || string(bodies[keep]) != "body-1" {
			t.Errorf("bodies: %v %v", bodies, err)
		}

		for _, c := range []model.Call{
			{OrgCode: "B1", Endpoint: "query", Result: "ok", CreatedAt: now},
			{OrgCode: "B1", Endpoint: "query", Result: "unreachable", CreatedAt: now},
			{OrgCode: "B1", Endpoint: "query", Result: "unreachable", CreatedAt: now.Add(-2 * time.Hour)},
		} {
			if err := s.InsertCall(&c); err != nil {
				t.Fatal(err)
			}
		}
		calls, err := s.CountCallsSince(now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		byResult := map[string]int64{}
		for _, c := range calls {
			byResult[c.OrgCode+"/"+c.Result] = c.N
		}
		if fmt.Sprint(byResult) != fmt.Sprint(map[string]int64{"B1/ok": 1, "B1/unreachable": 1}) {
			t.Errorf("calls of the last hour: %v", byResult)
		}
	})
}

// TestConsoleRangesReadTheRange: on MariaDB, today's callbacks and the
// last hour's calls are read through their time index, not by scanning
// the table — with a bound carrying nanoseconds, as time.Now() does, which
// the driver would write as nine decimals that MariaDB cannot use for an
// index range. Measured as the table-scan reads of the one connection.
func TestConsoleRangesReadTheRange(t *testing.T) {
	if os.Getenv(modeltest.EnvDSN) == "" {
		t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
	}
	_, dsn := modeltest.DSN(t, "mysql", os.Getenv)
	ctx := context.Background()
	m, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 2, MaxIdle: 2, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Migrate(ctx) // its lock holds one connection, goose takes another
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	// One connection, so that its session's counters are every query's.
	s, err := model.Open(ctx, "mysql", dsn, model.Pool{MaxOpen: 1, MaxIdle: 1, MaxLifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC()
	var cbs, calls []string
	for i := range 3000 {
		at := now.Add(-time.Duration(i) * time.Minute).Format("2006-01-02 15:04:05.000")
		cbs = append(cbs, fmt.Sprintf("('B1','paystate','rejected','100002','x',0,'%s')", at))
		calls = append(calls, fmt.Sprintf("('B1','query','u','unreachable',0,0,0,'%s')", at))
	}
	modeltest.Exec(t, s, "INSERT INTO callbacks (org_code, kind, result, errcode, body_sha256, body_size, received_at) VALUES "+strings.Join(cbs, ","))
	modeltest.Exec(t, s, "INSERT INTO outbound_calls (org_code, endpoint, url, result, latency_ms, request_bytes, response_bytes, created_at) VALUES "+strings.Join(calls, ","))
	modeltest.Exec(t, s, "ANALYZE TABLE callbacks, outbound_calls")
	scanned := func() int64 {
		var name string
		var n int64
		if err := s.DB().QueryRow("SHOW SESSION STATUS LIKE 'Handler_read_rnd_next'").Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	since := now.Add(-59*time.Minute - 123456789*time.Nanosecond)
	for name, count := range map[string]func() (int, error){
		"callbacks": func() (int, error) { r, err := s.CountCallbacksSince(since); return len(r), err },
		"refusals":  func() (int, error) { r, err := s.CountRefusalsSince(since); return len(r), err },
		"calls":     func() (int, error) { r, err := s.CountCallsSince(since); return len(r), err },
	} {
		before := scanned()
		n, err := count()
		if err != nil || n != 1 {
			t.Fatalf("%s: %d groups, %v", name, n, err)
		}
		// The hour's 60 rows, and a handful for the grouping's temporary
		// table; a scan would read all 3000.
		if read := scanned() - before; read > 200 {
			t.Errorf("%s: %d rows read by scanning, want the range only", name, read)
		}
	}
}

package model

import (
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// What the operators' console stores (migration 00005) and the read-only
// queries of its pages. Every query here is served by an index and reads
// rows in proportion to the page, never to the history; the comment of each
// names the index it expects.

// dbTime is a time as a statement's argument: UTC, to the millisecond the
// columns keep. The MySQL driver writes a time's nanoseconds into the
// statement as nine decimals, which MariaDB does not read as a DATETIME
// constant: a range on an indexed time column then scans the whole table
// (EXPLAIN: type ALL), where the same bound in milliseconds reads the range.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// ConsoleSession is one sign-in to the console, shared by every replica.
type ConsoleSession struct {
	ID         string // SHA-256 (hex) of the cookie's token
	UserName   string
	CSRF       string `gorm:"column:csrf"`
	RemoteAddr string
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// BeforeSave stores the session's times in UTC.
func (s *ConsoleSession) BeforeSave(*gorm.DB) error {
	s.CreatedAt, s.ExpiresAt = dbTime(s.CreatedAt), dbTime(s.ExpiresAt)
	return nil
}

// InsertConsoleSession stores a new sign-in.
func (q Queries) InsertConsoleSession(s *ConsoleSession) error {
	if err := q.db.Create(s).Error; err != nil {
		return fmt.Errorf("console session of %s: %w", s.UserName, err)
	}
	return nil
}

// ConsoleSession returns the session with that id if it has not expired
// by now, or ErrNotFound. Primary key.
func (q Queries) ConsoleSession(id string, now time.Time) (*ConsoleSession, error) {
	var s ConsoleSession
	err := q.db.Where("id = ? AND expires_at > ?", id, dbTime(now)).Take(&s).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("console session: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("console session: %w", err)
	}
	return &s, nil
}

// DeleteConsoleSession voids a session (sign-out); it reports whether
// there was one.
func (q Queries) DeleteConsoleSession(id string) (bool, error) {
	res := q.db.Where("id = ?", id).Delete(&ConsoleSession{})
	if res.Error != nil {
		return false, fmt.Errorf("console sign-out: %w", res.Error)
	}
	return res.RowsAffected == 1, nil
}

// DeleteExpiredConsoleSessions removes the sessions expired by now
// (ix_console_sessions_expires): as many as sign-ins expired since the
// last time, a handful.
func (q Queries) DeleteExpiredConsoleSessions(now time.Time) (int64, error) {
	res := q.db.Where("expires_at <= ?", dbTime(now)).Delete(&ConsoleSession{})
	if res.Error != nil {
		return 0, fmt.Errorf("expired console sessions: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// ConsoleActionStarted is an action's result while it runs (or if the
// process died before it ended).
const ConsoleActionStarted = "started"

// ConsoleAction records what an operator did through the console.
type ConsoleAction struct {
	ID         int64
	UserName   string
	Role       string
	Action     string
	OrderNo    string
	Target     string // what it acted on besides an order: "delivery 12", "finding 7"
	Result     string // ConsoleActionStarted, "ok", or the service error code
	Detail     string
	RemoteAddr string
	RequestID  string
	CreatedAt  time.Time
	FinishedAt *time.Time
}

// InsertConsoleAction records an action as it starts.
func (q Queries) InsertConsoleAction(a *ConsoleAction) error {
	if a.CreatedAt.IsZero() {
		a.CreatedAt = now()
	}
	a.CreatedAt = dbTime(a.CreatedAt)
	if err := q.db.Create(a).Error; err != nil {
		return fmt.Errorf("console action %s by %s: %w", a.Action, a.UserName, err)
	}
	return nil
}

// FinishConsoleAction stores what an action came to.
func (q Queries) FinishConsoleAction(id int64, result, detail string, at time.Time) error {
	err := q.db.Model(&ConsoleAction{}).Where("id = ?", id).
		Updates(map[string]any{"result": result, "detail": detail, "finished_at": dbTime(at)}).Error
	if err != nil {
		return fmt.Errorf("console action %d: %w", id, err)
	}
	return nil
}

// ConsoleActions returns the actions taken on an order, oldest first
// (ix_console_actions_order).
func (q Queries) ConsoleActions(orderNo string) ([]ConsoleAction, error) {
	var out []ConsoleAction
	if err := q.db.Where("order_no = ?", orderNo).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("console actions of %s: %w", orderNo, err)
	}
	return out, nil
}

// RecentConsoleActions returns the latest actions, newest first (primary key).
func (q Queries) RecentConsoleActions(limit int) ([]ConsoleAction, error) {
	var out []ConsoleAction
	if err := q.db.Order("id DESC").Limit(limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("recent console actions: %w", err)
	}
	return out, nil
}

// FindingRecord is a reconciliation finding with how it was resolved.
type FindingRecord struct {
	Finding
	ResolvedBy string
	ResolvedAt *time.Time
	Note       string
}

// TableName keeps the table named as the migration does.
func (FindingRecord) TableName() string { return "findings" }

// FindingRecords returns a day's findings with their resolution, by id
// (uk_findings leads with run_date).
func (q Queries) FindingRecords(date string) ([]FindingRecord, error) {
	var out []FindingRecord
	if err := q.db.Where("run_date = ?", date).Order("id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("findings %s: %w", date, err)
	}
	return out, nil
}

// FindingRecordByID returns one finding, or ErrNotFound.
func (q Queries) FindingRecordByID(id int64) (*FindingRecord, error) {
	var f FindingRecord
	err := q.db.Take(&f, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("finding %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("finding %d: %w", id, err)
	}
	return &f, nil
}

// ResolveFinding marks an open finding resolved; it reports false when it
// was resolved already (the first resolution stands).
func (q Queries) ResolveFinding(id int64, by, note string, at time.Time) (bool, error) {
	res := q.db.Model(&FindingRecord{}).Where("id = ? AND resolved_at IS NULL", id).
		Updates(map[string]any{"resolved_by": by, "resolved_at": dbTime(at), "note": note})
	if res.Error != nil {
		return false, fmt.Errorf("resolve finding %d: %w", id, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// FindingDates returns the run dates with findings nearest to date: the
// latest before it and the earliest after it, "" when none. Two descents
// of uk_findings.
func (q Queries) FindingDates(date string) (prev, next string, err error) {
	var p, n []string
	if err := q.db.Model(&FindingRecord{}).Where("run_date < ?", date).Order("run_date DESC").Limit(1).
		Pluck("run_date", &p).Error; err != nil {
		return "", "", fmt.Errorf("finding dates: %w", err)
	}
	if err := q.db.Model(&FindingRecord{}).Where("run_date > ?", date).Order("run_date").Limit(1).
		Pluck("run_date", &n).Error; err != nil {
		return "", "", fmt.Errorf("finding dates: %w", err)
	}
	if len(p) > 0 {
		prev = p[0]
	}
	if len(n) > 0 {
		next = n[0]
	}
	return prev, next, nil
}

// LatestFindingDate returns the latest run date with findings, "" when
// none (one descent of uk_findings).
func (q Queries) LatestFindingDate() (string, error) {
	var d []string
	if err := q.db.Model(&FindingRecord{}).Order("run_date DESC").Limit(1).Pluck("run_date", &d).Error; err != nil {
		return "", fmt.Errorf("latest finding date: %w", err)
	}
	if len(d) == 0 {
		return "", nil
	}
	return d[0], nil
}

// CountOpenFindings counts the unresolved findings of a day (uk_findings:
// that day's rows only).
func (q Queries) CountOpenFindings(date string) (int64, error) {
	var n int64
	if err := q.db.Model(&FindingRecord{}).Where("run_date = ? AND resolved_at IS NULL", date).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("open findings %s: %w", date, err)
	}
	return n, nil
}

// DeliveryRow is a delivery with the project state it carries.
type DeliveryRow struct {
	Delivery
	ProjectCode string
	LotCode     string
	ProjectName string
	State       string
}

// DeliveryFilter narrows ListDeliveries; empty fields do not filter.
type DeliveryFilter struct {
	Status   string
	OrgCode  string
	BeforeID int64 // the cursor: only deliveries older than this one
	Limit    int
}

// ListDeliveries returns deliveries newest first with their project
// state: the page, then its pushes by primary key (two statements whose
// plans do not depend on how many pushes there are). With a status the
// page reads ix_deliveries_due (status, next_attempt_at, and the primary
// key InnoDB appends) for that status only: a dead or delivered delivery
// has no next attempt, so "next_attempt_at IS NULL" leaves the index
// ordered by id, and the delivered ones, which pile up for years, are read
// in index order a page at a time.
func (q Queries) ListDeliveries(f DeliveryFilter) ([]DeliveryRow, error) {
	var ds []Delivery
	if err := deliveriesQuery(q.db, f).Find(&ds).Error; err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	ids := make([]int64, 0, len(ds))
	for _, d := range ds {
		ids = append(ids, d.PushID)
	}
	var pushes []ProjectStatePush
	if len(ids) > 0 {
		if err := q.db.Where("id IN ?", ids).Find(&pushes).Error; err != nil {
			return nil, fmt.Errorf("list deliveries: pushes: %w", err)
		}
	}
	byID := make(map[int64]*ProjectStatePush, len(pushes))
	for i := range pushes {
		byID[pushes[i].ID] = &pushes[i]
	}
	out := make([]DeliveryRow, 0, len(ds))
	for _, d := range ds {
		r := DeliveryRow{Delivery: d}
		if p := byID[d.PushID]; p != nil {
			r.ProjectCode, r.LotCode, r.ProjectName, r.State = p.ProjectCode, p.LotCode, p.ProjectName, p.State
		}
		out = append(out, r)
	}
	return out, nil
}

// DeliveriesSQL is the statement of ListDeliveries' page, for a test to
// EXPLAIN.
func (q Queries) DeliveriesSQL(f DeliveryFilter) string {
	return q.db.ToSQL(func(tx *gorm.DB) *gorm.DB {
		var out []Delivery
		return deliveriesQuery(tx, f).Find(&out)
	})
}

func deliveriesQuery(db *gorm.DB, f DeliveryFilter) *gorm.DB {
	db = db.Model(&Delivery{})
	if f.Status != "" {
		db = db.Where("status = ?", f.Status)
		if f.Status != DeliveryPending {
			db = db.Where("next_attempt_at IS NULL")
		}
	}
	if f.OrgCode != "" {
		db = db.Where("org_code = ?", f.OrgCode)
	}
	if f.BeforeID > 0 {
		db = db.Where("id < ?", f.BeforeID)
	}
	return db.Order("id DESC").Limit(f.Limit)
}

// DeadDeliveryIDs returns up to limit dead deliveries above afterID, by
// id, optionally of one institution: the re-arming of "every one matching"
// goes through them a batch at a time (ix_deliveries_due).
func (q Queries) DeadDeliveryIDs(orgCode string, afterID int64, limit int) ([]int64, error) {
	db := q.db.Model(&Delivery{}).Where("status = ? AND next_attempt_at IS NULL AND id > ?", DeliveryDead, afterID)
	if orgCode != "" {
		db = db.Where("org_code = ?", orgCode)
	}
	var ids []int64
	if err := db.Order("id").Limit(limit).Pluck("id", &ids).Error; err != nil {
		return nil, fmt.Errorf("dead deliveries: %w", err)
	}
	return ids, nil
}

// CountDeadDeliveries counts the dead deliveries, optionally of one
// institution (ix_deliveries_due: the dead ones only).
func (q Queries) CountDeadDeliveries(orgCode string) (int64, error) {
	db := q.db.Model(&Delivery{}).Where("status = ?", DeliveryDead)
	if orgCode != "" {
		db = db.Where("org_code = ?", orgCode)
	}
	var n int64
	if err := db.Count(&n).Error; err != nil {
		return 0, fmt.Errorf("count dead deliveries: %w", err)
	}
	return n, nil
}

// RearmDeadDeliveries makes those of ids that are still dead pending
// again, due at `at`, their attempts kept; it returns how many it re-armed.
func (q Queries) RearmDeadDeliveries(ids []int64, at time.Time) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	res := q.db.Model(&Delivery{}).Where("id IN ? AND status = ?", ids, DeliveryDead).
		Updates(map[string]any{"status": DeliveryPending, "next_attempt_at": dbTime(at), "last_error": "", "updated_at": now()})
	if res.Error != nil {
		return 0, fmt.Errorf("re-arm %d deliveries: %w", len(ids), res.Error)
	}
	return res.RowsAffected, nil
}

// CallbackCount is how many callbacks of an institution came to a result
// (and an errcode, for refusals).
type CallbackCount struct {
	OrgCode string
	Result  string
	Errcode string
	N       int64
}

// CountCallbacksSince counts the callbacks received since `since` by
// institution and result: a range of ix_callbacks_received, so that it
// reads the day's callbacks, not the history.
func (q Queries) CountCallbacksSince(since time.Time) ([]CallbackCount, error) {
	var out []CallbackCount
	err := q.db.Model(&Callback{}).Select("org_code, result, COUNT(*) AS n").
		Where("received_at >= ?", dbTime(since)).Group("org_code, result").Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("count callbacks: %w", err)
	}
	return out, nil
}

// CountRefusalsSince counts the callbacks refused since `since` by
// institution and errcode, most first (ix_callbacks_received, as above).
func (q Queries) CountRefusalsSince(since time.Time) ([]CallbackCount, error) {
	var out []CallbackCount
	err := q.db.Model(&Callback{}).Select("org_code, result, errcode, COUNT(*) AS n").
		Where("received_at >= ? AND result = ?", dbTime(since), CallbackRejected).
		Group("org_code, result, errcode").Order("n DESC, org_code, errcode").Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("count refusals: %w", err)
	}
	return out, nil
}

// LastAcceptedCallback returns when the institution's latest accepted
// callback came, nil when none did. It walks ix_callbacks_org (org_code,
// then id) backwards from the newest, so it reads the institution's last
// few callbacks, not its history; ids follow received_at. An accepted
// callback is always answered 000000.
func (q Queries) LastAcceptedCallback(orgCode string) (*time.Time, error) {
	var c []Callback
	err := q.db.Model(&Callback{}).Select("received_at").
		Where("org_code = ? AND result = ? AND errcode = ?", orgCode, CallbackAccepted, "000000").
		Order("id DESC").Limit(1).Find(&c).Error
	if err != nil {
		return nil, fmt.Errorf("last callback of %s: %w", orgCode, err)
	}
	if len(c) == 0 {
		return nil, nil
	}
	t := c[0].ReceivedAt.UTC()
	return &t, nil
}

// CallbackBodies returns the raw bodies (as received, still encrypted) of
// the given callbacks by id (primary key); a callback whose body was not
// kept is absent.
func (q Queries) CallbackBodies(ids []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows []struct {
		ID   int64
		Body []byte
	}
	if err := q.db.Model(&Callback{}).Select("id, body").Where("id IN ? AND body IS NOT NULL", ids).
		Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("callback bodies: %w", err)
	}
	for _, r := range rows {
		if len(r.Body) > 0 { // SQLite keeps a nil body as an empty one
			out[r.ID] = r.Body
		}
	}
	return out, nil
}

// CallCount is how many calls to an institution came to a result.
type CallCount struct {
	OrgCode string
	Result  string
	N       int64
}

// CountCallsSince counts the outbound calls made since `since` by
// institution and result: a range of ix_calls_created (or an index on
// (org_code, created_at)), the last hour's calls only.
func (q Queries) CountCallsSince(since time.Time) ([]CallCount, error) {
	var out []CallCount
	err := q.db.Model(&Call{}).Select("org_code, result, COUNT(*) AS n").
		Where("created_at >= ?", dbTime(since)).Group("org_code, result").Scan(&out).Error
	if err != nil {
		return nil, fmt.Errorf("count calls: %w", err)
	}
	return out, nil
}

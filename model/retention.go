package model

import (
	"fmt"
	"time"
)

// Retention (docs/operations.md "Retention", docs/decisions.md §42): the
// bodies of old callbacks are emptied and old outbound call records
// deleted, a small batch at a time. Each batch is two short statements,
// neither in a transaction: the ids are read from the time index (a
// consistent read, no locks), then the rows are written by primary key, so
// that only those rows are locked, for the time of one statement, and a
// callback or call being recorded at the same moment (at the far end of
// both indexes) never waits on them. No DELETE ... LIMIT: SQLite has none
// without a compile option, and MySQL's locks more than it deletes.
// On MySQL the write is made to look its ids up (primaryKeyHint): each
// is then one record lock, never a gap.

// MarkRetentionBodies is the job mark (job_marks) of the bodies' purge:
// every callback received before it has had its body emptied already, so a
// run starts there and reads only what it purges.
const MarkRetentionBodies = "retention_bodies"

// RetentionCursor is where a purge of callback bodies stands: the
// received_at and id of the last callback it examined. Callbacks are
// taken in (received_at, id) order, the order of ix_callbacks_received.
type RetentionCursor struct {
	At time.Time
	ID int64
}

// RetentionBatch is what one batch did.
type RetentionBatch struct {
	Examined int   // index entries read: the ids selected
	Purged   int64 // bodies emptied, or call records deleted
	// Next is the cursor after this batch (callbacks): the last row it
	// examined, or the cursor it started from when it examined none.
	Next RetentionCursor
}

// PurgeCallbackBodies empties the bodies of at most n callbacks received
// after cursor `from` and before `before`, oldest first. Every callback
// examined has no body afterwards: those that had one are counted in
// Purged, those that had none (over the audit limit, refused unread, or
// emptied by an earlier run that stopped before its mark) are only
// examined. The row itself, its digest, size, result and errcode stay.
// Fewer than n examined means nothing older than `before` is left after
// the cursor.
func (q Queries) PurgeCallbackBodies(from RetentionCursor, before time.Time, n int) (RetentionBatch, error) {
	out := RetentionBatch{Next: from}
	var rows []struct {
		ID         int64
		ReceivedAt time.Time
	}
	// received_at >= ? is the index's range; the OR skips the rows of the
	// cursor's own millisecond already done. Only the index is read.
	at := from.At.UTC()
	err := q.db.Model(&Callback{}).Select("id, received_at").
		Where("received_at >= ? AND received_at < ? AND (received_at > ? OR id > ?)", at, before.UTC(), at, from.ID).
		Order("received_at, id").Limit(n).Scan(&rows).Error
	if err != nil {
		return out, fmt.Errorf("retention: callbacks before %s: %w", before.Format(time.RFC3339), err)
	}
	if len(rows) == 0 {
		return out, nil
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	last := rows[len(rows)-1]
	out.Examined, out.Next = len(rows), RetentionCursor{At: last.ReceivedAt.UTC(), ID: last.ID}
	res := q.db.Exec("UPDATE callbacks "+q.primaryKeyHint()+" SET body = NULL WHERE id IN ? AND body IS NOT NULL", ids)
	if res.Error != nil {
		return out, fmt.Errorf("retention: empty %d callback bodies: %w", len(ids), res.Error)
	}
	out.Purged = res.RowsAffected
	return out, nil
}

// PurgeCalls deletes at most n outbound call records made before
// `before`, oldest first. Fewer than n examined means none is left.
func (q Queries) PurgeCalls(before time.Time, n int) (RetentionBatch, error) {
	var out RetentionBatch
	var ids []int64
	err := q.db.Model(&Call{}).Where("created_at < ?", before.UTC()).
		Order("created_at, id").Limit(n).Pluck("id", &ids).Error
	if err != nil {
		return out, fmt.Errorf("retention: calls before %s: %w", before.Format(time.RFC3339), err)
	}
	out.Examined = len(ids)
	if len(ids) == 0 {
		return out, nil
	}
	// MySQL takes an index hint only in the multi-table form of DELETE.
	stmt := "DELETE FROM outbound_calls WHERE id IN ?"
	if hint := q.primaryKeyHint(); hint != "" {
		stmt = "DELETE c FROM outbound_calls AS c " + hint + " WHERE c.id IN ?"
	}
	res := q.db.Exec(stmt, ids)
	if res.Error != nil {
		return out, fmt.Errorf("retention: delete %d calls: %w", len(ids), res.Error)
	}
	out.Purged = res.RowsAffected
	return out, nil
}

// primaryKeyHint makes MySQL look the batch's ids up in the primary key.
// Left to itself, on a table of a few thousand rows, it scans the whole
// key instead, locking every row it passes and the end of the table where
// new rows go, and waiting on any row being inserted: callbacks would wait
// for the purge, and the purge for a group commit in flight. SQLite has
// one writer, and always looks ids up.
func (q Queries) primaryKeyHint() string {
	if q.db.Dialector.Name() == "mysql" {
		return "FORCE INDEX (PRIMARY)"
	}
	return ""
}

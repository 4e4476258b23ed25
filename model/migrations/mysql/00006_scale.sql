-- +goose Up
-- Years of data (docs/operations.md, "At size"): every job's claim, every
-- list filter and the shutdown's lease release read rows in proportion to
-- their work, not to the orders ever created.

-- The shutdown's lease release reads its own tokens as a range of this
-- index, so that it locks no other instance's rows.
ALTER TABLE orders
  ADD KEY ix_orders_lease (lease_owner),
  -- list filters, newest first: InnoDB appends the primary key to a
  -- secondary index, so (col) serves WHERE col = ? ORDER BY id DESC.
  ADD KEY ix_orders_status (status),
  ADD KEY ix_orders_org (org_code),
  ADD KEY ix_orders_flag (flag),
  ADD KEY ix_orders_guarantee_no (guarantee_no),
  ADD KEY ix_orders_applicant_name (applicant_name),
  ADD KEY ix_orders_created (created_at),
  -- the incremental reconciliation: what changed, and whose bid opened,
  -- since its last run
  ADD KEY ix_orders_updated (updated_at),
  ADD KEY ix_orders_opening (opening_at);
-- The redelivery job walks the pending deliveries by id: (status) is in id
-- order within a status, so it reads the pending ones, not the history.
ALTER TABLE deliveries ADD KEY ix_deliveries_lease (lease_owner), ADD KEY ix_deliveries_status (status);
ALTER TABLE payments ADD KEY ix_payments_created (created_at);
-- The console's callbacks: an institution's newest first (org_code, then
-- id), its refusals or acceptances (org_code, result), and the day's
-- counts by institution, result and errcode read from the index alone
-- (received_at first: a day is a range). All three grow at their right
-- end, as callbacks arrive, so they cost an insert little.
ALTER TABLE callbacks ADD KEY ix_callbacks_org (org_code),
  ADD KEY ix_callbacks_org_result (org_code, result),
  ADD KEY ix_callbacks_received_cover (received_at, org_code, result, errcode);

-- An order waits for a job only while next_check_at is set: orders whose
-- next_check_at stayed behind while nothing was due (issued with the PDF
-- stored, flagged, ended) would be read past by every claim.
UPDATE orders SET next_check_at = NULL
WHERE next_check_at IS NOT NULL
  AND NOT (status = 'processing'
        OR (status = 'applying' AND flag <> 'apply_unconfirmed')
        OR (status = 'issued' AND file_pending = 1 AND guarantee_no IS NOT NULL AND pull_url <> ''));

-- Where a job that works through history by time stopped last (the
-- incremental reconciliation, the retention job): it starts there next.
CREATE TABLE job_marks (
  name       VARCHAR(64) NOT NULL,
  mark_at    DATETIME(3) NOT NULL,
  updated_at DATETIME(3) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The dedup indexes lead with the order (docs/decisions.md §44): keyed by
-- the SHA-256 alone, each accepted callback and payment inserted into a
-- random page of an index that outgrows the buffer pool after a few
-- hundred thousand orders, and paid a disk read for it. Led by order_no,
-- a callback lands next to its order's others, and orders are numbered
-- by time. Unique (order_no, dedup_key) is unique dedup_key for every row
-- the gateway writes: a key is set only on a row of a found order and
-- names that order (paystate and applynotify hash the orderno; release
-- hashes the bhno, unique per institution and never moved); repeats and
-- refusals carry NULL, which no unique index compares. Led by order_no,
-- they also serve every lookup by order: ix_callbacks_order and
-- ix_payments_order would be one more write per insert for nothing.
ALTER TABLE callbacks DROP KEY uk_callbacks_dedup, DROP KEY ix_callbacks_order,
  ADD UNIQUE KEY uk_callbacks_dedup (order_no, dedup_key);
ALTER TABLE payments DROP KEY uk_payments_dedup, DROP KEY ix_payments_order,
  ADD UNIQUE KEY uk_payments_dedup (order_no, dedup_key);

-- +goose Down
ALTER TABLE payments DROP KEY uk_payments_dedup, ADD UNIQUE KEY uk_payments_dedup (dedup_key), ADD KEY ix_payments_order (order_no);
ALTER TABLE callbacks DROP KEY uk_callbacks_dedup, ADD UNIQUE KEY uk_callbacks_dedup (dedup_key), ADD KEY ix_callbacks_order (order_no);
DROP TABLE job_marks;
ALTER TABLE callbacks DROP KEY ix_callbacks_received_cover, DROP KEY ix_callbacks_org_result, DROP KEY ix_callbacks_org;
ALTER TABLE payments DROP KEY ix_payments_created;
ALTER TABLE deliveries DROP KEY ix_deliveries_status, DROP KEY ix_deliveries_lease;
ALTER TABLE orders
  DROP KEY ix_orders_opening, DROP KEY ix_orders_updated, DROP KEY ix_orders_created,
  DROP KEY ix_orders_applicant_name, DROP KEY ix_orders_guarantee_no, DROP KEY ix_orders_flag,
  DROP KEY ix_orders_org, DROP KEY ix_orders_status, DROP KEY ix_orders_lease;

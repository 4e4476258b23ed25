-- +goose Up
-- As mysql/00006_scale.sql: the indexes that keep every claim, list filter
-- and lease release in proportion to its work, next_check_at cleared where
-- nothing is due, and the jobs' marks.
CREATE INDEX ix_orders_lease ON orders (lease_owner);
CREATE INDEX ix_orders_status ON orders (status);
CREATE INDEX ix_orders_org ON orders (org_code);
CREATE INDEX ix_orders_flag ON orders (flag);
CREATE INDEX ix_orders_guarantee_no ON orders (guarantee_no);
CREATE INDEX ix_orders_applicant_name ON orders (applicant_name);
CREATE INDEX ix_orders_created ON orders (created_at);
CREATE INDEX ix_orders_updated ON orders (updated_at);
CREATE INDEX ix_orders_opening ON orders (opening_at);
CREATE INDEX ix_deliveries_lease ON deliveries (lease_owner);
CREATE INDEX ix_deliveries_status ON deliveries (status);
CREATE INDEX ix_payments_created ON payments (created_at);
CREATE INDEX ix_callbacks_org ON callbacks (org_code);
CREATE INDEX ix_callbacks_org_result ON callbacks (org_code, result);
CREATE INDEX ix_callbacks_received_cover ON callbacks (received_at, org_code, result, errcode);

UPDATE orders SET next_check_at = NULL
WHERE next_check_at IS NOT NULL
  AND NOT (status = 'processing'
        OR (status = 'applying' AND flag <> 'apply_unconfirmed')
        OR (status = 'issued' AND file_pending = 1 AND guarantee_no IS NOT NULL AND pull_url <> ''));

CREATE TABLE job_marks (
  name       VARCHAR(64) NOT NULL PRIMARY KEY,
  mark_at    DATETIME NOT NULL,
  updated_at DATETIME NOT NULL
);

-- The dedup indexes lead with the order (docs/decisions.md §44): keyed by
-- the SHA-256 alone, each accepted callback and payment inserted into a
-- random page of an index that outgrows the buffer pool after a few
-- hundred thousand orders, and paid a disk read for it. Led by order_no,
-- a callback lands next to its order's others, and orders are numbered
-- by time. Unique (order_no, dedup_key) is unique dedup_key for every row
-- the gateway writes: a key is set only on a row of a found order and
-- names that order (paystate and applynotify hash the orderno; release
-- hashes the bhno, unique per institution and never moved); repeats and
-- refusals carry NULL, which no unique index compares.
DROP INDEX uk_callbacks_dedup;
DROP INDEX ix_callbacks_order;
CREATE UNIQUE INDEX uk_callbacks_dedup ON callbacks (order_no, dedup_key);
DROP INDEX uk_payments_dedup;
DROP INDEX ix_payments_order;
CREATE UNIQUE INDEX uk_payments_dedup ON payments (order_no, dedup_key);

-- +goose Down
DROP INDEX uk_payments_dedup;
CREATE UNIQUE INDEX uk_payments_dedup ON payments (dedup_key);
CREATE INDEX ix_payments_order ON payments (order_no);
DROP INDEX uk_callbacks_dedup;
CREATE UNIQUE INDEX uk_callbacks_dedup ON callbacks (dedup_key);
CREATE INDEX ix_callbacks_order ON callbacks (order_no);
DROP TABLE job_marks;
DROP INDEX ix_callbacks_received_cover;
DROP INDEX ix_callbacks_org_result;
DROP INDEX ix_callbacks_org;
DROP INDEX ix_payments_created;
DROP INDEX ix_deliveries_status;
DROP INDEX ix_deliveries_lease;
DROP INDEX ix_orders_opening;
DROP INDEX ix_orders_updated;
DROP INDEX ix_orders_created;
DROP INDEX ix_orders_applicant_name;
DROP INDEX ix_orders_guarantee_no;
DROP INDEX ix_orders_flag;
DROP INDEX ix_orders_org;
DROP INDEX ix_orders_status;
DROP INDEX ix_orders_lease;

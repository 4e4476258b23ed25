-- The gateway's MySQL schema, for review by a DBA.
--
-- This file is the schema that model/migrations/mysql/*.sql build, in one
-- piece; model/schema_test.go loads it into MariaDB and compares every
-- table with what the migrations make (SHOW CREATE TABLE), so the two
-- cannot drift apart. The migrations are what the gateway runs; edit them,
-- then this file.
--
-- Two ways to install it:
--
--   * Let the gateway do it: `gateway migrate -config config.yaml` with a
--     user that may CREATE/ALTER/INDEX (the Kubernetes manifests run it as
--     an init container). The serving instances then also need only
--     SELECT, INSERT, UPDATE, DELETE: at start they see that nothing is
--     pending and change nothing.
--   * Apply this file by hand into an empty database created as
--       CREATE DATABASE gateway CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
--     The last statements record the migrations as applied in goose's
--     table, so that the gateway finds nothing to do.
--
-- Conventions: money is DECIMAL(18,2) (premium rate DECIMAL(18,6)); times
-- are DATETIME(3) in UTC (the gateway sets time_zone '+00:00' on every
-- connection, whatever the server's zone); text is utf8mb4 with the binary
-- collation, so that keys compare exactly as the interface sends them.
-- Idempotency lives in the unique keys (uk_*): the gateway relies on them
-- and on conditional UPDATEs, never on read-then-write. There are no
-- foreign keys: rows are written in one transaction per event, and the
-- audit tables must accept rows about orders that do not exist.

-- orders: one row per application (orderno), the whole lifecycle of the
-- guarantee. Personal data: applicant_code (统一社会信用代码), tenderer_code,
-- account_no (基本户账号), contact_name/phone/email. lease_owner/lease_until
-- and next_check_at/check_attempts belong to the jobs (polling, re-sending
-- applies, pulling PDFs); flag marks what an operator should look at
-- (stale, apply_unconfirmed, pull_failed). One row per order, never deleted.
CREATE TABLE orders (
  id               BIGINT NOT NULL AUTO_INCREMENT,
  order_no         VARCHAR(32)  NOT NULL,
  org_code         VARCHAR(128) NOT NULL,
  status           VARCHAR(16)  NOT NULL,
  -- 1 while the order holds the bidder's slot for the lot (applying,
  -- processing, issued), NULL otherwise: the unique index below allows one
  -- active order per bidder and lot, decided by the database, not a read.
  active_slot      TINYINT NULL,
  guarantee_no     VARCHAR(64) NULL,
  request_hash     CHAR(64) NOT NULL,
  applicant_name   VARCHAR(64)  NOT NULL,
  applicant_code   VARCHAR(32)  NOT NULL,
  deposit_amount   DECIMAL(18,2) NOT NULL,
  project_name     VARCHAR(256) NOT NULL,
  project_code     VARCHAR(128) NOT NULL,
  lot_name         VARCHAR(256) NOT NULL,
  lot_code         VARCHAR(128) NOT NULL,
  opening_at       DATETIME(3) NOT NULL,
  tenderer_name    VARCHAR(128) NOT NULL,
  tenderer_code    VARCHAR(32)  NOT NULL,
  deadline_at      DATETIME(3) NOT NULL,
  account_bank     VARCHAR(128) NOT NULL,
  account_name     VARCHAR(128) NOT NULL,
  account_no       VARCHAR(32)  NOT NULL,
  contact_name     VARCHAR(128) NOT NULL,
  contact_phone    VARCHAR(128) NOT NULL,
  contact_email    VARCHAR(128) NOT NULL,
  continue_url     VARCHAR(1024) NOT NULL DEFAULT '',
  query_url        VARCHAR(1024) NOT NULL DEFAULT '',
  pull_url         VARCHAR(1024) NOT NULL DEFAULT '',
  cancel_url       VARCHAR(1024) NOT NULL DEFAULT '',
  premium_rate     DECIMAL(18,6) NULL,
  premium          DECIMAL(18,2) NULL,
  issuer_name      VARCHAR(64)  NOT NULL DEFAULT '',
  issuer_address   VARCHAR(256) NOT NULL DEFAULT '',
  issuer_phone     VARCHAR(64)  NOT NULL DEFAULT '',
  issued_at        DATETIME(3) NULL,
  remark           VARCHAR(512) NOT NULL DEFAULT '',
  paid_amount      DECIMAL(18,2) NOT NULL DEFAULT 0,
  refunded_amount  DECIMAL(18,2) NOT NULL DEFAULT 0,
  file_pending     TINYINT NOT NULL DEFAULT 0,
  next_check_at    DATETIME(3) NULL,
  check_attempts   INT NOT NULL DEFAULT 0,
  flag             VARCHAR(32) NOT NULL DEFAULT '',
  lease_owner      VARCHAR(128) NOT NULL DEFAULT '',
  lease_until      DATETIME(3) NULL,
  created_at       DATETIME(3) NOT NULL,
  updated_at       DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_orders_order_no (order_no),
  UNIQUE KEY uk_orders_guarantee (org_code, guarantee_no),
  UNIQUE KEY uk_orders_active (applicant_code, project_code, lot_code, active_slot),
  KEY ix_orders_due (status, next_check_at),
  KEY ix_orders_lot (project_code, lot_code),
  KEY ix_orders_org_status (org_code, status),
  KEY ix_orders_lease (lease_owner),
  KEY ix_orders_status (status),
  KEY ix_orders_org (org_code),
  KEY ix_orders_flag (flag),
  KEY ix_orders_guarantee_no (guarantee_no),
  KEY ix_orders_applicant_name (applicant_name),
  KEY ix_orders_created (created_at),
  KEY ix_orders_updated (updated_at),
  KEY ix_orders_opening (opening_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- order_events: the history of an order, oldest first (status changes and
-- notes); GET /v1/guarantees/{orderno}/events merges it with callbacks and
-- outbound_calls. Append-only; a few rows per order.
CREATE TABLE order_events (
  id          BIGINT NOT NULL AUTO_INCREMENT,
  order_no    VARCHAR(32) NOT NULL,
  kind        VARCHAR(16) NOT NULL,
  name        VARCHAR(64) NOT NULL,
  from_status VARCHAR(16) NOT NULL DEFAULT '',
  to_status   VARCHAR(16) NOT NULL DEFAULT '',
  detail      TEXT NOT NULL,
  ref_id      BIGINT NULL,
  created_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  KEY ix_events_order (order_no, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- payments: paystate callbacks that took effect (pay and refund), one row
-- per dedup key (institution, orderno, type, paytime, paymoney). The dedup
-- key is unique under its order: uk_payments_dedup leads with order_no, so
-- that a new payment lands beside its order's others, not on a random page
-- of the index (docs/decisions.md §44); a key names one order, so this is
-- the key unique.
-- Personal data: payer_name, payer_account (paybankno).
CREATE TABLE payments (
  id            BIGINT NOT NULL AUTO_INCREMENT,
  dedup_key     CHAR(64) NOT NULL,
  order_no      VARCHAR(32) NOT NULL,
  org_code      VARCHAR(128) NOT NULL,
  kind          VARCHAR(8) NOT NULL,
  amount        DECIMAL(18,2) NOT NULL,
  paid_at       DATETIME(3) NOT NULL,
  payer_name    VARCHAR(64) NOT NULL DEFAULT '',
  payer_account VARCHAR(64) NOT NULL DEFAULT '',
  callback_id   BIGINT NOT NULL,
  created_at    DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_payments_dedup (order_no, dedup_key),
  KEY ix_payments_paid_at (paid_at),
  KEY ix_payments_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- guarantee_files: the guarantee PDF, stored once per order (up to the
-- 30 MiB notify body limit). max_allowed_packet must exceed the largest
-- letter: MySQL 8's default (64 MiB) does; MariaDB's (16 MiB) does not.
CREATE TABLE guarantee_files (
  id           BIGINT NOT NULL AUTO_INCREMENT,
  order_no     VARCHAR(32) NOT NULL,
  guarantee_no VARCHAR(64) NOT NULL DEFAULT '',
  sha256       CHAR(64) NOT NULL,
  size         BIGINT NOT NULL,
  source       VARCHAR(16) NOT NULL,
  content      LONGBLOB NOT NULL,
  created_at   DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_files_order (order_no),
  KEY ix_files_sha256 (sha256)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- callbacks: audit of every callback received, refused ones included:
-- the body as received (still encrypted; bodies over 1 MiB keep only their
-- sha256 and size), result, errcode, remote address and request id. Grows
-- with traffic: archive rows older than the retention period you need.
CREATE TABLE callbacks (
  id           BIGINT NOT NULL AUTO_INCREMENT,
  org_code     VARCHAR(128) NOT NULL DEFAULT '',
  kind         VARCHAR(16) NOT NULL,
  order_no     VARCHAR(32) NOT NULL DEFAULT '',
  guarantee_no VARCHAR(64) NOT NULL DEFAULT '',
  -- set only on the callback whose effect was applied, of a found order:
  -- a repeat collides in uk_callbacks_dedup, which leads with order_no for
  -- locality (a key names one order, docs/decisions.md §44)
  dedup_key    CHAR(64) NULL,
  body         LONGBLOB NULL,
  body_sha256  CHAR(64) NOT NULL,
  body_size    BIGINT NOT NULL,
  result       VARCHAR(16) NOT NULL,
  errcode      VARCHAR(8) NOT NULL,
  msg          VARCHAR(512) NOT NULL DEFAULT '',
  remote_addr  VARCHAR(64) NOT NULL DEFAULT '',
  request_id   VARCHAR(64) NOT NULL DEFAULT '',
  received_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_callbacks_dedup (order_no, dedup_key),
  KEY ix_callbacks_received (received_at),
  KEY ix_callbacks_org (org_code),
  KEY ix_callbacks_org_result (org_code, result),
  KEY ix_callbacks_received_cover (received_at, org_code, result, errcode)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- outbound_calls: audit of every attempt to call an institution (apply,
-- cost, xmstate, query, pull, cancel): URL, HTTP status, stat, errcode,
-- result, latency, sizes; never a body. Grows with traffic (polling adds a
-- row per query): archive rows older than the retention period you need.
CREATE TABLE outbound_calls (
  id             BIGINT NOT NULL AUTO_INCREMENT,
  org_code       VARCHAR(128) NOT NULL,
  order_no       VARCHAR(32) NOT NULL DEFAULT '',
  endpoint       VARCHAR(16) NOT NULL,
  url            VARCHAR(1024) NOT NULL,
  attempt        INT NOT NULL DEFAULT 1,
  http_status    INT NOT NULL DEFAULT 0,
  stat           INT NULL,
  errcode        VARCHAR(32) NOT NULL DEFAULT '',
  result         VARCHAR(16) NOT NULL,
  error          VARCHAR(512) NOT NULL DEFAULT '',
  latency_ms     BIGINT NOT NULL,
  request_bytes  BIGINT NOT NULL,
  response_bytes BIGINT NOT NULL,
  created_at     DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  KEY ix_calls_order (order_no),
  KEY ix_calls_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- project_states: each project final state (xmstate) pushed by the
-- bidding module.
CREATE TABLE project_states (
  id           BIGINT NOT NULL AUTO_INCREMENT,
  project_name VARCHAR(256) NOT NULL,
  project_code VARCHAR(128) NOT NULL,
  lot_name     VARCHAR(256) NOT NULL,
  lot_code     VARCHAR(128) NOT NULL,
  opening_at   DATETIME(3) NOT NULL,
  state        VARCHAR(8) NOT NULL,
  created_at   DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  KEY ix_project_states_lot (project_code, lot_code)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- deliveries: one row per institution to which a project state is owed;
-- pending until delivered, dead after the last back-off step (an operator
-- re-arms it with POST /v1/deliveries/{id}/retry).
CREATE TABLE deliveries (
  id              BIGINT NOT NULL AUTO_INCREMENT,
  push_id         BIGINT NOT NULL,
  org_code        VARCHAR(128) NOT NULL,
  status          VARCHAR(16) NOT NULL,
  attempts        INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(3) NULL,
  last_error      VARCHAR(512) NOT NULL DEFAULT '',
  lease_owner     VARCHAR(128) NOT NULL DEFAULT '',
  lease_until     DATETIME(3) NULL,
  delivered_at    DATETIME(3) NULL,
  created_at      DATETIME(3) NOT NULL,
  updated_at      DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uk_deliveries_push_org (push_id, org_code),
  KEY ix_deliveries_due (status, next_attempt_at),
  KEY ix_deliveries_lease (lease_owner),
  KEY ix_deliveries_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- job_leases: which instance runs a whole-table job (the reconciliation)
-- until when.
CREATE TABLE job_leases (
  name        VARCHAR(64) NOT NULL,
  owner       VARCHAR(128) NOT NULL,
  lease_until DATETIME(3) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- findings: what the daily reconciliation found, one row per day, kind and
-- order.
CREATE TABLE findings (
  id         BIGINT NOT NULL AUTO_INCREMENT,
  run_date   VARCHAR(10) NOT NULL,
  kind       VARCHAR(32) NOT NULL,
  order_no   VARCHAR(32) NOT NULL,
  detail     VARCHAR(512) NOT NULL,
  created_at DATETIME(3) NOT NULL,
  -- who resolved it in the console, when, and why (migration 00005)
  resolved_by VARCHAR(64) NOT NULL DEFAULT '',
  resolved_at DATETIME(3) NULL,
  note        VARCHAR(512) NOT NULL DEFAULT '',
  PRIMARY KEY (id),
  UNIQUE KEY uk_findings (run_date, kind, order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- console_sessions: the operators' console's sign-ins, shared by every
-- replica; id is the SHA-256 of the cookie's token, never the token.
CREATE TABLE console_sessions (
  id          CHAR(64) NOT NULL,
  user_name   VARCHAR(64) NOT NULL,
  csrf        CHAR(64) NOT NULL,
  remote_addr VARCHAR(64) NOT NULL DEFAULT '',
  created_at  DATETIME(3) NOT NULL,
  expires_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  KEY ix_console_sessions_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- console_actions: who did what through the console, and when.
CREATE TABLE console_actions (
  id          BIGINT NOT NULL AUTO_INCREMENT,
  user_name   VARCHAR(64) NOT NULL,
  role        VARCHAR(16) NOT NULL,
  action      VARCHAR(32) NOT NULL,
  order_no    VARCHAR(64) NOT NULL DEFAULT '',
  target      VARCHAR(128) NOT NULL DEFAULT '',
  result      VARCHAR(32) NOT NULL,
  detail      VARCHAR(512) NOT NULL DEFAULT '',
  remote_addr VARCHAR(64) NOT NULL DEFAULT '',
  request_id  VARCHAR(64) NOT NULL DEFAULT '',
  created_at  DATETIME(3) NOT NULL,
  finished_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  KEY ix_console_actions_order (order_no, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- job_marks: where a job that works through history by time stopped last
-- (the incremental reconciliation, the retention job; migration 00006).
CREATE TABLE job_marks (
  name       VARCHAR(64) NOT NULL,
  mark_at    DATETIME(3) NOT NULL,
  updated_at DATETIME(3) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- goose_db_version: the migrations applied (pressly/goose). Keep the last
-- version_id equal to the newest file in model/migrations/mysql.
CREATE TABLE goose_db_version (
  id         BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  version_id BIGINT NOT NULL,
  is_applied TINYINT(1) NOT NULL,
  tstamp     DATETIME NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (id)
);
INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1), (1, 1), (2, 1), (5, 1), (6, 1);

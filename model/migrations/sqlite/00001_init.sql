-- +goose Up
-- The same schema as mysql/00001_init.sql for the embedded SQLite store;
-- money is TEXT so that SQLite's numeric affinity never turns it into a
-- float (shopspring/decimal reads and writes the exact string); times are
-- UTC. Unique indexes carry the idempotency of the gateway.

CREATE TABLE orders (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
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
  deposit_amount   TEXT NOT NULL,
  project_name     VARCHAR(256) NOT NULL,
  project_code     VARCHAR(128) NOT NULL,
  lot_name         VARCHAR(256) NOT NULL,
  lot_code         VARCHAR(128) NOT NULL,
  opening_at       DATETIME NOT NULL,
  tenderer_name    VARCHAR(128) NOT NULL,
  tenderer_code    VARCHAR(32)  NOT NULL,
  deadline_at      DATETIME NOT NULL,
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
  premium_rate     TEXT NULL,
  premium          TEXT NULL,
  issuer_name      VARCHAR(64)  NOT NULL DEFAULT '',
  issuer_address   VARCHAR(256) NOT NULL DEFAULT '',
  issuer_phone     VARCHAR(64)  NOT NULL DEFAULT '',
  issued_at        DATETIME NULL,
  remark           VARCHAR(512) NOT NULL DEFAULT '',
  paid_amount      TEXT NOT NULL DEFAULT '0',
  refunded_amount  TEXT NOT NULL DEFAULT '0',
  file_pending     TINYINT NOT NULL DEFAULT 0,
  next_check_at    DATETIME NULL,
  check_attempts   INT NOT NULL DEFAULT 0,
  flag             VARCHAR(32) NOT NULL DEFAULT '',
  lease_owner      VARCHAR(64) NOT NULL DEFAULT '',
  lease_until      DATETIME NULL,
  created_at       DATETIME NOT NULL,
  updated_at       DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_orders_order_no ON orders (order_no);
CREATE UNIQUE INDEX uk_orders_guarantee ON orders (org_code, guarantee_no);
CREATE UNIQUE INDEX uk_orders_active ON orders (applicant_code, project_code, lot_code, active_slot);
CREATE INDEX ix_orders_due ON orders (status, next_check_at);
CREATE INDEX ix_orders_lot ON orders (project_code, lot_code);
CREATE INDEX ix_orders_org_status ON orders (org_code, status);

CREATE TABLE order_events (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  order_no    VARCHAR(32) NOT NULL,
  kind        VARCHAR(16) NOT NULL,
  name        VARCHAR(64) NOT NULL,
  from_status VARCHAR(16) NOT NULL DEFAULT '',
  to_status   VARCHAR(16) NOT NULL DEFAULT '',
  detail      TEXT NOT NULL,
  ref_id      BIGINT NULL,
  created_at  DATETIME NOT NULL
);
CREATE INDEX ix_events_order ON order_events (order_no, id);

CREATE TABLE payments (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  dedup_key     CHAR(64) NOT NULL,
  order_no      VARCHAR(32) NOT NULL,
  org_code      VARCHAR(128) NOT NULL,
  kind          VARCHAR(8) NOT NULL,
  amount        TEXT NOT NULL,
  paid_at       DATETIME NOT NULL,
  payer_name    VARCHAR(64) NOT NULL DEFAULT '',
  payer_account VARCHAR(64) NOT NULL DEFAULT '',
  callback_id   BIGINT NOT NULL,
  created_at    DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_payments_dedup ON payments (dedup_key);
CREATE INDEX ix_payments_order ON payments (order_no);
CREATE INDEX ix_payments_paid_at ON payments (paid_at);

CREATE TABLE guarantee_files (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  order_no     VARCHAR(32) NOT NULL,
  guarantee_no VARCHAR(64) NOT NULL DEFAULT '',
  sha256       CHAR(64) NOT NULL,
  size         BIGINT NOT NULL,
  source       VARCHAR(16) NOT NULL,
  content      BLOB NOT NULL,
  created_at   DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_files_order ON guarantee_files (order_no);
CREATE INDEX ix_files_sha256 ON guarantee_files (sha256);

CREATE TABLE callbacks (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  org_code     VARCHAR(128) NOT NULL DEFAULT '',
  kind         VARCHAR(16) NOT NULL,
  order_no     VARCHAR(32) NOT NULL DEFAULT '',
  guarantee_no VARCHAR(64) NOT NULL DEFAULT '',
  -- set only on the callback whose effect was applied: a repeat collides here
  dedup_key    CHAR(64) NULL,
  body         BLOB NULL,
  body_sha256  CHAR(64) NOT NULL,
  body_size    BIGINT NOT NULL,
  outcome      VARCHAR(16) NOT NULL,
  errcode      VARCHAR(8) NOT NULL,
  msg          VARCHAR(512) NOT NULL DEFAULT '',
  remote_addr  VARCHAR(64) NOT NULL DEFAULT '',
  request_id   VARCHAR(64) NOT NULL DEFAULT '',
  received_at  DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_callbacks_dedup ON callbacks (dedup_key);
CREATE INDEX ix_callbacks_order ON callbacks (order_no);
CREATE INDEX ix_callbacks_received ON callbacks (received_at);

CREATE TABLE outbound_calls (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  org_code       VARCHAR(128) NOT NULL,
  order_no       VARCHAR(32) NOT NULL DEFAULT '',
  endpoint       VARCHAR(16) NOT NULL,
  url            VARCHAR(1024) NOT NULL,
  attempt        INT NOT NULL DEFAULT 1,
  http_status    INT NOT NULL DEFAULT 0,
  stat           INT NULL,
  errcode        VARCHAR(32) NOT NULL DEFAULT '',
  outcome        VARCHAR(16) NOT NULL,
  error          VARCHAR(512) NOT NULL DEFAULT '',
  latency_ms     BIGINT NOT NULL,
  request_bytes  BIGINT NOT NULL,
  response_bytes BIGINT NOT NULL,
  created_at     DATETIME NOT NULL
);
CREATE INDEX ix_calls_order ON outbound_calls (order_no);
CREATE INDEX ix_calls_created ON outbound_calls (created_at);

CREATE TABLE project_states (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  project_name VARCHAR(256) NOT NULL,
  project_code VARCHAR(128) NOT NULL,
  lot_name     VARCHAR(256) NOT NULL,
  lot_code     VARCHAR(128) NOT NULL,
  opening_at   DATETIME NOT NULL,
  state        VARCHAR(8) NOT NULL,
  created_at   DATETIME NOT NULL
);
CREATE INDEX ix_project_states_lot ON project_states (project_code, lot_code);

CREATE TABLE deliveries (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  push_id         BIGINT NOT NULL,
  org_code        VARCHAR(128) NOT NULL,
  status          VARCHAR(16) NOT NULL,
  attempts        INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME NULL,
  last_error      VARCHAR(512) NOT NULL DEFAULT '',
  lease_owner     VARCHAR(64) NOT NULL DEFAULT '',
  lease_until     DATETIME NULL,
  delivered_at    DATETIME NULL,
  created_at      DATETIME NOT NULL,
  updated_at      DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_deliveries_push_org ON deliveries (push_id, org_code);
CREATE INDEX ix_deliveries_due ON deliveries (status, next_attempt_at);

CREATE TABLE job_leases (
  name        VARCHAR(64) NOT NULL,
  owner       VARCHAR(64) NOT NULL,
  lease_until DATETIME NOT NULL,
  PRIMARY KEY (name)
);

CREATE TABLE findings (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  run_date   VARCHAR(10) NOT NULL,
  kind       VARCHAR(32) NOT NULL,
  order_no   VARCHAR(32) NOT NULL,
  detail     VARCHAR(512) NOT NULL,
  created_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX uk_findings ON findings (run_date, kind, order_no);

-- +goose Down
DROP TABLE findings;
DROP TABLE job_leases;
DROP TABLE deliveries;
DROP TABLE project_states;
DROP TABLE outbound_calls;
DROP TABLE callbacks;
DROP TABLE guarantee_files;
DROP TABLE payments;
DROP TABLE order_events;
DROP TABLE orders;

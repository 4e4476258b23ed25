-- +goose Up
-- The operators' console (package console): its sign-in sessions, the
-- record of what operators did through it, and how a reconciliation
-- finding was resolved.

-- One row per sign-in, shared by every replica: a session signed in on one
-- serves on all, and a sign-out voids it on all at once. id is the SHA-256
-- of the cookie's random token, so that a copy of this table opens no
-- session. Expired rows are deleted at the next sign-in.
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

-- Who did what and when: written "started" before an action runs and given
-- its result after, so that an action cut short by a crash still shows who
-- began it. An order's actions join its timeline (order_no, id).
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

-- An operator resolves a finding with a note. Added at the end with
-- defaults: instant on InnoDB, whatever the table's size.
ALTER TABLE findings
  ADD COLUMN resolved_by VARCHAR(64) NOT NULL DEFAULT '',
  ADD COLUMN resolved_at DATETIME(3) NULL,
  ADD COLUMN note VARCHAR(512) NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE findings DROP COLUMN note, DROP COLUMN resolved_at, DROP COLUMN resolved_by;
DROP TABLE console_actions;
DROP TABLE console_sessions;

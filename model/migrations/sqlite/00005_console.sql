-- +goose Up
-- As mysql/00005_console.sql: console sessions, operators' actions, and
-- the resolution of reconciliation findings.
CREATE TABLE console_sessions (
  id          CHAR(64) NOT NULL PRIMARY KEY,
  user_name   VARCHAR(64) NOT NULL,
  csrf        CHAR(64) NOT NULL,
  remote_addr VARCHAR(64) NOT NULL DEFAULT '',
  created_at  DATETIME NOT NULL,
  expires_at  DATETIME NOT NULL
);
CREATE INDEX ix_console_sessions_expires ON console_sessions (expires_at);

CREATE TABLE console_actions (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  user_name   VARCHAR(64) NOT NULL,
  role        VARCHAR(16) NOT NULL,
  action      VARCHAR(32) NOT NULL,
  order_no    VARCHAR(64) NOT NULL DEFAULT '',
  target      VARCHAR(128) NOT NULL DEFAULT '',
  result      VARCHAR(32) NOT NULL,
  detail      VARCHAR(512) NOT NULL DEFAULT '',
  remote_addr VARCHAR(64) NOT NULL DEFAULT '',
  request_id  VARCHAR(64) NOT NULL DEFAULT '',
  created_at  DATETIME NOT NULL,
  finished_at DATETIME NULL
);
CREATE INDEX ix_console_actions_order ON console_actions (order_no, id);

ALTER TABLE findings ADD COLUMN resolved_by VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE findings ADD COLUMN resolved_at DATETIME NULL;
ALTER TABLE findings ADD COLUMN note VARCHAR(512) NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE findings DROP COLUMN note;
ALTER TABLE findings DROP COLUMN resolved_at;
ALTER TABLE findings DROP COLUMN resolved_by;
DROP TABLE console_actions;
DROP TABLE console_sessions;

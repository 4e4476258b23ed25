-- +goose Up
-- As mysql/00002_names.sql. SQLite does not enforce VARCHAR lengths, so
-- only the renames apply here.
ALTER TABLE callbacks RENAME COLUMN outcome TO result;
ALTER TABLE outbound_calls RENAME COLUMN outcome TO result;

-- +goose Down
ALTER TABLE outbound_calls RENAME COLUMN result TO outcome;
ALTER TABLE callbacks RENAME COLUMN result TO outcome;

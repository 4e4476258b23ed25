-- +goose Up
-- What a callback and an outbound call came to is their "result", the word
-- the metrics use (result="accepted", result="ok"); "outcome" meant three
-- other things in the code as well. A rename is instant on InnoDB.
ALTER TABLE callbacks RENAME COLUMN outcome TO result;
ALTER TABLE outbound_calls RENAME COLUMN outcome TO result;
-- A lease token is <instance>/<job>/<random>, and server.instance may take
-- 80 characters (a Kubernetes pod name alone takes up to 63): 64 was short.
-- Still two length bytes in utf8mb4, so the change is instant.
ALTER TABLE orders MODIFY lease_owner VARCHAR(128) NOT NULL DEFAULT '';
ALTER TABLE deliveries MODIFY lease_owner VARCHAR(128) NOT NULL DEFAULT '';
ALTER TABLE job_leases MODIFY owner VARCHAR(128) NOT NULL;

-- +goose Down
ALTER TABLE job_leases MODIFY owner VARCHAR(64) NOT NULL;
ALTER TABLE deliveries MODIFY lease_owner VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE orders MODIFY lease_owner VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE outbound_calls RENAME COLUMN result TO outcome;
ALTER TABLE callbacks RENAME COLUMN result TO outcome;

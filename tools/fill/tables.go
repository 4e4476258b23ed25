package fill

// The tables a fill writes, in the order a chunk inserts them, with the
// columns it gives (every column but id, which comes first and is assigned
// here: ids follow the orders' creation, so each table's clustered index
// grows at its end).
const (
	tOrders = iota
	tEvents
	tCalls
	tCallbacks
	tPayments
	tFiles
	tPushes
	tDeliveries
	numTables
)

type table struct {
	name string
	cols []string
}

var tables = [numTables]table{
	tOrders: {"orders", []string{"order_no", "org_code", "status", "active_slot", "guarantee_no", "request_hash",
		"applicant_name", "applicant_code", "deposit_amount", "project_name", "project_code", "lot_name", "lot_code",
		"opening_at", "tenderer_name", "tenderer_code", "deadline_at", "account_bank", "account_name", "account_no",
		"contact_name", "contact_phone", "contact_email", "continue_url", "query_url", "pull_url", "cancel_url",
		"premium_rate", "premium", "issuer_name", "issuer_address", "issuer_phone", "issued_at", "remark",
		"paid_amount", "refunded_amount", "file_pending", "next_check_at", "check_attempts", "flag",
		"created_at", "updated_at"}},
	tEvents: {"order_events", []string{"order_no", "kind", "name", "from_status", "to_status", "detail", "ref_id",
		"created_at"}},
	tCalls: {"outbound_calls", []string{"org_code", "order_no", "endpoint", "url", "attempt", "http_status", "stat",
		"errcode", "result", "error", "latency_ms", "request_bytes", "response_bytes", "created_at"}},
	tCallbacks: {"callbacks", []string{"org_code", "kind", "order_no", "guarantee_no", "dedup_key", "body",
		"body_sha256", "body_size", "result", "errcode", "msg", "remote_addr", "request_id", "received_at"}},
	tPayments: {"payments", []string{"dedup_key", "order_no", "org_code", "kind", "amount", "paid_at", "payer_name",
		"payer_account", "callback_id", "created_at"}},
	tFiles: {"guarantee_files", []string{"order_no", "guarantee_no", "sha256", "size", "source", "content",
		"created_at"}},
	tPushes: {"project_states", []string{"project_name", "project_code", "lot_name", "lot_code", "opening_at",
		"state", "created_at"}},
	tDeliveries: {"deliveries", []string{"push_id", "org_code", "status", "attempts", "next_attempt_at",
		"last_error", "delivered_at", "created_at", "updated_at"}},
}

// rows is one table's rows of a chunk, flat.
type rows struct {
	n    int
	vals []val
}

// add appends one row; its index in the chunk is returned (its id is the
// chunk's base for the table plus that index).
func (r *rows) add(vs ...val) int {
	r.vals = append(r.vals, vs...)
	r.n++
	return r.n - 1
}

// Package fill fills a migrated MySQL/MariaDB database of the gateway with
// years of made-up but consistent orders and their rows (callbacks,
// payments, events, outbound calls, PDFs, project states and deliveries),
// fast, so that the gateway's queries, jobs and load test can be measured
// at size (docs/operations.md, "Filling a database to measure at size").
//
// What it writes holds to what the gateway itself would have written: every
// unique index (orderno, orgcode+bhno, one active order per bidder and lot,
// the callbacks' and payments' dedup keys, derived as the gateway derives
// them), amounts paid and refunded that are the sums of the payments,
// next_check_at set exactly while a job is due for the order, premiums equal
// to what was paid; so that the reconciliation finds only the handful of
// discrepancies planted on purpose (Report.Planted).
//
// It is reproducible: the same Options (Seed and Now included) give the same
// rows with the same ids, whatever the number of workers. It writes with
// multi-row INSERTs of raw SQL in one transaction per chunk of orders, a few
// connections at once, ids assigned in order.
package fill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/procurement/gateway/config"
	"github.com/procurement/gateway/crypto"
	"github.com/procurement/gateway/model"
)

// Options is one fill.
type Options struct {
	// Orders to add (1 .. MaxOrders).
	Orders int
	// Seed of every choice; the same Seed and Now give the same rows.
	Seed uint64
	// Now is the end of the filled history (default: time.Now()); the
	// orders are created over Span before it, the last week's still in
	// flight relative to it.
	Now time.Time
	// Span of the history (default two years).
	Span time.Duration
	// Prefix of the order numbers (default "FL"): orderno is Prefix and the
	// order's id in ten digits. The load test's are "LT...", the demo's
	// and tests' others; at most 20 characters.
	Prefix string
	// Institutions the orders go to (default DefaultInstitutions()).
	Institutions []Institution
	// Append allows a database whose orders table is not empty; the new
	// orders take the ids after the last.
	Append bool
	// KeepIndexes keeps every index in place while the rows go in. By
	// default a fill of an empty database drops every secondary index of
	// the tables that have one whose keys come in random order (orders,
	// callbacks, payments, project_states; the primary keys stay), builds
	// each table's again at the end, sorted, in one ALTER TABLE, and checks
	// that the tables are as migrated (deferred.go); with Append they are
	// always kept.
	KeepIndexes bool
	// Clean leaves the discrepancies out (default: planted, Report.Planted).
	Clean bool
	// FileBytes is the size of the PDF every issued order stores (default
	// 2048).
	FileBytes int
	// Workers is how many connections insert at once (default 3), Chunk how
	// many orders go in one transaction (default 1000).
	Workers, Chunk int
	// Progress, when set, receives a line now and then.
	Progress io.Writer

	firstOrderID int64
}

// Institution is one institution the orders go to.
type Institution struct {
	OrgCode string
	Name    string
	BaseURL string // where its calls went (recorded in outbound_calls and the per-order URLs)
	Secret  string // AES key the callbacks' bodies are sealed with (16, 24 or 32 bytes)
	Weight  int    // share of the orders
}

// DefaultInstitutions are config.yaml's simulated institution SIM (with its
// shipped secret, so that the console decrypts its callbacks) and four
// made-up others.
func DefaultInstitutions() []Institution {
	return []Institution{
		{OrgCode: "SIM", Name: "模拟担保公司 (simulated)", BaseURL: "http://127.0.0.1:8090", Secret: config.ShippedSimSecret, Weight: 10},
		{OrgCode: "BANK01", Name: "某某银行", BaseURL: "https://eg.bank01.example.cn", Secret: "fill-bank01-key1", Weight: 35},
		{OrgCode: "INS-02", Name: "某某财产保险公司", BaseURL: "https://eg.ins02.example.cn", Secret: "fill-ins02-key01", Weight: 25},
		{OrgCode: "GUAR-03", Name: "某某融资担保公司", BaseURL: "https://eg.guar03.example.cn", Secret: "fill-guar03-key1", Weight: 20},
		{OrgCode: "BANK-04", Name: "某某农村商业银行", BaseURL: "https://eg.bank04.example.cn", Secret: "fill-bank04-key1", Weight: 10},
	}
}

// MaxOrders bounds one fill.
const MaxOrders = 20_000_000

// Report is what a fill wrote.
type Report struct {
	Orders  int
	FirstID int64 // the first and last order ids it wrote
	LastID  int64
	Rows    map[string]int64 // rows written, by table
	// Spent is the time spent in each table's INSERTs, summed over the
	// workers: where the database's time goes.
	Spent          map[string]time.Duration
	Status         map[string]int // orders by shape (status, or status/flag)
	Due            int            // orders with next_check_at set
	Planted        []Planted
	Seed           uint64
	Now            time.Time
	Took           time.Duration
	AnalyzeTook    time.Duration
	RowsTook       time.Duration // inserting the rows
	IndexTook      time.Duration // building the deferred indexes after the rows
	InsertWorkers  int
	OrdersPerChunk int
}

// inst is an Institution ready to seal bodies.
type inst struct {
	code, name, base, address, phone, addr string
	weight                                 int
	cipher                                 crypto.Cipher
}

var shapeNames = [...]string{sIssued: "issued", sCancelled: "cancelled", sSurrendered: "surrendered",
	sCancelling: "cancelling", sFailed: "failed", sRejected: "apply_rejected", sStale: "processing/stale",
	sUnconfirmed: "applying/apply_unconfirmed", sPullFailed: "issued/pull_failed", sProcessing: "processing",
	sApplying: "applying", sPending: "issued/file_pending"}

func (o *Options) defaults() error {
	if o.Orders < 1 || o.Orders > MaxOrders {
		return fmt.Errorf("orders %d: want 1..%d", o.Orders, MaxOrders)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.Now = o.Now.UTC().Truncate(time.Millisecond)
	if o.Span == 0 {
		o.Span = 730 * 24 * time.Hour
	}
	if o.Span < 30*24*time.Hour {
		return fmt.Errorf("span %v: want at least 30 days", o.Span)
	}
	if o.Prefix == "" {
		o.Prefix = "FL"
	}
	if len(o.Prefix) > 20 {
		return fmt.Errorf("prefix %q: at most 20 characters (orderno is VARCHAR(32))", o.Prefix)
	}
	if o.Institutions == nil {
		o.Institutions = DefaultInstitutions()
	}
	if len(o.Institutions) == 0 || len(o.Institutions) > 64 {
		return errors.New("institutions: want 1..64")
	}
	if o.FileBytes == 0 {
		o.FileBytes = 2048
	}
	if o.FileBytes < 600 || o.FileBytes > 1<<20 {
		return fmt.Errorf("file bytes %d: want 600..1 MiB", o.FileBytes)
	}
	if o.Workers == 0 {
		o.Workers = 3
	}
	if o.Chunk == 0 {
		o.Chunk = 1000
	}
	if o.Workers < 1 || o.Workers > 32 || o.Chunk < 10 || o.Chunk > 10000 {
		return fmt.Errorf("workers %d, chunk %d: want 1..32 and 10..10000", o.Workers, o.Chunk)
	}
	return nil
}

func (o *Options) insts() ([]inst, error) {
	out := make([]inst, len(o.Institutions))
	for i, in := range o.Institutions {
		c, err := crypto.New(crypto.Options{}, in.Secret)
		if err != nil {
			return nil, fmt.Errorf("institution %s: %w", in.OrgCode, err)
		}
		if in.OrgCode == "" || in.Weight < 1 {
			return nil, fmt.Errorf("institution %d: orgcode and a positive weight are required", i)
		}
		out[i] = inst{code: in.OrgCode, name: in.Name, base: in.BaseURL, weight: in.Weight, cipher: c,
			address: fmt.Sprintf("北京市西城区金融大街%d号", 1+i), phone: fmt.Sprintf("010-6%07d", 1000000+i*1111),
			addr: fmt.Sprintf("10.20.%d.%d", i, 10+i)}
	}
	return out, nil
}

// Run fills db, which must be migrated, with opt.Orders orders. It refuses
// a database with orders unless opt.Append. The index builds at the end take
// minutes at a million orders: db's read timeout must allow them (the
// gateway's DSN has 30 s; `gateway loadtest --fill` opens its own pool).
func Run(ctx context.Context, db *sql.DB, opt Options) (*Report, error) {
	start := time.Now()
	if err := opt.defaults(); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	ins, err := opt.insts()
	if err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM (SELECT 1 FROM orders LIMIT 1) t").Scan(&n); err != nil {
		return nil, fmt.Errorf("fill: is the database migrated? %w", err)
	}
	if n > 0 && !opt.Append {
		return nil, errors.New("fill: the orders table is not empty (append to it only when asked: Options.Append)")
	}
	var next [numTables]int64 // the last id of each table so far
	for i, t := range tables {
		if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM "+t.name).Scan(&next[i]); err != nil {
			return nil, fmt.Errorf("fill: last id of %s: %w", t.name, err)
		}
	}
	opt.firstOrderID = next[tOrders] + 1

	pdf := letter(opt.FileBytes)
	f := &filler{o: &opt, db: db, ins: ins, seq: newSequencer(next),
		pdf:    pdfFile{lit: blobLiteral(pdf), sha: sha256Hex(pdf), size: int64(len(pdf)), bytes: pdf},
		plants: map[int]string{}, chunks: (opt.Orders + opt.Chunk - 1) / opt.Chunk}
	if !opt.Clean {
		for i, k := range plantKinds {
			f.plants[(i+1)*opt.Orders/(len(plantKinds)+1)] = k
		}
	}
	rep := &Report{Orders: opt.Orders, FirstID: opt.firstOrderID, LastID: opt.firstOrderID + int64(opt.Orders) - 1,
		Rows: map[string]int64{}, Spent: map[string]time.Duration{}, Status: map[string]int{}, Seed: opt.Seed, Now: opt.Now,
		InsertWorkers: opt.Workers, OrdersPerChunk: opt.Chunk}
	var restore func(context.Context) error
	if !opt.Append && !opt.KeepIndexes {
		if restore, err = deferIndexes(ctx, db, opt.Progress); err != nil {
			return nil, err
		}
	}
	r := time.Now()
	err = f.run(ctx, rep)
	rep.RowsTook = time.Since(r)
	if restore != nil {
		// Put the indexes back even if the fill failed or was cancelled.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
		i := time.Now()
		rerr := restore(rctx)
		cancel()
		rep.IndexTook = time.Since(i)
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return rep, err
	}
	a := time.Now()
	for _, t := range tables {
		// Fresh statistics: the optimizer picks the indexes of the size.
		rows, err := db.QueryContext(ctx, "ANALYZE TABLE "+t.name)
		if err != nil {
			return rep, fmt.Errorf("fill: analyze %s: %w", t.name, err)
		}
		rows.Close()
	}
	rep.AnalyzeTook = time.Since(a)
	rep.Took = time.Since(start)
	if opt.Progress != nil {
		fmt.Fprintf(opt.Progress, "fill: %d orders in %v (analyze %v)\n", opt.Orders, rep.Took.Round(time.Millisecond), rep.AnalyzeTook.Round(time.Millisecond))
	}
	return rep, nil
}

type filler struct {
	o      *Options
	db     *sql.DB
	ins    []inst
	seq    *sequencer
	pdf    pdfFile
	plants map[int]string
	chunks int

	mu   sync.Mutex
	done int
}

// run makes and inserts the chunks: each worker takes the next chunk,
// makes its rows, waits for the ids of the chunks before it (known as soon
// as they are made, before they are inserted), and inserts.
func (f *filler) run(ctx context.Context, rep *Report) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var nextChunk atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range f.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := f.db.Conn(ctx)
			if err != nil {
				cancel(fmt.Errorf("fill: connection: %w", err))
				f.seq.fail()
				return
			}
			defer conn.Close()
			// No foreign keys to check, and every unique key is unique by
			// construction (the indexes, when kept, are still maintained).
			if _, err := conn.ExecContext(ctx, "SET SESSION unique_checks = 0, foreign_key_checks = 0"); err != nil {
				cancel(fmt.Errorf("fill: session: %w", err))
				f.seq.fail()
				return
			}
			var buf []byte
			ch := &chunk{}
			for {
				c := int(nextChunk.Add(1) - 1)
				if c >= f.chunks || ctx.Err() != nil {
					return
				}
				f.make(c, ch)
				bases, ok := f.seq.take(c, &ch.rows)
				if !ok {
					return
				}
				// The first transaction into an empty table takes it whole
				// (MariaDB's bulk insert into an empty table, with
				// unique_checks off): two chunks that both start on
				// empty tables may deadlock, and the one refused goes
				// again, with the same rows and ids.
				for try := 1; ; try++ {
					buf, err = f.insert(ctx, conn, ch, &bases, buf)
					if err == nil || try == 5 || !model.Transient(err) || ctx.Err() != nil {
						break
					}
				}
				if err != nil {
					cancel(err)
					f.seq.fail()
					return
				}
				f.finish(ch, rep, start)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// perOrder is about how many rows of each table an order brings, to size
// a chunk's slices once.
var perOrder = [numTables]float64{tOrders: 1, tEvents: 4.3, tCalls: 3, tCallbacks: 1.4, tPayments: 1,
	tFiles: 1, tPushes: 0.15, tDeliveries: 0.35}

// make makes chunk c's rows into ch, whose slices it reuses.
func (f *filler) make(c int, ch *chunk) {
	o := f.o
	rs := ch.rows
	*ch = chunk{idx: c}
	for i := range rs {
		want := int(perOrder[i]*float64(o.Chunk)+16) * len(tables[i].cols)
		if cap(rs[i].vals) < want {
			rs[i].vals = make([]val, 0, want)
		}
		clear(rs[i].vals[:cap(rs[i].vals)])
		ch.rows[i] = rows{vals: rs[i].vals[:0]}
	}
	g := &gen{o: o, rng: rand.New(rand.NewPCG(o.Seed, uint64(c)+uint64(o.firstOrderID)<<32)), c: ch, inst: f.ins,
		pdf: f.pdf, now: o.Now, plants: f.plants}
	lo, hi := c*o.Chunk, min((c+1)*o.Chunk, o.Orders)
	for k := lo; k < hi; k++ {
		g.order(k, o.firstOrderID+int64(k))
	}
	g.endProject()
}

// insert writes the chunk in one transaction, table by table, in
// statements of at most 1000 rows and about 4 MiB.
func (f *filler) insert(ctx context.Context, conn *sql.Conn, ch *chunk, bases *[numTables]int64, buf []byte) ([]byte, error) {
	spent := &ch.spent
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return buf, fmt.Errorf("fill: begin: %w", err)
	}
	defer tx.Rollback()
	for ti := range tables {
		t, r := &tables[ti], &ch.rows[ti]
		ncol := len(t.cols)
		for row := 0; row < r.n; {
			buf = append(buf[:0], "INSERT INTO "...)
			buf = append(buf, t.name...)
			buf = append(buf, " (id"...)
			for _, col := range t.cols {
				buf = append(buf, ',')
				buf = append(buf, col...)
			}
			buf = append(buf, ") VALUES "...)
			for n := 0; row < r.n && n < 1000 && len(buf) < 4<<20; n, row = n+1, row+1 {
				if n > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, '(')
				buf = appendVal(buf, val{k: kRef, tab: uint8(ti), i: int64(row)}, bases)
				for _, v := range r.vals[row*ncol : (row+1)*ncol] {
					buf = append(buf, ',')
					buf = appendVal(buf, v, bases)
				}
				buf = append(buf, ')')
			}
			t0 := time.Now()
			_, err := tx.ExecContext(ctx, string(buf))
			spent[ti] += time.Since(t0)
			if err != nil {
				return buf, fmt.Errorf("fill: chunk %d: insert into %s: %w", ch.idx, t.name, err)
			}
		}
	}
	t0 := time.Now()
	err = tx.Commit()
	spent[numTables] += time.Since(t0)
	if err != nil {
		return buf, fmt.Errorf("fill: chunk %d: commit: %w", ch.idx, err)
	}
	return buf, nil
}

// finish counts a chunk inserted and tells the progress now and then.
func (f *filler) finish(ch *chunk, rep *Report, start time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ti, t := range tables {
		rep.Rows[t.name] += int64(ch.rows[ti].n)
		rep.Spent[t.name] += ch.spent[ti]
	}
	for s, n := range ch.shapes {
		if n > 0 {
			rep.Status[shapeNames[s]] += n
		}
	}
	rep.Spent["commit"] += ch.spent[numTables]
	rep.Due += ch.due
	rep.Planted = append(rep.Planted, ch.planted...)
	f.done++
	if f.o.Progress != nil && (f.done%max(1, f.chunks/20) == 0 || f.done == f.chunks) {
		orders := min(f.done*f.o.Chunk, f.o.Orders)
		el := time.Since(start)
		fmt.Fprintf(f.o.Progress, "fill: %d/%d orders, %v, %.0f orders/s\n", orders, f.o.Orders,
			el.Round(time.Second), float64(orders)/el.Seconds())
	}
}

// sequencer hands each chunk, in chunk order, the first ids of its rows:
// chunk c gets them once chunk c-1 has said how many rows it made.
type sequencer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	next   int
	last   [numTables]int64
	failed bool
}

func newSequencer(last [numTables]int64) *sequencer {
	s := &sequencer{last: last}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// take waits for chunk c's turn and returns its bases (id of row 0 per
// table); false when the fill failed meanwhile.
func (s *sequencer) take(c int, rs *[numTables]rows) ([numTables]int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next != c && !s.failed {
		s.cond.Wait()
	}
	var bases [numTables]int64
	if s.failed {
		return bases, false
	}
	for i := range bases {
		bases[i] = s.last[i] + 1
		s.last[i] += int64(rs[i].n)
	}
	s.next++
	s.cond.Broadcast()
	return bases, true
}

func (s *sequencer) fail() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.cond.Broadcast()
}

// Print writes the report.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "filled %d orders (ids %d..%d, seed %d, history up to %s) in %v, of which ANALYZE TABLE %v\n",
		r.Orders, r.FirstID, r.LastID, r.Seed, r.Now.Format(time.RFC3339), r.Took.Round(time.Millisecond), r.AnalyzeTook.Round(time.Millisecond))
	for _, t := range tables {
		fmt.Fprintf(w, "  %-16s %10d rows  %5.2f per order  %8v in INSERTs\n", t.name, r.Rows[t.name],
			float64(r.Rows[t.name])/float64(max(r.Orders, 1)), r.Spent[t.name].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "  commits: %v; rows in %v, deferred indexes built in %v\n", r.Spent["commit"].Round(time.Millisecond),
		r.RowsTook.Round(time.Millisecond), r.IndexTook.Round(time.Millisecond))
	names := make([]string, 0, len(r.Status))
	for k := range r.Status {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(w, "  %-28s %9d  %6.2f%%\n", k, r.Status[k], 100*float64(r.Status[k])/float64(max(r.Orders, 1)))
	}
	fmt.Fprintf(w, "  due (next_check_at set): %d\n", r.Due)
	for _, p := range r.Planted {
		fmt.Fprintf(w, "  planted %-20s -> finding %-20s orderno %s\n", p.Kind, p.Finding, p.OrderNo)
	}
}

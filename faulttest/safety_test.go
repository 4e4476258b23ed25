package faulttest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/procurement/gateway/model/modeltest"
	"github.com/procurement/gateway/wire"
	"github.com/procurement/gateway/wire/pdftest"
)

// The real binary against senders without a key and against large bodies
// (issue 13): what the disk and the memory of the gateway pay for them.

// TestKeylessFlood posts 300 applynotify bodies of 1 MiB with made-up
// appKeys to the real gateway and measures what its database grew by: less
// than 1 MiB, for none of those bodies is read, let alone kept, and at most
// server.stranger_audit_rate (10) refusals a second are audited. Before,
// every refusal was audited with its body: the same flood added 315 MB.
func TestKeylessFlood(t *testing.T) {
	faultGate(t)
	for _, driver := range []string{"sqlite", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			if driver == "mysql" && os.Getenv(modeltest.EnvDSN) == "" {
				t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
			}
			_, dsn := modeltest.DSN(t, driver, os.Getenv)
			g := startGateway(t, setup{Driver: driver, DSN: dsn, Institutions: []institution{faultInst}})
			db := openSQL(t, driver, dsn)
			before := dbBytes(t, driver, dsn, db)

			const n, conc, size = 300, 16, 1 << 20
			body := bytes.Repeat([]byte("A"), size)
			copy(body, `{"data":"`)
			copy(body[size-2:], `"}`)
			start := time.Now()
			answers := flood(t, g.URL(), "applynotify", n, conc, func(i int) (string, []byte) {
				return fmt.Sprintf("made-up-key-%04d", i), body
			})
			took := time.Since(start)
			after := dbBytes(t, driver, dsn, db)

			var rows, stored int64
			if err := db.QueryRow("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM callbacks").Scan(&rows, &stored); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d one-MiB bodies with made-up keys in %v: %v; database %d → %d bytes (+%d); %d audit rows, %d body bytes in them",
				n, took.Round(time.Millisecond), answers, before, after, after-before, rows, stored)
			// The answer comes before the body is sent; a client that
			// writes all of its body before it reads (Go's does) may meet
			// the closed connection first: "transport".
			if answers["200/0/100001"]+answers["transport"] != n || answers["200/0/100001"] == 0 {
				t.Errorf("answers %v; want all %d refused 100001 (or cut off by the closed connection)", answers, n)
			}
			if grew := after - before; grew >= 1<<20 {
				t.Errorf("the database grew by %d bytes under a keyless flood; want less than 1 MiB", grew)
			}
			if stored != 0 {
				t.Errorf("%d bytes of strangers' bodies stored", stored)
			}
			if most := int64(10 + 10*took.Seconds() + 10); rows > most {
				t.Errorf("%d refusals audited in %v; want at most %d (server.stranger_audit_rate 10/s)", rows, took, most)
			}
		})
	}
}

// TestBodyMemory measures the real gateway's peak resident memory (VmHWM,
// reset before each load) above its resting size under 64 parallel 30 MiB
// bodies: with made-up keys, less than 32 MiB (no body is read); as legal
// issuance notices of a known institution, less than the body budget
// (server.body_bytes_in_flight, 256 MiB) plus 64 MiB. Before, 64 keyless
// bodies took 1.9 GB, and eight legal notices ~874 MiB. The gateway is
// built without the race detector, which multiplies memory, and runs
// without GOMEMLIMIT: the budget alone must hold.
func TestBodyMemory(t *testing.T) {
	faultGate(t)
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc (Linux) to read the process's peak memory")
	}
	for _, driver := range []string{"sqlite", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			if driver == "mysql" && os.Getenv(modeltest.EnvDSN) == "" {
				t.Skipf("MySQL tests skipped: %s is not set (CI sets it)", modeltest.EnvDSN)
			}
			bodyMemory(t, driver)
		})
	}
}

func bodyMemory(t *testing.T, driver string) {
	_, dsn := modeltest.DSN(t, driver, os.Getenv)
	store := openStore(t, driver, dsn)
	orders := seedOrders(t, store, faultInst.OrgCode, "MEM", 1)
	store.Close()
	g := startGateway(t, setup{Driver: driver, DSN: dsn, Institutions: []institution{faultInst}, Plain: true})
	pid := g.Pid()

	const limit = 30 << 20 // server.notify_body_limit
	body := legalNotice(t, orders[0], limit)
	t.Logf("a notice of %d bytes carrying a PDF of %d", len(body), len(body)*9/16)

	const n, budget = 64, 256 << 20
	measure := func(name string, key string) (int64, map[string]int) {
		t.Helper()
		time.Sleep(500 * time.Millisecond) // let the previous load's memory settle
		resetPeak(t, pid)
		base := procKiB(t, pid, "VmRSS")
		answers := flood(t, g.URL(), "applynotify", n, n, func(int) (string, []byte) { return key, body })
		peak := procKiB(t, pid, "VmHWM")
		growth := (peak - base) << 10
		t.Logf("%s: %d parallel bodies of %d bytes: %v; resident %d KiB at rest, peak %d KiB: +%d MiB",
			name, n, len(body), answers, base, peak, growth>>20)
		return growth, answers
	}

	// A client that writes its whole body before it reads sees the
	// connection closed under it (a transport error) as often as the
	// answer, the more so on a loaded machine: either is a refusal that
	// read no body (handler's TestDoorRefusalsReadNoBody checks the answer).
	if growth, answers := measure("made-up keys", "made-up-key"); growth >= 32<<20 ||
		answers["200/0/100001"]+answers["transport"] != n {
		t.Errorf("64 keyless 30 MiB bodies: memory +%d MiB, answers %v; want under 32 MiB, all 100001 (or cut off)", growth>>20, answers)
	}
	growth, answers := measure("legal notices", faultInst.AppKey)
	if growth >= budget+64<<20 {
		t.Errorf("64 legal 30 MiB notices: memory +%d MiB; want under the budget (%d MiB) plus 64 MiB", growth>>20, budget>>20)
	}
	// Each is stored (the first; the rest are its duplicates) or refused
	// for want of room, to be sent again: nothing else.
	if answers["200/1/000000"] < 1 || answers["200/1/000000"]+answers["503/0/500001"] != n {
		t.Errorf("legal notices answered %v; want stat 1 or 503 500001 (budget full) each, one stored at least", answers)
	}
}

// legalNotice is the body of FAULT's issuance notice of orderNo carrying a
// PDF as large as a body of limit bytes allows.
func legalNotice(t *testing.T, orderNo string, limit int) []byte {
	t.Helper()
	pdf := pdftest.Letter(orderNo, (limit-4096)*9/16, 13)
	head, err := json.Marshal(map[string]any{"orderno": orderNo, "bhno": "BH-" + orderNo, "staus": "1", "bhrate": "0.005",
		"bhcost": "500.00", "sellername": "某某担保有限公司", "selleraddress": "北京市西城区某某街1号", "sellerphone": "010-12345678",
		"bhcretime": int64(1767225600000)})
	if err != nil {
		t.Fatal(err)
	}
	plain := append(head[:len(head)-1:len(head)-1], `,"bhfile":"`...)
	plain = base64.StdEncoding.AppendEncode(plain, pdf)
	plain = append(plain, `"}`...)
	ct, err := faultInst.cipher(t).Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	body := append(append([]byte(`{"data":"`), ct...), `"}`...)
	if len(body) > limit {
		t.Fatalf("the notice is %d bytes, over the limit %d", len(body), limit)
	}
	return body
}

// flood posts n bodies of kind, conc at a time, each on its own connection,
// the appKey and body of each from next, and counts the answers as
// "HTTP/stat/errcode" ("transport" when there was none).
func flood(t *testing.T, base, kind string, n, conc int, next func(i int) (string, []byte)) map[string]int {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	var mu sync.Mutex
	answers := map[string]int{}
	work := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range work {
				key, body := next(i)
				a := postOne(hc, base, kind, key, body)
				mu.Lock()
				answers[a]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return answers
}

func postOne(hc *http.Client, base, kind, key string, body []byte) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/guarantee/"+kind, bytes.NewReader(body))
	if err != nil {
		return "transport"
	}
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	req.Header.Set("appKey", key)
	resp, err := hc.Do(req)
	if err != nil {
		return "transport"
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r wire.Response
	if json.Unmarshal(raw, &r) != nil {
		return fmt.Sprintf("%d/garbage", resp.StatusCode)
	}
	return fmt.Sprintf("%d/%d/%s", resp.StatusCode, r.Stat, r.Errcode)
}

func openSQL(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	name := "mysql"
	if driver == "sqlite" {
		name = "sqlite"
	}
	db, err := sql.Open(name, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// dbBytes is what the database takes on disk: the SQLite file with its
// write-ahead log, or the InnoDB files of the MySQL database's tables.
func dbBytes(t *testing.T, driver, dsn string, db *sql.DB) int64 {
	t.Helper()
	if driver == "sqlite" {
		var n int64
		for _, suffix := range []string{"", "-wal"} {
			fi, err := os.Stat(dsn + suffix)
			if err == nil {
				n += fi.Size()
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
		}
		return n
	}
	cfg, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var n sql.NullInt64
	// The files' sizes: what the disk holds, LOB pages and all.
	if err := db.QueryRow("SELECT SUM(FILE_SIZE) FROM information_schema.INNODB_SYS_TABLESPACES WHERE NAME LIKE ?",
		cfg.DBName+"/%").Scan(&n); err != nil || !n.Valid {
		t.Fatalf("tablespace sizes of %s: %v", cfg.DBName, err)
	}
	return n.Int64
}

// procKiB reads a field of /proc/<pid>/status, in KiB.
func procKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// resetPeak resets the process's peak resident size (VmHWM) to its
// current one (Linux: "5" into /proc/<pid>/clear_refs).
func resetPeak(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak resident size: %v", err)
	}
}

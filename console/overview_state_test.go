package console_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/procurement/gateway/model/modeltest"
)

var issuedCard = regexp.MustCompile(`href="/console/orders\?status=issued"><b>(\d+)</b>`)

// TestOverviewServesTheLastCount: the overview's counts are the last count
// of /metrics (made in the background every metrics.state_interval), read
// from memory with the time and age of that count, not a count of every
// order at each page view: an order issued since shows at the next count.
func TestOverviewServesTheLastCount(t *testing.T) {
	for _, driver := range modeltest.Drivers(os.Getenv) {
		t.Run(driver, func(t *testing.T) {
			e := startEnv(t, driver, nil)
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, ok := e.Service.LastState(); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no background count 10 s after the start")
				}
			}
			br := newBrowser(t, e.URL)
			br.signIn(opUser, opPassword)
			e.issuedOrder(t, "OV-1", "XM-OV", "BD-1")
			issued := func() string {
				t.Helper()
				_, page := br.get("/console/")
				m := issuedCard.FindStringSubmatch(page)
				if m == nil {
					t.Fatalf("no card of issued orders in the overview:\n%s", page)
				}
				if !strings.Contains(page, "统计于") || !strings.Contains(page, "（刚刚）") {
					t.Errorf("the overview does not say when its counts were made, and how long ago")
				}
				return m[1]
			}
			if n := issued(); n != "0" {
				t.Errorf("issued orders on the overview: %s, want 0, the count made at the start (30 s interval)", n)
			}
			if _, err := e.Service.State(context.Background()); err != nil { // the counter's next count
				t.Fatal(err)
			}
			if n := issued(); n != "1" {
				t.Errorf("issued orders on the overview after a count: %s, want 1", n)
			}
		})
	}
}

package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/procurement/gateway/client"
	"github.com/procurement/gateway/wire"
)

// BenchmarkQuery measures one Query round trip over loopback against an
// institution that decrypts the request and answers with an encrypted
// result. The baseline "raw-http" posts the same (already built) envelope
// and reads the same answer with the bare shared *http.Client, so the
// difference is the client's own cost: marshal, check, encrypt, breaker,
// decrypt, parse and record.
func BenchmarkQuery(b *testing.B) {
	in := newInstitution(b, okWith(b, map[string]any{"status": "1", "describe": "已出函", "dealtime": 1768872600000}))
	c, rec, hc := newClient(b, in.URL(""), func(cfg *client.Config) { cfg.Timeout = 5 * time.Second })
	ctx := context.Background()
	url := in.URL("/q")

	b.Run("client", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Query(ctx, url, "G20260115093000123a1b2c3d4"); err != nil {
				b.Fatal(err)
			}
		}
	})
	if len(rec.all()) == 0 {
		b.Fatal("nothing recorded")
	}

	body, _ := json.Marshal(wire.Request{Data: seal(b, newCipher(b, appSecret), wire.OrderRef{OrderNo: "G20260115093000123a1b2c3d4"})})
	b.Run("raw-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json;charset=utf-8")
			req.Header.Set("appKey", appKey)
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
}

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsTestBuffer is a log sink safe for the server's goroutines and the test.
type tlsTestBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *tlsTestBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *tlsTestBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tlsTestCert writes a self-signed certificate for 127.0.0.1 and its key,
// and returns their paths and a pool that trusts it.
func tlsTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLS runs the real program with server.tls set: HTTPS works with
// TLS 1.2 and 1.3, a TLS 1.1 client is refused at the handshake, plain HTTP
// on the port is answered 400; the refused handshakes are logged as JSON
// warnings, and the log holds neither the app_secret nor the API token.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := tlsTestCert(t, dir)
	const secret, token = "TlsT3st-S3cret!!", "tls-test-token-0123456789"
	cfg := fmt.Sprintf(`
server:
  addr: "127.0.0.1:0"
  public_base_url: "https://127.0.0.1:8443"
  shutdown_grace: 2s
  tls:
    cert_file: %q
    key_file: %q
database:
  driver: sqlite
  dsn: %q
api:
  tokens: [%q]
institutions:
  - orgcode: BANK01
    name: "TLS test bank"
    base_url: "http://127.0.0.1:1/eg"
    app_key: "k-bank01"
    app_secret: %q
jobs:
  disabled: true
log:
  level: debug
  format: json
`, certFile, keyFile, filepath.Join(dir, "gateway.db"), token, secret)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &tlsTestBuffer{}, &tlsTestBuffer{}
	done := make(chan error, 1)
	noEnv := func(string) string { return "" }
	go func() { done <- run(ctx, []string{"serve", "-config", path}, noEnv, stdout, stderr) }()

	listening := regexp.MustCompile(`gateway listening on (\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\nstderr: %s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"gateway listening on\" after 20s; stdout: %q", stdout.String())
		}
	}

	get := func(scheme string, tc *tls.Config) (int, error) {
		tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := c.Get(scheme + "://" + addr + "/healthz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.TLS != nil && tc != nil && tc.MaxVersion != 0 && resp.TLS.Version != tc.MaxVersion {
			return 0, fmt.Errorf("negotiated TLS version %x, want %x", resp.TLS.Version, tc.MaxVersion)
		}
		return resp.StatusCode, nil
	}
	for _, c := range []struct {
		name    string
		scheme  string
		tls     *tls.Config
		want    int    // HTTP status, when the request should get an answer
		wantErr string // else a part of the error
	}{
		{"TLS 1.3", "https", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13}, http.StatusOK, ""},
		{"TLS 1.2", "https", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}, http.StatusOK, ""},
		{"TLS 1.1 refused", "https", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, 0, "protocol version"},
		{"TLS 1.0 refused", "https", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, 0, "protocol version"},
		{"untrusted certificate", "https", &tls.Config{MinVersion: tls.VersionTLS12}, 0, "certificate"},
		{"plain HTTP on the TLS port", "http", nil, http.StatusBadRequest, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, err := get(c.scheme, c.tls)
			switch {
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("got HTTP %d, error %v; want an error about %q", status, err, c.wantErr)
			case c.wantErr == "" && (err != nil || status != c.want):
				t.Errorf("got HTTP %d, error %v; want HTTP %d", status, err, c.want)
			}
		})
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"msg":"gateway started"`) {
		t.Errorf("the log lacks \"gateway started\": %s", logs)
	}
	// The refused handshakes are in the JSON log, where an operator looks
	// when an institution's old client cannot connect.
	refused := regexp.MustCompile(`"level":"warning","msg":"http: TLS handshake error from 127\.0\.0\.1:\d+: tls: client offered only unsupported versions`)
	if n := len(refused.FindAllString(logs, -1)); n != 2 {
		t.Errorf("%d JSON warnings of refused TLS versions in the log, want 2:\n%s", n, logs)
	}
	for name, v := range map[string]string{"app_secret": secret, "API token": token} {
		if strings.Contains(logs, v) || strings.Contains(stdout.String(), v) {
			t.Errorf("the output holds the %s", name)
		}
	}
}

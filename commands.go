package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/procurement/gateway/banksim"
)

// runBanksim runs the simulated institution alone.
func runBanksim(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("banksim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	gatewayURL := fs.String("gateway", "http://127.0.0.1:8080", "the gateway's base URL, for callbacks")
	orgcode := fs.String("orgcode", "SIM", "orgcode")
	appKey := fs.String("app-key", "sim-app-key", "appKey")
	secret := fs.String("app-secret", "simsecret0123456", "appSecret (AES key: 16, 24 or 32 bytes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "banksim %s listening on %s, calling back %s\n", *orgcode, *addr, *gatewayURL)
	return banksim.Run(ctx, banksim.Config{OrgCode: *orgcode, AppKey: *appKey, AppSecret: *secret,
		GatewayURL: *gatewayURL, PDFInNotify: true}, *addr)
}

func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return errors.New("demo: not built yet")
}

func runLoadtest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return errors.New("loadtest: not built yet")
}

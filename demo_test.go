package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `gateway demo` as the README shows it: a gateway and a
// banksim on free ports, a temporary SQLite, one guarantee walked from
// quotes to release. Every step must hold and say so.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	if err := run(ctx, []string{"demo", "-delay", "300ms"}, envOf(nil), &stdout, &stderr); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, step := range []string{"quotes", "apply", "payment", "issuance", "PDF download", "验真", "project state", "cancel", "release"} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "✓") && strings.Contains(line, step) {
				found = true
			}
		}
		if !found {
			t.Errorf("no ✓ line for step %q in:\n%s", step, out)
		}
	}
	if strings.Contains(out, "✗") || !strings.Contains(out, "all 10 steps held") {
		t.Errorf("demo output:\n%s", out)
	}
}

// TestDemoFailsWhenAStepFails points the demo's walk at an institution
// that never calls back (the delay is longer than a step waits): the
// payment step must fail, the rest be skipped, and run return an error.
func TestDemoFailsWhenAStepFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	err := run(ctx, []string{"demo", "-delay", "1m", "-wait", "300ms"}, envOf(nil), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "payment") {
		t.Fatalf("demo with a silent institution: err = %v, want the payment step to fail\n%s", err, stdout.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "✗  3 payment") || !strings.Contains(out, "- 10 history") || strings.Contains(out, "steps held") {
		t.Errorf("demo output:\n%s", out)
	}
}

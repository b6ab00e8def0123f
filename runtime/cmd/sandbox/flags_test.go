package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(key, []byte("-----BEGIN RSA PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := parseFlags([]string{"--listen", "127.0.0.1:0", "--jobs", "5", "--rate", "2", "--dup-rate", "0.3",
		"--fault-rate", "0.1", "--sweep-interval", "10s", "--quiet", "--labels", "self-hosted, cpu=4,ram=16", "--labels", "self-hosted"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if st.opts.Listen != "127.0.0.1:0" || st.load.Jobs != 5 || st.load.Rate != 2 || st.load.DupRate != 0.3 ||
		st.opts.FaultRate != 0.1 || st.opts.SweepInterval != 10*time.Second || st.opts.Progress || st.opts.GitHub != nil ||
		len(st.load.Labels) != 2 || strings.Join(st.load.Labels[0], "|") != "self-hosted|cpu=4|ram=16" || strings.Join(st.load.Labels[1], "|") != "self-hosted" {
		t.Errorf("parsed %+v %+v", st.opts, st.load)
	}
	ext, err := parseFlags([]string{"--github-api-url", "http://127.0.0.1:9/", "--github-app-id", "7", "--github-app-key", key,
		"--webhook-secret", "s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if g := ext.opts.GitHub; g == nil || g.AppID != 7 || g.WebhookSecret != "s" || !strings.HasPrefix(string(g.PrivateKeyPEM), "-----BEGIN") {
		t.Errorf("external GitHub %+v", ext.opts.GitHub)
	}
	for _, args := range [][]string{
		{"--github-api-url", "http://127.0.0.1:9/"}, // incomplete
		{"--github-api-url", "http://x", "--github-app-id", "7", "--github-app-key", key, "--webhook-secret", "s", "--jobs", "3"},
		{"--fault-rate", "1.5"},
		{"--dup-rate", "-0.1"},
		{"--config", filepath.Join(t.TempDir(), "missing.json")},
		{"--log-level", "loud"},
		{"--labels", " , "},
		{"stray"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

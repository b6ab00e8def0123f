package webhook_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// A secret rotated in place is picked up on the first mismatch (one fresh
// read), the replaced one is still accepted for a while, forged signatures
// cannot force more than one fresh read per interval, and a configured
// previous secret is accepted besides the current one.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	body := jobPayload(t, "queued", 4711)
	signedWith := func(secret string) string { return githubSignature([]byte(secret), body) }
	var stored atomic.Value // what Secrets Manager holds now
	stored.Store("old-secret")
	// A container's cache (secrets.Cache): read once, replaced by a fresh
	// read.
	var cache atomic.Value
	cache.Store("old-secret")
	var freshReads atomic.Int32
	cached := func(context.Context) ([]byte, error) { return []byte(cache.Load().(string)), nil }
	fresh := func(context.Context) ([]byte, error) {
		freshReads.Add(1)
		cache.Store(stored.Load())
		return []byte(stored.Load().(string)), nil
	}
	now := time.Now()
	clock := func() time.Time { return now }
	h := webhook.New(testConfig(t), webhook.Deps{Secret: cached, Store: &memStore{}, Queue: &memQueue{}},
		webhook.WithSecretRefresh(fresh, 30*time.Second), webhook.WithClock(clock),
		webhook.WithPreviousSecret(func(context.Context) ([]byte, error) { return []byte("configured-previous"), nil }))
	deliver := func(sig string) int {
		t.Helper()
		req := signed(body, "workflow_job", "d")
		req.Headers["x-hub-signature-256"] = sig
		resp, err := h.Handle(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}

	if got := deliver(signedWith("old-secret")); got != http.StatusOK {
		t.Fatalf("current secret: %d", got)
	}
	if got := deliver(signedWith("configured-previous")); got != http.StatusOK || freshReads.Load() != 0 {
		t.Fatalf("configured previous secret: %d after %d fresh reads; want 200 without one", got, freshReads.Load())
	}
	stored.Store("new-secret") // rotated in Secrets Manager, and at GitHub
	if got := deliver(signedWith("new-secret")); got != http.StatusOK || freshReads.Load() != 1 {
		t.Fatalf("rotated secret: %d after %d fresh reads; want 200 after one", got, freshReads.Load())
	}
	if got := deliver(signedWith("old-secret")); got != http.StatusOK {
		t.Fatalf("a delivery signed just before the rotation: %d; want 200 within the window", got)
	}
	for range 20 {
		if got := deliver(signedWith("forged")); got != http.StatusUnauthorized {
			t.Fatalf("forged signature: %d", got)
		}
	}
	if n := freshReads.Load(); n != 1 {
		t.Fatalf("%d fresh reads after 20 forged deliveries within 30 s; want still 1", n)
	}
	now = now.Add(time.Hour) // past the window: the old secret is no longer good
	if got := deliver(signedWith("old-secret")); got != http.StatusUnauthorized {
		t.Fatalf("the replaced secret an hour later: %d; want 401", got)
	}
}

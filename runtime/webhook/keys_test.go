package webhook_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/secrets"
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

// A container started after a rotation in place never saw the old secret,
// yet GitHub may have signed a delivery with it just before: the version
// Secrets Manager keeps as AWSPREVIOUS is accepted for the same window as
// after a refresh, counted from the rotation, and never read more than
// once per refresh interval however many forged deliveries come.
func TestColdContainerAcceptsTheReplacedSecret(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	arn := a.Secret(t, "old-secret")
	if _, err := a.Secrets.PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(arn), SecretString: aws.String("new-secret"),
	}); err != nil {
		t.Fatal(err)
	}
	reads := &testenv.CountingSecrets{API: a.Secrets}
	cache := secrets.New(reads)
	now := time.Now()
	clock := func() time.Time { return now }
	h := webhook.New(testConfig(t), webhook.Deps{
		Secret: func(ctx context.Context) ([]byte, error) { return cache.Get(ctx, arn) }, Store: &memStore{}, Queue: &memQueue{},
	},
		webhook.WithClock(clock),
		webhook.WithSecretRefresh(func(ctx context.Context) ([]byte, error) { return cache.Refresh(ctx, arn) }, 30*time.Second),
		webhook.WithReplacedSecret(func(ctx context.Context) ([]byte, time.Time, error) { return cache.Previous(ctx, arn) }))
	body := jobPayload(t, "queued", 4712)
	deliver := func(secret string) int {
		t.Helper()
		req := signed(body, "workflow_job", "d")
		req.Headers["x-hub-signature-256"] = githubSignature([]byte(secret), body)
		resp, err := h.Handle(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := deliver("new-secret"); got != http.StatusOK {
		t.Fatalf("current secret: %d", got)
	}
	if got := deliver("old-secret"); got != http.StatusOK {
		t.Fatalf("a delivery signed just before the rotation, at a container that never knew that secret: %d; want 200", got)
	}
	before := reads.Calls()
	if got := deliver("old-secret"); got != http.StatusOK {
		t.Fatalf("the replaced secret again: %d", got)
	}
	for range 10 {
		if got := deliver("forged"); got != http.StatusUnauthorized {
			t.Fatalf("forged signature: %d", got)
		}
	}
	if n := reads.Calls() - before; n != 0 {
		t.Fatalf("%d Secrets Manager reads for the replaced secret again and 10 forged deliveries within 30 s; want 0", n)
	}
	now = now.Add(11 * time.Minute)
	if got := deliver("old-secret"); got != http.StatusUnauthorized {
		t.Fatalf("the replaced secret 11 minutes after the rotation: %d; want 401", got)
	}
}

// A container whose secret was never rotated answers a forged delivery
// with 401 (no previous version is no error).
func TestNoReplacedSecretIsNoError(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	arn := a.Secret(t, "only-secret")
	cache := secrets.New(a.Secrets)
	h := webhook.New(testConfig(t), webhook.Deps{
		Secret: func(ctx context.Context) ([]byte, error) { return cache.Get(ctx, arn) }, Store: &memStore{}, Queue: &memQueue{},
	},
		webhook.WithSecretRefresh(func(ctx context.Context) ([]byte, error) { return cache.Refresh(ctx, arn) }, 30*time.Second),
		webhook.WithReplacedSecret(func(ctx context.Context) ([]byte, time.Time, error) { return cache.Previous(ctx, arn) }))
	body := jobPayload(t, "queued", 4713)
	req := signed(body, "workflow_job", "d")
	req.Headers["x-hub-signature-256"] = githubSignature([]byte("forged"), body)
	if resp, _ := h.Handle(context.Background(), req); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged signature: %d; want 401", resp.StatusCode)
	}
	if prev, _, err := cache.Previous(context.Background(), arn); prev != nil || err != nil {
		t.Fatalf("Previous of a secret never rotated: %q %v; want none, no error", prev, err)
	}
}

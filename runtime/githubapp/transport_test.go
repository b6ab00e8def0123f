package githubapp

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

// wantBackoffs checks waits against full jitter: wait i lies in
// [0, min(5s, 200ms * 2^i)].
func wantBackoffs(t *testing.T, waits []time.Duration, n int) {
	t.Helper()
	if len(waits) != n {
		t.Fatalf("waits = %v; want %d", waits, n)
	}
	for i, w := range waits {
		if limit := min(backoffBase<<i, backoffCap); w < 0 || w > limit {
			t.Errorf("wait %d = %v; want within [0, %v]", i+1, w, limit)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	c := &Client{jitter: func(d time.Duration) time.Duration { return d }}
	tr := newRetryTransport(c, nil)
	var got []time.Duration
	for a := 1; a <= 8; a++ {
		got = append(got, tr.backoff(a))
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second, 5 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("backoff = %v; want %v", got, want)
	}
	if tr.backoff(100) != backoffCap {
		t.Errorf("backoff(100) = %v; want the cap", tr.backoff(100))
	}
	for range 1000 {
		if d := fullJitter(time.Second); d < 0 || d > time.Second {
			t.Fatalf("fullJitter = %v", d)
		}
	}
}

func TestRetry5xxThenSuccess(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	ctx := context.Background()
	// Warm the token and the group cache, then fail the JIT call twice.
	if _, err := c.GenerateJITConfig(ctx, inst, "jitr-warm", labels); err != nil {
		t.Fatal(err)
	}
	srv.ResetCalls()
	srv.FailNext(2, http.StatusBadGateway, ghfake.RouteOrgJITConfig)
	jit, err := c.GenerateJITConfig(ctx, inst, "jitr-i-1", labels)
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Calls(ghfake.RouteOrgJITConfig); got != 3 {
		t.Errorf("JIT calls = %d; want 3 attempts", got)
	}
	// The replayed body registered the runner once, with the right name.
	if rn, ok := srv.RunnerByName(testOrg, "jitr-i-1"); !ok || rn.ID != jit.RunnerID {
		t.Errorf("runner = %+v, %v; want %d", rn, ok, jit.RunnerID)
	}
	wantBackoffs(t, c.sleeps.all(), 2)
}

func TestRetryTokenRequest(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	srv.FailNext(1, http.StatusInternalServerError, ghfake.RouteAccessToken)
	srv.InjectRetryAfter(1, 2, ghfake.RouteAccessToken)
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
		t.Fatal(err)
	}
	if got := srv.TokenRequests(); got != 3 {
		t.Errorf("token requests = %d; want 3", got)
	}
	waits := c.sleeps.all()
	if len(waits) != 2 || waits[0] > backoffBase || waits[1] != 2*time.Second {
		t.Errorf("waits = %v; want a backoff, then exactly 2s", waits)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	srv.InjectRetryAfter(1, 1, ghfake.RouteListOrgRunners)
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
		t.Fatal(err)
	}
	if waits := c.sleeps.all(); len(waits) != 1 || waits[0] < time.Second || waits[0] != time.Second {
		t.Errorf("waits = %v; want exactly [1s]", waits)
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != 2 {
		t.Errorf("list calls = %d; want 2", got)
	}
	// go-github remembers no secondary limit: the next call goes out at once.
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
		t.Fatalf("call after the secondary limit: %v", err)
	}
}

func TestRetry429(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil { // token first
		t.Fatal(err)
	}
	// 429 with Retry-After: 1 on every request, until the first wait.
	srv.SetFaultRate(1, http.StatusTooManyRequests, ghfake.RouteListOrgRunners)
	c.sleeps.then = func(time.Duration) { srv.SetFaultRate(0, 0) }
	srv.ResetCalls()
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
		t.Fatal(err)
	}
	if waits := c.sleeps.all(); !slices.Equal(waits, []time.Duration{time.Second}) {
		t.Errorf("waits = %v; want [1s]", waits)
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != 2 {
		t.Errorf("list calls = %d; want 2", got)
	}
}

func TestRetryAfterTooLong(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	srv.InjectRetryAfter(1, 60, ghfake.RouteListOrgRunners)
	_, err := c.ListRunners(context.Background(), inst, "")
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.ResetIn != time.Minute || !rle.Secondary || rle.StatusCode != 403 || rle.RequestID == "" {
		t.Fatalf("err = %v; want *RateLimitError{ResetIn: 1m, Secondary}", err)
	}
	for _, want := range []string{"list runners", "GET /orgs/acme/actions/runners", "403", "request id " + rle.RequestID, "1m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q; want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "per_page") {
		t.Errorf("err = %q carries the query", err)
	}
	if waits := c.sleeps.all(); len(waits) != 0 {
		t.Errorf("waits = %v; want none", waits)
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != 1 {
		t.Errorf("list calls = %d; want 1", got)
	}
}

func TestRetryAfterBeyondDeadline(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	srv.InjectRetryAfter(1, 5, ghfake.RouteListOrgRunners)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := c.ListRunners(ctx, inst, "")
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.ResetIn != 5*time.Second {
		t.Fatalf("err = %v; want *RateLimitError{ResetIn: 5s} (the Lambda would time out waiting)", err)
	}
	if waits := c.sleeps.all(); len(waits) != 0 {
		t.Errorf("waits = %v; want none", waits)
	}
}

func TestWaitRespectsCancel(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	c.sleep = sleepContext // a real wait, cut short
	srv.InjectRetryAfter(1, 5, ghfake.RouteListOrgRunners)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.ListRunners(ctx, inst, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned after %v; want soon after the cancel", d)
	}
	if !strings.Contains(err.Error(), "GET /orgs/acme/actions/runners") {
		t.Errorf("err = %v; want it to name the request", err)
	}
}

func TestPersistent5xx(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	srv.FailNext(100, http.StatusServiceUnavailable, ghfake.RouteListOrgRunners)
	_, err := c.ListRunners(context.Background(), inst, "")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 503 || ae.RequestID == "" {
		t.Fatalf("err = %v; want a 503 *APIError with a request id", err)
	}
	for _, want := range []string{"GET", "/orgs/acme/actions/runners", "503", ae.RequestID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q; want it to contain %q", err, want)
		}
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != DefaultMaxAttempts {
		t.Errorf("list calls = %d; want %d", got, DefaultMaxAttempts)
	}
	wantBackoffs(t, c.sleeps.all(), DefaultMaxAttempts-1)
}

func TestNetworkErrorRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	srv := newFake(t)
	var sent int
	var mu sync.Mutex
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
		c.APIURL = "http://" + addr + "/api/v3"
		c.MaxAttempts = 3
		c.OnRequest = func(string) { mu.Lock(); sent++; mu.Unlock() }
	})
	_, err = c.ListRunners(context.Background(), inst, "")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 0 || ae.Path != "/api/v3/app/installations/4242/access_tokens" || !strings.Contains(err.Error(), "after 3 attempt(s)") {
		t.Fatalf("err = %v; want the token request's network error after 3 attempts", err)
	}
	if sent != 3 {
		t.Errorf("requests = %d; want 3", sent)
	}
	wantBackoffs(t, c.sleeps.all(), 2)
}

func TestValidationErrorNotRetried(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	_, err := c.GenerateJITConfig(context.Background(), inst, "jitr-i-1", nil) // no labels
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 422 || !strings.Contains(err.Error(), "POST /orgs/acme/actions/runners/generate-jitconfig: 422") {
		t.Fatalf("err = %v; want a 422 APIError", err)
	}
	srv.FailNext(1, http.StatusUnprocessableEntity, ghfake.RouteOrgJITConfig)
	if _, err := c.GenerateJITConfig(context.Background(), inst, "jitr-i-2", labels); err == nil {
		t.Fatal("injected 422: no error")
	}
	if got := srv.JITConfigRequests(); got != 2 {
		t.Errorf("JIT calls = %d; want 2 (one per call)", got)
	}
	if waits := c.sleeps.all(); len(waits) != 0 {
		t.Errorf("waits = %v; want none", waits)
	}
}

// fixedClock pins the fake's and the client's clocks to one instant, so a
// primary limit's reset is known exactly.
func fixedClock() func() time.Time {
	now := time.Now()
	return func() time.Time { return now }
}

func TestPrimaryRateLimitExhausted(t *testing.T) {
	t.Parallel()
	srv := newFake(t, ghfake.WithRateLimit(2))
	c := newTestClient(t, srv, ScopeOrg)
	ctx := context.Background()
	for range 2 {
		if _, err := c.ListRunners(ctx, inst, ""); err != nil {
			t.Fatal(err)
		}
	}
	// The last answer said remaining 0 with a reset an hour away: the
	// client does not send, and says when to come back.
	_, err := c.ListRunners(ctx, inst, "")
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.Secondary || rle.ResetIn < 59*time.Minute || rle.ResetIn > time.Hour || rle.StatusCode != 0 {
		t.Fatalf("err = %v; want *RateLimitError{ResetIn: ~1h}", err)
	}
	if !strings.Contains(err.Error(), "GET /orgs/acme/actions/runners") || !strings.Contains(err.Error(), "primary rate limit") {
		t.Errorf("err = %q", err)
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != 2 {
		t.Errorf("list calls = %d; want 2 (third not sent)", got)
	}
	if waits := c.sleeps.all(); len(waits) != 0 {
		t.Errorf("waits = %v; want none", waits)
	}
}

func TestPrimaryRateLimitWaitsForReset(t *testing.T) {
	t.Parallel()
	now := fixedClock()
	wantWait := time.Unix(now().Add(time.Hour).Unix(), 0).Sub(now()) // the fake's reset is whole seconds

	t.Run("known exhausted", func(t *testing.T) {
		t.Parallel()
		srv := newFake(t, ghfake.WithRateLimit(2), ghfake.WithClock(now))
		c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
			c.MaxRetryWait = 2 * time.Hour
			c.HTTPClient = nil // its Timeout would bound the wait
		})
		c.now = now
		c.sleeps.then = func(time.Duration) { srv.ResetRateLimits() } // the hour passes
		for range 3 {
			if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
				t.Fatal(err)
			}
		}
		if waits := c.sleeps.all(); !slices.Equal(waits, []time.Duration{wantWait}) {
			t.Errorf("waits = %v; want [%v] (until the reset, exactly)", waits, wantWait)
		}
		if got := srv.Calls(ghfake.RouteListOrgRunners); got != 3 {
			t.Errorf("list calls = %d; want 3 (go-github must not refuse)", got)
		}
	})

	t.Run("403 remaining 0", func(t *testing.T) {
		t.Parallel()
		srv := newFake(t, ghfake.WithClock(now))
		c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
			c.MaxRetryWait = 2 * time.Hour
			c.HTTPClient = nil // its Timeout would bound the wait
		})
		c.now = now
		if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
			t.Fatal(err)
		}
		srv.SetRateLimit(0) // every budget is exhausted: 403 with remaining 0
		c.sleeps.then = func(time.Duration) { srv.SetRateLimit(5000) }
		srv.ResetCalls()
		if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
			t.Fatal(err)
		}
		if waits := c.sleeps.all(); !slices.Equal(waits, []time.Duration{wantWait}) {
			t.Errorf("waits = %v; want [%v]", waits, wantWait)
		}
		if got := srv.Calls(ghfake.RouteListOrgRunners); got != 2 {
			t.Errorf("list calls = %d; want 2", got)
		}
	})
}

func TestOnRateLimitAndOnRequest(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	var (
		mu        sync.Mutex
		remaining []int
		limits    []int
		routes    = map[string]int{}
	)
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
		c.OnRateLimit = func(rem, limit int) {
			mu.Lock()
			defer mu.Unlock()
			remaining = append(remaining, rem)
			limits = append(limits, limit)
		}
		c.OnRequest = func(route string) {
			mu.Lock()
			defer mu.Unlock()
			routes[route]++
		}
	})
	ctx := context.Background()
	if _, err := c.GenerateJITConfig(ctx, inst, "jitr-i-1", labels); err != nil {
		t.Fatal(err)
	}
	srv.FailNext(1, http.StatusBadGateway, ghfake.RouteListOrgRunners)
	for range 3 {
		if _, err := c.ListRunners(ctx, inst, ""); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// 1 token + 1 groups + 1 JIT + 4 lists (one retried), each with headers.
	if len(remaining) != 7 || srv.TotalCalls() != 7 {
		t.Fatalf("OnRateLimit calls = %d, server calls %d; want 7", len(remaining), srv.TotalCalls())
	}
	// The first is the App JWT's budget; the installation token's follows
	// and only decreases (the injected fault spends nothing).
	api := remaining[1:]
	for i := 1; i < len(api); i++ {
		if api[i] > api[i-1] {
			t.Errorf("remaining = %v; want non-increasing", api)
		}
	}
	if api[0] != 4999 || api[len(api)-1] != 4995 || limits[0] != 5000 {
		t.Errorf("remaining = %v, limits %v", remaining, limits)
	}
	want := map[string]int{routeAccessToken: 1, routeListRunnerGroups: 1, routeOrgJITConfig: 1, routeListOrgRunners: 4}
	if len(routes) != len(want) {
		t.Errorf("routes = %v; want %v", routes, want)
	}
	for r, n := range want {
		if routes[r] != n || srv.Calls(r) != n {
			t.Errorf("route %q: OnRequest %d, server %d; want %d", r, routes[r], srv.Calls(r), n)
		}
	}
}

func TestTokenRequestWaitCapped(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
		c.MaxRetryWait = time.Hour
		c.HTTPClient = nil
	})
	// A token request must not outwait its 90-second App JWT.
	srv.InjectRetryAfter(1, 120, ghfake.RouteAccessToken)
	_, err := c.ListRunners(context.Background(), inst, "")
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.ResetIn != 2*time.Minute || rle.Path != "/app/installations/4242/access_tokens" {
		t.Fatalf("err = %v; want *RateLimitError{ResetIn: 2m} for the token request", err)
	}
	if waits := c.sleeps.all(); len(waits) != 0 {
		t.Errorf("waits = %v; want none", waits)
	}
	// An API request may wait as long as MaxRetryWait allows.
	srv.InjectRetryAfter(1, 120, ghfake.RouteListOrgRunners)
	if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
		t.Fatal(err)
	}
	if waits := c.sleeps.all(); !slices.Equal(waits, []time.Duration{2 * time.Minute}) {
		t.Errorf("waits = %v; want [2m]", waits)
	}
}

package ghfake

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// The App may generate DefaultJITPerMinute JIT configs in any minute; the
// next is refused with GitHub's secondary rate limit (403, Retry-After
// until the oldest leaves the window), which creates no runner, and the
// budget comes back as the window slides.
func TestJITBudgetPerMinute(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now))
	tok := "token " + installationToken(t, s, clock.Now())
	gen := func(name string) result {
		return call(t, s, "POST", "/orgs/acme/actions/runners/generate-jitconfig", tok, jitBody(name, 1, "self-hosted"))
	}
	for i := range DefaultJITPerMinute {
		if i == DefaultJITPerMinute/2 {
			clock.Advance(20 * time.Second) // the second half 20 s after the first
		}
		if res := gen(fmt.Sprintf("r%d", i)); res.status != http.StatusCreated {
			t.Fatalf("JIT config %d: %d %s", i+1, res.status, res.body)
		}
	}
	res := gen("over")
	if res.status != http.StatusForbidden || res.header.Get("Retry-After") != "40" ||
		!strings.HasPrefix(res.message(t), "You have exceeded a secondary rate limit") {
		t.Fatalf("JIT config %d: %d, Retry-After %q, %s; want 403, 40 (the first half leaves the window then)",
			DefaultJITPerMinute+1, res.status, res.header.Get("Retry-After"), res.body)
	}
	if res.header.Get("X-RateLimit-Remaining") == "0" {
		t.Error("the secondary limit must not claim the primary budget is exhausted")
	}
	if _, ok := s.RunnerByName(testOrg, "over"); ok || s.JITRateLimited() != 1 {
		t.Fatalf("refused request registered a runner (%v) or was not counted (%d)", ok, s.JITRateLimited())
	}
	clock.Advance(39 * time.Second)
	if res := gen("still-over"); res.status != http.StatusForbidden || res.header.Get("Retry-After") != "1" {
		t.Fatalf("1 s before the first half leaves: %d Retry-After %q; want 403, 1", res.status, res.header.Get("Retry-After"))
	}
	clock.Advance(time.Second)
	for i := range DefaultJITPerMinute / 2 {
		if res := gen(fmt.Sprintf("again%d", i)); res.status != http.StatusCreated {
			t.Fatalf("after the window slid, JIT config %d: %d %s", i+1, res.status, res.body)
		}
	}
	if res := gen("over-again"); res.status != http.StatusForbidden {
		t.Fatalf("a full window again: %d; want 403", res.status)
	}
	// Other calls are not limited by it.
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil); res.status != http.StatusOK {
		t.Fatalf("list runners while the JIT budget is spent: %d", res.status)
	}
}

func TestJITBudgetOff(t *testing.T) {
	t.Parallel()
	s := newServer(t, WithJITPerMinute(0))
	tok := "token " + installationToken(t, s, time.Now())
	for i := range DefaultJITPerMinute + 20 {
		if res := call(t, s, "POST", "/repos/acme/app/actions/runners/generate-jitconfig", tok, jitBody(fmt.Sprintf("r%d", i), 1, "self-hosted")); res.status != http.StatusCreated {
			t.Fatalf("JIT config %d without a budget: %d", i+1, res.status)
		}
	}
	s.SetJITPerMinute(3)
	for i := range 3 {
		if res := call(t, s, "POST", "/repos/acme/app/actions/runners/generate-jitconfig", tok, jitBody(fmt.Sprintf("s%d", i), 1, "self-hosted")); res.status != http.StatusCreated {
			t.Fatalf("JIT config %d of 3: %d", i+1, res.status)
		}
	}
	if res := call(t, s, "POST", "/repos/acme/app/actions/runners/generate-jitconfig", tok, jitBody("s3", 1, "self-hosted")); res.status != http.StatusForbidden {
		t.Fatalf("fourth of 3: %d; want 403", res.status)
	}
}

package githubapp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// appsOnFake is an Apps over the fake's primary App (installation testInst
// on testOrg) and extra more Apps, each installed on testOrg with its own
// installation id (5001, 5002, ...), except those listed in notOn.
type appsOnFake struct {
	*Apps
	srv   *ghfake.Server
	clock *testkit.Clock
	ids   []int64
}

func newAppsOnFake(t *testing.T, scope string, extra int, notOn ...int) *appsOnFake {
	t.Helper()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	srv := newFake(t, ghfake.WithClock(clock.Now))
	var clients []*Client
	add := func(id int64, key []byte) {
		c := newTestClient(t, srv, scope, func(cfg *Config) {
			cfg.AppID, cfg.PrivateKey, cfg.MaxRetryWait = id, key, time.Millisecond
		})
		clients = append(clients, c.Client)
	}
	add(srv.AppID(), srv.PrivateKeyPEM())
	ids := []int64{srv.AppID()}
	for i := 1; i <= extra; i++ {
		app := srv.AddApp()
		skip := false
		for _, n := range notOn {
			skip = skip || n == i
		}
		if !skip {
			if err := srv.InstallApp(app.ID, int64(5000+i), testOrg); err != nil {
				t.Fatal(err)
			}
		}
		add(app.ID, app.PrivateKeyPEM)
		ids = append(ids, app.ID)
	}
	a, err := NewApps(clients...)
	if err != nil {
		t.Fatal(err)
	}
	a.now = clock.Now
	return &appsOnFake{Apps: a, srv: srv, clock: clock, ids: ids}
}

func (f *appsOnFake) jit(t *testing.T, name string) error {
	t.Helper()
	_, err := f.GenerateJITConfig(context.Background(), inst, name, []string{"self-hosted"})
	return err
}

func (f *appsOnFake) spread() []int {
	out := make([]int, len(f.ids))
	for i, id := range f.ids {
		out[i] = f.srv.JITConfigsBy(id)
	}
	return out
}

// JIT configs spread evenly over the Apps; each App's installation on the
// owner is looked up once, and used (not the id the caller passed, which is
// the primary App's).
func TestAppsSpreadJITConfigs(t *testing.T) {
	t.Parallel()
	f := newAppsOnFake(t, ScopeOrg, 2)
	for i := range 30 {
		if err := f.jit(t, fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("JIT config %d: %v", i, err)
		}
	}
	if got := f.spread(); got[0] != 10 || got[1] != 10 || got[2] != 10 {
		t.Fatalf("JIT configs per App %v; want 10 each", got)
	}
	if n := f.srv.Calls(ghfake.RouteOrgInstallation); n != 3 {
		t.Fatalf("%d installation lookups for 3 Apps and 30 calls; want 3 (cached)", n)
	}
	// Other calls go round the Apps too, on the same cached installations.
	for range 6 {
		if _, err := f.ListRunners(context.Background(), inst, "r"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.srv.Calls(ghfake.RouteOrgInstallation); n != 3 {
		t.Fatalf("%d installation lookups after the listings; want still 3", n)
	}
	if n := f.srv.TokenRequests(); n != 3 {
		t.Fatalf("%d installation tokens; want one per App", n)
	}
}

// A rate-limited App cools down until its reset: the call moves to the
// next App at once, and the limited App gets nothing until the reset.
func TestAppsSkipACoolingApp(t *testing.T) {
	t.Parallel()
	f := newAppsOnFake(t, ScopeOrg, 2)
	if err := f.jit(t, "warm"); err != nil { // lookups and tokens first
		t.Fatal(err)
	}
	first := f.spread()
	limitedApp := -1
	for i, n := range first {
		if n == 0 && limitedApp < 0 {
			limitedApp = i // the next JIT config goes to an App with the most budget left: one that has none yet
		}
	}
	f.srv.InjectRetryAfter(1, 30, ghfake.RouteOrgJITConfig)
	if err := f.jit(t, "moved"); err != nil {
		t.Fatalf("the call was not moved to another App: %v", err)
	}
	after := f.spread()
	if after[limitedApp] != 0 {
		t.Fatalf("JIT configs %v after a 403 on App %d; want none on it", after, f.ids[limitedApp])
	}
	for i := range 20 {
		if err := f.jit(t, fmt.Sprintf("during%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.spread(); got[limitedApp] != 0 {
		t.Fatalf("JIT configs %v: App %d was used while cooling down", got, f.ids[limitedApp])
	}
	f.clock.Advance(31 * time.Second)
	for i := range 10 {
		if err := f.jit(t, fmt.Sprintf("after%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The others generated 22 in the last minute, it none: the most
	// budget left, so it takes all 10 (in turn it would take 3 or 4).
	if got := f.spread(); got[limitedApp] != 10 {
		t.Fatalf("JIT configs %v: App %d, with the most budget left after its reset, took %d of 10", got, f.ids[limitedApp], got[limitedApp])
	}
}

// With every App's JIT budget spent, the call fails with the earliest
// reset, and calls within it make no request at all.
func TestAppsAllCoolingDown(t *testing.T) {
	t.Parallel()
	f := newAppsOnFake(t, ScopeOrg, 1)
	f.srv.SetJITPerMinute(3)
	for i := range 6 {
		if err := f.jit(t, fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("JIT config %d of 6 (3 per App): %v", i, err)
		}
	}
	f.clock.Advance(10 * time.Second)
	err := f.jit(t, "over")
	rl, ok := errors.AsType[*RateLimitError](err)
	if !ok || rl.ResetIn <= 0 || rl.ResetIn > 50*time.Second {
		t.Fatalf("err %v; want a RateLimitError resetting within 50 s (the budgets' minute, 10 s gone)", err)
	}
	before := f.srv.JITConfigRequests()
	err = f.jit(t, "still-over")
	if _, ok := errors.AsType[*RateLimitError](err); !ok || f.srv.JITConfigRequests() != before {
		t.Fatalf("within the reset: err %v, %d requests; want a RateLimitError and no request", err, f.srv.JITConfigRequests()-before)
	}
	f.clock.Advance(rl.ResetIn)
	if err := f.jit(t, "again"); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

// An App not installed on the owner is skipped, and asked about once.
func TestAppsNotInstalledOnTheOwner(t *testing.T) {
	t.Parallel()
	f := newAppsOnFake(t, ScopeRepo, 2, 2)
	for i := range 8 {
		if err := f.jit(t, fmt.Sprintf("r%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.spread(); got[2] != 0 || got[0]+got[1] != 8 {
		t.Fatalf("JIT configs %v; want none through the App not installed on %s", got, testRepo)
	}
	if n := f.srv.Calls(ghfake.RouteRepoInstallation); n != 3 {
		t.Fatalf("%d installation lookups; want 3 (the missing one remembered)", n)
	}
	_, err := f.GetJob(context.Background(), Installation{Owner: "elsewhere", Repository: "elsewhere/app"}, 1)
	if !errors.Is(err, ErrNotFound) || !containsAll(err.Error(), "none of the Apps", "elsewhere/app") {
		t.Fatalf("an owner no App is installed on: %v; want ErrNotFound naming it", err)
	}
}

// One App: calls pass through with the caller's installation, no lookup.
func TestAppsSingleAppPassesThrough(t *testing.T) {
	t.Parallel()
	f := newAppsOnFake(t, ScopeOrg, 0)
	for i := range 3 {
		if err := f.jit(t, fmt.Sprintf("r%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.srv.Calls(ghfake.RouteOrgInstallation) + f.srv.Calls(ghfake.RouteRepoInstallation); n != 0 {
		t.Fatalf("%d installation lookups with one App; want 0", n)
	}
	// A single App's calls are not counted: with no choice to make,
	// nothing would ever trim them.
	if n := len(f.members[0].jit); n != 0 {
		t.Fatalf("%d JIT configs kept for the only App; want none", n)
	}
}

func TestNewAppsRefusesMismatches(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	org := newTestClient(t, srv, ScopeOrg).Client
	repo := newTestClient(t, srv, ScopeRepo, func(c *Config) { c.AppID = 99 }).Client
	for name, cs := range map[string][]*Client{"none": nil, "scopes": {org, repo}, "twice": {org, org}} {
		if _, err := NewApps(cs...); err == nil {
			t.Errorf("%s: NewApps accepted", name)
		}
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

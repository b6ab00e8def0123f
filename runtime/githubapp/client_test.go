package githubapp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

var labels = []string{"self-hosted", "linux", "x64"}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{AppID: 1, PrivateKey: []byte("k"), Scope: ScopeOrg}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.APIURL != DefaultAPIURL || c.RunnerGroup != "Default" || c.MaxAttempts != 4 || c.MaxRetryWait != 10*time.Second || c.Logger == nil {
		t.Errorf("defaults = %+v", c)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty", Config{}, "missing AppID"},
		{"scope", Config{AppID: 1, PrivateKey: []byte("k"), Scope: "enterprise"}, `"enterprise"`},
		{"url", Config{APIURL: "ftp://x", AppID: 1, PrivateKey: []byte("k"), Scope: ScopeRepo}, "APIURL"},
		{"attempts", Config{AppID: 1, PrivateKey: []byte("k"), Scope: ScopeRepo, MaxAttempts: -1}, "MaxAttempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	pkcs8EC, _ := x509.MarshalPKCS8PrivateKey(ec)
	pkcs8RSA, _ := x509.MarshalPKCS8PrivateKey(sharedKey())
	garbage := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("not-der-secret-material")})
	for _, tc := range []struct {
		name string
		key  []byte
		ok   bool
	}{
		{"not pem", []byte("-----BEGIN nothing secret-material"), false},
		{"ec", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), false},
		{"pkcs8 ec", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8EC}), false},
		{"garbage rsa", garbage, false},
		{"pkcs8 rsa", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8RSA}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(Config{AppID: 1, PrivateKey: tc.key, Scope: ScopeOrg})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted the key")
			}
			if strings.Contains(err.Error(), "secret-material") || strings.Contains(err.Error(), string(tc.key)) {
				t.Errorf("error echoes the key: %v", err)
			}
		})
	}
}

func TestGenerateJITConfigOrg(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	gpu := srv.AddRunnerGroup(testOrg, "gpu")
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) { c.RunnerGroup = "GPU" })
	ctx := context.Background()

	var ids []int64
	for _, name := range []string{"jitr-i-1", "jitr-i-2"} {
		jit, err := c.GenerateJITConfig(ctx, inst, name, labels)
		if err != nil {
			t.Fatal(err)
		}
		rn, ok := srv.Runner(jit.RunnerID)
		if !ok || rn.Name != name || rn.Owner != testOrg || rn.RunnerGroupID != gpu || rn.WorkFolder != "_work" || !rn.Ephemeral || !slices.Equal(rn.Labels, labels) {
			t.Errorf("runner = %+v; want %s in group %d of %s", rn, name, gpu, testOrg)
		}
		if id, err := srv.RunnerOnline(jit.Encoded); err != nil || id != jit.RunnerID {
			t.Errorf("RunnerOnline = %d, %v; want %d", id, err, jit.RunnerID)
		}
		ids = append(ids, jit.RunnerID)
	}
	if ids[0] == ids[1] {
		t.Errorf("runner ids repeat: %v", ids)
	}
	if got := srv.Calls(ghfake.RouteListRunnerGroups); got != 1 {
		t.Errorf("runner-groups calls = %d; want 1 (cached)", got)
	}
	if got := srv.Calls(ghfake.RouteOrgJITConfig); got != 2 {
		t.Errorf("org JIT calls = %d; want 2", got)
	}
}

func TestGenerateJITConfigDefaultGroup(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeOrg)
	jit, err := c.GenerateJITConfig(context.Background(), Installation{ID: testInst, Owner: testOrg}, "jitr-i-1", labels)
	if err != nil {
		t.Fatal(err)
	}
	if rn, _ := srv.Runner(jit.RunnerID); rn.RunnerGroupID != ghfake.DefaultRunnerGroupID {
		t.Errorf("group = %d; want Default (1)", rn.RunnerGroupID)
	}
}

func TestGenerateJITConfigRepo(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	c := newTestClient(t, srv, ScopeRepo, func(c *Config) { c.RunnerGroup = "ignored in repo scope" })
	jit, err := c.GenerateJITConfig(context.Background(), inst, "jitr-i-1", labels)
	if err != nil {
		t.Fatal(err)
	}
	rn, ok := srv.Runner(jit.RunnerID)
	if !ok || rn.Owner != testRepo || rn.RunnerGroupID != 1 || rn.WorkFolder != "_work" {
		t.Errorf("runner = %+v; want a runner of %s in group 1", rn, testRepo)
	}
	if got := srv.Calls(ghfake.RouteRepoJITConfig); got != 1 {
		t.Errorf("repo JIT calls = %d; want 1", got)
	}
	if got := srv.Calls(ghfake.RouteListRunnerGroups); got != 0 {
		t.Errorf("runner-groups calls = %d; want 0 in repo scope", got)
	}
	if _, err := c.GenerateJITConfig(context.Background(), Installation{ID: testInst, Owner: testOrg}, "x", labels); err == nil {
		t.Error("repo scope without a repository: no error")
	}
}

func TestRunnerGroupNotFound(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	// More groups than one page, so the lookup paginates.
	for i := range 120 {
		srv.AddRunnerGroup(testOrg, fmt.Sprintf("group-%03d", i))
	}
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) { c.RunnerGroup = "nope" })
	for range 2 {
		_, err := c.GenerateJITConfig(context.Background(), inst, "jitr-i-1", labels)
		if !errors.Is(err, ErrRunnerGroupNotFound) || !strings.Contains(err.Error(), `"nope"`) {
			t.Fatalf("err = %v; want ErrRunnerGroupNotFound naming the group", err)
		}
	}
	if got := srv.JITConfigRequests(); got != 0 {
		t.Errorf("JIT calls = %d; want 0", got)
	}
	if got := srv.Calls(ghfake.RouteListRunnerGroups); got != 4 {
		t.Errorf("runner-groups calls = %d; want 4 (2 pages, misses not cached)", got)
	}

	// A group on the second page is found.
	c2 := newTestClient(t, srv, ScopeOrg, func(c *Config) { c.RunnerGroup = "group-119" })
	if _, err := c2.GenerateJITConfig(context.Background(), inst, "jitr-i-2", labels); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateJITConfigConflict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		scope string
		owner string
		busy  bool
	}{
		{"org idle", ScopeOrg, testOrg, false},
		{"repo idle", ScopeRepo, testRepo, false},
		{"org busy", ScopeOrg, testOrg, true},
		{"repo busy", ScopeRepo, testRepo, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFake(t)
			old, err := srv.AddRunner(tc.owner, ghfake.Runner{Name: "jitr-i-1", Labels: labels, Busy: tc.busy, Status: ghfake.RunnerStatusOnline})
			if err != nil {
				t.Fatal(err)
			}
			c := newTestClient(t, srv, tc.scope)
			jit, err := c.GenerateJITConfig(context.Background(), inst, "jitr-i-1", labels)
			if tc.busy {
				if !errors.Is(err, ErrRunnerBusy) || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "generate-jitconfig") {
					t.Fatalf("err = %v; want ErrRunnerBusy naming the 409", err)
				}
				if _, ok := srv.Runner(old.ID); !ok {
					t.Error("busy runner was deleted")
				}
				if got := srv.JITConfigRequests(); got != 1 {
					t.Errorf("JIT calls = %d; want 1", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := srv.Runner(old.ID); ok {
				t.Error("old runner still exists")
			}
			rn, ok := srv.RunnerByName(tc.owner, "jitr-i-1")
			if !ok || rn.ID != jit.RunnerID || rn.ID == old.ID {
				t.Errorf("runner = %+v; want the new runner %d", rn, jit.RunnerID)
			}
			if got := srv.JITConfigRequests(); got != 2 {
				t.Errorf("JIT calls = %d; want 2", got)
			}
			if !strings.Contains(c.logs.String(), "replaced existing runner") {
				t.Errorf("logs lack the replacement: %s", c.logs)
			}
		})
	}
}

func TestTokenReuse(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	srv.AddInstallation(7, "other")
	c := newTestClient(t, srv, ScopeOrg)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if _, err := c.GenerateJITConfig(ctx, inst, fmt.Sprintf("jitr-i-%02d", i), labels); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := srv.TokenRequests(); got != 1 {
		t.Errorf("TokenRequests() = %d for %d jobs; want 1", got, n)
	}
	if got := len(srv.Runners(testOrg)); got != n {
		t.Errorf("runners = %d; want %d", got, n)
	}
	// Another installation has its own token.
	if _, err := c.ListRunners(ctx, Installation{ID: 7, Owner: "other"}, ""); err != nil {
		t.Fatal(err)
	}
	if got := srv.TokenRequests(); got != 2 {
		t.Errorf("TokenRequests() = %d; want 2 with a second installation", got)
	}
}

func TestTokenRefreshBeforeExpiry(t *testing.T) {
	t.Parallel()
	// ghinstallation refreshes a minute before expires_at: a 30s token is
	// refreshed for every call, a 2-minute one is reused.
	for _, tc := range []struct {
		ttl  time.Duration
		want int
	}{{30 * time.Second, 3}, {2 * time.Minute, 1}} {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			t.Parallel()
			srv := newFake(t, ghfake.WithTokenTTL(tc.ttl))
			c := newTestClient(t, srv, ScopeOrg)
			for range 3 {
				if _, err := c.ListRunners(context.Background(), inst, ""); err != nil {
					t.Fatal(err)
				}
			}
			if got := srv.TokenRequests(); got != tc.want {
				t.Errorf("TokenRequests() = %d; want %d", got, tc.want)
			}
		})
	}
}

func TestURLStyles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		url  func(*ghfake.Server) string
	}{
		{"github.com", (*ghfake.Server).URL},
		{"github.com no slash", func(s *ghfake.Server) string { return strings.TrimSuffix(s.URL(), "/") }},
		{"ghes", (*ghfake.Server).GHESURL},
		{"ghes no slash", func(s *ghfake.Server) string { return strings.TrimSuffix(s.GHESURL(), "/") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFake(t)
			srv.AddJob(ghfake.Job{ID: 99, Owner: testOrg, Repo: "app", Labels: labels})
			for _, scope := range []string{ScopeOrg, ScopeRepo} {
				c := newTestClient(t, srv, scope, func(c *Config) { c.APIURL = tc.url(srv) })
				ctx := context.Background()
				jit, err := c.GenerateJITConfig(ctx, inst, "jitr-"+scope, labels)
				if err != nil {
					t.Fatalf("%s: %v", scope, err)
				}
				runners, err := c.ListRunners(ctx, inst, "jitr-")
				if err != nil || len(runners) != 1 || runners[0].ID != jit.RunnerID {
					t.Fatalf("%s: ListRunners = %+v, %v", scope, runners, err)
				}
				if _, err := c.GetJob(ctx, inst, 99); err != nil {
					t.Fatalf("%s: %v", scope, err)
				}
				_, err = c.GetJob(ctx, inst, 12345)
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s: err = %v; want ErrNotFound", scope, err)
				}
				wantPath := "/repos/acme/app/actions/jobs/12345"
				if strings.Contains(tc.name, "ghes") {
					wantPath = "/api/v3" + wantPath
				}
				if !strings.Contains(err.Error(), "GET "+wantPath+": 404") {
					t.Errorf("err = %v; want it to name GET %s", err, wantPath)
				}
			}
			if got := srv.Calls(ghfake.RouteUnknown); got != 0 {
				t.Errorf("%d requests to unknown routes", got)
			}
			if got := srv.TokenRequests(); got != 2 {
				t.Errorf("TokenRequests() = %d; want 2 (one per client)", got)
			}
		})
	}
}

func TestListRunnersPagination(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	for i := range 250 {
		name := fmt.Sprintf("jitr-i-%03d", i)
		if i%5 == 0 {
			name = fmt.Sprintf("other-%03d", i)
		}
		if _, err := srv.AddRunner(testOrg, ghfake.Runner{Name: name, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	busy, _ := srv.RunnerByName(testOrg, "jitr-i-001")
	_ = srv.SetRunnerBusy(busy.ID, true)
	_ = srv.SetRunnerStatus(busy.ID, ghfake.RunnerStatusOnline)
	c := newTestClient(t, srv, ScopeOrg)

	runners, err := c.ListRunners(context.Background(), inst, "jitr-")
	if err != nil {
		t.Fatal(err)
	}
	if len(runners) != 200 {
		t.Errorf("runners = %d; want 200", len(runners))
	}
	if got := srv.Calls(ghfake.RouteListOrgRunners); got != 3 {
		t.Errorf("list calls = %d; want 3 (pages of 100)", got)
	}
	for _, r := range runners {
		if !strings.HasPrefix(r.Name, "jitr-") {
			t.Errorf("runner %q lacks the prefix", r.Name)
		}
		if r.ID == busy.ID && (!r.Busy || r.Status != RunnerOnline || !slices.Equal(r.Labels, labels)) {
			t.Errorf("busy runner = %+v", r)
		}
	}
	all, err := c.ListRunners(context.Background(), inst, "")
	if err != nil || len(all) != 250 {
		t.Errorf("all runners = %d, %v; want 250", len(all), err)
	}

	// Repo scope lists the repository's runners only.
	if _, err := srv.AddRunner(testRepo, ghfake.Runner{Name: "jitr-repo", Labels: labels}); err != nil {
		t.Fatal(err)
	}
	rc := newTestClient(t, srv, ScopeRepo)
	repoRunners, err := rc.ListRunners(context.Background(), inst, "jitr-")
	if err != nil || len(repoRunners) != 1 || repoRunners[0].Name != "jitr-repo" || repoRunners[0].Status != RunnerOffline {
		t.Errorf("repo runners = %+v, %v", repoRunners, err)
	}
}

func TestDeleteRunner(t *testing.T) {
	t.Parallel()
	for _, scope := range []string{ScopeOrg, ScopeRepo} {
		t.Run(scope, func(t *testing.T) {
			t.Parallel()
			owner := map[string]string{ScopeOrg: testOrg, ScopeRepo: testRepo}[scope]
			srv := newFake(t)
			idle, _ := srv.AddRunner(owner, ghfake.Runner{Name: "idle", Labels: labels})
			busy, _ := srv.AddRunner(owner, ghfake.Runner{Name: "busy", Labels: labels, Busy: true})
			c := newTestClient(t, srv, scope)
			ctx := context.Background()

			if err := c.DeleteRunner(ctx, inst, idle.ID); err != nil {
				t.Fatalf("204: %v", err)
			}
			if _, ok := srv.Runner(idle.ID); ok {
				t.Error("runner not deleted")
			}
			if err := c.DeleteRunner(ctx, inst, idle.ID); err != nil {
				t.Errorf("404: %v; want nil (already gone)", err)
			}
			err := c.DeleteRunner(ctx, inst, busy.ID)
			if !errors.Is(err, ErrRunnerBusy) {
				t.Fatalf("422: %v; want ErrRunnerBusy", err)
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != 422 || ae.Method != "DELETE" || !strings.HasSuffix(ae.Path, fmt.Sprintf("/actions/runners/%d", busy.ID)) || ae.RequestID == "" {
				t.Errorf("err = %#v; want an *APIError for the DELETE with status 422", ae)
			}
			if errors.Is(err, ErrNotFound) {
				t.Error("busy is ErrNotFound")
			}
			if got := srv.Calls(map[string]string{ScopeOrg: ghfake.RouteDeleteOrgRunner, ScopeRepo: ghfake.RouteDeleteRepoRunner}[scope]); got != 3 {
				t.Errorf("delete calls = %d; want 3 (422 not retried)", got)
			}
		})
	}
}

func TestGetJobAndRerun(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	rn, _ := srv.AddRunner(testOrg, ghfake.Runner{Name: "jitr-i-1", Labels: labels, Ephemeral: true})
	added := srv.AddJob(ghfake.Job{ID: 777, Owner: testOrg, Repo: "app", Labels: labels})
	if err := srv.StartJob(777, rn.ID); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, srv, ScopeOrg)
	ctx := context.Background()

	job, err := c.GetJob(ctx, inst, 777)
	if err != nil {
		t.Fatal(err)
	}
	if job.ID != 777 || job.RunID != added.RunID || job.Status != "in_progress" || job.Conclusion != "" ||
		job.RunnerName != "jitr-i-1" || job.RunnerID != rn.ID || job.CreatedAt.IsZero() || job.StartedAt.IsZero() || !slices.Equal(job.Labels, labels) {
		t.Errorf("job = %+v", job)
	}

	// Not completed: GitHub answers 403, which is not a rate limit.
	err = c.RerunJob(ctx, inst, 777)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 403 || !strings.Contains(err.Error(), "POST /repos/acme/app/actions/jobs/777/rerun: 403") {
		t.Fatalf("rerun in progress = %v; want a 403 APIError", err)
	}
	if got := srv.Calls(ghfake.RouteRerunJob); got != 1 || len(c.sleeps.all()) != 0 {
		t.Errorf("rerun calls = %d, sleeps %v; want 1 and none", got, c.sleeps.all())
	}

	if err := srv.CompleteJob(777, "failure"); err != nil {
		t.Fatal(err)
	}
	job, err = c.GetJob(ctx, inst, 777)
	if err != nil || job.Status != "completed" || job.Conclusion != "failure" {
		t.Errorf("job = %+v, %v; want completed/failure", job, err)
	}
	if err := c.RerunJob(ctx, inst, 777); err != nil {
		t.Fatal(err)
	}
	if srv.Reruns(777) != 1 {
		t.Errorf("Reruns = %d; want 1", srv.Reruns(777))
	}

	_, err = c.GetJob(ctx, inst, 1)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown job: %v; want ErrNotFound", err)
	}
	if err := c.RerunJob(ctx, inst, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("rerun unknown job: %v; want ErrNotFound", err)
	}
}

func TestUnknownInstallationIsNotErrNotFound(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	srv.AddJob(ghfake.Job{ID: 5, Owner: testOrg, Repo: "app"})
	c := newTestClient(t, srv, ScopeOrg)
	_, err := c.GetJob(context.Background(), Installation{ID: 999, Owner: testOrg, Repository: testRepo}, 5)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v; want a token error that is not ErrNotFound", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Path != "/app/installations/999/access_tokens" || ae.RequestID == "" {
		t.Errorf("err = %v; want the token request's 404", err)
	}
	// A missing installation's 404 from DeleteRunner is no success either.
	if err := c.DeleteRunner(context.Background(), Installation{ID: 999, Owner: testOrg}, 1); err == nil {
		t.Error("DeleteRunner with an unknown installation: nil error")
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	other := newFake(t, ghfake.WithAppKey(nil)) // a different generated key
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) { c.PrivateKey = other.PrivateKeyPEM() })
	_, err := c.ListRunners(context.Background(), inst, "")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 401 || !strings.Contains(err.Error(), "POST /app/installations/4242/access_tokens: 401") ||
		!strings.Contains(err.Error(), "A JSON web token could not be decoded") {
		t.Fatalf("err = %v; want the token request's 401 with GitHub's message", err)
	}
	if got := srv.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d; want 1 (401 not retried)", got)
	}
}

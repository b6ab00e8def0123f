package ghfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"
)

// These tests drive the fake with the clients the control plane uses:
// go-github v60 over ghinstallation v2 (App JWT -> installation token).

// newClient returns a go-github client for the test installation at the
// GitHub.com style (ghes false) or GHES style base URL.
func newClient(t *testing.T, s *Server, ghes bool, pemKey []byte) (*github.Client, *ghinstallation.Transport) {
	t.Helper()
	itr, err := ghinstallation.New(s.Client().Transport, s.AppID(), testInstallation, pemKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: itr}
	if ghes {
		itr.BaseURL = strings.TrimSuffix(s.GHESURL(), "/")
		c, err := github.NewClient(hc).WithEnterpriseURLs(s.GHESURL(), s.GHESURL())
		if err != nil {
			t.Fatal(err)
		}
		return c, itr
	}
	itr.BaseURL = strings.TrimSuffix(s.URL(), "/")
	c := github.NewClient(hc)
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	c.BaseURL = u
	return c, itr
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != status {
		t.Fatalf("err = %v; want *github.ErrorResponse with status %d", err, status)
	}
}

func TestGoGitHubClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ghes bool
	}{{"github.com", false}, {"ghes", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t)
			c, _ := newClient(t, s, tc.ghes, s.PrivateKeyPEM())
			ctx := context.Background()
			gpu := s.AddRunnerGroup(testOrg, "gpu")

			groups, resp, err := c.Actions.ListOrganizationRunnerGroups(ctx, testOrg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if groups.TotalCount != 2 || groups.RunnerGroups[0].GetID() != 1 || groups.RunnerGroups[0].GetName() != "Default" || !groups.RunnerGroups[0].GetDefault() {
				t.Errorf("groups = %+v; want Default id 1 first", groups.RunnerGroups)
			}
			if resp.Rate.Limit != 5000 || resp.Rate.Remaining != 4999 || resp.Rate.Reset.IsZero() {
				t.Errorf("rate = %+v; want 5000/4999", resp.Rate)
			}
			firstRemaining := resp.Rate.Remaining

			req := &github.GenerateJITConfigRequest{Name: "jitr-i-0001", RunnerGroupID: 1, Labels: []string{"self-hosted", "linux", "x64"}}
			jit, resp, err := c.Actions.GenerateOrgJITConfig(ctx, testOrg, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusCreated || jit.GetEncodedJITConfig() == "" || jit.Runner.GetName() != "jitr-i-0001" ||
				jit.Runner.GetStatus() != "offline" || jit.Runner.GetOS() != "unknown" || len(jit.Runner.Labels) != 3 {
				t.Errorf("jit = %+v (status %d)", jit.Runner, resp.StatusCode)
			}
			if resp.Rate.Remaining != firstRemaining-1 {
				t.Errorf("remaining = %d; want %d", resp.Rate.Remaining, firstRemaining-1)
			}
			_, _, err = c.Actions.GenerateOrgJITConfig(ctx, testOrg, req)
			wantStatus(t, err, http.StatusConflict)
			if !strings.Contains(err.Error(), "Already exists") {
				t.Errorf("conflict err = %v; want Already exists", err)
			}
			_, _, err = c.Actions.GenerateOrgJITConfig(ctx, testOrg, &github.GenerateJITConfigRequest{Name: "x", RunnerGroupID: 4711, Labels: []string{"self-hosted"}})
			wantStatus(t, err, http.StatusUnprocessableEntity)
			if _, _, err := c.Actions.GenerateOrgJITConfig(ctx, testOrg, &github.GenerateJITConfigRequest{Name: "g", RunnerGroupID: gpu, Labels: []string{"self-hosted"}}); err != nil {
				t.Errorf("custom group: %v", err)
			}
			repoJIT, _, err := c.Actions.GenerateRepoJITConfig(ctx, testOrg, "app", &github.GenerateJITConfigRequest{Name: "jitr-i-0001", RunnerGroupID: 1, Labels: []string{"self-hosted"}})
			if err != nil {
				t.Fatalf("repo JIT with an org runner's name: %v", err)
			}
			if repoJIT.GetEncodedJITConfig() == jit.GetEncodedJITConfig() {
				t.Error("JIT configs repeat")
			}

			id, err := s.RunnerOnline(jit.GetEncodedJITConfig())
			if err != nil || id != jit.Runner.GetID() {
				t.Fatalf("RunnerOnline = %d, %v; want %d", id, err, jit.Runner.GetID())
			}
			rn, _, err := c.Actions.GetOrganizationRunner(ctx, testOrg, id)
			if err != nil || rn.GetStatus() != "online" || rn.GetOS() != "Linux" || rn.GetBusy() {
				t.Fatalf("runner = %+v, %v; want online idle Linux", rn, err)
			}

			// Paginate over more than 100 runners the way callers do.
			for i := range 150 {
				if _, err := s.AddRunner(testOrg, Runner{Name: fmt.Sprintf("bulk-%03d", i), Labels: []string{"self-hosted"}}); err != nil {
					t.Fatal(err)
				}
			}
			opts := &github.ListOptions{PerPage: 100}
			var all []*github.Runner
			pages := 0
			for {
				page, resp, err := c.Actions.ListOrganizationRunners(ctx, testOrg, opts)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				all = append(all, page.Runners...)
				if page.TotalCount != 152 {
					t.Errorf("total_count = %d; want 152", page.TotalCount)
				}
				if pages == 1 && (resp.NextPage != 2 || resp.LastPage != 2) {
					t.Errorf("first page: next %d last %d; want 2 2", resp.NextPage, resp.LastPage)
				}
				if resp.NextPage == 0 {
					break
				}
				opts.Page = resp.NextPage
			}
			if pages != 2 || len(all) != 152 {
				t.Errorf("pages %d runners %d; want 2 and 152", pages, len(all))
			}
			repoRunners, _, err := c.Actions.ListRunners(ctx, testOrg, "app", nil)
			if err != nil || repoRunners.TotalCount != 1 {
				t.Errorf("repo runners = %+v, %v; want 1", repoRunners, err)
			}

			if err := s.SetRunnerBusy(id, true); err != nil {
				t.Fatal(err)
			}
			_, err = c.Actions.RemoveOrganizationRunner(ctx, testOrg, id)
			wantStatus(t, err, http.StatusUnprocessableEntity)
			if !strings.Contains(err.Error(), "is still running a job") {
				t.Errorf("busy delete err = %v", err)
			}
			_ = s.SetRunnerBusy(id, false)
			resp, err = c.Actions.RemoveOrganizationRunner(ctx, testOrg, id)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("delete = %v, %v; want 204", resp, err)
			}
			_, _, err = c.Actions.GetOrganizationRunner(ctx, testOrg, id)
			wantStatus(t, err, http.StatusNotFound)
			_, err = c.Actions.RemoveRunner(ctx, testOrg, "app", repoJIT.Runner.GetID())
			if err != nil {
				t.Errorf("repo delete: %v", err)
			}

			job := s.AddJob(Job{ID: 777, Owner: testOrg, Repo: "app", Labels: []string{"self-hosted", "linux"}, RunnerName: "jitr-i-0001", RunnerID: id, Status: JobInProgress})
			wj, _, err := c.Actions.GetWorkflowJobByID(ctx, testOrg, "app", 777)
			if err != nil {
				t.Fatal(err)
			}
			if wj.GetStatus() != "in_progress" || wj.GetRunID() != job.RunID || wj.GetRunnerName() != "jitr-i-0001" || wj.GetRunnerID() != id ||
				wj.Conclusion != nil || wj.CompletedAt != nil || wj.GetRunAttempt() != 1 || len(wj.Labels) != 2 || wj.GetCreatedAt().IsZero() {
				t.Errorf("job = %+v", wj)
			}
			_, err = c.Actions.RerunJobByID(ctx, testOrg, "app", 777)
			wantStatus(t, err, http.StatusForbidden)
			if err := s.CompleteJob(777, "failure"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Actions.RerunJobByID(ctx, testOrg, "app", 777); err != nil {
				t.Errorf("rerun completed job: %v", err)
			}
			if s.Reruns(777) != 1 {
				t.Errorf("Reruns = %d; want 1", s.Reruns(777))
			}

			if got := s.TokenRequests(); got != 1 {
				t.Errorf("TokenRequests() = %d; want 1 (ghinstallation caches the token)", got)
			}

			s.FailNext(1, http.StatusBadGateway, APIRoute)
			_, _, err = c.Actions.ListOrganizationRunners(ctx, testOrg, nil)
			wantStatus(t, err, http.StatusBadGateway)

			// Last: go-github refuses requests until Retry-After has passed.
			s.InjectRetryAfter(1, 1, RouteListOrgRunners)
			_, _, err = c.Actions.ListOrganizationRunners(ctx, testOrg, nil)
			var abuse *github.AbuseRateLimitError
			if !errors.As(err, &abuse) || abuse.GetRetryAfter() != time.Second {
				t.Fatalf("err = %v; want *github.AbuseRateLimitError with RetryAfter 1s", err)
			}
			if got := s.InjectedFaults(); got != 2 {
				t.Errorf("InjectedFaults() = %d; want 2", got)
			}
		})
	}
}

func TestGoGitHubRateLimitError(t *testing.T) {
	t.Parallel()
	s := newServer(t, WithRateLimit(2))
	c, itr := newClient(t, s, false, s.PrivateKeyPEM())
	ctx := context.Background()
	for i := range 2 {
		if _, _, err := c.Actions.ListOrganizationRunners(ctx, testOrg, nil); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// The last response said remaining 0, so go-github itself refuses.
	_, _, err := c.Actions.ListOrganizationRunners(ctx, testOrg, nil)
	var rle *github.RateLimitError
	if !errors.As(err, &rle) || rle.Rate.Remaining != 0 || rle.Rate.Limit != 2 {
		t.Fatalf("err = %v; want *github.RateLimitError with remaining 0", err)
	}
	if got := s.Calls(RouteListOrgRunners); got != 2 {
		t.Errorf("Calls = %d; want 2 (client-side refusal)", got)
	}
	// A client without that memory, on the same token, gets the server's 403.
	fresh := github.NewClient(&http.Client{Transport: itr})
	fresh.BaseURL = c.BaseURL
	_, _, err = fresh.Actions.ListOrganizationRunners(ctx, testOrg, nil)
	if !errors.As(err, &rle) || rle.Rate.Remaining != 0 || !strings.Contains(rle.Message, "API rate limit exceeded for installation ID 4242") {
		t.Fatalf("err = %v; want the server's *github.RateLimitError", err)
	}
	if got := s.Calls(RouteListOrgRunners); got != 3 {
		t.Errorf("Calls = %d; want 3", got)
	}
}

func TestGhinstallation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("wrong key", func(t *testing.T) {
		t.Parallel()
		s := newServer(t)
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})
		c, _ := newClient(t, s, false, pemKey)
		_, _, err = c.Actions.ListOrganizationRunners(ctx, testOrg, nil)
		var he *ghinstallation.HTTPError
		if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != http.StatusUnauthorized {
			t.Fatalf("err = %v; want *ghinstallation.HTTPError with 401", err)
		}
		if s.Calls(RouteListOrgRunners) != 0 {
			t.Error("API called without a token")
		}
	})

	t.Run("unknown installation", func(t *testing.T) {
		t.Parallel()
		s := NewForTest(t, WithAppKey(sharedKey())) // no installations
		c, _ := newClient(t, s, false, s.PrivateKeyPEM())
		_, _, err := c.Actions.ListOrganizationRunners(ctx, testOrg, nil)
		var he *ghinstallation.HTTPError
		if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != http.StatusNotFound {
			t.Fatalf("err = %v; want *ghinstallation.HTTPError with 404", err)
		}
	})

	t.Run("expires_at drives refresh", func(t *testing.T) {
		t.Parallel()
		// ghinstallation refreshes a token a minute before expires_at, so a
		// 30 s token is refreshed before every request.
		s := newServer(t, WithTokenTTL(30*time.Second))
		c, itr := newClient(t, s, false, s.PrivateKeyPEM())
		for range 3 {
			if _, _, err := c.Actions.ListOrganizationRunners(ctx, testOrg, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.TokenRequests(); got != 3 {
			t.Errorf("TokenRequests() = %d; want 3", got)
		}
		exp, _, err := itr.Expiry()
		if err != nil || time.Until(exp) > 31*time.Second || time.Until(exp) < 0 {
			t.Errorf("Expiry() = %v, %v; want about 30s from now", exp, err)
		}
	})

	t.Run("apps transport", func(t *testing.T) {
		t.Parallel()
		s := newServer(t)
		atr, err := ghinstallation.NewAppsTransport(s.Client().Transport, s.AppID(), s.PrivateKeyPEM())
		if err != nil {
			t.Fatal(err)
		}
		c, err := github.NewClient(&http.Client{Transport: atr}).WithEnterpriseURLs(s.GHESURL(), s.GHESURL())
		if err != nil {
			t.Fatal(err)
		}
		tok, resp, err := c.Apps.CreateInstallationToken(ctx, testInstallation, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(tok.GetToken(), "ghs_") || time.Until(tok.GetExpiresAt().Time) < 59*time.Minute {
			t.Errorf("token = %+v (status %d)", tok, resp.StatusCode)
		}
		if tok.GetPermissions().GetOrganizationSelfHostedRunners() != "write" {
			t.Errorf("permissions = %+v", tok.GetPermissions())
		}
	})
}

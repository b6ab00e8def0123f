package githubapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

// secretSpy is the network under the Client: it collects every credential
// that crosses it (App JWTs, installation tokens) so the test can look for
// them in errors and logs.
type secretSpy struct {
	mu      sync.Mutex
	base    http.RoundTripper
	secrets map[string]bool
}

func (s *secretSpy) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, cred, ok := strings.Cut(req.Header.Get("Authorization"), " "); ok {
		s.add(cred)
	}
	resp, err := s.base.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/access_tokens") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var tok struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(body, &tok) == nil {
		s.add(tok.Token)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func (s *secretSpy) add(v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[v] = true
}

func (s *secretSpy) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for v := range s.secrets {
		out = append(out, v)
	}
	return out
}

func TestJITConfigRedacted(t *testing.T) {
	t.Parallel()
	j := JITConfig{RunnerID: 42, Encoded: "c2VjcmV0LWppdC1jb25maWc="}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("jit", "cfg", j, "ptr", &j)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("jit", "cfg", j)
	b, err := json.Marshal(map[string]any{"cfg": j})
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(j), fmt.Sprintf("%v %+v %#v %s %q", j, j, j, j, j), fmt.Sprintf("%v %+v %#v", &j, &j, &j),
		fmt.Sprintf("%v", []JITConfig{j}), fmt.Sprintf("%+v", struct{ C JITConfig }{j}),
		buf.String(), string(b),
	}
	for _, out := range outs {
		if strings.Contains(out, j.Encoded) {
			t.Errorf("JIT config leaked: %s", out)
		}
	}
	if !strings.Contains(outs[0], "42") || !strings.Contains(outs[0], redacted) || !strings.Contains(buf.String(), `"runner_id":42`) {
		t.Errorf("String = %q, log = %s; want the runner id and the redaction", outs[0], buf.String())
	}
}

func TestNoSecretsInErrorsOrLogs(t *testing.T) {
	t.Parallel()
	srv := newFake(t)
	spy := &secretSpy{base: http.DefaultTransport, secrets: map[string]bool{}}
	var jits []string
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	c := newTestClient(t, srv, ScopeOrg, func(c *Config) {
		c.HTTPClient = &http.Client{Transport: spy}
		c.MaxAttempts = 3
	})
	ctx := context.Background()

	// Successes, retries, a conflict replaced, then every kind of failure.
	srv.FailNext(1, http.StatusBadGateway, ghfake.RouteOrgJITConfig)
	srv.InjectRetryAfter(1, 1, ghfake.RouteOrgJITConfig)
	jit, err := c.GenerateJITConfig(ctx, inst, "jitr-i-1", labels)
	collect(err)
	jits = append(jits, jit.Encoded)
	c.cfg.Logger.Info("generated", "jit", jit)
	if _, err := srv.RunnerOnline(jit.Encoded); err != nil {
		t.Fatal(err)
	}
	jit, err = c.GenerateJITConfig(ctx, inst, "jitr-i-1", labels) // 409, replaced
	collect(err)
	jits = append(jits, jit.Encoded)
	_ = srv.SetRunnerBusy(jit.RunnerID, true)
	_, err = c.GenerateJITConfig(ctx, inst, "jitr-i-1", labels) // 409, busy
	collect(err)
	collect(c.DeleteRunner(ctx, inst, jit.RunnerID))
	srv.FailNext(5, http.StatusInternalServerError, ghfake.RouteListOrgRunners)
	_, err = c.ListRunners(ctx, inst, "")
	collect(err)
	srv.InjectRetryAfter(1, 3600, ghfake.RouteGetJob)
	_, err = c.GetJob(ctx, inst, 1)
	collect(err)
	_, err = c.GetJob(ctx, inst, 1)
	collect(err)
	collect(c.RerunJob(ctx, inst, 1))
	_, err = c.GenerateJITConfig(ctx, inst, "jitr-i-2", nil)
	collect(err)
	srv.FailNext(5, http.StatusUnauthorized, ghfake.RouteAccessToken)
	_, err = c.ListRunners(ctx, Installation{ID: 77, Owner: "acme"}, "")
	collect(err)

	if len(errs) != 8 {
		t.Errorf("errors = %d; want 8: %v", len(errs), errs)
	}
	secrets := append(spy.all(), jits...)
	if len(secrets) < 4 {
		t.Fatalf("collected %d secrets; the spy saw too little", len(secrets))
	}
	secrets = append(secrets, string(srv.PrivateKeyPEM()))
	var texts []string
	for _, err := range errs {
		texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
	texts = append(texts, c.logs.String())
	for _, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("secret %.8s... leaked into %q", s, text)
			}
		}
	}
	if !strings.Contains(c.logs.String(), "retrying") {
		t.Errorf("logs lack the retries: %s", c.logs)
	}
}

package ghfake

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

const (
	testInstallation int64 = 4242
	testOrg                = "acme"
)

// sharedKey saves generating a 2048-bit key per test.
var sharedKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	opts = append([]Option{WithAppKey(sharedKey()), WithInstallation(testInstallation, testOrg)}, opts...)
	return NewForTest(t, opts...)
}

// signJWT signs claims with key as RS256 (or writes header alg as given, for
// negative tests).
func signJWT(t *testing.T, key *rsa.PrivateKey, alg string, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	hb, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signing := enc(hb) + "." + enc(cb)
	if alg != "RS256" {
		return signing + "."
	}
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc(sig)
}

func appJWT(t *testing.T, s *Server, now time.Time) string {
	t.Helper()
	iat := now.Add(-30 * time.Second).Unix()
	return signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 120, "iss": s.AppID()})
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

func (r result) message(t *testing.T) string {
	t.Helper()
	msg, _ := r.json(t)["message"].(string)
	return msg
}

// call sends one request with plain net/http. auth is the full
// Authorization value ("" for none).
func call(t *testing.T, s *Server, method, path, auth string, body any) result {
	t.Helper()
	res, err := tryCall(s, method, path, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryCall is call for goroutines other than the test's.
func tryCall(s *Server, method, path, auth string, body any) (result, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return result{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(s.URL(), "/")+path, rd)
	if err != nil {
		return result{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	return result{status: resp.StatusCode, header: resp.Header, body: raw}, nil
}

// installationToken gets a token for the test installation over plain HTTP.
func installationToken(t *testing.T, s *Server, now time.Time) string {
	t.Helper()
	res := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", testInstallation), "Bearer "+appJWT(t, s, now), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("access token: got %d %s; want 201", res.status, res.body)
	}
	return res.json(t)["token"].(string)
}

func jitBody(name string, group int64, labels ...string) map[string]any {
	return map[string]any{"name": name, "runner_group_id": group, "labels": labels, "work_folder": "_work"}
}

func TestNewGeneratesKey(t *testing.T) {
	t.Parallel()
	s := NewForTest(t, WithAppID(99))
	if got := s.AppID(); got != 99 {
		t.Errorf("AppID() = %d; want 99", got)
	}
	block, _ := pem.Decode(s.PrivateKeyPEM())
	if block == nil || block.Type != "RSA PRIVATE KEY" {
		t.Fatalf("PrivateKeyPEM is not a PKCS#1 PEM block: %v", block)
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.N.BitLen(); got != 2048 {
		t.Errorf("key size = %d; want 2048", got)
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q; want loopback 127.0.0.1", s.URL())
	}
	s.Close()
	s.Close() // idempotent
}

func TestJWT(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now))
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	iat := now.Add(-30 * time.Second).Unix()
	path := fmt.Sprintf("/app/installations/%d/access_tokens", testInstallation)
	tests := []struct {
		name    string
		auth    string
		want    int
		wantMsg string
	}{
		{"valid numeric iss", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 600, "iss": s.AppID()}), 201, ""},
		{"valid string iss", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": strconv.FormatInt(s.AppID(), 10)}), 201, ""},
		{"token scheme", "token " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": s.AppID()}), 201, ""},
		{"wrong key", "Bearer " + signJWT(t, other, "RS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": s.AppID()}), 401, msgJWTDecode},
		{"expired", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat - 600, "exp": iat - 60, "iss": s.AppID()}), 401, msgJWTExpiry},
		{"exp too far", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 601, "iss": s.AppID()}), 401, msgJWTExpiryTooFar},
		{"alg none", "Bearer " + signJWT(t, s.PrivateKey(), "none", map[string]any{"iat": iat, "exp": iat + 60, "iss": s.AppID()}), 401, msgJWTDecode},
		{"alg HS256", "Bearer " + signJWT(t, s.PrivateKey(), "HS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": s.AppID()}), 401, msgJWTDecode},
		{"missing iat", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"exp": iat + 60, "iss": s.AppID()}), 401, msgJWTIssuedAt},
		{"missing exp", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "iss": s.AppID()}), 401, msgJWTExpiry},
		{"fractional exp", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": float64(iat) + 60.5, "iss": s.AppID()}), 401, msgJWTExpiry},
		{"missing iss", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 60}), 401, msgJWTIssuer},
		{"other app", "Bearer " + signJWT(t, s.PrivateKey(), "RS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": s.AppID() + 1}), 401, msgJWTDecode},
		{"garbage", "Bearer not-a-jwt", 401, msgJWTDecode},
		{"installation token instead", "token ghs_abcdefghijklmnopqrstuvwxyz0123456789", 401, msgJWTDecode},
		{"missing", "", 401, msgJWTDecode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, "POST", path, tc.auth, nil)
			if res.status != tc.want {
				t.Fatalf("status = %d (%s); want %d", res.status, res.body, tc.want)
			}
			if tc.wantMsg != "" {
				if got := res.message(t); got != tc.wantMsg {
					t.Errorf("message = %q; want %q", got, tc.wantMsg)
				}
				if doc, _ := res.json(t)["documentation_url"].(string); doc == "" {
					t.Error("documentation_url missing")
				}
			}
		})
	}
}

func TestAccessToken(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now))
	now := clock.Now()

	res := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", testInstallation), "Bearer "+appJWT(t, s, now), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("status = %d (%s); want 201", res.status, res.body)
	}
	body := res.json(t)
	tok, _ := body["token"].(string)
	if !strings.HasPrefix(tok, "ghs_") || len(tok) != 40 {
		t.Errorf("token = %q; want ghs_ + 36 characters", tok)
	}
	if got, want := body["expires_at"], now.Add(time.Hour).UTC().Format(time.RFC3339); got != want {
		t.Errorf("expires_at = %v; want %v", got, want)
	}
	if body["repository_selection"] != "all" {
		t.Errorf("repository_selection = %v; want all", body["repository_selection"])
	}
	if perms, _ := body["permissions"].(map[string]any); perms["organization_self_hosted_runners"] != "write" {
		t.Errorf("permissions = %v; want organization_self_hosted_runners write", perms)
	}

	scoped := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", testInstallation), "Bearer "+appJWT(t, s, now),
		map[string]any{"repositories": []string{"app"}, "permissions": map[string]string{"actions": "read"}}).json(t)
	if scoped["repository_selection"] != "selected" || scoped["permissions"].(map[string]any)["actions"] != "read" {
		t.Errorf("scoped token = %v; want selected repositories and requested permissions", scoped)
	}

	if res := call(t, s, "POST", "/app/installations/999/access_tokens", "Bearer "+appJWT(t, s, now), nil); res.status != http.StatusNotFound {
		t.Errorf("unknown installation: status = %d; want 404", res.status)
	}
	if got := s.TokenRequests(); got != 3 {
		t.Errorf("TokenRequests() = %d; want 3", got)
	}

	anyInst := newServer(t, WithAnyInstallation(), WithClock(clock.Now))
	res = call(t, anyInst, "POST", "/app/installations/777/access_tokens", "Bearer "+appJWT(t, anyInst, now), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("WithAnyInstallation: status = %d; want 201", res.status)
	}
	tok = res.json(t)["token"].(string)
	for _, org := range []string{"one", "two"} {
		if res := call(t, anyInst, "GET", "/orgs/"+org+"/actions/runners", "token "+tok, nil); res.status != http.StatusOK {
			t.Errorf("implicit installation token on %s: status = %d; want 200", org, res.status)
		}
	}
}

func TestInstallationTokenAuth(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now))
	tok := installationToken(t, s, clock.Now())
	s.AddInstallation(5, "other")

	tests := []struct {
		name string
		path string
		auth string
		want int
	}{
		{"token scheme", "/orgs/acme/actions/runners", "token " + tok, 200},
		{"bearer scheme", "/orgs/acme/actions/runners", "Bearer " + tok, 200},
		{"owner case-insensitive", "/orgs/ACME/actions/runners", "token " + tok, 200},
		{"ghes prefix", "/api/v3/orgs/acme/actions/runners", "token " + tok, 200},
		{"repo path of owner", "/repos/acme/app/actions/runners", "token " + tok, 200},
		{"other owner", "/orgs/other/actions/runners", "token " + tok, 401},
		{"other owner repo", "/repos/other/app/actions/runners", "token " + tok, 401},
		{"unknown token", "/orgs/acme/actions/runners", "token ghs_unknown", 401},
		{"no auth", "/orgs/acme/actions/runners", "", 401},
		{"app jwt", "/orgs/acme/actions/runners", "Bearer " + appJWT(t, s, clock.Now()), 401},
		{"unknown route", "/orgs/acme/teams", "token " + tok, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, "GET", tc.path, tc.auth, nil)
			if res.status != tc.want {
				t.Fatalf("status = %d (%s); want %d", res.status, res.body, tc.want)
			}
			if tc.want == 401 {
				if got := res.message(t); got != "Bad credentials" {
					t.Errorf("message = %q; want Bad credentials", got)
				}
			}
		})
	}

	t.Run("expiry", func(t *testing.T) {
		clock.Advance(59 * time.Minute)
		if res := call(t, s, "GET", "/orgs/acme/actions/runners", "token "+tok, nil); res.status != 200 {
			t.Fatalf("after 59m: status = %d; want 200", res.status)
		}
		clock.Advance(time.Minute)
		if res := call(t, s, "GET", "/orgs/acme/actions/runners", "token "+tok, nil); res.status != 401 {
			t.Fatalf("after 1h: status = %d; want 401", res.status)
		}
		if tok2 := installationToken(t, s, clock.Now()); tok2 == tok {
			t.Error("new token equals the expired one")
		}
	})
}

func TestRunnerGroups(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	id := s.AddRunnerGroup(testOrg, "gpu")
	if again := s.AddRunnerGroup(testOrg, "GPU"); again != id {
		t.Errorf("AddRunnerGroup again = %d; want %d", again, id)
	}
	if id == DefaultRunnerGroupID {
		t.Fatalf("AddRunnerGroup returned the Default id")
	}

	res := call(t, s, "GET", "/orgs/acme/actions/runner-groups", tok, nil)
	var body struct {
		TotalCount   int `json:"total_count"`
		RunnerGroups []struct {
			ID      int64  `json:"id"`
			Name    string `json:"name"`
			Default bool   `json:"default"`
		} `json:"runner_groups"`
	}
	if err := json.Unmarshal(res.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.TotalCount != 2 || len(body.RunnerGroups) != 2 {
		t.Fatalf("groups = %+v; want 2", body)
	}
	if g := body.RunnerGroups[0]; g.ID != 1 || g.Name != "Default" || !g.Default {
		t.Errorf("first group = %+v; want Default id 1", g)
	}
	if g := body.RunnerGroups[1]; g.ID != id || g.Name != "gpu" || g.Default {
		t.Errorf("second group = %+v; want gpu id %d", g, id)
	}

	page := call(t, s, "GET", "/orgs/acme/actions/runner-groups?per_page=1", tok, nil)
	if link := page.header.Get("Link"); !strings.Contains(link, `page=2>; rel="next"`) {
		t.Errorf("Link = %q; want rel=next page 2", link)
	}
	// Another org has only Default.
	s.AddInstallation(7, "solo")
	res = call(t, s, "POST", "/app/installations/7/access_tokens", "Bearer "+appJWT(t, s, time.Now()), nil)
	solo := call(t, s, "GET", "/orgs/solo/actions/runner-groups", "token "+res.json(t)["token"].(string), nil).json(t)
	if solo["total_count"] != float64(1) {
		t.Errorf("solo groups = %v; want only Default", solo)
	}
}

func TestJITConfig(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	gpu := s.AddRunnerGroup(testOrg, "gpu")

	tests := []struct {
		name    string
		path    string
		body    any
		want    int
		wantMsg string
	}{
		{"org", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("r1", 1, "self-hosted", "linux", "x64", "default"), 201, ""},
		{"org custom group", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("r2", gpu, "self-hosted"), 201, ""},
		{"repo", "/repos/acme/app/actions/runners/generate-jitconfig", jitBody("r1", 1, "self-hosted"), 201, ""},
		{"ghes", "/api/v3/orgs/acme/actions/runners/generate-jitconfig", jitBody("r3", 1, "self-hosted"), 201, ""},
		{"duplicate org", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("r1", 1, "self-hosted"), 409, "Already exists - A runner with the name r1 already exists."},
		{"duplicate case", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("R1", 1, "self-hosted"), 409, "Already exists - A runner with the name R1 already exists."},
		{"duplicate repo", "/repos/acme/app/actions/runners/generate-jitconfig", jitBody("r1", 1, "self-hosted"), 409, "Already exists - A runner with the name r1 already exists."},
		{"empty name", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("", 1, "self-hosted"), 422, ""},
		{"empty labels", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("r4", 1), 422, ""},
		{"missing group", "/orgs/acme/actions/runners/generate-jitconfig", map[string]any{"name": "r5", "labels": []string{"x"}}, 422, ""},
		{"unknown group", "/orgs/acme/actions/runners/generate-jitconfig", jitBody("r6", 99, "self-hosted"), 422, ""},
		{"repo non-default group", "/repos/acme/app/actions/runners/generate-jitconfig", jitBody("r7", gpu, "self-hosted"), 422, ""},
		{"bad json", "/orgs/acme/actions/runners/generate-jitconfig", "{", 400, "Problems parsing JSON"},
	}
	configs := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, "POST", tc.path, tok, tc.body)
			if res.status != tc.want {
				t.Fatalf("status = %d (%s); want %d", res.status, res.body, tc.want)
			}
			if tc.wantMsg != "" {
				if got := res.message(t); got != tc.wantMsg {
					t.Errorf("message = %q; want %q", got, tc.wantMsg)
				}
			}
			if tc.want != 201 {
				return
			}
			var body struct {
				Runner struct {
					ID     int64  `json:"id"`
					Name   string `json:"name"`
					OS     string `json:"os"`
					Status string `json:"status"`
					Busy   *bool  `json:"busy"`
					Labels []struct {
						ID   int64  `json:"id"`
						Name string `json:"name"`
						Type string `json:"type"`
					} `json:"labels"`
				} `json:"runner"`
				Encoded string `json:"encoded_jit_config"`
			}
			if err := json.Unmarshal(res.body, &body); err != nil {
				t.Fatal(err)
			}
			r := body.Runner
			if r.ID == 0 || r.OS != "unknown" || r.Status != "offline" || r.Busy == nil || *r.Busy {
				t.Errorf("runner = %+v; want id, os unknown, offline, busy false", r)
			}
			if len(r.Labels) == 0 || r.Labels[0].Name != "self-hosted" || r.Labels[0].Type != "read-only" || r.Labels[0].ID == 0 {
				t.Errorf("labels = %+v; want self-hosted read-only first", r.Labels)
			}
			for _, l := range r.Labels {
				if l.Name == "default" && l.Type != "custom" {
					t.Errorf("label default type = %q; want custom", l.Type)
				}
			}
			raw, err := base64.StdEncoding.DecodeString(body.Encoded)
			if err != nil || !json.Valid(raw) {
				t.Errorf("encoded_jit_config is not base64 JSON: %v", err)
			}
			if configs[body.Encoded] {
				t.Error("encoded_jit_config repeated")
			}
			configs[body.Encoded] = true
		})
	}
	if got, want := s.JITConfigRequests(), len(tests); got != want {
		t.Errorf("JITConfigRequests() = %d; want %d", got, want)
	}
	if got := len(s.Runners(testOrg)); got != 3 {
		t.Errorf("org runners = %d; want 3", got)
	}
	if got := len(s.Runners("acme/app")); got != 1 {
		t.Errorf("repo runners = %d; want 1", got)
	}
}

func TestRunnerOnline(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	res := call(t, s, "POST", "/orgs/acme/actions/runners/generate-jitconfig", tok, jitBody("jitr-i-1", 1, "self-hosted", "linux"))
	body := res.json(t)
	encoded := body["encoded_jit_config"].(string)
	wantID := int64(body["runner"].(map[string]any)["id"].(float64))

	id, err := s.RunnerOnline(encoded)
	if err != nil || id != wantID {
		t.Fatalf("RunnerOnline = %d, %v; want %d, nil", id, err, wantID)
	}
	rn, ok := s.RunnerByName(testOrg, "jitr-i-1")
	if !ok || rn.Status != RunnerStatusOnline || rn.OS != "Linux" || !rn.Ephemeral {
		t.Errorf("runner = %+v, %v; want online Linux ephemeral", rn, ok)
	}
	if _, err := s.RunnerOnline(encoded); !errors.Is(err, ErrJITConfigUsed) {
		t.Errorf("second RunnerOnline err = %v; want ErrJITConfigUsed", err)
	}
	if _, err := s.RunnerOnline("bm9wZQ=="); !errors.Is(err, ErrUnknownJITConfig) {
		t.Errorf("unknown config err = %v; want ErrUnknownJITConfig", err)
	}

	res = call(t, s, "POST", "/orgs/acme/actions/runners/generate-jitconfig", tok, jitBody("jitr-i-2", 1, "self-hosted"))
	encoded2 := res.json(t)["encoded_jit_config"].(string)
	rn2, _ := s.RunnerByName(testOrg, "jitr-i-2")
	s.DeleteRunner(rn2.ID)
	if _, err := s.RunnerOnline(encoded2); !errors.Is(err, ErrRunnerNotFound) {
		t.Errorf("deleted runner err = %v; want ErrRunnerNotFound", err)
	}
}

func TestRunnerGetDelete(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	idle, err := s.AddRunner(testOrg, Runner{Name: "idle", Labels: []string{"self-hosted"}})
	if err != nil {
		t.Fatal(err)
	}
	busy, _ := s.AddRunner(testOrg, Runner{Name: "busy", Labels: []string{"self-hosted"}})
	repoRunner, _ := s.AddRunner("acme/app", Runner{Name: "repo-runner", Labels: []string{"self-hosted"}})
	if err := s.SetRunnerBusy(busy.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunnerStatus(busy.ID, RunnerStatusOnline); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunnerStatus(busy.ID, "idle"); !errors.Is(err, ErrInvalidStatus) {
		t.Errorf("SetRunnerStatus(idle) err = %v; want ErrInvalidStatus", err)
	}
	if err := s.SetRunnerBusy(9999, true); !errors.Is(err, ErrRunnerNotFound) {
		t.Errorf("SetRunnerBusy(unknown) err = %v; want ErrRunnerNotFound", err)
	}
	if _, err := s.AddRunner(testOrg, Runner{Name: "IDLE"}); !errors.Is(err, ErrRunnerExists) {
		t.Errorf("AddRunner duplicate err = %v; want ErrRunnerExists", err)
	}

	org := func(id int64) string { return fmt.Sprintf("/orgs/acme/actions/runners/%d", id) }
	tests := []struct {
		name    string
		method  string
		path    string
		want    int
		wantMsg string
	}{
		{"get", "GET", org(busy.ID), 200, ""},
		{"get repo runner", "GET", fmt.Sprintf("/repos/acme/app/actions/runners/%d", repoRunner.ID), 200, ""},
		{"get repo runner via org", "GET", org(repoRunner.ID), 404, "Not Found"},
		{"get unknown", "GET", org(9999), 404, "Not Found"},
		{"get non-numeric", "GET", "/orgs/acme/actions/runners/abc", 404, "Not Found"},
		{"delete busy", "DELETE", org(busy.ID), 422, `Bad request - Runner "busy" is still running a job"`},
		{"delete unknown", "DELETE", org(9999), 404, "Not Found"},
		{"delete idle", "DELETE", org(idle.ID), 204, ""},
		{"delete idle again", "DELETE", org(idle.ID), 404, "Not Found"},
		{"delete repo runner", "DELETE", fmt.Sprintf("/repos/acme/app/actions/runners/%d", repoRunner.ID), 204, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, tc.method, tc.path, tok, nil)
			if res.status != tc.want {
				t.Fatalf("status = %d (%s); want %d", res.status, res.body, tc.want)
			}
			if tc.wantMsg != "" {
				if got := res.message(t); got != tc.wantMsg {
					t.Errorf("message = %q; want %q", got, tc.wantMsg)
				}
			}
			if tc.want == 204 && len(res.body) != 0 {
				t.Errorf("204 body = %q; want empty", res.body)
			}
		})
	}
	got := call(t, s, "GET", org(busy.ID), tok, nil).json(t)
	if got["name"] != "busy" || got["busy"] != true || got["status"] != "online" {
		t.Errorf("runner = %v; want busy online", got)
	}
	if _, ok := s.Runner(idle.ID); ok {
		t.Error("deleted runner still present")
	}
}

func TestRunnersPagination(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	const n = 250
	for i := range n {
		if _, err := s.AddRunner(testOrg, Runner{Name: fmt.Sprintf("runner-%03d", i), Labels: []string{"self-hosted"}}); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		TotalCount int `json:"total_count"`
		Runners    []struct {
			ID   int64  `json:"id"`
			Name string `json:"name"`
		} `json:"runners"`
	}
	tests := []struct {
		name      string
		query     string
		wantCount int
		wantFirst string
		wantRels  []string
		noRels    []string
	}{
		{"default per_page", "", 30, "runner-000", []string{`page=2>; rel="next"`, `page=9>; rel="last"`}, []string{`rel="prev"`}},
		{"first of three", "?per_page=100", 100, "runner-000", []string{`page=2>; rel="next"`, `page=3>; rel="last"`}, []string{`rel="prev"`, `rel="first"`}},
		{"middle", "?per_page=100&page=2", 100, "runner-100", []string{`page=1>; rel="prev"`, `page=3>; rel="next"`, `page=3>; rel="last"`, `page=1>; rel="first"`}, nil},
		{"last", "?per_page=100&page=3", 50, "runner-200", []string{`page=2>; rel="prev"`, `page=1>; rel="first"`}, []string{`rel="next"`, `rel="last"`}},
		{"per_page clamped", "?per_page=500", 100, "runner-000", []string{`per_page=100`, `rel="next"`}, nil},
		{"past the end", "?per_page=100&page=7", 0, "", nil, []string{`rel="next"`}},
		{"name filter", "?name=runner-123", 1, "runner-123", nil, []string{`rel="next"`}},
		{"name filter miss", "?name=runner-12", 0, "", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, "GET", "/orgs/acme/actions/runners"+tc.query, tok, nil)
			if res.status != 200 {
				t.Fatalf("status = %d; want 200", res.status)
			}
			var p page
			if err := json.Unmarshal(res.body, &p); err != nil {
				t.Fatal(err)
			}
			if len(p.Runners) != tc.wantCount {
				t.Errorf("runners = %d; want %d", len(p.Runners), tc.wantCount)
			}
			if tc.wantFirst != "" && (len(p.Runners) == 0 || p.Runners[0].Name != tc.wantFirst) {
				t.Errorf("first runner = %+v; want %s", p.Runners, tc.wantFirst)
			}
			if !strings.HasPrefix(tc.query, "?name") && p.TotalCount != n {
				t.Errorf("total_count = %d; want %d", p.TotalCount, n)
			}
			link := res.header.Get("Link")
			for _, want := range tc.wantRels {
				if !strings.Contains(link, want) {
					t.Errorf("Link = %q; want it to contain %q", link, want)
				}
			}
			for _, bad := range tc.noRels {
				if strings.Contains(link, bad) {
					t.Errorf("Link = %q; want no %q", link, bad)
				}
			}
		})
	}

	// Following rel="next" visits every runner exactly once, under both prefixes.
	for _, prefix := range []string{"", "/api/v3"} {
		seen := map[int64]bool{}
		next := strings.TrimSuffix(s.URL(), "/") + prefix + "/orgs/acme/actions/runners?per_page=100"
		for next != "" {
			req, _ := http.NewRequest("GET", next, nil)
			req.Header.Set("Authorization", tok)
			resp, err := s.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p page
			err = json.NewDecoder(resp.Body).Decode(&p)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Runners {
				if seen[r.ID] {
					t.Fatalf("runner %d seen twice", r.ID)
				}
				seen[r.ID] = true
			}
			next = ""
			for _, part := range strings.Split(resp.Header.Get("Link"), ",") {
				if strings.Contains(part, `rel="next"`) {
					next = strings.Trim(strings.TrimSpace(strings.Split(part, ";")[0]), "<>")
					if !strings.Contains(next, prefix+"/orgs/") {
						t.Fatalf("next link %q lost prefix %q", next, prefix)
					}
				}
			}
		}
		if len(seen) != n {
			t.Errorf("prefix %q: followed links saw %d runners; want %d", prefix, len(seen), n)
		}
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now), WithRateLimit(3))
	tok := "token " + installationToken(t, s, clock.Now())

	for i := 1; i <= 3; i++ {
		res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil)
		if res.status != 200 {
			t.Fatalf("request %d: status = %d; want 200", i, res.status)
		}
		h := res.header
		if h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != strconv.Itoa(3-i) || h.Get("X-RateLimit-Used") != strconv.Itoa(i) {
			t.Errorf("request %d: limit/remaining/used = %s/%s/%s; want 3/%d/%d", i,
				h.Get("X-RateLimit-Limit"), h.Get("X-RateLimit-Remaining"), h.Get("X-RateLimit-Used"), 3-i, i)
		}
		reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
		if err != nil || reset <= clock.Now().Unix() {
			t.Errorf("X-RateLimit-Reset = %q; want a future unix time", h.Get("X-RateLimit-Reset"))
		}
	}
	res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil)
	if res.status != http.StatusForbidden || res.header.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("exhausted: status = %d remaining = %q; want 403 and 0", res.status, res.header.Get("X-RateLimit-Remaining"))
	}
	if msg := res.message(t); !strings.HasPrefix(msg, "API rate limit exceeded") {
		t.Errorf("message = %q; want API rate limit exceeded ...", msg)
	}
	// Another token has its own budget.
	other := "token " + installationToken(t, s, clock.Now())
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", other, nil); res.status != 200 {
		t.Errorf("other token: status = %d; want 200", res.status)
	}
	// The window resets after an hour (the token also expires, so take a new one).
	clock.Advance(time.Hour)
	tok = "token " + installationToken(t, s, clock.Now())
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil); res.status != 200 || res.header.Get("X-RateLimit-Remaining") != "2" {
		t.Errorf("after reset: status = %d remaining = %q; want 200 and 2", res.status, res.header.Get("X-RateLimit-Remaining"))
	}
	// Unauthenticated requests carry the small anonymous budget.
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", "", nil); res.header.Get("X-RateLimit-Limit") != "60" {
		t.Errorf("anonymous limit = %q; want 60", res.header.Get("X-RateLimit-Limit"))
	}
	s.SetRateLimit(10)
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil); res.header.Get("X-RateLimit-Remaining") != "9" {
		t.Errorf("after SetRateLimit(10): remaining = %q; want 9", res.header.Get("X-RateLimit-Remaining"))
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	list := func() result { return call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil) }

	t.Run("FailNext api only", func(t *testing.T) {
		s.FailNext(2, http.StatusBadGateway, APIRoute)
		installationToken(t, s, time.Now()) // not affected
		for i := range 2 {
			res := list()
			if res.status != http.StatusBadGateway {
				t.Fatalf("request %d: status = %d; want 502", i, res.status)
			}
			if res.header.Get("X-RateLimit-Limit") == "" {
				t.Error("fault without rate-limit headers")
			}
		}
		if res := list(); res.status != 200 {
			t.Fatalf("after faults: status = %d; want 200", res.status)
		}
	})
	t.Run("FailNext route filter", func(t *testing.T) {
		s.FailNext(1, http.StatusInternalServerError, RouteGetJob)
		if res := list(); res.status != 200 {
			t.Fatalf("other route: status = %d; want 200", res.status)
		}
		if res := call(t, s, "GET", "/repos/acme/app/actions/jobs/1", tok, nil); res.status != 500 || res.message(t) != "Server Error" {
			t.Fatalf("filtered route: status = %d (%s); want 500 Server Error", res.status, res.body)
		}
	})
	t.Run("FailNext any includes token endpoint", func(t *testing.T) {
		s.FailNext(1, http.StatusServiceUnavailable)
		res := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", testInstallation), "Bearer "+appJWT(t, s, time.Now()), nil)
		if res.status != 503 {
			t.Fatalf("token endpoint: status = %d; want 503", res.status)
		}
	})
	t.Run("InjectRetryAfter", func(t *testing.T) {
		s.InjectRetryAfter(1, 7)
		res := list()
		if res.status != http.StatusForbidden || res.header.Get("Retry-After") != "7" {
			t.Fatalf("status = %d Retry-After = %q; want 403 and 7", res.status, res.header.Get("Retry-After"))
		}
		if msg := res.message(t); !strings.HasPrefix(msg, "You have exceeded a secondary rate limit") {
			t.Errorf("message = %q; want secondary rate limit", msg)
		}
		if res.header.Get("X-RateLimit-Remaining") == "0" {
			t.Error("secondary rate limit must not claim the primary budget is exhausted")
		}
	})
	t.Run("latency", func(t *testing.T) {
		s.SetLatency(80 * time.Millisecond)
		start := time.Now()
		list()
		if d := time.Since(start); d < 80*time.Millisecond {
			t.Errorf("request took %v; want >= 80ms", d)
		}
		s.SetLatency(0)
	})
	if got := s.InjectedFaults(); got != 5 {
		t.Errorf("InjectedFaults() = %d; want 5", got)
	}
	s.ClearFaults()
	s.ResetCalls()
	if s.InjectedFaults() != 0 || s.TotalCalls() != 0 {
		t.Errorf("after ResetCalls: faults %d calls %d; want 0 0", s.InjectedFaults(), s.TotalCalls())
	}
}

func TestFaultRateSeeded(t *testing.T) {
	t.Parallel()
	pattern := func(seed uint64) string {
		s := newServer(t, WithSeed(seed))
		tok := "token " + installationToken(t, s, time.Now())
		s.SetFaultRate(0.5, http.StatusInternalServerError, APIRoute)
		var b strings.Builder
		for range 40 {
			if call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil).status == 500 {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		if got := strings.Count(b.String(), "x"); got != s.InjectedFaults() {
			t.Errorf("InjectedFaults() = %d; want %d", s.InjectedFaults(), got)
		}
		return b.String()
	}
	a, b := pattern(7), pattern(7)
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n%s", a, b)
	}
	if n := strings.Count(a, "x"); n < 8 || n > 32 {
		t.Errorf("%d of 40 failed at p=0.5: %s", n, a)
	}

	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	s.SetFaultRate(1, http.StatusForbidden)
	res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil)
	if res.status != 403 || res.header.Get("Retry-After") != "1" {
		t.Errorf("p=1 403: status = %d Retry-After = %q; want 403 and 1", res.status, res.header.Get("Retry-After"))
	}
	s.SetFaultRate(0, 0)
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil); res.status != 200 {
		t.Errorf("p=0: status = %d; want 200", res.status)
	}
}

func TestJobs(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now))
	tok := "token " + installationToken(t, s, clock.Now())
	queued := s.AddJob(Job{ID: 501, Owner: "acme", Repo: "app", Labels: []string{"self-hosted", "linux"}})
	done := s.AddJob(Job{Owner: "acme", Repo: "app", Status: JobCompleted, Conclusion: "failure"})
	if queued.RunAttempt != 1 || queued.Status != JobQueued || queued.CreatedAt.IsZero() || queued.StartedAt != queued.CreatedAt {
		t.Errorf("defaults = %+v; want attempt 1, queued, timestamps", queued)
	}
	if done.ID != 502 {
		t.Errorf("next job id = %d; want 502", done.ID)
	}

	res := call(t, s, "GET", "/repos/acme/app/actions/jobs/501", tok, nil)
	if res.status != 200 {
		t.Fatalf("get job: status = %d; want 200", res.status)
	}
	j := res.json(t)
	for k, want := range map[string]any{
		"id": float64(501), "run_id": float64(queued.RunID), "status": "queued", "conclusion": nil,
		"runner_id": nil, "runner_name": nil, "completed_at": nil, "run_attempt": float64(1),
		"name": "build", "workflow_name": "CI", "head_branch": "main",
		"created_at": queued.CreatedAt.Format(time.RFC3339),
		"html_url":   fmt.Sprintf("https://github.com/acme/app/actions/runs/%d/job/501", queued.RunID),
	} {
		if got, ok := j[k]; !ok || got != want {
			t.Errorf("job[%q] = %v (present %v); want %v", k, got, ok, want)
		}
	}
	if labels, _ := j["labels"].([]any); len(labels) != 2 {
		t.Errorf("labels = %v; want 2", j["labels"])
	}

	for _, tc := range []struct {
		name, method, path string
		want               int
		wantMsg            string
	}{
		{"other repo", "GET", "/repos/acme/other/actions/jobs/501", 404, "Not Found"},
		{"unknown", "GET", "/repos/acme/app/actions/jobs/9", 404, "Not Found"},
		{"rerun queued", "POST", "/repos/acme/app/actions/jobs/501/rerun", 403, "Resource not accessible by integration"},
		{"rerun completed", "POST", "/repos/acme/app/actions/jobs/502/rerun", 201, ""},
		{"rerun unknown", "POST", "/repos/acme/app/actions/jobs/9/rerun", 404, "Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, tc.method, tc.path, tok, nil)
			if res.status != tc.want {
				t.Fatalf("status = %d (%s); want %d", res.status, res.body, tc.want)
			}
			if tc.wantMsg != "" && res.message(t) != tc.wantMsg {
				t.Errorf("message = %q; want %q", res.message(t), tc.wantMsg)
			}
		})
	}
	if got := s.Reruns(502); got != 1 {
		t.Errorf("Reruns(502) = %d; want 1", got)
	}
	s.SetRerunAllowed(false)
	if res := call(t, s, "POST", "/repos/acme/app/actions/jobs/502/rerun", tok, nil); res.status != 403 {
		t.Errorf("rerun denied: status = %d; want 403", res.status)
	}
	if got := s.Calls(RouteRerunJob); got != 4 {
		t.Errorf("Calls(RouteRerunJob) = %d; want 4", got)
	}

	// A JIT runner picks the job up and finishes it.
	rn, _ := s.AddRunner(testOrg, Runner{Name: "jitr-i-9", Labels: []string{"self-hosted"}, Ephemeral: true})
	clock.Advance(time.Minute)
	if err := s.StartJob(501, rn.ID); err != nil {
		t.Fatal(err)
	}
	j = call(t, s, "GET", "/repos/acme/app/actions/jobs/501", tok, nil).json(t)
	if j["status"] != "in_progress" || j["runner_name"] != "jitr-i-9" || j["runner_id"] != float64(rn.ID) || j["runner_group_name"] != "Default" {
		t.Errorf("started job = %v; want in_progress on jitr-i-9", j)
	}
	if got, _ := s.Runner(rn.ID); !got.Busy || got.Status != RunnerStatusOnline {
		t.Errorf("runner = %+v; want busy online", got)
	}
	if err := s.CompleteJob(501, ""); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Job(501)
	if got.Status != JobCompleted || got.Conclusion != ConclusionSuccess || got.CompletedAt.IsZero() {
		t.Errorf("completed job = %+v", got)
	}
	if _, ok := s.Runner(rn.ID); ok {
		t.Error("ephemeral runner survived its job")
	}
	if err := s.UpdateJob(501, func(j *Job) { j.Status = JobWaiting }); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateJob(9, func(*Job) {}); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("UpdateJob(unknown) err = %v; want ErrJobNotFound", err)
	}
	if err := s.SetJobStatus(501, "bogus", ""); !errors.Is(err, ErrInvalidStatus) {
		t.Errorf("SetJobStatus(bogus) err = %v; want ErrInvalidStatus", err)
	}

	denied := newServer(t, WithRerunDenied())
	denied.AddJob(Job{ID: 1, Owner: "acme", Repo: "app", Status: JobCompleted})
	dtok := "token " + installationToken(t, denied, time.Now())
	if res := call(t, denied, "POST", "/repos/acme/app/actions/jobs/1/rerun", dtok, nil); res.status != 403 {
		t.Errorf("WithRerunDenied: status = %d; want 403", res.status)
	}
}

func TestCalls(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	call(t, s, "GET", "/orgs/acme/actions/runners", tok, nil)
	call(t, s, "GET", "/api/v3/orgs/acme/actions/runners", tok, nil)
	call(t, s, "GET", "/orgs/acme/actions/runners", "", nil) // 401 still counts
	call(t, s, "GET", "/nope", tok, nil)
	if got := s.Calls(RouteListOrgRunners); got != 3 {
		t.Errorf("Calls(RouteListOrgRunners) = %d; want 3", got)
	}
	if got := s.Calls(RouteUnknown); got != 1 {
		t.Errorf("Calls(RouteUnknown) = %d; want 1", got)
	}
	if got := s.TotalCalls(); got != 5 {
		t.Errorf("TotalCalls() = %d; want 5", got)
	}
	s.ResetCalls()
	if s.TotalCalls() != 0 || s.TokenRequests() != 0 {
		t.Errorf("after ResetCalls: total %d tokens %d; want 0", s.TotalCalls(), s.TokenRequests())
	}
}

func TestConcurrentJIT(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := "token " + installationToken(t, s, time.Now())
	s.SetFaultRate(0.1, http.StatusBadGateway, RouteListOrgRunners)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	var created atomic.Int64
	errs := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// Two workers race for every name; exactly one wins.
				name := fmt.Sprintf("race-%d-%d", w/2, i)
				res, err := tryCall(s, "POST", "/orgs/acme/actions/runners/generate-jitconfig", tok, jitBody(name, 1, "self-hosted"))
				if err != nil {
					errs <- err
					continue
				}
				switch res.status {
				case 201:
					created.Add(1)
					var body struct {
						Encoded string `json:"encoded_jit_config"`
					}
					if err := json.Unmarshal(res.body, &body); err != nil {
						errs <- err
					} else if _, err := s.RunnerOnline(body.Encoded); err != nil {
						errs <- err
					}
				case 409:
				default:
					errs <- fmt.Errorf("status %d", res.status)
				}
				if _, err := tryCall(s, "GET", "/orgs/acme/actions/runners?per_page=5", tok, nil); err != nil {
					errs <- err
				}
				_ = s.Runners(testOrg)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := created.Load(); got != workers/2*each {
		t.Errorf("created %d runners; want %d", got, workers/2*each)
	}
	ids := map[int64]bool{}
	for _, r := range s.Runners(testOrg) {
		if ids[r.ID] || r.Status != RunnerStatusOnline {
			t.Errorf("runner %+v duplicated or not online", r)
		}
		ids[r.ID] = true
	}
}

func TestSignPayload(t *testing.T) {
	t.Parallel()
	// The example from GitHub's "Validating webhook deliveries" documentation.
	got := SignPayload([]byte("It's a Secret to Everybody"), []byte("Hello, World!"))
	want := "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got != want {
		t.Errorf("SignPayload = %s; want %s", got, want)
	}
	body := []byte(`{"a":1}`)
	h := DeliveryHeaders("workflow_job", []byte("s3cret"), body)
	if h.Get("X-Hub-Signature-256") != SignPayload([]byte("s3cret"), body) || !strings.HasPrefix(h.Get("X-Hub-Signature"), "sha1=") {
		t.Errorf("signature headers = %v", h)
	}
	if h.Get("X-GitHub-Event") != "workflow_job" || len(h.Get("X-GitHub-Delivery")) != 36 {
		t.Errorf("event headers = %v", h)
	}
	if unsigned := DeliveryHeaders("ping", nil, body); unsigned.Get("X-Hub-Signature-256") != "" {
		t.Error("signature without a secret")
	}
	req, err := NewWebhookRequest(context.Background(), "http://127.0.0.1:1/webhook", "workflow_job", []byte("k"), body)
	if err != nil || req.Method != "POST" || req.Header.Get("X-Hub-Signature-256") == "" {
		t.Errorf("NewWebhookRequest = %v, %v", req, err)
	}
}

func TestWorkflowJobPayload(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		ev         WorkflowJobEvent
		wantAction string
		wantStatus string
		wantOrg    bool
		minSize    int
		maxSize    int
	}{
		{"queued default", WorkflowJobEvent{Job: Job{ID: 1, Owner: "acme", Repo: "app", Labels: []string{"self-hosted", "linux", "x64"}}, InstallationID: 42, Now: now}, "queued", "queued", true, 4 * 1024, 20 * 1024},
		{"completed", WorkflowJobEvent{Action: "completed", Job: Job{ID: 2, Owner: "acme", Repo: "app", RunnerID: 7, RunnerName: "jitr-i-7"}, Now: now}, "completed", "completed", true, 4 * 1024, 20 * 1024},
		{"user owned", WorkflowJobEvent{Job: Job{ID: 3, Owner: "alice", Repo: "dots", Status: JobInProgress}, UserOwned: true, Now: now}, "in_progress", "in_progress", false, 4 * 1024, 20 * 1024},
		{"padded 20KB", WorkflowJobEvent{Job: Job{ID: 4, Owner: "acme", Repo: "app"}, Size: 20 * 1024, Now: now}, "queued", "queued", true, 20 * 1024, 20*1024 + 64},
		{"padded 9999", WorkflowJobEvent{Job: Job{ID: 5, Owner: "acme", Repo: "app"}, Size: 9999, Now: now}, "queued", "queued", true, 9999, 9999 + 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := WorkflowJobPayload(tc.ev)
			if len(b) < tc.minSize || len(b) > tc.maxSize {
				t.Errorf("size = %d; want [%d, %d]", len(b), tc.minSize, tc.maxSize)
			}
			var p struct {
				Action      string `json:"action"`
				WorkflowJob struct {
					ID          int64    `json:"id"`
					RunID       int64    `json:"run_id"`
					Status      string   `json:"status"`
					Conclusion  *string  `json:"conclusion"`
					Labels      []string `json:"labels"`
					RunnerName  *string  `json:"runner_name"`
					CreatedAt   string   `json:"created_at"`
					CompletedAt *string  `json:"completed_at"`
				} `json:"workflow_job"`
				Repository struct {
					FullName string `json:"full_name"`
					Name     string `json:"name"`
					Owner    struct {
						Login string `json:"login"`
						Type  string `json:"type"`
					} `json:"owner"`
				} `json:"repository"`
				Organization *struct {
					Login string `json:"login"`
				} `json:"organization"`
				Installation *struct {
					ID int64 `json:"id"`
				} `json:"installation"`
				Sender struct {
					Login string `json:"login"`
				} `json:"sender"`
			}
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			j := tc.ev.Job
			if p.Action != tc.wantAction || p.WorkflowJob.Status != tc.wantStatus || p.WorkflowJob.ID != j.ID || p.WorkflowJob.RunID == 0 {
				t.Errorf("action/status/id = %s/%s/%d; want %s/%s/%d", p.Action, p.WorkflowJob.Status, p.WorkflowJob.ID, tc.wantAction, tc.wantStatus, j.ID)
			}
			if p.Repository.FullName != j.Owner+"/"+j.Repo || p.Repository.Name != j.Repo || p.Repository.Owner.Login != j.Owner {
				t.Errorf("repository = %+v", p.Repository)
			}
			if (p.Organization != nil) != tc.wantOrg {
				t.Errorf("organization = %+v; want present %v", p.Organization, tc.wantOrg)
			}
			if tc.ev.InstallationID != 0 && (p.Installation == nil || p.Installation.ID != tc.ev.InstallationID) {
				t.Errorf("installation = %+v; want id %d", p.Installation, tc.ev.InstallationID)
			}
			if p.Sender.Login != "octocat" || p.WorkflowJob.CreatedAt != "2025-03-01T12:00:00Z" {
				t.Errorf("sender/created_at = %s/%s", p.Sender.Login, p.WorkflowJob.CreatedAt)
			}
			if tc.wantStatus == JobCompleted {
				if p.WorkflowJob.Conclusion == nil || *p.WorkflowJob.Conclusion != "success" || p.WorkflowJob.CompletedAt == nil {
					t.Errorf("completed job conclusion/completed_at missing")
				}
				if p.WorkflowJob.RunnerName == nil || *p.WorkflowJob.RunnerName != "jitr-i-7" {
					t.Errorf("runner_name = %v; want jitr-i-7", p.WorkflowJob.RunnerName)
				}
			} else if p.WorkflowJob.Conclusion != nil {
				t.Errorf("conclusion = %q; want null", *p.WorkflowJob.Conclusion)
			}
		})
	}
}

func BenchmarkWorkflowJobPayload20KB(b *testing.B) {
	ev := WorkflowJobEvent{Job: Job{ID: 1, Owner: "acme", Repo: "app", Labels: []string{"self-hosted"}}, Size: 20 * 1024}
	for b.Loop() {
		_ = WorkflowJobPayload(ev)
	}
}

func TestCloseEndsLatency(t *testing.T) {
	t.Parallel()
	s := New(WithAppKey(sharedKey()))
	s.SetLatency(time.Minute)
	got := make(chan int, 1)
	go func() {
		res, err := tryCall(s, "GET", "/orgs/acme/actions/runners", "", nil)
		if err != nil {
			got <- 0
			return
		}
		got <- res.status
	}()
	for s.TotalCalls() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a request in injected latency", d)
	}
	if status := <-got; status != http.StatusServiceUnavailable && status != 0 {
		t.Errorf("in-flight request status = %d; want 503 or a transport error", status)
	}
}

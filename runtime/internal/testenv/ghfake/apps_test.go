package ghfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// The second App's installation on testOrg, and its only installation on
// soloOrg, where the primary App is not installed.
const (
	secondInstallation int64 = 5151
	soloInstallation   int64 = 6161
	soloOrg                  = "beta"
)

// secondKey is a key of its own for the second App, generated once.
var secondKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// newTwoApps is newServer plus a second App with its own key, installed on
// testOrg (secondInstallation) and soloOrg (soloInstallation). It returns
// the primary App and the second.
func newTwoApps(t *testing.T, opts ...Option) (*Server, App, App) {
	t.Helper()
	s := newServer(t, opts...)
	b := s.AddApp(AppWithKey(secondKey()))
	if err := s.InstallApp(b.ID, secondInstallation, testOrg); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallApp(b.ID, soloInstallation, soloOrg); err != nil {
		t.Fatal(err)
	}
	apps := s.Apps()
	if len(apps) != 2 || apps[0].ID != s.AppID() || apps[1].ID != b.ID {
		t.Fatalf("Apps() = %+v; want the primary, then %d", apps, b.ID)
	}
	return s, apps[0], apps[1]
}

// jwtOf signs an App JWT of a valid at now.
func jwtOf(t *testing.T, a App, now time.Time) string {
	t.Helper()
	iat := now.Add(-30 * time.Second).Unix()
	return "Bearer " + signJWT(t, a.PrivateKey, "RS256", map[string]any{"iat": iat, "exp": iat + 120, "iss": a.ID})
}

// tokenOf gets an installation token of installation inst with a's JWT.
func tokenOf(t *testing.T, s *Server, a App, inst int64, now time.Time) string {
	t.Helper()
	res := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", inst), jwtOf(t, a, now), nil)
	if res.status != http.StatusCreated {
		t.Fatalf("App %d, installation %d: token %d %s; want 201", a.ID, inst, res.status, res.body)
	}
	return "token " + res.json(t)["token"].(string)
}

// Each App has its own id, key and installation on a shared org; the
// installation endpoints answer for the JWT's App, and neither App can take
// a token of, or use a token on, what only the other is installed on.
func TestAppsHaveTheirOwnInstallations(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s, a, b := newTwoApps(t, WithClock(clock.Now))
	now := clock.Now()
	if b.ID == a.ID || b.PrivateKey.Equal(a.PrivateKey) || len(b.WebhookSecret) == 0 || string(b.WebhookSecret) == string(a.WebhookSecret) {
		t.Fatalf("second App %d shares the primary's id, key or secret", b.ID)
	}

	for _, tc := range []struct {
		name string
		app  App
		path string
		want int64 // installation id; 0 for 404
	}{
		{"A repo on shared org", a, "/repos/acme/app/installation", testInstallation},
		{"B repo on shared org", b, "/repos/acme/app/installation", secondInstallation},
		{"A org on shared org", a, "/orgs/acme/installation", testInstallation},
		{"B org on shared org", b, "/orgs/ACME/installation", secondInstallation},
		{"A where only B is", a, "/orgs/beta/installation", 0},
		{"B where only B is", b, "/repos/beta/x/installation", soloInstallation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, s, "GET", tc.path, jwtOf(t, tc.app, now), nil)
			if tc.want == 0 {
				if res.status != http.StatusNotFound {
					t.Fatalf("%d %s; want 404", res.status, res.body)
				}
				return
			}
			body := res.json(t)
			if res.status != http.StatusOK || int64(body["id"].(float64)) != tc.want || int64(body["app_id"].(float64)) != tc.app.ID {
				t.Fatalf("%d: id %v app_id %v; want 200, %d, %d", res.status, body["id"], body["app_id"], tc.want, tc.app.ID)
			}
		})
	}
	listed := func(app App) []int64 {
		var out []struct {
			ID    int64 `json:"id"`
			AppID int64 `json:"app_id"`
		}
		res := call(t, s, "GET", "/app/installations", jwtOf(t, app, now), nil)
		if err := json.Unmarshal(res.body, &out); err != nil || res.status != http.StatusOK {
			t.Fatalf("App %d lists installations: %d %s", app.ID, res.status, res.body)
		}
		var ids []int64
		for _, in := range out {
			if in.AppID != app.ID {
				t.Errorf("App %d's list shows installation %d of App %d", app.ID, in.ID, in.AppID)
			}
			ids = append(ids, in.ID)
		}
		return ids
	}
	if got := listed(a); !slices.Equal(got, []int64{testInstallation}) {
		t.Errorf("App A's installations %v; want [%d]", got, testInstallation)
	}
	if got := listed(b); !slices.Equal(got, []int64{secondInstallation, soloInstallation}) {
		t.Errorf("App B's installations %v; want [%d %d]", got, secondInstallation, soloInstallation)
	}

	// A token only for the App's own installation.
	for _, tc := range []struct {
		app  App
		inst int64
	}{{b, testInstallation}, {a, secondInstallation}, {a, soloInstallation}} {
		res := call(t, s, "POST", fmt.Sprintf("/app/installations/%d/access_tokens", tc.inst), jwtOf(t, tc.app, now), nil)
		if res.status != http.StatusNotFound {
			t.Errorf("App %d asks a token of installation %d: %d; want 404", tc.app.ID, tc.inst, res.status)
		}
	}
	// iss selects the key: B's id signed with A's key is refused, and so is
	// A's id signed with B's key.
	iat := now.Add(-30 * time.Second).Unix()
	for _, forged := range []struct {
		key *rsa.PrivateKey
		iss int64
	}{{a.PrivateKey, b.ID}, {b.PrivateKey, a.ID}} {
		jwt := "Bearer " + signJWT(t, forged.key, "RS256", map[string]any{"iat": iat, "exp": iat + 60, "iss": forged.iss})
		if res := call(t, s, "GET", "/app/installations", jwt, nil); res.status != http.StatusUnauthorized || res.message(t) != msgJWTDecode {
			t.Errorf("JWT of App %d signed with the other App's key: %d %s; want 401", forged.iss, res.status, res.body)
		}
	}

	tokA := tokenOf(t, s, a, testInstallation, now)
	tokB := tokenOf(t, s, b, secondInstallation, now)
	tokBSolo := tokenOf(t, s, b, soloInstallation, now)
	for _, tc := range []struct {
		name, tok, path string
		want            int
	}{
		{"A on shared org", tokA, "/orgs/acme/actions/runners", 200},
		{"B on shared org", tokB, "/orgs/acme/actions/runners", 200},
		{"A where only B is", tokA, "/orgs/beta/actions/runners", 401},
		{"A on a repo where only B is", tokA, "/repos/beta/x/actions/runners", 401},
		{"B's shared-org token on B's other org", tokB, "/orgs/beta/actions/runners", 401},
		{"B where only B is", tokBSolo, "/orgs/beta/actions/runners", 200},
	} {
		if res := call(t, s, "GET", tc.path, tc.tok, nil); res.status != tc.want {
			t.Errorf("%s: %d %s; want %d", tc.name, res.status, res.body, tc.want)
		}
	}

	// An installation id given to the other App takes its tokens with it.
	if err := s.InstallApp(b.ID, testInstallation, testOrg); err != nil {
		t.Fatal(err)
	}
	if res := call(t, s, "GET", "/orgs/acme/actions/runners", tokA, nil); res.status != http.StatusUnauthorized {
		t.Errorf("A's token after its installation became B's: %d; want 401", res.status)
	}
	if err := s.InstallApp(a.ID+100, 1, testOrg); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("InstallApp of an unknown App: %v; want ErrUnknownApp", err)
	}
}

// The clients the control plane uses work as the second App: ghinstallation
// signs with its key and id, and go-github lists the shared org's runners
// with its installation's token.
func TestSecondAppWithGoGitHub(t *testing.T) {
	t.Parallel()
	s, _, b := newTwoApps(t)
	itr, err := ghinstallation.New(s.Client().Transport, b.ID, secondInstallation, b.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	itr.BaseURL = strings.TrimSuffix(s.URL(), "/")
	c := github.NewClient(&http.Client{Transport: itr})
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	c.BaseURL = u
	ctx := context.Background()
	in, _, err := c.Apps.FindOrganizationInstallation(ctx, testOrg)
	if err == nil {
		t.Fatalf("FindOrganizationInstallation with an installation token: %+v; want an error (it takes the App JWT)", in)
	}
	if _, _, err := c.Actions.ListOrganizationRunners(ctx, testOrg, nil); err != nil {
		t.Fatalf("second App lists the shared org's runners: %v", err)
	}
	if _, _, err := c.Actions.ListOrganizationRunners(ctx, "elsewhere", nil); err == nil {
		t.Fatal("second App lists runners of an org it is not installed on")
	}
	atr, err := ghinstallation.NewAppsTransport(s.Client().Transport, b.ID, b.PrivateKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(s.URL(), "/")
	ac := github.NewClient(&http.Client{Transport: atr})
	ac.BaseURL = u
	in, _, err = ac.Apps.FindOrganizationInstallation(ctx, testOrg)
	if err != nil || in.GetID() != secondInstallation || in.GetAppID() != b.ID {
		t.Fatalf("FindOrganizationInstallation as the second App: %+v, %v; want %d of App %d", in, err, secondInstallation, b.ID)
	}
}

// Each App's JWT draws from its own primary rate-limit budget.
func TestAppJWTBudgetsAreSeparate(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s, a, b := newTwoApps(t, WithClock(clock.Now), WithRateLimit(2))
	for range 2 {
		if res := call(t, s, "GET", "/app/installations", jwtOf(t, a, clock.Now()), nil); res.status != http.StatusOK {
			t.Fatalf("App A within its budget: %d", res.status)
		}
	}
	res := call(t, s, "GET", "/app/installations", jwtOf(t, a, clock.Now()), nil)
	if res.status != http.StatusForbidden || !strings.Contains(res.message(t), fmt.Sprintf("app ID %d", a.ID)) {
		t.Fatalf("App A over its budget: %d %s; want 403 naming app ID %d", res.status, res.body, a.ID)
	}
	res = call(t, s, "GET", "/app/installations", jwtOf(t, b, clock.Now()), nil)
	if res.status != http.StatusOK || res.header.Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("App B while A's budget is spent: %d, remaining %q; want 200, 1", res.status, res.header.Get("X-RateLimit-Remaining"))
	}
}

// hookCall is one request a webhook endpoint received.
type hookCall struct {
	header http.Header
	body   []byte
}

// hookLog is a webhook endpoint that records every request and answers
// status.
type hookLog struct {
	mu     sync.Mutex
	status int
	calls  []hookCall
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.calls = append(h.calls, hookCall{header: r.Header.Clone(), body: b})
	status := h.status
	h.mu.Unlock()
	w.WriteHeader(status)
}

func (h *hookLog) got() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// serveHooks starts a hookLog answering status and returns it and its URL.
func serveHooks(t *testing.T, status int) (*hookLog, string) {
	t.Helper()
	h := &hookLog{status: status}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// brief describes d for a failure message, without its body.
func brief(d Delivery) string {
	return fmt.Sprintf("{id %d app %d installation %d job %d %s guid %s redelivery %v status %q}",
		d.ID, d.AppID, d.InstallationID, d.JobID, d.Action, d.GUID, d.Redelivery, d.Status)
}

// payloadOf decodes the fields of a workflow_job delivery the tests check.
func payloadOf(t *testing.T, body []byte) (action string, job, inst int64) {
	t.Helper()
	var p struct {
		Action      string `json:"action"`
		WorkflowJob struct {
			ID int64 `json:"id"`
		} `json:"workflow_job"`
		Installation *struct {
			ID int64 `json:"id"`
		} `json:"installation"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Installation != nil {
		inst = p.Installation.ID
	}
	return p.Action, p.WorkflowJob.ID, inst
}

// A job's events are delivered once per App with a webhook that is
// installed on the job's owner: each with its App's installation id, signed
// with its App's secret, saying its App in the hook headers, under a GUID
// of its own.
func TestJobDeliveredOncePerApp(t *testing.T) {
	t.Parallel()
	s, a, b := newTwoApps(t)
	hookA, urlA := serveHooks(t, http.StatusOK)
	hookB, urlB := serveHooks(t, http.StatusOK)
	hookC, urlC := serveHooks(t, http.StatusOK)
	s.SetWebhook(urlA, []byte("secret-a"))
	if err := s.SetAppWebhook(b.ID, urlB, b.WebhookSecret); err != nil {
		t.Fatal(err)
	}
	// A third App with a webhook but installed only elsewhere gets nothing.
	c := s.AddApp(AppWithKey(secondKey()), AppWithWebhookSecret([]byte("secret-c")))
	if err := s.SetAppWebhook(c.ID, urlC, c.WebhookSecret); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallApp(c.ID, 7171, "gamma"); err != nil {
		t.Fatal(err)
	}
	if c.ID != a.ID+2 || string(c.WebhookSecret) != "secret-c" {
		t.Fatalf("third App %d secret %q; want id %d and the secret given", c.ID, c.WebhookSecret, a.ID+2)
	}

	j, d := s.QueueJob(context.Background(), Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted"}})
	if d.AppID != a.ID || d.InstallationID != testInstallation || !d.OK() {
		t.Fatalf("QueueJob's delivery %s; want the primary App's, OK, installation %d", brief(d), testInstallation)
	}
	tok := installationToken(t, s, time.Now())
	id := jitRunner(t, s, tok, "r1", "self-hosted")
	if err := s.StartJob(j.ID, id); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteJob(j.ID, ""); err != nil {
		t.Fatal(err)
	}
	s.WaitDeliveries()

	for _, tc := range []struct {
		app    App
		secret []byte
		hook   *hookLog
		inst   int64
	}{{a, []byte("secret-a"), hookA, testInstallation}, {b, b.WebhookSecret, hookB, secondInstallation}} {
		got := tc.hook.got()
		var actions []string
		for _, h := range got {
			action, job, inst := payloadOf(t, h.body)
			actions = append(actions, action)
			if job != j.ID || inst != tc.inst {
				t.Errorf("App %d got job %d installation %d; want %d, %d", tc.app.ID, job, inst, j.ID, tc.inst)
			}
			if h.header.Get("X-Hub-Signature-256") != SignPayload(tc.secret, h.body) {
				t.Errorf("App %d's %s delivery is not signed with its secret", tc.app.ID, action)
			}
			for _, other := range [][]byte{[]byte("secret-a"), b.WebhookSecret} {
				if string(other) != string(tc.secret) && h.header.Get("X-Hub-Signature-256") == SignPayload(other, h.body) {
					t.Errorf("App %d's %s delivery is signed with another App's secret", tc.app.ID, action)
				}
			}
			if h.header.Get("X-GitHub-Hook-Installation-Target-ID") != strconv.FormatInt(tc.app.ID, 10) ||
				h.header.Get("X-GitHub-Hook-Installation-Target-Type") != "integration" {
				t.Errorf("App %d's delivery headers: target %q type %q", tc.app.ID,
					h.header.Get("X-GitHub-Hook-Installation-Target-ID"), h.header.Get("X-GitHub-Hook-Installation-Target-Type"))
			}
		}
		if !slices.Equal(actions, []string{JobQueued, JobCompleted}) {
			t.Errorf("App %d got %v; want queued then completed, once each", tc.app.ID, actions)
		}
		var logged []Delivery
		for _, d := range s.JobDeliveries(j.ID) {
			if d.AppID == tc.app.ID {
				logged = append(logged, d)
			}
		}
		if len(logged) != len(got) {
			t.Fatalf("App %d: %d logged, %d received", tc.app.ID, len(logged), len(got))
		}
		for i, d := range logged {
			if d.GUID != got[i].header.Get("X-GitHub-Delivery") || d.InstallationID != tc.inst {
				t.Errorf("App %d's log entry %s does not match its delivery %s", tc.app.ID, brief(d), got[i].header.Get("X-GitHub-Delivery"))
			}
		}
	}
	if hA, hB := hookA.got(), hookB.got(); len(hA) > 0 && len(hB) > 0 && hA[0].header.Get("X-GitHub-Delivery") == hB[0].header.Get("X-GitHub-Delivery") {
		t.Error("both Apps' deliveries carry the same GUID")
	}
	if hookA.got()[0].header.Get("X-GitHub-Hook-ID") == hookB.got()[0].header.Get("X-GitHub-Hook-ID") {
		t.Error("both Apps' deliveries carry the same hook id")
	}
	if n := len(hookC.got()); n != 0 || len(s.AppDeliveries(c.ID)) != 0 {
		t.Errorf("an App not installed on the job's owner got %d deliveries", n)
	}
	all := s.DeliverJobAll(context.Background(), j.ID, JobCompleted)
	if len(all) != 2 || all[0].AppID != a.ID || all[1].AppID != b.ID || all[1].InstallationID != secondInstallation {
		var got []string
		for _, d := range all {
			got = append(got, brief(d))
		}
		t.Errorf("DeliverJobAll = %v; want the primary's then B's", got)
	}
}

// One App's endpoint failing fails only that App's delivery; each App's
// delivery log (with its JWT) lists only its deliveries, page by page, and
// only the App itself can see or redeliver one.
func TestDeliveryLogPerApp(t *testing.T) {
	t.Parallel()
	s, a, b := newTwoApps(t)
	hookA, urlA := serveHooks(t, http.StatusOK)
	hookB, urlB := serveHooks(t, http.StatusInternalServerError)
	s.SetWebhook(urlA, []byte("secret-a"))
	if err := s.SetAppWebhook(b.ID, urlB, b.WebhookSecret); err != nil {
		t.Fatal(err)
	}
	const jobs = 3
	for range jobs {
		s.QueueJob(context.Background(), Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted"}})
	}
	logA, logB := s.AppDeliveries(a.ID), s.AppDeliveries(b.ID)
	if len(logA) != jobs || len(logB) != jobs || len(s.Deliveries()) != 2*jobs {
		t.Fatalf("logs: A %d, B %d, all %d; want %d, %d, %d", len(logA), len(logB), len(s.Deliveries()), jobs, jobs, 2*jobs)
	}
	for i := range jobs {
		if !logA[i].OK() || logB[i].OK() || logB[i].StatusCode != 500 {
			t.Fatalf("job %d: A's delivery %q, B's %q; want A OK and B failed", i, logA[i].Status, logB[i].Status)
		}
	}

	// Each App's log over the API, two a page, newest first.
	listAll := func(app App) []int64 {
		var ids []int64
		next := "/app/hook/deliveries?per_page=2"
		for next != "" {
			res := call(t, s, "GET", next, jwtOf(t, app, time.Now()), nil)
			var page []hookDeliveryJSON
			if err := json.Unmarshal(res.body, &page); err != nil || res.status != http.StatusOK {
				t.Fatalf("App %d's log: %d %s", app.ID, res.status, res.body)
			}
			for _, d := range page {
				ids = append(ids, d.ID)
			}
			next = ""
			if link := res.header.Get("Link"); link != "" {
				u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(strings.Split(link, ";")[0], "<"), ">"))
				if err != nil {
					t.Fatal(err)
				}
				next = u.RequestURI()
			}
		}
		return ids
	}
	for _, tc := range []struct {
		app App
		log []Delivery
	}{{a, logA}, {b, logB}} {
		var want []int64
		for _, d := range slices.Backward(tc.log) {
			want = append(want, d.ID)
		}
		if got := listAll(tc.app); !slices.Equal(got, want) {
			t.Errorf("App %d's delivery log lists %v; want %v (its own, newest first)", tc.app.ID, got, want)
		}
	}

	failed := logB[0]
	for _, path := range []string{fmt.Sprintf("/app/hook/deliveries/%d", failed.ID), fmt.Sprintf("/app/hook/deliveries/%d/attempts", failed.ID)} {
		method := "GET"
		if strings.HasSuffix(path, "attempts") {
			method = "POST"
		}
		if res := call(t, s, method, path, jwtOf(t, a, time.Now()), nil); res.status != http.StatusNotFound {
			t.Errorf("App A %s of App B's delivery: %d; want 404", method, res.status)
		}
	}
	if res := call(t, s, "GET", fmt.Sprintf("/app/hook/deliveries/%d", failed.ID), jwtOf(t, b, time.Now()), nil); res.status != http.StatusOK ||
		res.json(t)["guid"] != failed.GUID {
		t.Fatalf("App B gets its delivery: %d %s", res.status, res.body)
	}
	if res := call(t, s, "POST", fmt.Sprintf("/app/hook/deliveries/%d/attempts", failed.ID), jwtOf(t, b, time.Now()), nil); res.status != http.StatusAccepted {
		t.Fatalf("App B redelivers: %d %s", res.status, res.body)
	}
	s.WaitDeliveries()
	got := hookB.got()
	last := got[len(got)-1]
	if len(got) != jobs+1 || last.header.Get("X-GitHub-Delivery") != failed.GUID ||
		last.header.Get("X-Hub-Signature-256") != SignPayload(b.WebhookSecret, last.body) ||
		last.header.Get("X-GitHub-Hook-Installation-Target-ID") != strconv.FormatInt(b.ID, 10) {
		t.Fatalf("redelivery to App B: %d calls, last %v", len(got), last.header)
	}
	if n := len(hookA.got()); n != jobs || s.Redeliveries() != 1 {
		t.Errorf("App A's endpoint got %d deliveries, %d redeliveries; want %d, 1", n, s.Redeliveries(), jobs)
	}
	logB = s.AppDeliveries(b.ID)
	if r := logB[len(logB)-1]; !r.Redelivery || r.AppID != b.ID || r.GUID != failed.GUID {
		t.Errorf("redelivery logged as %s", brief(r))
	}
}

// Each App has its own JIT-config budget: App A spending its minute's
// configs leaves App B's whole, and A is refused with Retry-After while B
// still generates.
func TestJITBudgetPerApp(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s, a, b := newTwoApps(t, WithClock(clock.Now))
	tokA := tokenOf(t, s, a, testInstallation, clock.Now())
	tokB := tokenOf(t, s, b, secondInstallation, clock.Now())
	gen := func(tok, name string) result {
		return call(t, s, "POST", "/orgs/acme/actions/runners/generate-jitconfig", tok, jitBody(name, 1, "self-hosted"))
	}
	for i := range DefaultJITPerMinute {
		if res := gen(tokA, fmt.Sprintf("a%d", i)); res.status != http.StatusCreated {
			t.Fatalf("App A's JIT config %d: %d %s", i+1, res.status, res.body)
		}
	}
	clock.Advance(15 * time.Second)
	res := gen(tokA, "a-over")
	if res.status != http.StatusForbidden || res.header.Get("Retry-After") != "45" {
		t.Fatalf("App A over its budget: %d, Retry-After %q; want 403, 45", res.status, res.header.Get("Retry-After"))
	}
	for i := range DefaultJITPerMinute {
		if res := gen(tokB, fmt.Sprintf("b%d", i)); res.status != http.StatusCreated {
			t.Fatalf("App B's JIT config %d while A's budget is spent: %d %s", i+1, res.status, res.body)
		}
	}
	if res := gen(tokB, "b-over"); res.status != http.StatusForbidden || res.header.Get("Retry-After") != "60" {
		t.Fatalf("App B over its own budget: %d, Retry-After %q; want 403, 60", res.status, res.header.Get("Retry-After"))
	}
	if s.JITRateLimitedBy(a.ID) != 1 || s.JITRateLimitedBy(b.ID) != 1 || s.JITRateLimited() != 2 ||
		s.JITConfigsBy(a.ID) != DefaultJITPerMinute || s.JITConfigsBy(b.ID) != DefaultJITPerMinute {
		t.Fatalf("limited A %d B %d total %d, generated A %d B %d; want 1 1 2, %d %d",
			s.JITRateLimitedBy(a.ID), s.JITRateLimitedBy(b.ID), s.JITRateLimited(), s.JITConfigsBy(a.ID), s.JITConfigsBy(b.ID),
			DefaultJITPerMinute, DefaultJITPerMinute)
	}
	// A's window empties 45 s later; B's (15 s younger) does not yet.
	clock.Advance(45 * time.Second)
	if res := gen(tokA, "a-again"); res.status != http.StatusCreated {
		t.Fatalf("App A a minute on: %d %s", res.status, res.body)
	}
	if res := gen(tokB, "b-still-over"); res.status != http.StatusForbidden || res.header.Get("Retry-After") != "15" {
		t.Fatalf("App B 45 s on: %d, Retry-After %q; want 403, 15", res.status, res.header.Get("Retry-After"))
	}

	// SetJITPerMinute applies to every App and starts every window afresh.
	s.SetJITPerMinute(1)
	s.ResetCalls()
	for i, tok := range []string{tokA, tokB} {
		if res := gen(tok, fmt.Sprintf("one-%d", i)); res.status != http.StatusCreated {
			t.Fatalf("first of 1 after SetJITPerMinute: %d", res.status)
		}
		if res := gen(tok, fmt.Sprintf("two-%d", i)); res.status != http.StatusForbidden {
			t.Fatalf("second of 1 after SetJITPerMinute: %d; want 403", res.status)
		}
	}
	if s.JITConfigsBy(a.ID) != 1 || s.JITConfigsBy(b.ID) != 1 || s.JITRateLimitedBy(a.ID) != 1 || s.JITRateLimitedBy(b.ID) != 1 {
		t.Fatalf("after ResetCalls: generated A %d B %d, limited A %d B %d; want 1 each",
			s.JITConfigsBy(a.ID), s.JITConfigsBy(b.ID), s.JITRateLimitedBy(a.ID), s.JITRateLimitedBy(b.ID))
	}
	if s.JITConfigsBy(a.ID+100) != 0 || s.JITRateLimitedBy(a.ID+100) != 0 {
		t.Fatal("counts for an App the Server lacks")
	}
}

// AddApp without options generates the App's key and secret and numbers it
// after the primary; a taken id panics, and the per-App hooks refuse an
// unknown App.
func TestAddAppDefaults(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	b := s.AddApp()
	if b.ID != s.AppID()+1 || b.PrivateKey == nil || b.PrivateKey.N.BitLen() != 2048 || b.PrivateKey.Equal(s.PrivateKey()) ||
		len(b.PrivateKeyPEM) == 0 || len(b.WebhookSecret) < 32 || b.WebhookURL != "" {
		t.Fatalf("AddApp() = id %d, key bits %d, secret %d bytes, url %q", b.ID, b.PrivateKey.N.BitLen(), len(b.WebhookSecret), b.WebhookURL)
	}
	taken := s.AddApp(AppWithKey(secondKey()), AppWithID(s.AppID()+3))
	if next := s.AddApp(AppWithKey(secondKey())); next.ID != s.AppID()+2 {
		t.Errorf("third App id %d; want %d", next.ID, s.AppID()+2)
	}
	if next := s.AddApp(AppWithKey(secondKey())); next.ID != taken.ID+1 {
		t.Errorf("App after a taken id: %d; want %d", next.ID, taken.ID+1)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("AddApp with a taken id did not panic")
			}
		}()
		s.AddApp(AppWithKey(secondKey()), AppWithID(b.ID))
	}()
	if err := s.SetAppWebhook(999, "http://127.0.0.1:1/", nil); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("SetAppWebhook of an unknown App: %v; want ErrUnknownApp", err)
	}
	if err := s.SetAppWebhook(b.ID, "http://127.0.0.1:1/hook", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got := s.Apps()[1]; got.WebhookURL != "http://127.0.0.1:1/hook" || string(got.WebhookSecret) != "x" {
		t.Errorf("Apps()[1] after SetAppWebhook: %q %q", got.WebhookURL, got.WebhookSecret)
	}
	// The primary App's secret is SetWebhook's.
	s.SetWebhook("http://127.0.0.1:1/primary", []byte("p"))
	if got := s.Apps()[0]; got.ID != s.AppID() || got.WebhookURL != "http://127.0.0.1:1/primary" || string(got.WebhookSecret) != "p" || string(got.PrivateKeyPEM) != string(s.PrivateKeyPEM()) {
		t.Errorf("Apps()[0] = %+v; want the primary App with SetWebhook's URL and secret", got)
	}
}

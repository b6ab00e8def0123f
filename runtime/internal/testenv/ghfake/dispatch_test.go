package ghfake

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// jitRunner registers a JIT runner with labels over the API and brings it
// online, as a runner using its config does.
func jitRunner(t *testing.T, s *Server, tok, name string, labels ...string) int64 {
	t.Helper()
	res := call(t, s, "POST", "/orgs/"+testOrg+"/actions/runners/generate-jitconfig", "token "+tok, jitBody(name, 1, labels...))
	if res.status != http.StatusCreated {
		t.Fatalf("jit config %s: %d %s", name, res.status, res.body)
	}
	id, err := s.RunnerOnline(res.json(t)["encoded_jit_config"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// hookRecorder is a webhook endpoint that records deliveries and answers
// with status.
type hookRecorder struct {
	mu     sync.Mutex
	status int
	got    []map[string]any
	guids  []string
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var p map[string]any
	_ = json.Unmarshal(b, &p)
	h.mu.Lock()
	h.got = append(h.got, p)
	h.guids = append(h.guids, r.Header.Get("X-GitHub-Delivery"))
	status := h.status
	h.mu.Unlock()
	if r.Header.Get("X-Hub-Signature-256") != SignPayload([]byte("s3cret"), b) {
		status = http.StatusUnauthorized
	}
	w.WriteHeader(status)
}

// newHooked is a fake delivering its webhooks to a hookRecorder answering
// status.
func newHooked(t *testing.T, status int) (*Server, *hookRecorder) {
	t.Helper()
	s := newServer(t)
	hook := &hookRecorder{status: status}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	s.SetWebhook(srv.URL, []byte("s3cret"))
	return s, hook
}

func (h *hookRecorder) actions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.got {
		out = append(out, p["action"].(string))
	}
	return out
}

// The dispatcher gives each queued job to an idle runner with matching
// labels chosen at random, so over many pairs jobs land on runners made for
// other jobs; a runner without the job's labels never gets it.
func TestDispatchAssignsAnyMatchingRunner(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tok := installationToken(t, s, time.Now())
	s.StartDispatch(0)
	swapped := 0
	const pairs = 20
	for i := range pairs {
		// A gpu runner that must never get these jobs, and two matching ones.
		gpu := jitRunner(t, s, tok, "gpu-"+strconv.Itoa(i), "self-hosted", "linux", "gpu")
		ra := jitRunner(t, s, tok, "a-"+strconv.Itoa(i), "self-hosted", "linux", "x64")
		rb := jitRunner(t, s, tok, "b-"+strconv.Itoa(i), "self-hosted", "linux", "x64")
		// Both jobs are queued while both runners are idle.
		s.mu.Lock()
		ja := s.addJobLocked(Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted", "x64"}})
		jb := s.addJobLocked(Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted", "x64"}})
		s.mu.Unlock()
		s.wakeDispatch()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ga, err1 := s.WaitAssignment(ctx, ra)
		gb, err2 := s.WaitAssignment(ctx, rb)
		cancel()
		if err1 != nil || err2 != nil {
			t.Fatalf("pair %d: assignments %v %v", i, err1, err2)
		}
		if ga.ID == jb || gb.ID == ja {
			swapped++
		}
		if rn, _ := s.Runner(gpu); rn.Busy {
			t.Fatalf("the gpu runner got an x64 job")
		}
		for _, id := range []int64{ra, rb} {
			if rn, _ := s.Runner(id); !rn.Busy || rn.JobID == 0 {
				t.Fatalf("runner %d after assignment: %+v", id, rn)
			}
		}
		if err := s.CompleteJob(ga.ID, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.CompleteJob(gb.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	// With a fair choice, 20 pairs swap at least once with probability
	// 1 - 2^-20 (and the generator is seeded: this never flakes).
	if swapped == 0 || swapped == pairs {
		t.Fatalf("%d of %d pairs swapped; want a random choice among eligible runners", swapped, pairs)
	}
}

// addJobLocked is AddJob for tests holding s.mu (to queue two jobs at once).
func (s *Server) addJobLocked(j Job) int64 {
	j = j.withDefaults(s.now(), s.nextJobID)
	s.nextJobID = max(s.nextJobID, j.ID+1)
	stored := j.clone()
	s.jobs[j.ID] = &stored
	return j.ID
}

// Runner lists show a new job's runner busy only after the lag, as GitHub's
// do; deleting it is refused with 422 at once, and counted.
func TestBusyFlagLagsButDeleteKnows(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	s := newServer(t, WithClock(clock.Now), WithBusyLag(30*time.Second))
	tok := installationToken(t, s, clock.Now())
	id := jitRunner(t, s, tok, "r1", "self-hosted")
	j := s.AddJob(Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted"}})
	if err := s.StartJob(j.ID, id); err != nil {
		t.Fatal(err)
	}
	busy := func() bool {
		res := call(t, s, "GET", "/orgs/"+testOrg+"/actions/runners/"+strconv.FormatInt(id, 10), "token "+tok, nil)
		return res.json(t)["busy"].(bool)
	}
	if busy() {
		t.Fatal("listed busy before the lag passed")
	}
	res := call(t, s, "DELETE", "/orgs/"+testOrg+"/actions/runners/"+strconv.FormatInt(id, 10), "token "+tok, nil)
	if res.status != http.StatusUnprocessableEntity || s.BusyDeleteRefusals() != 1 {
		t.Fatalf("delete of a busy runner: %d, refusals %d; want 422 counted", res.status, s.BusyDeleteRefusals())
	}
	clock.Advance(31 * time.Second)
	if !busy() {
		t.Fatal("not listed busy after the lag")
	}
}

// A runner that goes away under a running job fails the job (completed,
// failure), is counted, and its completed webhook is delivered.
func TestRunnerLostFailsItsJob(t *testing.T) {
	t.Parallel()
	s, hook := newHooked(t, http.StatusOK)
	tok := installationToken(t, s, time.Now())
	id := jitRunner(t, s, tok, "r1", "self-hosted")
	j := s.AddJob(Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted"}})
	if err := s.StartJob(j.ID, id); err != nil {
		t.Fatal(err)
	}
	s.RunnerLost(id)
	got, _ := s.Job(j.ID)
	if got.Status != JobCompleted || got.Conclusion != "failure" || s.BusyRunnersLost() != 1 {
		t.Fatalf("job %+v, lost %d; want it failed and counted", got, s.BusyRunnersLost())
	}
	s.WaitDeliveries()
	if a := hook.actions(); len(a) != 1 || a[0] != JobCompleted {
		t.Fatalf("deliveries %v; want the completed one", a)
	}
	// An idle runner going away fails nothing.
	s2 := newServer(t)
	tok2 := installationToken(t, s2, time.Now())
	s2.RunnerLost(jitRunner(t, s2, tok2, "r2", "self-hosted"))
	if s2.BusyRunnersLost() != 0 {
		t.Fatal("an idle runner counted as lost busy")
	}
}

// Deliveries are signed, logged with their outcome, and never retried: a
// 500 stays a failed delivery. A job's deliveries go out in order.
func TestDeliveriesAreNotRetried(t *testing.T) {
	t.Parallel()
	s, hook := newHooked(t, http.StatusInternalServerError)
	j, d := s.QueueJob(context.Background(), Job{Owner: testOrg, Repo: "app", Labels: []string{"self-hosted"}})
	if d.OK() || d.StatusCode != 500 || d.Status != "Invalid HTTP Response: 500" || d.GUID == "" || d.InstallationID != testInstallation {
		t.Fatalf("delivery %+v", d)
	}
	hook.mu.Lock()
	hook.status = http.StatusOK
	hook.mu.Unlock()
	tok := installationToken(t, s, time.Now())
	id := jitRunner(t, s, tok, "r1", "self-hosted")
	s.StartDispatch(0)
	s.wakeDispatch()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.WaitAssignment(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteJob(j.ID, ""); err != nil {
		t.Fatal(err)
	}
	s.WaitDeliveries()
	if a := hook.actions(); len(a) != 3 || a[0] != JobQueued || a[1] != JobInProgress || a[2] != JobCompleted {
		t.Fatalf("deliveries %v; want queued (failed, not retried), in_progress, completed", a)
	}
	log := s.Deliveries()
	if len(log) != 3 || log[0].OK() || !log[1].OK() || !log[2].OK() || log[0].Redelivery {
		t.Fatalf("delivery log %+v", log)
	}
	seen := map[string]bool{}
	for _, g := range hook.guids {
		if seen[g] {
			t.Fatalf("GUID %s delivered twice", g)
		}
		seen[g] = true
	}
}

// GET /repos/{owner}/{repo}/installation finds the App's installation on the
// repository's owner with an App JWT, and 404s elsewhere.
func TestRepoInstallation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	jwt := "Bearer " + appJWT(t, s, time.Now())
	res := call(t, s, "GET", "/repos/"+testOrg+"/app/installation", jwt, nil)
	if res.status != http.StatusOK || int64(res.json(t)["id"].(float64)) != testInstallation {
		t.Fatalf("installation: %d %s", res.status, res.body)
	}
	if res := call(t, s, "GET", "/repos/elsewhere/app/installation", jwt, nil); res.status != http.StatusNotFound {
		t.Fatalf("installation of another owner: %d; want 404", res.status)
	}
	if res := call(t, s, "GET", "/repos/"+testOrg+"/app/installation", "", nil); res.status != http.StatusUnauthorized {
		t.Fatalf("without a JWT: %d; want 401", res.status)
	}
}

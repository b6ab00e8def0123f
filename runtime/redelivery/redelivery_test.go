package redelivery_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/redelivery"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// endpoint is our webhook endpoint as GitHub sees it: it fails the
// deliveries of the jobs in fail (500), drops those in drop (no answer), and
// records every delivery it answered 2xx, by GUID.
type endpoint struct {
	mu   sync.Mutex
	fail map[int64]bool
	drop map[int64]bool
	ok   map[string]int   // GUID -> 2xx answers
	job  map[string]int64 // GUID -> job id
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var p struct {
		WorkflowJob struct {
			ID int64 `json:"id"`
		} `json:"workflow_job"`
	}
	_ = json.Unmarshal(b, &p)
	guid := r.Header.Get("X-GitHub-Delivery")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.job[guid] = p.WorkflowJob.ID
	switch {
	case e.drop[p.WorkflowJob.ID]:
		hj, _ := w.(http.Hijacker)
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close() // no response at all
		}
	case e.fail[p.WorkflowJob.ID]:
		w.WriteHeader(http.StatusInternalServerError)
	default:
		e.ok[guid]++
		w.WriteHeader(http.StatusOK)
	}
}

// heal makes every later delivery succeed.
func (e *endpoint) heal() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail, e.drop = map[int64]bool{}, map[int64]bool{}
}

func (e *endpoint) okCount(guid string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ok[guid]
}

type fixture struct {
	fake  *ghfake.Server
	gh    *githubapp.Client
	store *state.Store
	ep    *endpoint
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	a := testenv.AWSForTest(t)
	fake := ghfake.NewForTest(t, ghfake.WithInstallation(7, "acme"))
	ep := &endpoint{fail: map[int64]bool{}, drop: map[int64]bool{}, ok: map[string]int{}, job: map[string]int64{}}
	srv := httptest.NewServer(ep)
	t.Cleanup(srv.Close)
	fake.SetWebhook(srv.URL, []byte("s3cret"))
	gh, err := githubapp.New(githubapp.Config{APIURL: fake.URL(), AppID: fake.AppID(), PrivateKey: fake.PrivateKeyPEM(), Scope: "org", RunnerGroup: "Default"})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{fake: fake, gh: gh, store: state.NewStore(a.Dynamo, a.JobsTable(t), time.Hour, nil), ep: ep}
}

// queue adds n jobs and delivers their queued webhooks; it returns their
// first deliveries.
func (f *fixture) queue(t *testing.T, n int) []ghfake.Delivery {
	t.Helper()
	var out []ghfake.Delivery
	for range n {
		_, d := f.fake.QueueJob(context.Background(), ghfake.Job{Owner: "acme", Repo: "app", Labels: []string{"self-hosted"}})
		out = append(out, d)
	}
	return out
}

func (f *fixture) run(t *testing.T, opts redelivery.Options) *redelivery.Report {
	t.Helper()
	rep, err := redelivery.New(f.gh, f.store, opts, nil, nil).Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	f.fake.WaitDeliveries()
	return rep
}

// Every failed delivery (an error status, or no answer at all) is
// redelivered under its GUID, across several pages of the log; a second
// run finds their successful redeliveries and asks for nothing.
func TestFailedDeliveriesComeBack(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.ep.fail[1], f.ep.fail[77], f.ep.drop[150] = true, true, true
	ds := f.queue(t, 250) // three pages of 100
	f.ep.heal()
	var failed []ghfake.Delivery
	for _, d := range ds {
		if !d.OK() {
			failed = append(failed, d)
		}
	}
	if len(failed) != 3 {
		t.Fatalf("%d failed deliveries set up; want 3: %+v", len(failed), failed)
	}
	rep := f.run(t, redelivery.Options{})
	if rep.Redelivered != 3 || rep.Failed != 3 || rep.Pages != 3 || !rep.Complete {
		t.Fatalf("report %+v; want 3 of 3 failed deliveries redelivered over 3 pages", rep)
	}
	for _, d := range failed {
		if n := f.ep.okCount(d.GUID); n != 1 {
			t.Errorf("delivery %s (job %d) answered 2xx %d times after the run; want once, under its own GUID", d.GUID, d.JobID, n)
		}
	}
	rep = f.run(t, redelivery.Options{})
	if rep.Redelivered != 0 || rep.Failed != 0 {
		t.Fatalf("second run %+v; want nothing left to redeliver", rep)
	}
	if n := f.fake.Redeliveries(); n != 3 {
		t.Fatalf("%d redeliveries asked for in all; want 3", n)
	}
}

// A delivery that keeps failing is redelivered at most MaxAttempts times,
// however many runs come; MaxPerRun bounds one run.
func TestRedeliveriesAreBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for id := int64(1); id <= 5; id++ {
		f.ep.fail[id] = true
	}
	f.queue(t, 5)
	rep := f.run(t, redelivery.Options{MaxPerRun: 2, MaxAttempts: 2, Gap: time.Millisecond})
	if rep.Redelivered != 2 || rep.Failed != 5 || rep.Skipped != 3 {
		t.Fatalf("first run %+v; want 2 of 5 redelivered (MaxPerRun), 3 left", rep)
	}
	for range 5 {
		time.Sleep(2 * time.Millisecond) // past the gap
		f.run(t, redelivery.Options{MaxPerRun: 2, MaxAttempts: 2, Gap: time.Millisecond})
	}
	if n := f.fake.Redeliveries(); n != 10 {
		t.Fatalf("%d redeliveries of 5 ever-failing deliveries; want 2 each", n)
	}
}

// Runs that overlap (a slow run and the next minute's) never both act.
func TestOverlappingRunsActOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.ep.fail[1] = true
	f.queue(t, 1)
	a := redelivery.New(f.gh, f.store, redelivery.Options{Holder: "a", Lease: time.Hour}, nil, nil)
	b := redelivery.New(f.gh, f.store, redelivery.Options{Holder: "b", Lease: time.Hour}, nil, nil)
	// a's run is under way (its lease taken) when b's starts.
	if ok, err := f.store.LeaseRedelivery(context.Background(), "a", time.Hour); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	rb, err := b.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ra, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !ra.Leased || ra.Redelivered != 1 || rb.Leased || rb.Redelivered != 0 {
		t.Fatalf("runs %+v and %+v; want b kept out by a's lease, a to redeliver", ra, rb)
	}
	// Once a's run ended, its lease is released: b runs.
	if rb, err = b.Run(context.Background()); err != nil || !rb.Leased {
		t.Fatalf("b after a: %+v %v; want it to run", rb, err)
	}
}

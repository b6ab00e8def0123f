package scaledown_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// The tests here run GitHub's real semantics: a queued job goes to any idle
// runner whose labels match, not the one launched for it; runner lists show
// a runner busy only after a lag (here: never), so only GitHub's 422 on the
// deletion tells a busy runner; and a webhook may never arrive.

// Two jobs with the same labels run on each other's runners. Job A
// completes first: instance A, busy with job B, survives every sweep, while
// instance B (whose runner ran A) is retired. Then B completes: instance A
// goes too, and nothing is left.
func TestSwappedRunnersNeverKillBusy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.GitHub.SetBusyLag(time.Hour)
	a, b := h.pair()
	h.startOn(a, b) // A on B's runner
	h.startOn(b, a) // B on A's runner
	h.complete(a, "success")
	grace := secs(h.p.Config.ScaleDown.CompletedGraceSeconds) + time.Second
	for i := range 4 {
		h.p.Clock.Advance(grace)
		rep := h.sweep()
		if !h.alive(a.InstanceID) {
			t.Fatalf("sweep %d terminated instance A while its runner ran job B (report %+v)", i, rep)
		}
	}
	if h.alive(b.InstanceID) {
		t.Fatal("instance B kept although the job its runner ran (A) completed")
	}
	if rn, ok := h.p.GitHub.Runner(a.InstanceRunnerID); !ok || !rn.Busy || rn.JobID != b.JobID {
		t.Fatalf("runner A %+v (found %v); want it busy with job B", rn, ok)
	}

	h.complete(b, "success")
	for range 3 {
		h.p.Clock.Advance(grace)
		h.sweep()
	}
	for _, j := range []*state.Job{a, b} {
		if h.alive(j.InstanceID) {
			t.Errorf("instance %s alive after both jobs completed", j.InstanceID)
		}
		if got := h.job(j.JobID); got.Live {
			t.Errorf("record of job %d still live: %+v", j.JobID, got)
		}
	}
	if n := len(h.p.GitHub.Runners("")); n != 0 {
		t.Errorf("%d runners left registered", n)
	}
}

// The same swap with job B's in_progress webhook lost: the records cannot
// tell that instance A is busy, so the sweep tries to retire it once job A
// (which ran elsewhere) is over, and GitHub's 422 keeps it.
func TestSwapWithLostWebhookKeptByGitHub(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.GitHub.SetBusyLag(time.Hour)
	a, b := h.pair()
	h.startOn(a, b)
	if err := h.p.GitHub.StartJob(b.JobID, a.InstanceRunnerID); err != nil { // no webhook for B
		t.Fatal(err)
	}
	h.complete(a, "success")
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Minute)
	rep := h.sweep()
	if !h.alive(a.InstanceID) {
		t.Fatalf("instance A terminated while its runner ran job B (report %+v)", rep)
	}
	if h.p.GitHub.BusyDeleteRefusals() == 0 || rep.KeptBusy == 0 {
		t.Fatalf("report %+v, 422s %d; want the deletion refused and the instance kept", rep, h.p.GitHub.BusyDeleteRefusals())
	}
	if err := h.p.GitHub.CompleteJob(b.JobID, "success"); err != nil {
		t.Fatal(err)
	}
	h.sweep()
	if h.alive(a.InstanceID) {
		t.Fatal("instance A kept after its runner's job completed")
	}
}

// An orphan (scaleup died between handing over the JIT config and recording
// the launch) whose runner took a job GitHub gave it: kept while busy,
// retired once its job is over. Its record is gone, so the App's
// installation for its repository is looked up.
func TestBusyOrphanKeptUntilIdle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.GitHub.SetBusyLag(time.Hour)
	id, runner := h.orphanOnline()
	job := h.p.GitHub.AddJob(ghfake.Job{Owner: h.p.Owner, Repo: "app", Labels: []string{"self-hosted", "linux", "x64"}})
	if err := h.p.GitHub.StartJob(job.ID, runner); err != nil {
		t.Fatal(err)
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute) // moto stamps the launch in real time, after the clock started
	for range 2 {
		rep := h.sweep()
		if !h.alive(id) {
			t.Fatalf("busy orphan terminated (report %+v)", rep)
		}
	}
	if h.p.GitHub.BusyDeleteRefusals() == 0 {
		t.Fatal("the orphan's runner was never asked for: no 422")
	}
	if h.p.GitHub.Calls(ghfake.RouteRepoInstallation) == 0 {
		t.Fatal("the orphan's installation was not looked up")
	}
	if err := h.p.GitHub.CompleteJob(job.ID, "success"); err != nil {
		t.Fatal(err)
	}
	rep := h.sweep()
	if h.alive(id) || rep.Terminated != 1 {
		t.Fatalf("idle orphan kept (report %+v)", rep)
	}
}

// An orphan whose runner runs a job the webhook recorded is kept without
// asking GitHub.
func TestOrphanRunningRecordedJobKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, runner := h.orphanOnline()
	k := h.queued()
	if err := h.p.GitHub.StartJob(k, runner); err != nil {
		t.Fatal(err)
	}
	h.event(k, state.StatusInProgress, "")
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute) // moto stamps the launch in real time, after the clock started
	h.p.GitHub.ResetCalls()
	rep := h.sweep()
	if !h.alive(id) || rep.KeptBusy != 1 {
		t.Fatalf("orphan running job %d: alive %v, report %+v", k, h.alive(id), rep)
	}
	if n := h.p.GitHub.Calls(ghfake.RouteDeleteOrgRunner); n != 0 {
		t.Fatalf("%d deletions tried for a runner the records show busy", n)
	}
}

// racingRunner assigns a job to a runner right after the sweep looked the
// runners up (listed them, or found one by name): the lookup showed it idle
// (or offline), the deletion meets it busy.
type racingRunner struct {
	scaledown.GitHub
	fake   *ghfake.Server
	runner int64
	job    int64
}

func (r racingRunner) race() error {
	if j, ok := r.fake.Job(r.job); ok && j.Status != ghfake.JobQueued {
		return nil
	}
	if err := r.fake.SetRunnerStatus(r.runner, ghfake.RunnerStatusOnline); err != nil {
		return err
	}
	return r.fake.StartJob(r.job, r.runner)
}

func (r racingRunner) ListRunners(ctx context.Context, inst githubapp.Installation, prefix string) ([]githubapp.Runner, error) {
	rs, err := r.GitHub.ListRunners(ctx, inst, prefix)
	if rerr := r.race(); rerr != nil {
		return nil, rerr
	}
	return rs, err
}

func (r racingRunner) FindRunner(ctx context.Context, inst githubapp.Installation, name string) (githubapp.Runner, bool, error) {
	rn, found, err := r.GitHub.FindRunner(ctx, inst, name)
	if rerr := r.race(); rerr != nil {
		return githubapp.Runner{}, false, rerr
	}
	return rn, found, err
}

// Every rule that terminates an instance goes through the guarded
// retirement: the runner that took a job after the list is found busy by its
// deletion (422), and the instance is kept; once that job is over the
// instance goes.
func TestEveryTerminationPathKeepsABusyRunner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rule string
		// setup returns the instance that rule must retire and its runner.
		setup func(h *harness) (instanceID string, runnerID int64)
	}{
		{"1-completed (a spare whose job ran elsewhere)", func(h *harness) (string, int64) {
			_, l := h.launched()
			h.online(l)
			other, err := h.p.GitHub.AddRunner(h.p.RunnerOwner(), ghfake.Runner{Name: "someone-elses", Status: ghfake.RunnerStatusOnline})
			if err != nil {
				h.t.Fatal(err)
			}
			if err := h.p.GitHub.StartJob(l.JobID, other.ID); err != nil {
				h.t.Fatal(err)
			}
			h.event(l.JobID, state.StatusInProgress, "")
			h.complete(l, "success")
			h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Minute)
			return l.InstanceID, l.InstanceRunnerID
		}},
		{"2-boot-timeout", func(h *harness) (string, int64) {
			_, l := h.launched() // its runner is registered but offline
			h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Minute)
			return l.InstanceID, l.InstanceRunnerID
		}},
		{"3-max-runtime", func(h *harness) (string, int64) {
			_, l := h.launched()
			h.online(l)
			h.p.Clock.Advance(secs(h.p.Config.ScaleDown.MaxRuntimeSeconds) + time.Minute)
			return l.InstanceID, l.InstanceRunnerID
		}},
		{"4-orphan", func(h *harness) (string, int64) {
			id, runner := h.orphanOnline()
			h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute) // moto stamps the launch in real time, after the clock started
			return id, runner
		}},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.p.GitHub.SetBusyLag(time.Hour)
			id, runner := tc.setup(h)
			job := h.p.GitHub.AddJob(ghfake.Job{Owner: h.p.Owner, Repo: "app", Labels: []string{"self-hosted", "linux", "x64"}})
			h.gh = racingRunner{GitHub: h.p.GHClient, fake: h.p.GitHub, runner: runner, job: job.ID}
			h.rebuild()
			rep := h.sweep()
			if !h.alive(id) {
				t.Fatalf("instance %s terminated under a busy runner (report %+v)", id, rep)
			}
			if n := h.p.GitHub.BusyDeleteRefusals(); n != 1 || rep.KeptBusy != 1 {
				t.Fatalf("422s %d, report %+v; want one refused deletion and the instance kept", n, rep)
			}
			if err := h.p.GitHub.CompleteJob(job.ID, "success"); err != nil {
				t.Fatal(err)
			}
			h.gh = h.p.GHClient
			h.rebuild()
			rep = h.sweep()
			if h.alive(id) {
				t.Fatalf("instance %s kept after its runner's job was over (report %+v)", id, rep)
			}
		})
	}
}

func interruption(t *testing.T, h *harness, instanceID string) {
	t.Helper()
	ev, _ := json.Marshal(map[string]any{
		"detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
		"detail": map[string]string{"instance-id": instanceID, "instance-action": "terminate"},
	})
	if _, err := h.rc.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

// A spot interruption re-runs the job that ran on the interrupted instance,
// once, not the job the instance was launched for (its jitr:job-id tag).
func TestSpotInterruptionRerunsTheJobThatRanThere(t *testing.T) {
	t.Parallel()
	for _, webhookFirst := range []bool{true, false} {
		name := "in_progress before the warning"
		if !webhookFirst {
			name = "warning before in_progress"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			a, b := h.pair()
			h.startOn(a, b)
			if webhookFirst {
				h.startOn(b, a) // B runs on A's instance
				interruption(t, h, a.InstanceID)
			} else {
				interruption(t, h, a.InstanceID)
				h.startOn(b, a)
				h.sweep() // carries the interruption over to B
			}
			if got := h.job(b.JobID); got.InterruptedAt.IsZero() {
				t.Fatalf("job B, running on the interrupted instance, not marked: %+v", got)
			}
			if got := h.job(a.JobID); !got.InterruptedAt.IsZero() {
				t.Fatalf("job A, running elsewhere, marked interrupted: %+v", got)
			}
			h.kill(a.InstanceID)
			h.complete(b, "failure")
			h.complete(a, "failure") // a failure of its own: never re-run
			h.sweep()
			h.sweep()
			if n := h.p.GitHub.Reruns(b.JobID); n != 1 {
				t.Errorf("%d re-runs of job B; want exactly 1", n)
			}
			if n := h.p.GitHub.Reruns(a.JobID); n != 0 {
				t.Errorf("%d re-runs of job A, which did not run on the interrupted instance; want 0", n)
			}
		})
	}
}

// Past maxRuntimeSeconds an instance whose record says in_progress is
// checked against GitHub: kept while GitHub shows the job running, retired
// (and the record completed) when GitHub says the job is over though its
// completed webhook never came.
func TestOverdueInstanceCheckedAgainstGitHub(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	h.start(j)
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.MaxRuntimeSeconds) + time.Minute)
	rep := h.sweep()
	if !h.alive(j.InstanceID) || rep.KeptBusy != 1 {
		t.Fatalf("instance of a job GitHub shows running: alive %v, report %+v", h.alive(j.InstanceID), rep)
	}
	if err := h.p.GitHub.CompleteJob(j.JobID, "success"); err != nil { // the webhook is lost
		t.Fatal(err)
	}
	rep = h.sweep()
	if h.alive(j.InstanceID) || rep.Terminated != 1 {
		t.Fatalf("instance of a job GitHub shows completed kept (report %+v)", rep)
	}
	if got := h.job(j.JobID); got.Status != state.StatusCompleted || got.Conclusion != "success" {
		t.Fatalf("record after GitHub's completion: %+v", got)
	}
}

// Job B's instance served job A (a swap) and ended with it while B was still
// queued. The counts are even (A's own runner serves B), so B waits for the
// pool instead of launching a second instance; only if GitHub still shows B
// queued bootTimeoutSeconds later is it re-queued.
func TestQueuedJobWhoseRunnerServedAnotherWaitsForThePool(t *testing.T) {
	t.Parallel()
	for _, served := range []bool{true, false} {
		t.Run(map[bool]string{true: "served by the pool", false: "never served"}[served], func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			a, b := h.pair()
			h.startOn(a, b)
			h.complete(a, "success")
			h.kill(b.InstanceID) // the runner exits after its one job; the instance ends itself
			h.sweep()
			if msgs := h.messages(); len(msgs) != 0 {
				t.Fatalf("re-queued at once although its runner served job A: %+v", msgs)
			}
			if served {
				h.startOn(b, a)
			}
			h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Second)
			h.sweep()
			msgs := h.messages()
			switch {
			case served && len(msgs) != 0:
				t.Fatalf("re-queued a job the pool served: %+v", msgs)
			case !served && (len(msgs) != 1 || msgs[0].JobID != b.JobID):
				t.Fatalf("messages %+v; want job B re-queued after waiting", msgs)
			}
		})
	}
}

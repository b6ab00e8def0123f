package scaledown_test

import (
	"context"
	"encoding/json"

	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Rule 1: a completed job's instance is terminated after the grace period.
func TestRule1CompletedTerminatedAfterGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	h.start(j)
	h.complete(j, "success")
	h.sweep()
	if !h.alive(j.InstanceID) {
		t.Fatal("terminated within the grace period")
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.CompletedGraceSeconds) + time.Second)
	rep := h.sweep()
	if h.alive(j.InstanceID) || rep.Terminated != 1 {
		t.Fatalf("completed job's instance alive after grace (report %+v)", rep)
	}
	// Next sweep: the instance is gone, the runner too; the record settles.
	h.sweep()
	if got := h.job(j.JobID); got.Live {
		t.Fatalf("record still live after its instance and runner are gone: %+v", got)
	}
}

// Rule 2: a runner that never came online is removed and its job re-queued once.
func TestRule2BootTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, j := h.launched()
	h.messages() // drain nothing from the launch
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) - time.Minute)
	h.sweep()
	if !h.alive(j.InstanceID) {
		t.Fatal("terminated before the boot timeout")
	}
	h.p.Clock.Advance(2 * time.Minute)
	h.sweep()
	if h.alive(j.InstanceID) || h.runnerExists(j.InstanceRunnerName) {
		t.Fatal("runner that never came online was not removed")
	}
	msgs := h.messages()
	if len(msgs) != 1 || msgs[0].JobID != id || msgs[0].Attempt != 1 {
		t.Fatalf("re-queue messages %+v; want one for job %d", msgs, id)
	}
	got := h.job(id)
	if got.InstanceID != "" || got.Requeues != 1 || !got.Live {
		t.Fatalf("record after re-queue %+v", got)
	}
	// Launched again and again never online: removed, but not re-queued twice.
	_, j2 := h.relaunch(id)
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Second)
	h.sweep()
	if h.alive(j2.InstanceID) {
		t.Fatal("second runner that never came online kept")
	}
	if msgs := h.messages(); len(msgs) != 0 {
		t.Fatalf("re-queued a second time: %+v", msgs)
	}
}

// A runner that is online is not a boot timeout, even if no job came yet.
func TestRule2OnlineRunnerKept(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Minute)
	h.sweep()
	if !h.alive(j.InstanceID) {
		t.Fatal("online runner terminated as a boot timeout")
	}
}

// Rule 3: past the maximum runtime and not busy -> terminated; busy -> kept.
func TestRule3MaxRuntime(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, idle := h.launched()
	h.online(idle)
	_, busy := h.launched()
	h.online(busy)
	h.start(busy)
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.MaxRuntimeSeconds) + time.Minute)
	rep := h.sweep()
	if h.alive(idle.InstanceID) {
		t.Fatal("idle runner past the maximum runtime kept")
	}
	if !h.alive(busy.InstanceID) || rep.KeptBusy == 0 {
		t.Fatalf("busy runner past the maximum runtime terminated (report %+v)", rep)
	}
}

// Rule 4: an instance with our tag that no record owns goes after the grace.
func TestRule4Orphan(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.orphan()
	h.sweep()
	if !h.alive(id) {
		t.Fatal("orphan terminated within the orphan grace")
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute) // moto stamps the launch in real time, after the clock started
	rep := h.sweep()
	if h.alive(id) {
		t.Fatalf("orphan kept after the grace (report %+v)\n%s", rep, h.p.Logs.String())
	}
}

// Rule 5: an offline runner with our prefix whose instance is gone is deleted.
func TestRule5GhostRunner(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	if err := h.p.GitHub.SetRunnerStatus(j.InstanceRunnerID, ghfake.RunnerStatusOffline); err != nil {
		t.Fatal(err)
	}
	h.kill(j.InstanceID) // e.g. a spot reclaim
	h.p.Clock.Advance(3 * time.Minute)
	h.sweep()
	if h.runnerExists(j.InstanceRunnerName) {
		t.Fatal("ghost runner kept")
	}
}

// Rule 6: the instance vanished while the job was queued: lost, re-queued.
func TestRule6InstanceGone(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, j := h.launched()
	h.kill(j.InstanceID)
	h.sweep()
	got := h.job(id)
	if got.Requeues != 1 || got.InstanceID != "" {
		t.Fatalf("record %+v; want re-queued", got)
	}
	if msgs := h.messages(); len(msgs) != 1 || msgs[0].JobID != id {
		t.Fatalf("messages %+v", msgs)
	}
	// In progress when the instance vanished: lost, not re-queued.
	_, j2 := h.launched()
	h.online(j2)
	h.start(j2)
	h.kill(j2.InstanceID)
	h.sweep()
	if got := h.job(j2.JobID); got.Phase != state.PhaseLost || got.Requeues != 0 {
		t.Fatalf("in-progress job with its instance gone: %+v", got)
	}
	if msgs := h.messages(); len(msgs) != 0 {
		t.Fatalf("re-queued a job that had started: %+v", msgs)
	}
}

// Rule 7: a queued job that never launched is re-queued if still queued.
func TestRule7NeverLaunched(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stillQueued := h.queued()
	finished := h.queued()
	if err := h.p.GitHub.SetJobStatus(finished, "completed", "cancelled"); err != nil {
		t.Fatal(err)
	}
	h.sweep()
	if msgs := h.messages(); len(msgs) != 0 {
		t.Fatalf("re-queued before the timeout: %+v", msgs)
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.QueuedTimeoutSeconds) + time.Second)
	h.sweep()
	msgs := h.messages()
	if len(msgs) != 1 || msgs[0].JobID != stillQueued {
		t.Fatalf("messages %+v; want only job %d", msgs, stillQueued)
	}
	if got := h.job(finished); got.Live {
		t.Fatalf("a job GitHub shows finished stays live: %+v", got)
	}
}

// racingGitHub makes the runner busy right after the list, as GitHub's busy
// flag lags a job's start.
type racingGitHub struct {
	scaledown.GitHub
	fake   *ghfake.Server
	runner int64
}

func (r racingGitHub) ListRunners(ctx context.Context, inst githubapp.Installation, prefix string) ([]githubapp.Runner, error) {
	rs, err := r.GitHub.ListRunners(ctx, inst, prefix)
	_ = r.fake.SetRunnerBusy(r.runner, true)
	return rs, err
}

func TestBusyRaceKeepsInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	h.gh = racingGitHub{GitHub: h.p.GHClient, fake: h.p.GitHub, runner: j.InstanceRunnerID}
	h.rebuild()
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.MaxRuntimeSeconds) + time.Minute)
	rep := h.sweep()
	if !h.alive(j.InstanceID) || !h.runnerExists(j.InstanceRunnerName) {
		t.Fatalf("runner that became busy after the list was killed (report %+v)", rep)
	}
	if rep.KeptBusy != 1 {
		t.Fatalf("report %+v; want the busy runner counted as kept", rep)
	}
}

func TestGitHub5xxMidSweepConverges(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var jobs []*state.Job
	for i := 0; i < 3; i++ {
		_, j := h.launched()
		h.online(j)
		jobs = append(jobs, j)
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.MaxRuntimeSeconds) + time.Minute)
	h.p.GitHub.FailNext(4, 502, ghfake.RouteDeleteOrgRunner) // one DeleteRunner's attempts
	rep := h.sweep()
	if rep.Errors != 1 || rep.Terminated != 2 {
		t.Fatalf("report %+v; want 1 error and the other 2 terminated", rep)
	}
	rep = h.sweep()
	for _, j := range jobs {
		if h.alive(j.InstanceID) {
			t.Fatalf("instance %s alive after the converging sweep (report %+v)", j.InstanceID, rep)
		}
	}
}

func TestSpotInterruptionRerunsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.online(j)
	h.start(j)
	ev, _ := json.Marshal(map[string]any{
		"detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
		"detail": map[string]string{"instance-id": j.InstanceID, "instance-action": "terminate"},
	})
	if _, err := h.rc.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got := h.job(j.JobID); got.InterruptedAt.IsZero() {
		t.Fatalf("interruption not recorded: %+v", got)
	}
	offerings, err := h.p.Store.UnavailableOfferings(context.Background())
	if err != nil || len(offerings) != 1 {
		t.Fatalf("shared unavailable offerings %v, %v; want the interrupted pool", offerings, err)
	}
	for k := range offerings {
		if !strings.HasPrefix(k, "spot:t3.large:") {
			t.Fatalf("offering %s", k)
		}
	}
	h.kill(j.InstanceID)
	h.complete(j, "failure")
	h.sweep()
	h.sweep()
	if n := h.p.GitHub.Reruns(j.JobID); n != 1 {
		t.Fatalf("%d re-runs requested; want exactly 1", n)
	}
}

// State-change events free a slot without waiting for a sweep.
func TestStateChangeFreesSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, j := h.launched()
	h.kill(j.InstanceID)
	ev, _ := json.Marshal(map[string]any{"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
		"detail": map[string]string{"instance-id": j.InstanceID, "state": "terminated"}})
	if _, err := h.rc.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if got := h.job(j.JobID); got.SlotProfile != "" || got.InstanceGoneAt.IsZero() {
		t.Fatalf("record after the state change %+v", got)
	}
}

// staleSnapshot answers the sweep's snapshot (the tag-filtered describe) as
// if it was taken before the instances were launched; lookups by id see them.
type staleSnapshot struct{ fleet.EC2API }

func (s staleSnapshot) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	for _, f := range in.Filters {
		if aws.ToString(f.Name) == "tag:"+tags.ManagedBy {
			return &ec2.DescribeInstancesOutput{}, nil
		}
	}
	return s.EC2API.DescribeInstances(ctx, in, o...)
}

// An instance launched after the sweep's snapshot is not taken for gone:
// neither its job (rule 6) nor its runner (rule 5) is touched.
func TestInstanceNewerThanSnapshotIsNotLost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id, j := h.launched()
	h.online(j)
	if err := h.p.GitHub.SetRunnerStatus(j.InstanceRunnerID, ghfake.RunnerStatusOffline); err != nil {
		t.Fatal(err)
	}
	h.ec2 = staleSnapshot{h.p.EC2}
	h.rebuild()
	h.p.Clock.Advance(3 * time.Minute) // past freshLaunch: only the lookup protects the runner
	h.sweep()
	got := h.job(id)
	if got.Phase == state.PhaseLost || got.Requeues != 0 || got.InstanceID != j.InstanceID {
		t.Fatalf("job of a running instance treated as lost: %+v", got)
	}
	if msgs := h.messages(); len(msgs) != 0 {
		t.Fatalf("re-queued a job whose instance runs: %+v", msgs)
	}
	if !h.runnerExists(j.InstanceRunnerName) || !h.alive(j.InstanceID) {
		t.Fatal("runner or instance removed although the instance runs")
	}
}

// Rule 5 for a runner no instance will ever use: its JIT config came first
// and the launch failed (and deleting it failed too). Kept while a launch
// under a live claim may still use it; deleted once the claim is gone.
func TestRule5RunnerWithoutInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.queued()
	if got, err := h.p.Store.Claim(context.Background(), id, "inv", "default", 5*time.Minute); err != nil || got != state.Claimed {
		t.Fatalf("claim: %v %v", got, err)
	}
	name := tags.RunnerName(h.p.Config.NamePrefix, id, 1)
	if _, err := h.p.GitHub.AddRunner(h.p.RunnerOwner(), ghfake.Runner{Name: name, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	h.sweep()
	if !h.runnerExists(name) {
		t.Fatal("the runner of a launch under way was deleted")
	}
	if err := h.p.Store.ReleaseClaim(context.Background(), id, "inv", "launch: InsufficientInstanceCapacity"); err != nil {
		t.Fatal(err)
	}
	h.sweep()
	if h.runnerExists(name) {
		t.Fatal("a runner no instance will use was kept")
	}
}

// A job waiting in the table for a slot costs the sweep nothing: it is not
// read, not re-queued (its wake launches it), however long it waits while
// GitHub keeps it queued; one waiting past GitHub's 24-hour limit is settled.
func TestWaitingJobsCostTheSweepNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var waiting []int64
	for range 3 {
		id := h.queued()
		if got, err := h.p.Store.Claim(context.Background(), id, "inv", "default", time.Minute); err != nil || got != state.Claimed {
			t.Fatalf("claim: %v %v", got, err)
		}
		if err := h.p.Store.Wait(context.Background(), id, "inv", "default", "0 of maxRunners 0", h.p.Clock.Now()); err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, id)
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.QueuedTimeoutSeconds) * 4)
	rep := h.sweep()
	if rep.Examined != 0 || rep.Requeued != 0 || rep.Waiting != 3 {
		t.Fatalf("report %+v; want 3 waiting jobs, none read or re-queued", rep)
	}
	if msgs := h.messages(); len(msgs) != 1 || !msgs[0].Wake {
		t.Fatalf("messages %+v; want the sweep's one wake", msgs)
	}
	h.p.Clock.Advance(25 * time.Hour)
	h.sweep()
	for _, id := range waiting {
		if got := h.job(id); got.Live || got.Waiting {
			t.Fatalf("job %d waiting past GitHub's 24 hours: %+v; want it settled", id, got)
		}
	}
}

// A job that waits for a slot and meanwhile runs, to completion, on the
// runner launched for another job keeps its place in the wait: its own
// launch is what replaces that runner for the other job. A sweep in between
// must not settle it as "started without a runner of ours" (which left the
// other job to wait for rule 6 after its instance was gone, and the job
// never launched).
func TestWaitingJobThatRanOnOurRunnerStillLaunches(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	waiting := h.queued()
	if got, err := h.p.Store.Claim(ctx, waiting, "inv", "default", time.Minute); err != nil || got != state.Claimed {
		t.Fatalf("claim: %v %v", got, err)
	}
	if err := h.p.Store.Wait(ctx, waiting, "inv", "default", "2 of maxRunners 2", h.p.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	other, o := h.launched() // its runner takes the waiting job
	for _, action := range []string{state.StatusInProgress, state.StatusCompleted} {
		if _, err := h.p.Store.RecordEvent(ctx, &state.JobEvent{JobID: waiting, Action: action, Ours: true, Profile: "default",
			RunnerName: o.InstanceRunnerName, RunnerID: o.InstanceRunnerID, RunnerJob: other, ReceivedAt: h.p.Clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	h.kill(o.InstanceID) // the runner exits after its one job; its instance goes
	h.p.Clock.Advance(time.Minute)
	h.sweep()
	got := h.job(waiting)
	if !got.Waiting || !got.Live {
		t.Fatalf("the job that ran on another job's runner no longer waits for its own launch: %+v", got)
	}
	for _, m := range h.messages() {
		if m.JobID == other {
			t.Fatalf("the other job was re-queued instead of waiting for the waiting job's runner: %+v", m)
		}
	}
}

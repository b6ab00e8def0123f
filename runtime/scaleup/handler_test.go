package scaleup_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

func tagMap(tt []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tt {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestLaunchOneRunner(t *testing.T) {
	for _, scope := range []string{config.ScopeOrg, config.ScopeRepo} {
		t.Run(scope, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, scope)
			msg := h.enqueue(101)
			if failed := h.run(h.batch(msg)); len(failed) != 0 {
				t.Fatalf("failed records %v\n%s", failed, h.logs.String())
			}
			insts := h.instances("pending", "running")
			if len(insts) != 1 {
				t.Fatalf("%d instances; want 1", len(insts))
			}
			inst := insts[0]
			id := aws.ToString(inst.InstanceId)
			name := tags.RunnerName(h.cfg.NamePrefix, 101, 1)
			tg := tagMap(inst.Tags)
			want := map[string]string{tags.ManagedBy: h.cfg.NamePrefix, tags.JobID: "101", tags.Repository: "octo-org/app", tags.Profile: "default", tags.Name: name}
			for k, v := range want {
				if tg[k] != v {
					t.Errorf("tag %s = %q; want %q", k, tg[k], v)
				}
			}
			r, ok := h.gh.RunnerByName(h.runnerOwner(), name)
			if !ok {
				t.Fatalf("no runner %s registered at %s; runners: %+v", name, h.runnerOwner(), h.gh.Runners(""))
			}
			if strings.Join(r.Labels, ",") != "self-hosted,linux,x64" {
				t.Errorf("runner labels %v", r.Labels)
			}
			// The JIT config waits for that instance only, under its ARN.
			arn := jitstore.InstanceARN("aws", "us-east-1", "123456789012", id)
			enc, err := h.jit.Take(context.Background(), arn)
			if err != nil || enc == "" {
				t.Fatalf("JIT config for %s: %v", arn, err)
			}
			if _, err := h.gh.RunnerOnline(enc); err != nil {
				t.Errorf("the stored JIT config is not the runner's: %v", err)
			}
			j := h.job(101)
			if j.Phase != state.PhaseLaunched || j.InstanceID != id || j.InstanceRunnerName != name || j.InstanceRunnerID != r.ID ||
				j.CapacityType != fleet.CapacityTypeSpot || j.SpotFallback || j.InstanceType != "t3.large" || j.AvailabilityZone == "" {
				t.Errorf("record %+v", j)
			}
			calls := h.ec2.FleetInputs()
			if len(calls) != 1 || calls[0].Type != types.FleetTypeInstant ||
				calls[0].TargetCapacitySpecification.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeSpot {
				t.Errorf("CreateFleet calls: %d, first %+v", len(calls), calls)
			}
			if logs := h.logs.String(); strings.Contains(logs, enc) {
				t.Error("the JIT config appears in the logs")
			}
		})
	}
}

func TestDuplicatesLaunchOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	msg := h.enqueue(201)
	if failed := h.run(h.batch(msg, msg, msg)); len(failed) != 0 {
		t.Fatalf("same job 3x in one batch: failed %v", failed)
	}
	if failed := h.run(h.batch(msg, msg)); len(failed) != 0 {
		t.Fatalf("same job again in another batch: failed %v", failed)
	}
	if n := len(h.instances()); n != 1 {
		t.Fatalf("%d instances for one job; want 1", n)
	}
	if n := h.gh.JITConfigRequests(); n != 1 {
		t.Fatalf("%d JIT configs for one job; want 1", n)
	}
}

func TestCrashedClaimTakenOverAfterLease(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	msg := h.enqueue(301)
	// An invocation claimed the job and died before launching.
	lease := time.Duration(h.cfg.ScaleUp.ClaimLeaseSeconds) * time.Second
	if out, err := h.store.Claim(context.Background(), 301, "dead-invocation", "default", lease); err != nil || out != state.Claimed {
		t.Fatalf("claim: %v %v", out, err)
	}
	if failed := h.run(h.batch(msg)); len(failed) != 1 {
		t.Fatalf("while the dead claim's lease runs the record must be retried; failed %v", failed)
	}
	if n := len(h.instances()); n != 0 {
		t.Fatalf("%d instances launched under another's live claim", n)
	}
	h.clock.Advance(lease + time.Second)
	if failed := h.run(h.batch(msg)); len(failed) != 0 {
		t.Fatalf("after the lease: failed %v\n%s", failed, h.logs.String())
	}
	if n := len(h.instances()); n != 1 {
		t.Fatalf("%d instances after takeover; want 1", n)
	}
}

func TestSpotCapacityErrorFallsBackToOnDemand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.ec2.FailCreateFleet(types.DefaultTargetCapacityTypeSpot, "InsufficientInstanceCapacity", 1)
	if failed := h.run(h.batch(h.enqueue(401))); len(failed) != 0 {
		t.Fatalf("failed %v\n%s", failed, h.logs.String())
	}
	calls := h.ec2.FleetInputs()
	if len(calls) != 2 || calls[1].TargetCapacitySpecification.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeOnDemand {
		t.Fatalf("CreateFleet calls %d; want spot then on-demand in the same invocation", len(calls))
	}
	j := h.job(401)
	if j.CapacityType != fleet.CapacityTypeOnDemand || !j.SpotFallback {
		t.Fatalf("record %+v; want on-demand with spot fallback", j)
	}
	if !strings.Contains(h.logs.String(), `"spot_fallback":true`) {
		t.Error("no log of the fallback")
	}
}

func TestNonCapacityErrorIsRetriedWithoutFallback(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.ec2.FailCreateFleet("", "InvalidParameterValue", 1)
	msg := h.enqueue(501)
	if failed := h.run(h.batch(msg)); len(failed) != 1 {
		t.Fatalf("failed %v; want the record retried", failed)
	}
	if calls := h.ec2.FleetInputs(); len(calls) != 1 {
		t.Fatalf("%d CreateFleet calls; want 1 (no on-demand fallback for a validation error)", len(calls))
	}
	if d := h.retries.lastDelay(); d != 5*time.Second {
		t.Errorf("failed launch retried after %v; want 5s (first backoff step), not the visibility timeout", d)
	}
	if j := h.job(501); j.Phase != state.PhaseFailed || !strings.Contains(j.LastError, "InvalidParameterValue") || j.SlotProfile != "" {
		t.Fatalf("record after failure %+v", j)
	}
	if failed := h.run(h.batch(msg)); len(failed) != 0 {
		t.Fatalf("retry failed %v", failed)
	}
	if n := len(h.instances()); n != 1 {
		t.Fatalf("%d instances after the retry; want 1", n)
	}
}

// The JIT config comes before the launch: while GitHub refuses it, nothing
// is launched and the job is retried; once GitHub answers, one instance.
func TestJITFailureLaunchesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.gh.FailNext(20, 500, ghfake.RouteOrgJITConfig)
	msg := h.enqueue(601)
	if failed := h.run(h.batch(msg)); len(failed) != 1 {
		t.Fatalf("failed %v; want the record retried", failed)
	}
	if n := len(h.instances()); n != 0 {
		t.Fatalf("%d instances launched while GitHub refused the JIT config; want 0", n)
	}
	if j := h.job(601); j.Phase != state.PhaseFailed || j.InstanceID != "" {
		t.Fatalf("record %+v\n%s", j, h.logs.String())
	}
	h.gh.ClearFaults()
	if failed := h.run(h.batch(msg)); len(failed) != 0 {
		t.Fatalf("retry failed %v\n%s", failed, h.logs.String())
	}
	if n := len(h.instances("pending", "running")); n != 1 {
		t.Fatalf("%d running instances after the retry; want 1", n)
	}
}

// A launch that fails after the JIT config was generated deletes the
// runner no instance will use.
func TestLaunchFailureDeletesTheRunner(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.ec2.FailCreateFleet("", "InvalidParameterValue", 10)
	msg := h.enqueue(602)
	if failed := h.run(h.batch(msg)); len(failed) != 1 {
		t.Fatalf("failed %v; want the record retried", failed)
	}
	if n := h.gh.JITConfigRequests(); n != 1 {
		t.Fatalf("%d JIT config requests; want 1", n)
	}
	if rs := h.gh.Runners(""); len(rs) != 0 {
		t.Fatalf("runners left after the failed launch: %+v", rs)
	}
}

// A job over maxRunners waits in the table, not in SQS receives: its
// message is done (no retry scheduled, nothing to reach the DLQ). When a
// slot frees, a wake launches the oldest waiting job; a job arriving while
// older ones wait queues behind them, even with a slot free.
func TestLimitedJobWaitsInTheTable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg, func(c *config.Config) { c.MaxRunners = 2 })
	m1, m2, m3 := h.enqueue(701), h.enqueue(702), h.enqueue(703)
	if failed := h.run(h.batch(m1, m2)); len(failed) != 0 {
		t.Fatalf("first two: failed %v", failed)
	}
	if failed := h.run(h.batch(m3)); len(failed) != 0 {
		t.Fatalf("third over maxRunners=2: failed %v; want its message done, the job waiting", failed)
	}
	if n := h.retries.n.Load(); n != 0 {
		t.Fatalf("%d retries scheduled for a job held by a limit; want 0", n)
	}
	if j := h.job(703); j.Phase != state.PhaseWaiting || !j.Waiting || j.WaitReason == "" || j.SlotProfile != "" {
		t.Fatalf("record of the held job %+v; want waiting, no slot", j)
	}
	// A duplicate of a launched job succeeds even with every slot taken.
	if failed := h.run(h.batch(m1)); len(failed) != 0 {
		t.Fatalf("duplicate of a launched job at the limit: failed %v", failed)
	}
	// A wake with every slot taken launches nothing.
	h.run(h.batch(*queue.WakeMessage("test")))
	if j := h.job(703); j.InstanceID != "" {
		t.Fatal("a wake launched past maxRunners")
	}
	// The job on 701's runner completes: that slot is free. A new job
	// queues behind 703 (and wakes it); the wake launches 703.
	if _, err := h.store.FreeRunnerSlot(context.Background(), 701, h.job(701).InstanceRunnerName); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Second)
	m4 := h.enqueue(704)
	m4.ReceivedAt = h.clock.Now().UnixMilli()
	if failed := h.run(h.batch(m4)); len(failed) != 0 {
		t.Fatalf("job 704: failed %v", failed)
	}
	if j := h.job(704); j.Phase != state.PhaseWaiting {
		t.Fatalf("job 704 jumped the queue: %+v", j)
	}
	wakes := h.wakes()
	if len(wakes) != 1 {
		t.Fatalf("%d wakes sent; want 1 (the job that queued behind)", len(wakes))
	}
	h.run(h.batch(wakes[0]))
	if j := h.job(703); j.Phase != state.PhaseLaunched || j.Waiting {
		t.Fatalf("oldest waiting job after the wake: %+v", j)
	}
	if j := h.job(704); j.Phase != state.PhaseWaiting || !j.Waiting {
		t.Fatalf("the younger job must still wait (maxRunners 2): %+v", j)
	}
}

// delayed counts the queue's messages that SQS still holds back (a wake
// sent with a delay).
func (h *harness) delayed() int {
	h.t.Helper()
	out, err := sqs.NewFromConfig(h.aws.Config).GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(h.p.Queue), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	n, err := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed)])
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// wakes drains the harness queue's wake messages.
func (h *harness) wakes() []queue.Message {
	h.t.Helper()
	var out []queue.Message
	for _, b := range h.aws.ReceiveAll(h.t, h.p.Queue, 100) {
		m, err := queue.Decode(b)
		if err != nil {
			h.t.Fatal(err)
		}
		if !m.Wake {
			h.t.Fatalf("non-wake message on the queue: %+v", m)
		}
		out = append(out, *m)
	}
	return out
}

func TestProfileLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg, func(c *config.Config) {
		p := c.Profiles["gpu"]
		p.MaxRunners = 1
		c.Profiles["gpu"] = p
	})
	a, b := h.enqueue(751, "self-hosted", "gpu"), h.enqueue(752, "self-hosted", "gpu")
	c := h.enqueue(753)
	if failed := h.run(h.batch(a, b, c)); len(failed) != 0 {
		t.Fatalf("failed %v; want every message done", failed)
	}
	waiting := 0
	for _, id := range []int64{751, 752} {
		if h.job(id).Waiting {
			waiting++
		}
	}
	if waiting != 1 {
		t.Fatalf("%d gpu jobs waiting; want exactly one held back by the gpu limit", waiting)
	}
	if h.job(753).Phase != state.PhaseLaunched {
		t.Fatal("a default-profile job was held back by the gpu limit")
	}
}

func TestForeignLabelsSkippedNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	msg := h.enqueue(801, "self-hosted", "windows")
	if failed := h.run(h.batch(msg)); len(failed) != 0 {
		t.Fatalf("unknown labels must not be retried; failed %v", failed)
	}
	if n := len(h.instances()); n != 0 {
		t.Fatalf("%d instances for foreign labels", n)
	}
	if j := h.job(801); j.Phase != state.PhaseSkipped || !strings.Contains(j.SkipReason, "windows") || j.Live {
		t.Fatalf("record %+v", j)
	}
}

func TestTokenReusedAcrossJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	for i := int64(0); i < 4; i++ {
		if failed := h.run(h.batch(h.enqueue(900+2*i), h.enqueue(901+2*i))); len(failed) != 0 {
			t.Fatalf("failed %v", failed)
		}
	}
	if n := h.gh.TokenRequests(); n != 1 {
		t.Fatalf("8 jobs made %d installation token requests; want 1", n)
	}
}

// panicking fails one job's launch with a panic.
type panicking struct {
	scaleup.Launcher
	jobID int64
}

func (p panicking) Launch(ctx context.Context, r fleet.Request) (fleet.Result, error) {
	if r.JobID == p.jobID {
		panic("injected")
	}
	return p.Launcher.Launch(ctx, r)
}

func TestBatchRecordsAreIndependent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.handler = h.newHandler(h.ghc, func(l scaleup.Launcher) scaleup.Launcher { return panicking{l, 1002} })
	ev := h.batch(h.enqueue(1001), h.enqueue(1002), h.enqueue(1003))
	bad := h.batch()
	bad.Records = append(bad.Records, ev.Records[0])
	bad.Records[0].MessageId, bad.Records[0].Body = "garbage", `{"jobId":`
	ev.Records = append(ev.Records, bad.Records[0])
	failed := h.run(ev)
	if len(failed) != 1 || failed[0] != ev.Records[1].MessageId {
		t.Fatalf("failed %v; want only the panicking record %s", failed, ev.Records[1].MessageId)
	}
	if h.job(1001).Phase != state.PhaseLaunched || h.job(1003).Phase != state.PhaseLaunched {
		t.Fatal("a panic in one record affected the others")
	}
	// The panicking record's claim expires with its lease; then it launches.
	h.handler = h.newHandler(h.ghc, nil)
	h.clock.Advance(time.Duration(h.cfg.ScaleUp.ClaimLeaseSeconds+1) * time.Second)
	if failed := h.run(h.batch(h.enqueue(1002))); len(failed) != 0 {
		t.Fatalf("retry of the panicked record failed %v", failed)
	}
}

func TestStillQueuedCheck(t *testing.T) {
	t.Parallel()
	on := true
	h := newHarness(t, config.ScopeOrg, func(c *config.Config) { c.ScaleUp.CheckStillQueued = &on })
	msg := h.enqueue(1101)
	if err := h.gh.SetJobStatus(1101, "in_progress", ""); err != nil {
		t.Fatal(err)
	}
	if failed := h.run(h.batch(msg)); len(failed) != 0 {
		t.Fatalf("failed %v", failed)
	}
	if n := len(h.instances()); n != 0 {
		t.Fatalf("launched for a job GitHub shows in progress")
	}
	if j := h.job(1101); j.Phase != state.PhaseSkipped || !strings.Contains(j.SkipReason, "no longer queued") {
		t.Fatalf("record %+v", j)
	}
	msg2 := h.enqueue(1102)
	if failed := h.run(h.batch(msg2)); len(failed) != 0 || h.job(1102).Phase != state.PhaseLaunched {
		t.Fatalf("a still-queued job was not launched: failed %v", failed)
	}
}

// Spot pools that scaledown saw interrupting our instances are skipped: with
// every spot pool of the profile interrupted, the launch goes on-demand at once.
func TestInterruptedPoolsSkipped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	for _, az := range []string{"us-east-1a", "us-east-1b"} {
		if err := h.store.MarkOfferingUnavailable(context.Background(), "spot:t3.large:"+az, time.Now().Add(10*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if failed := h.run(h.batch(h.enqueue(1201))); len(failed) != 0 {
		t.Fatalf("failed %v", failed)
	}
	calls := h.ec2.FleetInputs()
	if len(calls) != 1 || calls[0].TargetCapacitySpecification.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeOnDemand {
		t.Fatalf("CreateFleet calls %d; want one on-demand call", len(calls))
	}
	if j := h.job(1201); j.CapacityType != fleet.CapacityTypeOnDemand {
		t.Fatalf("record %+v", j)
	}
}

// While GitHub's rate limit refuses JIT configs, jobs wait in the table:
// no instance is launched (so none is terminated by an undo), the hold is
// shared with other invocations, and one wake comes for the reset, which
// then launches every held job.
func TestRateLimitHoldsJobsWithoutLaunching(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.gh.RateLimitFor(time.Minute, ghfake.RouteOrgJITConfig)
	msgs := []queue.Message{h.enqueue(1101), h.enqueue(1102), h.enqueue(1103)}
	if failed := h.run(h.batch(msgs...)); len(failed) != 0 {
		t.Fatalf("failed %v; want the held messages done", failed)
	}
	if n := len(h.instances()); n != 0 {
		t.Fatalf("%d instances launched during the rate limit; want 0", n)
	}
	for _, m := range msgs {
		if j := h.job(m.JobID); !j.Waiting || !strings.Contains(j.WaitReason, "held until") {
			t.Fatalf("job %d during the rate limit: %+v; want it waiting, held", m.JobID, j)
		}
	}
	until, err := h.store.GitHubHold(context.Background())
	if err != nil || until.Before(h.clock.Now().Add(30*time.Second)) {
		t.Fatalf("shared hold %v, %v; want about a minute", until, err)
	}
	// Another batch during the hold asks GitHub nothing.
	calls := h.gh.JITConfigRequests()
	m4 := h.enqueue(1104)
	m4.ReceivedAt = h.clock.Now().UnixMilli() + 1
	h.run(h.batch(m4))
	if n := h.gh.JITConfigRequests(); n != calls {
		t.Fatalf("%d JIT config requests during a known hold; want none", n-calls)
	}
	// One wake, for the reset: SQS holds it back until then.
	if wakes := h.wakes(); len(wakes) != 0 {
		t.Fatalf("%d wakes visible during the hold; want none before the reset", len(wakes))
	}
	if n := h.delayed(); n != 1 {
		t.Fatalf("%d delayed wakes; want one, for the reset", n)
	}
	// The reset: GitHub answers again, the wake launches every held job.
	h.gh.ClearFaults()
	h.clock.Advance(time.Minute + time.Second)
	h.run(h.batch(*queue.WakeMessage("GitHub's rate limit reset")))
	if n := len(h.instances("pending", "running")); n != 4 {
		t.Fatalf("%d instances after the reset; want the 4 held jobs launched", n)
	}
	if n := len(h.instances()); n != 4 {
		t.Fatalf("%d instances in all; want 4 (none launched and terminated)", n)
	}
}

// A container reads the state other invocations share (GitHub's hold)
// at most every few seconds, not per batch: a hold recorded just after a
// read costs one refused GitHub call (which holds this container too), and
// a hold recorded before a read holds the batch without a call.
func TestSharedHoldReadAtMostEveryFewSeconds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	h.run(h.batch(h.enqueue(1301))) // reads the shared state: no hold
	if j := h.job(1301); j.Phase != state.PhaseLaunched {
		t.Fatalf("job before any hold: %+v", j)
	}
	// Another invocation sees GitHub's rate limit and shares the hold.
	h.gh.RateLimitFor(time.Minute, ghfake.RouteOrgJITConfig)
	if err := h.store.HoldGitHub(context.Background(), h.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	calls := h.gh.JITConfigRequests()
	h.clock.Advance(time.Second)
	h.run(h.batch(h.enqueue(1302)))
	if n := h.gh.JITConfigRequests() - calls; n != 1 {
		t.Fatalf("%d JIT config requests a second after the last read; want 1 (the hold not read yet, GitHub refuses)", n)
	}
	// A fresh container reads the hold at once and asks GitHub nothing.
	fresh := h.newHandler(h.ghc, nil)
	calls = h.gh.JITConfigRequests()
	if _, err := fresh.Handle(context.Background(), h.batch(h.enqueue(1303))); err != nil {
		t.Fatal(err)
	}
	if n := h.gh.JITConfigRequests() - calls; n != 0 {
		t.Fatalf("%d JIT config requests from a container that read the hold; want 0", n)
	}
	for _, id := range []int64{1302, 1303} {
		if j := h.job(id); !j.Waiting || !strings.Contains(j.WaitReason, "held until") {
			t.Fatalf("job %d: %+v; want it held", id, j)
		}
	}
}

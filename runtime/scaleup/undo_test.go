package scaleup_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// appliedThenLost is the job store with RecordLaunch applied (the record
// and the JIT-config hand-over written) but answered with an error, as
// when every response of the call was lost; after runs in between (the
// instance booting and taking its config meanwhile).
type appliedThenLost struct {
	*state.Store
	after func(l state.Launch)
}

func (c appliedThenLost) RecordLaunch(ctx context.Context, jobID int64, claimID string, l state.Launch) error {
	if err := c.Store.RecordLaunch(ctx, jobID, claimID, l); err != nil {
		return err
	}
	c.after(l)
	return fmt.Errorf("record launch of job %d: operation error DynamoDB: TransactWriteItems: RequestTimeout", jobID)
}

// When the launch's record cannot be confirmed, scaleup undoes it through
// the guarded retirement: the write may have handed the JIT config over,
// and GitHub may have given the runner a job (any queued job with matching
// labels). A busy runner keeps its instance; an idle one is deleted before
// its instance is terminated.
func TestUndoNeverKillsABusyRunner(t *testing.T) {
	t.Parallel()
	for _, busy := range []bool{true, false} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, config.ScopeOrg)
			h.gh.SetBusyLag(1 << 40) // lists never show it: only the 422 does
			h.enqueue(801)           // a queued job whose own runner is not launched yet
			msg := h.enqueue(802)
			var runnerID int64
			jobs := appliedThenLost{Store: h.store, after: func(l state.Launch) {
				enc, err := h.jit.Take(context.Background(), jitstore.InstanceARN("aws", "us-east-1", "123456789012", l.InstanceID))
				if err != nil {
					t.Error(err)
					return
				}
				if runnerID, err = h.gh.RunnerOnline(enc); err != nil {
					t.Error(err)
					return
				}
				if busy {
					if err := h.gh.StartJob(801, runnerID); err != nil {
						t.Error(err)
					}
				}
			}}
			handler := h.handlerWith(h.ghc, fleet.New(h.ec2), jobs)
			if _, err := handler.Handle(context.Background(), h.batch(msg)); err != nil {
				t.Fatal(err)
			}
			running := h.instances("pending", "running")
			_, registered := h.gh.Runner(runnerID)
			switch {
			case busy && (len(running) != 1 || !registered || h.gh.BusyDeleteRefusals() != 1):
				t.Fatalf("busy runner: %d instances running, runner registered %v, 422s %d; want the instance kept",
					len(running), registered, h.gh.BusyDeleteRefusals())
			case !busy && (len(running) != 0 || registered):
				t.Fatalf("idle runner: %d instances running, runner registered %v; want both gone", len(running), registered)
			}
		})
	}
}

// A job that GitHub started on one of our runners (launched for another job,
// which now waits for a runner) still gets its own launch: one runner per
// job keeps the counts equal. A job started on a runner that is not ours
// launches nothing.
func TestJobStartedOnOurRunnerStillLaunches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	ours := h.enqueue(901)
	theirs := h.enqueue(902)
	for id, runner := range map[int64]string{901: tags.RunnerName(h.cfg.NamePrefix, 777, 1), 902: "someone-elses-runner"} {
		ev := &state.JobEvent{JobID: id, Action: state.StatusInProgress, Ours: true, RunnerName: runner}
		ev.RunnerJob, _ = tags.RunnerJob(h.cfg.NamePrefix, runner)
		if _, err := h.store.RecordEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if failed := h.run(h.batch(ours, theirs)); len(failed) != 0 {
		t.Fatalf("failed %v\n%s", failed, h.logs.String())
	}
	if j := h.job(901); j.InstanceID == "" {
		t.Errorf("job running on our runner got no launch: %+v", j)
	}
	if j := h.job(902); j.InstanceID != "" {
		t.Errorf("job running on a foreign runner launched %s", j.InstanceID)
	}
	all := h.instances()
	if len(all) != 1 || !slices.ContainsFunc(all, func(i types.Instance) bool { return i.State.Name != types.InstanceStateNameTerminated }) {
		t.Errorf("%d instances; want exactly the one launch", len(all))
	}
}

// claimLost is the job store with the claim's lease run out and taken
// over by another invocation just before the launch is recorded.
// claimLost: handedOver reports, right after the refused write, whether
// the instance could have read a configuration (its bootstrap takes it as
// soon as it exists).
type claimLost struct {
	*state.Store
	clock      *testkit.Clock
	jit        *jitstore.Store
	handedOver *bool
}

func (c claimLost) RecordLaunch(ctx context.Context, jobID int64, claimID string, l state.Launch) error {
	c.clock.Advance(time.Hour)
	out, err := c.Claim(ctx, jobID, "another-invocation", "default", time.Hour)
	if err != nil {
		return fmt.Errorf("take the claim over: %w", err)
	}
	if out != state.Claimed {
		return fmt.Errorf("take the claim over: %v", out)
	}
	err = c.Store.RecordLaunch(ctx, jobID, claimID, l)
	_, terr := c.jit.Take(ctx, jitstore.InstanceARN("aws", "us-east-1", "123456789012", l.InstanceID))
	*c.handedOver = terr == nil
	return err
}

// A launch whose claim was lost is recorded nowhere and hands nothing
// over: the record and the JIT config are one transaction, so the instance
// never finds a configuration (no runner can take a job there), and it is
// terminated.
func TestLostClaimHandsNoConfigOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeOrg)
	msg := h.enqueue(811)
	var handedOver bool
	handler := h.handlerWith(h.ghc, fleet.New(h.ec2), claimLost{Store: h.store, clock: h.clock, jit: h.jit, handedOver: &handedOver})
	if _, err := handler.Handle(context.Background(), h.batch(msg)); err != nil {
		t.Fatal(err)
	}
	if handedOver {
		t.Fatal("the instance could read its JIT config although its launch was refused")
	}
	all := h.instances()
	if len(all) != 1 {
		t.Fatalf("%d instances; want the one launched", len(all))
	}
	id := aws.ToString(all[0].InstanceId)
	if _, err := h.jit.Take(context.Background(), jitstore.InstanceARN("aws", "us-east-1", "123456789012", id)); !errors.Is(err, jitstore.ErrNotFound) {
		t.Fatalf("JIT config of the instance whose claim was lost: %v; want none stored", err)
	}
	if running := h.instances("pending", "running"); len(running) != 0 {
		t.Fatalf("%d instances running; want the launch undone", len(running))
	}
	if j := h.job(811); j.InstanceID != "" || j.ClaimID != "another-invocation" {
		t.Fatalf("record %+v; want no launch recorded, the other claim in place", j)
	}
}

package scaleup_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// claimLostAfter is the job store with RecordLaunch failing as if the claim
// had run out, after before ran (the instance booting meanwhile).
type claimLostAfter struct {
	*state.Store
	before func(l state.Launch)
}

func (c claimLostAfter) RecordLaunch(_ context.Context, jobID int64, _ string, l state.Launch) error {
	c.before(l)
	return fmt.Errorf("record launch of job %d: %w", jobID, state.ErrClaimLost)
}

// When the launch cannot be recorded, scaleup undoes it through the guarded
// retirement: the runner already has its JIT config, and GitHub may have
// given it a job (any queued job with matching labels). A busy runner keeps
// its instance; an idle one is deleted before its instance is terminated.
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
			jobs := claimLostAfter{Store: h.store, before: func(l state.Launch) {
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

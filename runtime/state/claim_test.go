package state_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func claimFixture(t *testing.T) (*state.Store, *testenv.AWS, string, *testkit.Clock) {
	t.Helper()
	a := testenv.AWSForTest(t)
	table := a.JobsTable(t)
	c := testkit.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	s := state.NewStore(a.Dynamo, table, 24*time.Hour, c.Now)
	return s, a, table, c
}

func enqueued(t *testing.T, s *state.Store, jobID int64) {
	t.Helper()
	out, err := s.RecordEvent(context.Background(), &state.JobEvent{JobID: jobID, Action: state.StatusQueued, Repository: "o/r", Owner: "o", InstallationID: 1, Labels: []string{"self-hosted"}, Ours: true, Profile: "default"})
	if err != nil || out != state.Enqueue {
		t.Fatalf("enqueue job %d: %v %v", jobID, out, err)
	}
}

func TestClaimOnceUntilLeaseExpires(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, c := claimFixture(t)
	enqueued(t, s, 1)

	if got, err := s.Claim(ctx, 1, "inv-a", "default", 2*time.Minute); err != nil || got != state.Claimed {
		t.Fatalf("first claim: %v %v", got, err)
	}
	if got, _ := s.Claim(ctx, 1, "inv-b", "default", 2*time.Minute); got != state.ClaimHeld {
		t.Fatalf("second claim while the lease runs: %v; want claim_held", got)
	}
	// The same invocation may re-claim (a retried call).
	if got, _ := s.Claim(ctx, 1, "inv-a", "default", 2*time.Minute); got != state.Claimed {
		t.Fatalf("re-claim by the holder: %v", got)
	}
	// inv-a crashed: after the lease, inv-b takes over.
	c.Advance(2*time.Minute + time.Second)
	if got, _ := s.Claim(ctx, 1, "inv-b", "default", 2*time.Minute); got != state.Claimed {
		t.Fatalf("claim after the lease: %v; want claimed", got)
	}
	// inv-a comes back and tries to record its launch: its claim is gone.
	err := s.RecordLaunch(ctx, 1, "inv-a", state.Launch{InstanceID: "i-a", InstanceType: "t3.large", CapacityType: "spot"})
	if !errors.Is(err, state.ErrClaimLost) {
		t.Fatalf("RecordLaunch by the old holder = %v; want ErrClaimLost", err)
	}
	if err := s.RecordLaunch(ctx, 1, "inv-b", state.Launch{InstanceID: "i-b", InstanceType: "t3.large", AvailabilityZone: "us-east-1a", CapacityType: "on-demand", SpotFallback: true, RunnerName: "jitr-i-b", RunnerID: 9}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Claim(ctx, 1, "inv-c", "default", time.Minute); got != state.AlreadyLaunched {
		t.Fatalf("claim after launch: %v; want already_launched", got)
	}
	job, _, _ := s.Get(ctx, 1)
	if job.Phase != state.PhaseLaunched || job.InstanceID != "i-b" || job.CapacityType != "on-demand" || !job.SpotFallback ||
		job.InstanceRunnerName != "jitr-i-b" || job.InstanceRunnerID != 9 || job.RunnerName != "" || job.LaunchAttempts != 3 || job.SlotProfile != "default" || !job.Live {
		t.Fatalf("record after launch: %+v", job)
	}
}

func TestConcurrentClaimsOneWins(t *testing.T) {
	t.Parallel()
	s, _, _, _ := claimFixture(t)
	enqueued(t, s, 2)
	var wg sync.WaitGroup
	results := make(chan state.ClaimOutcome, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got, err := s.Claim(context.Background(), 2, "inv-"+string(rune('a'+i)), "default", time.Minute)
			if err != nil {
				t.Error(err)
			}
			results <- got
		}(i)
	}
	wg.Wait()
	close(results)
	claimed := 0
	for r := range results {
		if r == state.Claimed {
			claimed++
		}
	}
	if claimed != 1 {
		t.Fatalf("%d concurrent claims succeeded; want 1", claimed)
	}
}

func TestClaimRefusesStartedOrMissingJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, _ := claimFixture(t)
	if got, _ := s.Claim(ctx, 404, "inv", "default", time.Minute); got != state.NoRecord {
		t.Fatalf("claim of a job without record: %v", got)
	}
	enqueued(t, s, 3)
	if _, err := s.RecordEvent(ctx, &state.JobEvent{JobID: 3, Action: state.StatusCompleted, Conclusion: "cancelled"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Claim(ctx, 3, "inv", "default", time.Minute); got != state.JobStarted {
		t.Fatalf("claim of a cancelled job: %v; want job_started", got)
	}
}

func TestReleaseAndSlots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, _ := claimFixture(t)
	for id := int64(10); id < 14; id++ {
		enqueued(t, s, id)
		profile := "default"
		if id == 13 {
			profile = "gpu"
		}
		if got, err := s.Claim(ctx, id, "inv", profile, time.Minute); err != nil || got != state.Claimed {
			t.Fatalf("claim %d: %v %v", id, got, err)
		}
	}
	count := func(p string) int {
		n, err := s.CountSlots(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if d, g := count("default"), count("gpu"); d != 3 || g != 1 {
		t.Fatalf("slots default=%d gpu=%d; want 3 and 1", d, g)
	}
	// A failed launch gives the slot back and allows a new claim.
	if err := s.ReleaseClaim(ctx, 10, "inv", "CreateFleet: InsufficientInstanceCapacity"); err != nil {
		t.Fatal(err)
	}
	// A slot belongs to the instance: the completion of job 11 (which ran
	// elsewhere) frees nothing; the completion of the job its runner ran
	// does, once, and only for that runner.
	if err := s.RecordLaunch(ctx, 11, "inv", state.Launch{InstanceID: "i-11", InstanceType: "t3.large", CapacityType: "spot", RunnerName: "jitr-j11-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordEvent(ctx, &state.JobEvent{JobID: 11, Action: state.StatusCompleted, Conclusion: "success", RunnerName: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	if d := count("default"); d != 2 {
		t.Fatalf("default slots after a completion elsewhere = %d; want 2 (the instance still holds one)", d)
	}
	for runner, want := range map[string]bool{"jitr-j11-2": false, "jitr-j11-1": true} {
		if freed, err := s.FreeRunnerSlot(ctx, 11, runner); err != nil || freed != want {
			t.Fatalf("free the slot of runner %s: %v %v; want %v", runner, freed, err, want)
		}
	}
	if freed, err := s.FreeRunnerSlot(ctx, 11, "jitr-j11-1"); err != nil || freed {
		t.Fatalf("freeing twice: %v %v; want false", freed, err)
	}
	// A skipped job leaves the live index and frees its slot.
	if err := s.Skip(ctx, 12, "job no longer queued on GitHub"); err != nil {
		t.Fatal(err)
	}
	if d := count("default"); d != 0 {
		t.Fatalf("default slots after release, completion and skip = %d; want 0", d)
	}
	job, _, _ := s.Get(ctx, 10)
	if job.Phase != state.PhaseFailed || job.LastError == "" || job.ClaimID != "" {
		t.Fatalf("released record: %+v", job)
	}
	if got, _ := s.Claim(ctx, 10, "inv-2", "default", time.Minute); got != state.Claimed {
		t.Fatalf("claim after release: %v", got)
	}
	job, _, _ = s.Get(ctx, 12)
	if job.Live || job.Phase != state.PhaseSkipped {
		t.Fatalf("skipped record: %+v", job)
	}
}

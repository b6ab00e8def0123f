package state_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/state"
)

// Two jobs reach for one pooled instance at once: exactly one gets it, the
// other is told so (and would try the next candidate).
func TestPoolClaimRaceOneWins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, _ := claimFixture(t)
	if err := s.AddPooled(ctx, state.PoolInstance{InstanceID: "i-0pool00000001", Profile: "default", Kind: "hot", State: state.PoolReady,
		InstanceType: "t3.large", CapacityType: "spot"}); err != nil {
		t.Fatal(err)
	}
	cands, err := s.PoolCandidates(ctx, "default", "hot", 5)
	if err != nil || len(cands) != 1 || cands[0].InstanceID != "i-0pool00000001" || cands[0].InstanceType != "t3.large" {
		t.Fatalf("candidates = %+v, %v", cands, err)
	}
	const claimers = 8
	var wg sync.WaitGroup
	wins := make(chan string, claimers)
	for i := range claimers {
		wg.Go(func() {
			claim := fmt.Sprintf("claim-%d", i)
			ok, err := s.ClaimPooled(ctx, "i-0pool00000001", "default", "hot", claim, time.Minute)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins <- claim
			}
		})
	}
	wg.Wait()
	close(wins)
	var won []string
	for w := range wins {
		won = append(won, w)
	}
	if len(won) != 1 {
		t.Fatalf("%d claims of one pooled instance won (%v); want exactly 1", len(won), won)
	}
	if cands, _ := s.PoolCandidates(ctx, "default", "hot", 5); len(cands) != 0 {
		t.Fatalf("a claimed instance is still a candidate: %+v", cands[0])
	}
	// The loser's hand-over must fail too: only the winner's transaction
	// may delete the pool item.
	p, ok, err := s.GetPooled(ctx, "i-0pool00000001")
	if err != nil || !ok || p.State != state.PoolClaimed || p.ClaimID != won[0] {
		t.Fatalf("pool item after the race = %+v, %v, %v", p, ok, err)
	}
}

// The job's launch record and the pool item's deletion are one
// transaction: the job owns the instance afterwards, its slot replaces the
// pool item's, and a scaleup whose pool claim was lost records nothing.
func TestTakePooledRecordsTheJobAndDropsThePoolItem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, c := claimFixture(t)
	enqueued(t, s, 21)
	enqueued(t, s, 22)
	if err := s.AddPooled(ctx, state.PoolInstance{InstanceID: "i-0pool00000002", Profile: "default", Kind: "stopped", State: state.PoolPreparing}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountSlots(ctx, "default"); n != 1 {
		t.Fatalf("slots with one pooled instance = %d; want 1 (pooled instances hold a slot)", n)
	}
	if cands, _ := s.PoolCandidates(ctx, "default", "stopped", 5); len(cands) != 0 {
		t.Fatal("a preparing stopped-pool instance can be taken")
	}
	p, _, _ := s.GetPooled(ctx, "i-0pool00000002")
	if ok, err := s.AdvancePooled(ctx, p, state.PoolPreparing, state.PoolStopping); !ok || err != nil {
		t.Fatalf("preparing → stopping: %v %v", ok, err)
	}
	if ok, _ := s.AdvancePooled(ctx, p, state.PoolPreparing, state.PoolStopping); ok {
		t.Fatal("a second preparing → stopping succeeded")
	}
	if ok, err := s.AdvancePooled(ctx, p, state.PoolStopping, state.PoolReady); !ok || err != nil {
		t.Fatalf("stopping → ready: %v %v", ok, err)
	}
	if cands, _ := s.PoolCandidates(ctx, "default", "stopped", 5); len(cands) != 1 {
		t.Fatalf("ready stopped instance not a candidate: %+v", cands)
	}

	for _, job := range []int64{21, 22} {
		if got, err := s.Claim(ctx, job, fmt.Sprint("job-", job), "default", time.Minute); err != nil || got != state.Claimed {
			t.Fatalf("claim job %d: %v %v", job, got, err)
		}
	}
	if ok, err := s.ClaimPooled(ctx, "i-0pool00000002", "default", "stopped", "job-21", time.Minute); !ok || err != nil {
		t.Fatalf("pool claim: %v %v", ok, err)
	}
	// Job 22's scaleup never won the instance: its transaction fails and
	// writes nothing; its own claim still holds (ErrPoolLost, not a lost
	// job claim: the job is retried).
	err := s.RecordLaunch(ctx, 22, "job-22", state.Launch{InstanceID: "i-0pool00000002", CapacityType: "on-demand", FromPool: "stopped",
		With: []types.TransactWriteItem{s.TakePooled("i-0pool00000002", "job-22")}})
	if !errors.Is(err, state.ErrPoolLost) || errors.Is(err, state.ErrClaimLost) {
		t.Fatalf("hand-over without the pool claim = %v; want ErrPoolLost", err)
	}
	if j, _, _ := s.Get(ctx, 22); j.InstanceID != "" {
		t.Fatalf("job 22 recorded on an instance it never won: %+v", j)
	}

	c.Advance(time.Second)
	if err := s.RecordLaunch(ctx, 21, "job-21", state.Launch{InstanceID: "i-0pool00000002", CapacityType: "on-demand", FromPool: "stopped",
		RunnerName: "jitr-j21-1", RunnerID: 5, With: []types.TransactWriteItem{s.TakePooled("i-0pool00000002", "job-21")}}); err != nil {
		t.Fatal(err)
	}
	// The item is a tombstone: no slot, not in the pool, not removable,
	// and it says the instance was taken.
	if p, ok, _ := s.GetPooled(ctx, "i-0pool00000002"); !ok || p.State != state.PoolTaken {
		t.Fatalf("pool item after the hand-over = %+v, %v; want a taken tombstone", p, ok)
	}
	if pool, _ := s.Pooled(ctx, "default"); len(pool) != 0 {
		t.Fatalf("a taken instance is still listed in its pool: %+v", pool[0])
	}
	if err := s.RemovePooled(ctx, "i-0pool00000002"); !errors.Is(err, state.ErrPoolTaken) || !errors.Is(err, state.ErrNotPooled) {
		t.Fatalf("removing a taken instance's item = %v; want ErrPoolTaken (it must never be terminated as pooled)", err)
	}
	j, _, _ := s.Get(ctx, 21)
	if j.InstanceID != "i-0pool00000002" || j.FromPool != "stopped" || j.Phase != state.PhaseLaunched {
		t.Fatalf("job 21 after taking the pooled instance: %+v", j)
	}
	// Job 21's slot and job 22's claim remain; the pool item's is gone.
	if n, _ := s.CountSlots(ctx, "default"); n != 2 {
		t.Fatalf("slots after the hand-over = %d; want 2", n)
	}
}

// A pool item under a live claim cannot be removed (a job may be taking
// its instance); once the claim's lease has run out it can, and a claimed
// instance returned unused can be taken again.
func TestRemovePooledRespectsLiveClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, _, c := claimFixture(t)
	for _, id := range []string{"i-0pool00000003", "i-0pool00000004"} {
		if err := s.AddPooled(ctx, state.PoolInstance{InstanceID: id, Profile: "default", Kind: "hot", State: state.PoolReady}); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := s.ClaimPooled(ctx, "i-0pool00000003", "default", "hot", "inv-a", time.Minute); !ok {
		t.Fatal("claim failed")
	}
	if err := s.RemovePooled(ctx, "i-0pool00000003"); !errors.Is(err, state.ErrPoolClaimed) {
		t.Fatalf("remove under a live claim = %v; want ErrPoolClaimed", err)
	}
	p, _, _ := s.GetPooled(ctx, "i-0pool00000003")
	if err := s.ReturnPooled(ctx, p, "inv-a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.ClaimPooled(ctx, "i-0pool00000003", "default", "hot", "inv-b", time.Minute); !ok {
		t.Fatal("a returned instance could not be claimed again")
	}
	c.Advance(time.Minute + time.Second)
	if err := s.RemovePooled(ctx, "i-0pool00000003"); err != nil {
		t.Fatalf("remove after the claim's lease = %v", err)
	}
	if err := s.RemovePooled(ctx, "i-0pool00000004"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePooled(ctx, "i-0pool00000004"); !errors.Is(err, state.ErrNotPooled) {
		t.Fatalf("removing a removed item = %v; want ErrNotPooled (a job may have taken the instance: it must not be terminated)", err)
	}
	if pool, err := s.Pooled(ctx, "default"); err != nil || len(pool) != 0 {
		t.Fatalf("pool after removals = %+v, %v", pool, err)
	}
}

package state_test

import (
	"context"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func newStore(t *testing.T) *state.Store {
	t.Helper()
	a := testenv.AWSForTest(t)
	return state.NewStore(a.Dynamo, a.JobsTable(t), 7*24*time.Hour, nil)
}

func TestRecordEventStatusesOnlyMoveForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	ev := func(action string) *state.JobEvent {
		return &state.JobEvent{JobID: 42, Action: action, Repository: "o/r", Owner: "o", InstallationID: 7, Labels: []string{"self-hosted"}, Ours: true, Profile: "default"}
	}
	steps := []struct {
		action     string
		want       state.Outcome
		wantStatus string
	}{
		{state.StatusInProgress, state.Recorded, state.StatusInProgress},
		{state.StatusQueued, state.Stale, state.StatusInProgress},
		{state.StatusCompleted, state.Recorded, state.StatusCompleted},
		{state.StatusInProgress, state.Stale, state.StatusCompleted},
		{state.StatusWaiting, state.Stale, state.StatusCompleted},
	}
	for i, st := range steps {
		got, err := s.RecordEvent(ctx, ev(st.action))
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, st.action, err)
		}
		if got != st.want {
			t.Errorf("step %d (%s): outcome %v; want %v", i, st.action, got, st.want)
		}
		job, ok, err := s.Get(ctx, 42)
		if err != nil || !ok {
			t.Fatalf("step %d: get: ok=%v err=%v", i, ok, err)
		}
		if job.Status != st.wantStatus {
			t.Errorf("step %d (%s): status %q; want %q", i, st.action, job.Status, st.wantStatus)
		}
	}
	job, _, _ := s.Get(ctx, 42)
	if job.Enqueued || job.Live {
		t.Errorf("a queued event after in_progress enqueued the job: %+v", job)
	}
}

func TestRecordEventEnqueuesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	base := state.JobEvent{JobID: 7, Action: state.StatusQueued, Repository: "o/r", Owner: "o", InstallationID: 1, Labels: []string{"self-hosted"}, Ours: true, Profile: "default"}

	waiting := base
	waiting.Action = state.StatusWaiting
	if got, err := s.RecordEvent(ctx, &waiting); err != nil || got != state.Recorded {
		t.Fatalf("waiting: %v, %v; want recorded", got, err)
	}
	var enqueues, dups int
	for i := 0; i < 3; i++ {
		ev := base
		ev.DeliveryID = string(rune('a' + i))
		got, err := s.RecordEvent(ctx, &ev)
		if err != nil {
			t.Fatal(err)
		}
		switch got {
		case state.Enqueue:
			enqueues++
		case state.Duplicate:
			dups++
		default:
			t.Errorf("delivery %d: outcome %v", i, got)
		}
	}
	if enqueues != 1 || dups != 2 {
		t.Errorf("3 deliveries gave %d enqueues and %d duplicates; want 1 and 2", enqueues, dups)
	}
	// Duplicates change nothing: the record still names the enqueuing delivery.
	job, _, _ := s.Get(ctx, 7)
	if !job.Enqueued || !job.Live || job.LastDelivery != "a" {
		t.Errorf("record after deliveries: %+v", job)
	}
}

func TestReleaseEnqueueAllowsRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	ev := &state.JobEvent{JobID: 9, Action: state.StatusQueued, Repository: "o/r", Owner: "o", InstallationID: 1, Labels: []string{"self-hosted"}, Ours: true, ReceivedAt: time.UnixMilli(1_700_000_000_000)}
	if got, err := s.RecordEvent(ctx, ev); err != nil || got != state.Enqueue {
		t.Fatalf("first: %v %v", got, err)
	}
	// A release with another claim's timestamp removes nothing.
	other := *ev
	other.ReceivedAt = ev.ReceivedAt.Add(time.Second)
	if err := s.ReleaseEnqueue(ctx, &other); err != nil {
		t.Fatal(err)
	}
	if job, _, _ := s.Get(ctx, 9); !job.Enqueued {
		t.Fatal("a foreign release removed the claim")
	}
	if err := s.ReleaseEnqueue(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if job, _, _ := s.Get(ctx, 9); job.Enqueued || job.Live {
		t.Fatalf("claim still present after release: %+v", job)
	}
	again := *ev
	again.ReceivedAt = time.Now()
	if got, err := s.RecordEvent(ctx, &again); err != nil || got != state.Enqueue {
		t.Fatalf("after release: %v %v; want enqueue", got, err)
	}
}

func TestRecordEventRejectsUnknownAction(t *testing.T) {
	t.Parallel()
	s := state.NewStore(nil, "unused", time.Hour, nil)
	if _, err := s.RecordEvent(context.Background(), &state.JobEvent{JobID: 1, Action: "requested"}); err == nil {
		t.Fatal("unknown action accepted")
	}
}

// GetMany reads any number of records (BatchGetItem takes 100 keys per
// call), ignores a key named twice and leaves out jobs without a record.
func TestGetMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	var ids []int64
	for id := int64(1); id <= 130; id++ {
		if id%13 == 0 {
			ids = append(ids, id) // asked for, never recorded
			continue
		}
		if _, err := s.RecordEvent(ctx, &state.JobEvent{JobID: id, Action: state.StatusQueued, Repository: "o/r", Owner: "o",
			InstallationID: 7, Ours: true, Profile: "default", JobName: "build"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ids = append([]int64{5}, ids...) // named twice within one call
	ids = append(ids, 1, 2)          // and across the 100-key boundary
	jobs, err := s.GetMany(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 120 {
		t.Fatalf("%d records; want 120 (130 asked, 10 never recorded)", len(jobs))
	}
	for _, id := range ids {
		j, ok := jobs[id]
		if id%13 == 0 {
			if ok {
				t.Errorf("job %d has no record, yet GetMany returned %+v", id, j)
			}
			continue
		}
		if !ok || j.JobID != id || j.JobName != "build" || !j.Enqueued {
			t.Errorf("job %d: %+v", id, j)
		}
	}
}

package sandbox

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// instanceWatcher polls EC2 for the deployment's instances (by the
// jitr:managed-by tag) and DynamoDB for the launches of queued jobs: new
// instances start simulated runners, vanished ones are terminated, and job
// records show launches.
type instanceWatcher struct {
	s     *Sandbox
	store *state.Store
	alive map[string]fleet.Instance
	known map[string]fleet.Instance // every instance seen, alive or not
	onNew func(ctx context.Context, in fleet.Instance)
	// onGone is called for every instance that terminated.
	onGone func(id string)

	// states is each instance's state as the last poll saw it ("" once it
	// is gone), for the simulated instances (stateOf).
	statesMu sync.Mutex
	states   map[string]string
}

// stateOf returns the instance's state as the last poll saw it ("" when it
// is gone); ok is false when no poll has seen it yet.
func (w *instanceWatcher) stateOf(id string) (state string, ok bool) {
	w.statesMu.Lock()
	defer w.statesMu.Unlock()
	state, ok = w.states[id]
	return state, ok
}

func newInstanceWatcher(s *Sandbox) *instanceWatcher {
	return &instanceWatcher{
		s:     s,
		store: state.NewStore(dynamodb.NewFromConfig(s.awsCfg), s.cfg.TableName, time.Duration(s.cfg.RecordRetentionSeconds)*time.Second, nil),
		alive: map[string]fleet.Instance{}, known: map[string]fleet.Instance{}, states: map[string]string{},
	}
}

func (w *instanceWatcher) run(ctx context.Context) {
	for {
		active := w.tick(ctx)
		d := 500 * time.Millisecond
		if active {
			d = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// tick polls once and reports whether anything is in flight.
func (w *instanceWatcher) tick(ctx context.Context) bool {
	w.instances(ctx)
	pending := w.s.tracker.awaitingLaunch()
	if len(pending) > 0 {
		w.launches(ctx, pending)
	}
	return len(pending) > 0 || len(w.alive) > 0
}

// describe looks one instance up, whatever its state.
func (w *instanceWatcher) describe(ctx context.Context, id string) (fleet.Instance, bool) {
	found, err := w.s.instances.Get(ctx, id)
	if err != nil {
		return fleet.Instance{}, false
	}
	in, ok := found[id]
	if ok {
		w.known[id] = in
	}
	return in, ok
}

func (w *instanceWatcher) instances(ctx context.Context) {
	list, _, err := w.s.instances.List(ctx, w.s.cfg.NamePrefix)
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Warn("describe instances failed", slog.String("error", err.Error()))
		}
		return
	}
	seen := make(map[string]bool, len(list))
	w.statesMu.Lock()
	for _, in := range list {
		seen[in.ID] = true
		w.states[in.ID] = in.State
	}
	for id := range w.alive {
		if !seen[id] {
			w.states[id] = "" // gone
		}
	}
	w.statesMu.Unlock()
	for _, in := range list {
		_, ok := w.alive[in.ID]
		// Always the latest tags: a pooled instance a job took was retagged
		// as that job's launch.
		w.alive[in.ID] = in
		w.known[in.ID] = in
		if ok {
			continue
		}
		w.s.tracker.onInstance(in.JobID, in.ID, in.Pool)
		if w.onNew != nil {
			w.onNew(ctx, in)
		}
	}
	for id, in := range w.alive {
		if seen[id] {
			continue
		}
		delete(w.alive, id)
		w.s.tracker.onInstanceGone(in.JobID, id)
		if w.onGone != nil {
			w.onGone(id)
		}
	}
}

// launches reads the records of the jobs awaiting a launch (BatchGetItem:
// the sandbox's own reads are not the control plane's and should cost the
// emulator little) and reports the launched and the skipped ones.
func (w *instanceWatcher) launches(ctx context.Context, pending []int64) {
	jobs, err := w.store.GetMany(ctx, pending)
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Warn("read awaited jobs failed", slog.String("error", err.Error()))
		}
		return
	}
	for _, id := range pending {
		j, ok := jobs[id]
		switch {
		case !ok:
		case j.InstanceID != "" && !j.LaunchedAt.IsZero():
			w.launched(ctx, j)
		case j.Phase == state.PhaseSkipped:
			w.s.tracker.onSkipped(id, j.SkipReason)
		}
	}
}

// launched reports a launch the record shows. The capacity type comes from
// the instance, not from the record scaleup wrote (the summary checks the
// control plane, so it does not take its word): spot instances carry
// InstanceLifecycle=spot, and every instance its jitr:profile tag; an
// on-demand instance of a spot profile is a fallback.
func (w *instanceWatcher) launched(ctx context.Context, j *state.Job) {
	capacity, name := fleet.CapacityTypeOnDemand, j.Profile
	in, ok := w.known[j.InstanceID]
	if !ok {
		// Launched after this tick's DescribeInstances: look it up.
		in, ok = w.describe(ctx, j.InstanceID)
	}
	if ok {
		if in.Spot {
			capacity = fleet.CapacityTypeSpot
		}
		name = in.Profile
	}
	if name == "" {
		name = w.s.cfg.DefaultProfile
	}
	profile, ok := w.s.cfg.Profiles[name]
	// A stopped pool is on-demand by design (AWS stops no one-time spot
	// instance), and so is a job labelled spot=false: not a fallback.
	fallback := capacity == fleet.CapacityTypeOnDemand && ok && profile.UseSpot() && in.Pool != jitstore.PoolStopped &&
		!slices.Contains(j.Labels, "spot=false")
	w.s.tracker.onLaunched(j.JobID, j.InstanceID, j.InstanceRunnerName, capacity, fallback, j.LaunchedAt)
}

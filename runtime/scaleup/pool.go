package scaleup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Warm pools. A job of a profile with a pool first tries to take a pooled
// instance: hot ones (running, waiting for a config) before stopped ones
// (started for it). Only a miss (the pool empty, or every candidate taken
// by another job first) launches with CreateFleet, in the same invocation.

// poolCandidates is how many ready instances a job reads from the pool
// index; it claims them in a random order, so concurrent jobs reading the
// same oldest instances rarely collide, and a lost claim tries the next.
const poolCandidates = 10

// takeFromPool claims a ready pooled instance of profile for claimID, or
// returns nil (a miss: no pool, none ready, or every candidate taken
// first; a failed read counts as a miss too, the job launches cold).
func (h *Handler) takeFromPool(ctx context.Context, log *slog.Logger, profile string, p config.Profile, claimID string, lease time.Duration) *state.PoolInstance {
	kinds := p.PoolKinds()
	if len(kinds) == 0 {
		return nil
	}
	for _, kind := range kinds {
		cands, err := h.jobs.PoolCandidates(ctx, profile, kind, poolCandidates)
		if err != nil {
			log.Warn("could not read the pool; launching", slog.String("pool", kind), slog.String("error", err.Error()))
			continue
		}
		mrand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		for _, c := range cands {
			ok, err := h.jobs.ClaimPooled(ctx, c.InstanceID, profile, kind, claimID, lease)
			if err != nil {
				log.Warn("could not claim a pooled instance", slog.String("instance_id", c.InstanceID), slog.String("error", err.Error()))
				continue
			}
			if ok {
				c.ClaimID = claimID
				return c
			}
			// Another job took it first (the index lags): the next one.
		}
	}
	h.metrics.Inc(metrics.PoolMisses, map[string]string{"Profile": profile})
	log.Info("no pooled instance ready; launching", slog.String("decision", "pool_miss"))
	return nil
}

// returnPooled gives the job's pooled instance back to its pool when
// nothing was handed to it (no JIT config): the next job can take it.
func (h *Handler) returnPooled(ctx context.Context, a *admission) {
	if a.pooled == nil {
		return
	}
	if err := h.jobs.ReturnPooled(ctx, a.pooled, a.claimID); err != nil {
		// Its claim's lease runs out; scaledown then retires it and refills.
		a.log.Warn("could not return the pooled instance; scaledown replaces it", slog.String("instance_id", a.pooled.InstanceID),
			slog.String("error", err.Error()))
	}
	a.pooled = nil
}

// startAttempts bounds the StartInstances calls for a stopped pooled
// instance (the SDK retries throttling itself within each).
const startAttempts = 3

// handOverPooled gives the claimed pooled instance to the job: retagged as
// the job's launch, its launch recorded with the JIT config's hand-over and
// the pool item turned into its tombstone in one transaction, and a stopped
// one started.
// Nothing is launched: no CreateFleet for a pool hit.
func (h *Handler) handOverPooled(ctx context.Context, a *admission, inst githubapp.Installation, name string, jit githubapp.JITConfig) error {
	p, m := a.pooled, a.m
	log := a.log.With(slog.String("instance_id", p.InstanceID), slog.String("pool", p.Kind))
	dropRunner := func() {
		if err := h.gh.DeleteRunner(ctx, inst, jit.RunnerID); err != nil {
			log.Warn("could not delete the unused runner; scaledown will", slog.String("error", err.Error()))
		}
	}
	// From now on the instance is this job's launch: its Name is its
	// runner's, so every later decision (and an operator) finds the runner
	// to delete before the instance goes.
	if err := h.launcher.Tag(ctx, p.InstanceID, tags.ForLaunch(h.cfg.NamePrefix, m.JobID, m.Repository, a.match.Profile, name)); err != nil {
		dropRunner()
		h.returnPooled(ctx, a)
		return h.release(ctx, log, m, a.claimID, a.woken, fmt.Errorf("retag pooled instance: %w", err))
	}
	arn := h.instanceARN(p.InstanceID)
	err := h.jobs.RecordLaunch(ctx, m.JobID, a.claimID, state.Launch{
		InstanceID: p.InstanceID, InstanceType: p.InstanceType, AvailabilityZone: p.AvailabilityZone,
		SubnetID: p.SubnetID, CapacityType: p.CapacityType, RunnerName: name, RunnerID: jit.RunnerID,
		LaunchedAt: h.now(), FromPool: p.Kind,
		With: []types.TransactWriteItem{h.jit.Handover(arn, jit.Encoded), h.jobs.TakePooled(p.InstanceID, a.claimID)},
	})
	switch {
	case errors.Is(err, state.ErrPoolLost):
		// The instance's claim ran out (scaledown retired it); the job's
		// own claim may hold: nothing was written, the job is retried.
		dropRunner()
		return h.release(ctx, log, m, a.claimID, a.woken, err)
	case errors.Is(err, state.ErrClaimLost):
		// The job's claim or the instance's ran out: nothing was written, no
		// config is out. The instance goes back to its pool if its claim
		// is still ours; the job is another invocation's now.
		dropRunner()
		h.returnPooled(ctx, a)
		log.Warn("claim lost before the pooled instance was handed over; nothing handed", slog.String("decision", "claim_lost"))
		return nil
	case err != nil:
		// A write whose answer was lost may have handed the config over:
		// the instance must not stay; the guarded retirement deletes its
		// runner first.
		h.undo(ctx, log, retire.Target{InstanceID: p.InstanceID, Installation: inst, RunnerName: name, RunnerID: jit.RunnerID}, arn)
		return h.release(ctx, log, m, a.claimID, a.woken, fmt.Errorf("record pooled launch: %w", err))
	}
	if p.Kind == jitstore.PoolStopped {
		if err := h.startPooled(ctx, p.InstanceID); err != nil {
			return h.restartElsewhere(ctx, log, a, inst, name, jit.RunnerID, err)
		}
	}
	h.metrics.Inc(metrics.PoolHits, map[string]string{"Profile": a.match.Profile, "Pool": p.Kind})
	defer h.replenish(ctx, log, a.match.Profile, a.profile, p.Kind)
	h.metrics.Inc(metrics.Launches, map[string]string{"Profile": a.match.Profile, "CapacityType": p.CapacityType})
	if m.ReceivedAt > 0 {
		h.metrics.Put(metrics.QueueToLaunchSeconds, h.now().Sub(time.UnixMilli(m.ReceivedAt)).Seconds(), metrics.Seconds,
			map[string]string{"Profile": a.match.Profile})
	}
	log.Info("runner handed a pooled instance", slog.String("decision", "pool_hit"), slog.String("runner_name", name),
		slog.String("capacity_type", p.CapacityType), slog.String("instance_type", p.InstanceType), slog.Int64("runner_id", jit.RunnerID))
	return nil
}

// startPooled starts a stopped pooled instance, trying startAttempts times.
func (h *Handler) startPooled(ctx context.Context, id string) error {
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = h.launcher.Start(ctx, id); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(200<<attempt) * time.Millisecond):
		}
	}
	return err
}

// restartElsewhere handles a stopped pooled instance that would not start
// after its job's launch was recorded: the instance is retired (its runner
// deleted first) and the job goes back to the queue to launch again, at
// once, rather than waiting for scaledown's boot timeout.
func (h *Handler) restartElsewhere(ctx context.Context, log *slog.Logger, a *admission, inst githubapp.Installation, name string, runnerID int64, cause error) error {
	p, m := a.pooled, a.m
	log.Error("stopped pooled instance would not start; job re-queued", slog.String("decision", "pool_start_failed"),
		slog.String("error", cause.Error()))
	h.undo(ctx, log, retire.Target{InstanceID: p.InstanceID, Installation: inst, RunnerName: name, RunnerID: runnerID}, h.instanceARN(p.InstanceID))
	ok, err := h.jobs.Requeue(ctx, m.JobID, p.InstanceID, "stopped pooled instance would not start: "+cause.Error())
	if err != nil || !ok {
		// Scaledown's rules find the job launched on a gone instance and
		// re-queue it.
		return errors.Join(cause, err)
	}
	retry := *m
	retry.Attempt++
	if _, err := h.waker.SendAfter(ctx, &retry, 0); err != nil {
		return errors.Join(cause, err)
	}
	return nil
}

// replenish launches a replacement into the pool a job just took an
// instance from, so a busy pool refills within seconds instead of at the
// next sweep. Nothing is launched outside the pool's schedule, over a
// limit (the replacement needs a slot of its own), or while jobs of the
// profile wait for a slot (they come first); the sweep tops the pool up
// then. The job's own launch is done: this only delays the batch's end.
func (h *Handler) replenish(ctx context.Context, log *slog.Logger, name string, p config.Profile, kind string) {
	spec := p.PoolSpec(kind)
	if spec == nil || spec.SizeAt(h.now()) == 0 {
		return
	}
	// checkLimits counts this job's slot, which the instance's pool item
	// held: one more slot must stay free. Jobs waiting for a slot come
	// first; as on a job's own path, they are looked for only near a limit
	// (queueBehindWithin): further from every limit none waits for a slot.
	free, err := h.checkLimits(ctx, name, p)
	switch {
	case err != nil:
		log.Info("pool not replenished", slog.String("reason", err.Error()))
		return
	case free < 1:
		log.Info("pool not replenished: no free runner slot; the sweep refills it", slog.String("pool", kind))
		return
	case free < queueBehindWithin:
		// Jobs of any profile waiting for a slot get it before a pool does.
		for _, pn := range h.cfg.ProfileNames() {
			if waiting, err := h.jobs.Waiting(ctx, pn, time.Time{}, 1); err != nil || len(waiting) > 0 {
				return
			}
		}
	}
	pi, res, err := h.pools.Launch(ctx, name, kind)
	for _, le := range res.Errors {
		h.metrics.Inc(metrics.LaunchErrors, map[string]string{"Code": le.Code})
	}
	if err != nil {
		log.Warn("could not replenish the pool; the sweep refills it", slog.String("pool", kind), slog.String("error", err.Error()))
		return
	}
	h.metrics.Inc(metrics.PoolLaunches, map[string]string{"Profile": name, "Pool": kind})
	log.Info("pool replenished", slog.String("decision", "pool_replenished"), slog.String("pooled_instance_id", pi.InstanceID))
}

package scaledown

import (
	"context"
	"errors"
	"log/slog"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// lookup describes one instance and reports whether it is ours.
func (r *Reconciler) lookup(ctx context.Context, id string) (*instance, bool, error) {
	if id == "" {
		return nil, false, nil
	}
	found, err := r.d.Instances.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	in, ok := found[id]
	if !ok || in.ManagedBy != r.cfg.NamePrefix {
		return nil, false, nil
	}
	return &in, true, nil
}

// onInterruption handles a spot interruption warning (two minutes before
// the instance goes). The pool is shared with scaleup, which avoids it for
// InterruptedOfferingTTL; the instance's record notes the interruption; and
// the job running on the instance, found through the in_progress mapping
// (not the instance's jitr:job-id tag: GitHub may have given the instance's
// runner another job), is marked so that it is re-run once if it fails.
// A job whose in_progress webhook comes later is marked by the next sweep.
func (r *Reconciler) onInterruption(ctx context.Context, id string) error {
	inst, ours, err := r.lookup(ctx, id)
	if err != nil || !ours {
		return err
	}
	log := r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.JobID))
	offering := fleet.OfferingKey(fleet.CapacityTypeSpot, inst.InstanceType, inst.Zone)
	if err := r.d.Jobs.MarkOfferingUnavailable(ctx, offering, r.now().Add(InterruptedOfferingTTL)); err != nil {
		log.Error("could not share the interrupted offering", slog.String("error", err.Error()))
	}
	if inst.Pool != "" {
		// Launched into a pool: its pool item, not its tags, says whether a
		// job took it (a job's retag may not show yet, and an instance
		// returned to its pool keeps the job's tags).
		if done, err := r.poolInterrupted(ctx, log, inst, offering); done || err != nil {
			return err
		}
		// A job took it since it was described: its tags say which now.
		if inst, ours, err = r.lookup(ctx, id); err != nil || !ours {
			return err
		}
		log = r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.JobID))
	}
	if _, err := r.d.Jobs.MarkInstanceInterrupted(ctx, inst.JobID, id); err != nil {
		return err
	}
	r.decide(log, "spot-interruption", "marked", slog.String("offering", offering))
	if inst.Runner == "" {
		return nil // launched without a runner name: nothing can run there
	}
	running, err := r.d.Jobs.RunningOn(ctx, inst.Runner)
	if err != nil {
		return err
	}
	if len(running) == 0 {
		log.Info("no job known on the interrupted instance yet; the next sweep marks the one that ran there")
		return nil
	}
	run := running[0]
	if _, err := r.d.Jobs.MarkJobInterrupted(ctx, run.JobID, inst.Runner); err != nil {
		return err
	}
	r.decide(log, "spot-interruption", "job-marked", slog.Int64("ran_job_id", run.JobID))
	return nil
}

// onStateChange frees the runner slot of a job whose instance terminated,
// without waiting for the next sweep.
func (r *Reconciler) onStateChange(ctx context.Context, id, st string) error {
	if st != "shutting-down" && st != "terminated" {
		return nil
	}
	inst, ours, err := r.lookup(ctx, id)
	if err != nil || !ours {
		return err
	}
	if inst.Pool != "" {
		// Launched into a pool: while no job took it (its item says, not
		// its tags), its item goes, and its slot with it.
		switch err := r.d.Jobs.RemovePooled(ctx, id); {
		case err == nil:
			r.decide(r.log.With(slog.String("instance_id", id)), "state-change", "pooled-instance-gone", slog.String("state", st))
			return nil
		case errors.Is(err, state.ErrPoolClaimed):
			return nil // being handed to a job: its record's rules see the instance gone
		case !errors.Is(err, state.ErrNotPooled):
			return err
		}
		// A job took it: as for any launch.
	}
	if err := r.d.Jobs.MarkInstanceGone(ctx, inst.JobID, id); err != nil {
		return err
	}
	log := r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.JobID))
	r.decide(log, "state-change", "instance-gone", slog.String("state", st))
	r.wakeWaiting(ctx, log, "an instance ended")
	return nil
}

// wakeWaiting sends a wake when jobs wait for a runner slot, and reports how
// many wait (the WaitingJobs and OldestWaitSeconds metrics). It returns the
// count (-1 when it could not tell).
func (r *Reconciler) wakeWaiting(ctx context.Context, log *slog.Logger, reason string) int {
	n, oldest, err := r.d.Jobs.WaitingSummary(ctx, r.cfg.ProfileNames())
	if err != nil {
		log.Warn("could not count the waiting jobs", slog.String("error", err.Error()))
		return -1
	}
	r.metrics.Put(metrics.WaitingJobs, float64(n), metrics.Count, nil)
	if n == 0 {
		return 0
	}
	r.metrics.Put(metrics.OldestWaitSeconds, r.now().Sub(oldest).Seconds(), metrics.Seconds, nil)
	if _, err := r.d.Queue.Send(ctx, queue.WakeMessage(reason)); err != nil {
		log.Warn("could not wake the waiting jobs", slog.String("error", err.Error()))
	}
	return n
}

// poolInterrupted handles the interruption warning of a pooled spot
// instance no job has taken: it leaves its pool at once (no job can take
// it now) and is terminated; the next sweep refills the pool, avoiding the
// interrupted spot pool. A job taking it at this very moment keeps it, and
// its record learns of the interruption through the usual rules.
//
// done is false when a job took the instance since it was described: the
// caller goes on as for any launch.
func (r *Reconciler) poolInterrupted(ctx context.Context, log *slog.Logger, inst *instance, offering string) (done bool, err error) {
	if err := r.d.Jobs.RemovePooled(ctx, inst.ID); err != nil {
		switch {
		case errors.Is(err, state.ErrPoolClaimed):
			log.Info("interrupted pooled instance is being taken by a job; left to the job's rules")
			return true, nil
		case errors.Is(err, state.ErrNotPooled):
			return false, nil
		}
		return true, err
	}
	r.metrics.Inc(metrics.PoolRetired, map[string]string{"Profile": inst.Profile, "Pool": inst.Pool, "Reason": "interrupted"})
	if _, err := r.retirer.Retire(ctx, retire.Target{InstanceID: inst.ID}); err != nil {
		return true, err
	}
	r.decide(log, "spot-interruption", "pooled-instance-retired", slog.String("offering", offering))
	return true, nil
}

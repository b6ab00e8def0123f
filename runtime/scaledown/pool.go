package scaledown

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// Warm pools, reconciled by every sweep (rule "pool"): each pool is topped
// up to its size at this moment (config.PoolSpec.SizeAt: schedules, in the
// pool's time zone) within maxRunners and the profile's cap, which pooled
// instances count against, and never while jobs of the profile wait for a
// slot (they come first); a stopped-pool instance whose bootstrap consumed
// its pool marker (it is prepared) is stopped, and once stopped it can be
// taken; instances past the pool's maximum age, or launched from an older
// image or launch template version, are retired and replaced; gone ones
// (spot interruptions, failed boots) are dropped. Nothing pooled is ever
// mistaken for an orphan: the sweep knows every pool item before it looks
// for orphans, and a pooled instance has no runner until a job takes it
// (then the job's record owns it and every other rule applies to it).

// poolLaunchConcurrency bounds the refill's concurrent CreateFleet calls.
const poolLaunchConcurrency = 5

// maxPoolLaunchesPerSweep bounds a sweep's refill launches per pool, so one
// sweep stays within its timeout and EC2's request rate.
const maxPoolLaunchesPerSweep = 50

// stopRetryAfter: a stopped-pool instance still running this long after
// its stop was asked for is asked again.
const stopRetryAfter = 5 * time.Minute

// pools reconciles every pool. The pool items it reads are remembered
// (sweep.pooled) for the orphan rule.
func (s *sweep) pools(ctx context.Context) {
	profiles := s.r.cfg.PooledProfiles()
	if len(profiles) == 0 {
		return
	}
	if s.r.pools == nil {
		s.fail(s.r.log, "pool", errors.New("profiles have pools but scaledown has no JIT table (Deps.JIT)"))
		s.poolUnknown = true
		return
	}
	latest, err := s.r.pools.TemplateVersion(ctx)
	if err != nil {
		s.fail(s.r.log, "pool", err)
		latest = 0 // no retirement for the template this sweep
	}
	for _, name := range profiles {
		items, err := s.r.d.Jobs.Pooled(ctx, name)
		if err != nil {
			s.fail(s.r.log.With(slog.String("profile", name)), "pool", err)
			s.poolUnknown = true // the orphan rule leaves pool-tagged instances alone this sweep
			continue
		}
		for _, p := range items {
			s.pooled[p.InstanceID] = p
		}
		s.pool(ctx, name, s.r.cfg.Profiles[name], items, latest)
	}
}

// pool reconciles one profile's pools.
func (s *sweep) pool(ctx context.Context, name string, prof config.Profile, items []*state.PoolInstance, latest int64) {
	log := s.r.log.With(slog.String("profile", name))
	maxAge := time.Duration(prof.Pool.MaxAgeMinutes) * time.Minute
	unconsumed, markersKnown := s.poolMarkers(ctx, log, items)
	live := map[string][]*state.PoolInstance{}
	for _, p := range items {
		plog := log.With(slog.String("instance_id", p.InstanceID), slog.String("pool", p.Kind))
		inst, known := s.instance(ctx, plog, p.InstanceID)
		if !known {
			continue
		}
		if p.State == state.PoolClaimed {
			if p.ClaimExpiresAt.Before(s.now) {
				// Its scaleup died mid-way; nothing was handed over (the
				// hand-over makes the item a tombstone). Retired.
				s.retirePooled(ctx, plog, p, inst, "claim abandoned")
			}
			continue
		}
		if !inst.Alive() {
			if inst != nil || p.Age(s.now) >= freshLaunch {
				s.retirePooled(ctx, plog, p, inst, "instance gone")
			}
			continue
		}
		reason := ""
		switch {
		case p.Age(s.now) >= maxAge:
			reason = "older than the pool's maximum age"
		case p.ImageID != "" && prof.ImageID != "" && p.ImageID != prof.ImageID:
			reason = "launched from another image (" + p.ImageID + ")"
		case latest > 0 && p.TemplateVersion > 0 && p.TemplateVersion < latest:
			reason = "launched from an older launch template version"
		case markersKnown && unconsumed[p.InstanceID] && p.State == state.PoolPreparing &&
			s.now.Sub(p.StateSince) >= secs(s.r.cfg.ScaleDown.BootTimeoutSeconds):
			reason = "not prepared within the boot timeout"
		case markersKnown && unconsumed[p.InstanceID] && p.Kind == jitstore.PoolHot &&
			p.Age(s.now) >= secs(s.r.cfg.ScaleDown.BootTimeoutSeconds):
			reason = "its bootstrap never came up within the boot timeout"
		}
		if reason != "" {
			s.retirePooled(ctx, plog, p, inst, reason)
			continue
		}
		s.advancePooled(ctx, plog, p, inst, unconsumed[p.InstanceID] || !markersKnown)
		live[p.Kind] = append(live[p.Kind], p)
	}
	for _, kind := range []string{jitstore.PoolHot, jitstore.PoolStopped} {
		target := 0
		if spec := prof.PoolSpec(kind); spec != nil {
			target = spec.SizeAt(s.now)
		}
		s.size(ctx, log, name, prof, kind, target, live[kind])
	}
}

// poolMarkers reads which of the pool's instances have not consumed their
// pool marker yet (their bootstrap has not come up): for the stopped pool's
// preparing instances and the hot pool's older ones. known is false when
// the table could not be read: nothing is then stopped or retired for it.
func (s *sweep) poolMarkers(ctx context.Context, log *slog.Logger, items []*state.PoolInstance) (unconsumed map[string]bool, known bool) {
	var arns []string
	byARN := map[string]string{}
	for _, p := range items {
		if p.State == state.PoolPreparing || (p.Kind == jitstore.PoolHot && p.State == state.PoolReady &&
			p.Age(s.now) >= secs(s.r.cfg.ScaleDown.BootTimeoutSeconds)) {
			arn := s.r.d.Identity.InstanceARN(p.InstanceID)
			arns = append(arns, arn)
			byARN[arn] = p.InstanceID
		}
	}
	if len(arns) == 0 {
		return nil, true
	}
	found, err := s.r.d.JIT.Unconsumed(ctx, arns)
	if err != nil {
		s.fail(log, "pool", err)
		return nil, false
	}
	out := map[string]bool{}
	for arn := range found {
		out[byARN[arn]] = true
	}
	return out, true
}

// advancePooled moves a stopped-pool instance along: prepared (marker
// consumed) and running → stop it; stopped → it can be taken.
func (s *sweep) advancePooled(ctx context.Context, log *slog.Logger, p *state.PoolInstance, inst *instance, unconsumed bool) {
	if p.Kind != jitstore.PoolStopped {
		return
	}
	switch {
	case p.State == state.PoolPreparing && !unconsumed && inst.State == "running":
		if err := s.r.d.Instances.Stop(ctx, p.InstanceID); err != nil {
			s.fail(log, "pool", err)
			return
		}
		if _, err := s.r.d.Jobs.AdvancePooled(ctx, p, state.PoolPreparing, state.PoolStopping); err != nil {
			s.fail(log, "pool", err)
			return
		}
		p.State = state.PoolStopping
		s.decision(log, "pool", "stopped-prepared")
	case p.State == state.PoolStopping && inst.State == "stopped":
		if _, err := s.r.d.Jobs.AdvancePooled(ctx, p, state.PoolStopping, state.PoolReady); err != nil {
			s.fail(log, "pool", err)
			return
		}
		p.State = state.PoolReady
		s.decision(log, "pool", "ready")
	case p.State == state.PoolStopping && inst.State == "running" && s.now.Sub(p.StateSince) >= stopRetryAfter:
		if err := s.r.d.Instances.Stop(ctx, p.InstanceID); err != nil {
			s.fail(log, "pool", err)
		}
	}
}

// retirePooled drops a pooled instance's item (unless a job holds a live
// claim on it) and terminates the instance. An instance no job took never
// had a runner, so nothing is asked of GitHub; one a job retagged but
// never got (an abandoned claim) has its runner deleted first.
func (s *sweep) retirePooled(ctx context.Context, log *slog.Logger, p *state.PoolInstance, inst *instance, reason string) {
	log = log.With(slog.String("reason", reason))
	if err := s.r.d.Jobs.RemovePooled(ctx, p.InstanceID); err != nil {
		if errors.Is(err, state.ErrPoolClaimed) || errors.Is(err, state.ErrNotPooled) {
			return // a job is taking it, or took it since the pool was read: its record decides
		}
		s.fail(log, "pool", err)
		return
	}
	delete(s.pooled, p.InstanceID)
	s.r.metrics.Inc(metrics.PoolRetired, map[string]string{"Profile": p.Profile, "Pool": p.Kind, "Reason": poolReasonCode(reason)})
	if !inst.Alive() {
		s.decision(log, "pool", "dropped")
		return
	}
	if inst.JobID != 0 {
		// Retagged for a job that never recorded it: the orphan rule retires
		// it (runner first) in this sweep.
		s.decision(log, "pool", "left-to-orphan-rule")
		return
	}
	s.retireTarget(ctx, log, "pool", retire.Target{InstanceID: p.InstanceID})
}

func poolReasonCode(reason string) string {
	switch reason {
	case "claim abandoned":
		return "abandoned"
	case "instance gone":
		return "gone"
	case "older than the pool's maximum age":
		return "age"
	case "shrink":
		return "shrink"
	}
	return "outdated"
}

// size tops a pool up to target, or shrinks it, oldest first.
func (s *sweep) size(ctx context.Context, log *slog.Logger, name string, prof config.Profile, kind string, target int, live []*state.PoolInstance) {
	log = log.With(slog.String("pool", kind))
	byState := map[string]int{}
	for _, p := range live {
		byState[p.State]++
	}
	for st, n := range byState {
		s.r.metrics.Put(metrics.PoolInstances, float64(n), metrics.Count, map[string]string{"Profile": name, "Pool": kind, "State": st})
	}
	s.rep.Pooled += len(live)
	if len(live) > target {
		slices.SortFunc(live, func(a, b *state.PoolInstance) int { return a.LaunchedAt.Compare(b.LaunchedAt) })
		for _, p := range live[:len(live)-target] {
			inst := s.instances[p.InstanceID]
			s.retirePooled(ctx, log.With(slog.String("instance_id", p.InstanceID)), p, inst, "shrink")
		}
		return
	}
	want := min(target-len(live), maxPoolLaunchesPerSweep)
	if want <= 0 {
		return
	}
	// Jobs waiting for a slot, of any profile, get it before a pool does.
	if n, _, err := s.r.d.Jobs.WaitingSummary(ctx, s.r.cfg.ProfileNames()); err != nil || n > 0 {
		if err != nil {
			s.fail(log, "pool", err)
		} else {
			s.decision(log, "pool", "refill-deferred", slog.Int("waiting_jobs", n))
		}
		return
	}
	free, err := s.freeSlots(ctx, name, prof)
	if err != nil {
		s.fail(log, "pool", err)
		return
	}
	if free < want {
		s.decision(log, "pool", "refill-capped", slog.Int("wanted", want), slog.Int("free_slots", free))
		want = max(free, 0)
	}
	s.refill(ctx, log, name, kind, want)
}

// freeSlots is how many slots stay free under maxRunners and the
// profile's cap (pooled instances hold slots too).
func (s *sweep) freeSlots(ctx context.Context, name string, prof config.Profile) (int, error) {
	used, err := s.r.d.Jobs.CountSlots(ctx, "")
	if err != nil {
		return 0, err
	}
	free := s.r.cfg.MaxRunners - used
	if prof.MaxRunners > 0 {
		n, err := s.r.d.Jobs.CountSlots(ctx, name)
		if err != nil {
			return 0, err
		}
		free = min(free, prof.MaxRunners-n)
	}
	return free, nil
}

// refill launches n instances into a pool (runtime/pool). One whose
// Lambda died before recording it is an unrecorded pool instance, which the
// orphan rule retires (and whose bootstrap gives up after its JIT wait and
// shuts down).
func (s *sweep) refill(ctx context.Context, log *slog.Logger, name, kind string, n int) {
	if n <= 0 {
		return
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		sem = make(chan struct{}, poolLaunchConcurrency)
	)
	launched := 0
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if s.launchPooled(ctx, log, name, kind) {
				mu.Lock()
				launched++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.rep.PoolLaunched += launched
	s.decision(log, "pool", "refilled", slog.Int("launched", launched), slog.Int("wanted", n))
}

func (s *sweep) launchPooled(ctx context.Context, log *slog.Logger, name, kind string) bool {
	_, res, err := s.r.pools.Launch(ctx, name, kind)
	for _, le := range res.Errors {
		s.r.metrics.Inc(metrics.LaunchErrors, map[string]string{"Code": le.Code})
	}
	if err != nil {
		s.fail(log, "pool", err)
		return false
	}
	s.r.metrics.Inc(metrics.PoolLaunches, map[string]string{"Profile": name, "Pool": kind})
	return true
}

// poolConfigured reports whether p's pool (its profile and kind) is still
// in the configuration.
func (s *sweep) poolConfigured(p *state.PoolInstance) bool {
	prof, ok := s.r.cfg.Profiles[p.Profile]
	return ok && prof.PoolSpec(p.Kind) != nil
}

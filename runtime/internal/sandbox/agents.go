package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// agents simulate, for each instance, what the instance's bootstrap and the
// runner do: read and delete its JIT config (retrying while it is absent,
// for at most the bootstrap's wait), come online at GitHub, take whatever
// job GitHub assigns (the fake's dispatcher: any queued job whose labels
// match, often not the one the instance was launched for), run it for the
// job duration, and shut the instance down; with no job within the idle
// timeout the instance shuts down too. An instance terminated under a
// running job is a busy runner killed: the fake fails the job and counts it
// (ghfake.Server.BusyRunnersLost), and the end-to-end tests require none.
type agents struct {
	s    *Sandbox
	wait time.Duration // how long an instance waits for its JIT config

	mu      sync.Mutex
	running map[string]context.CancelFunc
}

func newAgents(s *Sandbox) *agents {
	a := &agents{
		s:       s,
		wait:    bootstrap.DefaultJITWait,
		running: map[string]context.CancelFunc{},
	}
	return a
}

// start runs an agent for a new instance; gone stops it when the instance
// terminates under it.
func (a *agents) start(ctx context.Context, in fleet.Instance) {
	ctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.running[in.ID] = cancel
	a.mu.Unlock()
	a.s.wg.Add(1)
	go func() {
		defer a.s.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.running, in.ID)
			a.mu.Unlock()
			cancel()
		}()
		a.run(ctx, in)
	}()
}

func (a *agents) gone(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cancel, ok := a.running[id]; ok {
		cancel()
	}
}

func (a *agents) run(ctx context.Context, in fleet.Instance) {
	arn := jitstore.InstanceARN("aws", a.s.region, in.Account, in.ID)
	if in.Pool == "" || in.JobID != 0 {
		// Launched for a job (or a pooled instance a job took before the
		// sandbox saw it boot): the config comes within the JIT wait.
		a.serve(ctx, in, arn, "")
		return
	}
	// A pooled instance's first boot: its marker first, then (hot) a job's
	// config without a deadline, or (stopped) a stop and a second boot.
	log := a.s.log.With(slog.String("instance_id", in.ID), slog.String("pool", in.Pool))
	encoded, pool, err := a.fetch(ctx, arn, a.wait)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("pooled instance got no marker; shutting it down", slog.String("error", err.Error()))
			a.shutdown(in.ID)
		}
		return
	case encoded != "":
		a.serve(ctx, in, arn, encoded) // taken before it had booted
		return
	case pool == jitstore.PoolHot:
		encoded, err = a.waitHot(ctx, arn)
		if err != nil {
			return // terminated while pooled (age, interruption, shrink)
		}
		a.serve(ctx, in, arn, encoded)
	case pool == jitstore.PoolStopped:
		// Prepared: the control plane stops the instance, and a job's
		// scaleup starts it again; the unit runs the bootstrap at that boot.
		if !a.awaitState(ctx, in.ID, "stopped") || !a.awaitState(ctx, in.ID, "running", "pending") {
			return
		}
		a.serve(ctx, in, arn, "")
	default:
		log.Warn("unknown pool marker; shutting down", slog.String("marker", pool))
		a.shutdown(in.ID)
	}
}

// HotPollInterval is how often a simulated hot pooled instance reads its
// JIT entry by default: every second, as the bootstrap does on AWS (one
// DeleteItem per second per hot instance).
const HotPollInterval = time.Second

// waitHot polls for a job's config without a deadline, as a hot pooled
// instance does, until the instance is terminated.
func (a *agents) waitHot(ctx context.Context, arn string) (string, error) {
	store := a.jitStore(arn)
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(a.s.opts.HotPollInterval):
		}
		v, _, err := store.Fetch(ctx, arn)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			a.s.log.Warn("reading the JIT config failed; retrying", slog.String("error", err.Error()))
			continue
		}
		if v != "" {
			return v, nil
		}
	}
}

// awaitState waits until the instance is in one of states (as the
// watcher last saw it: the instance knows its own state without asking
// EC2); false when it is terminated (or the sandbox stops) first.
func (a *agents) awaitState(ctx context.Context, id string, states ...string) bool {
	for {
		st, ok := a.s.watcher.stateOf(id)
		if ok && st == "" {
			return false // gone
		}
		if ok && slices.Contains(states, st) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serve is the bootstrap from its config on: encoded when the caller has
// it already, else read within the JIT wait.
func (a *agents) serve(ctx context.Context, in fleet.Instance, arn, encoded string) {
	log := a.s.log.With(slog.String("instance_id", in.ID), slog.Int64("job_id", in.JobID))
	runner := in.Runner // the Name tag: its runner, named before the launch
	fail := func(reason string) {
		if ctx.Err() != nil {
			return // the instance was terminated under the agent
		}
		a.s.tracker.onFailed(in.JobID, in.ID, reason)
		log.Warn("simulated runner failed; shutting the instance down", slog.String("reason", reason))
		a.shutdown(in.ID)
	}

	// The bootstrap: the instance's own key, read and deleted in one call.
	if encoded == "" {
		var err error
		if encoded, err = a.takeJIT(ctx, arn); err != nil {
			fail(err.Error())
			return
		}
	}
	a.s.secrets.add(encoded)

	// The runner: online with its JIT config, then assigned the job.
	runnerID, err := a.s.fake.RunnerOnline(encoded)
	if err != nil {
		fail("runner could not come online: " + err.Error())
		return
	}
	jobID := in.JobID
	if in.Pool != "" {
		// A pooled instance's tags named no runner when the sandbox first
		// saw it; its runner is the one its config registered, named after
		// the job that took the instance (tags.RunnerName).
		if rn, ok := a.s.fake.Runner(runnerID); ok {
			runner = rn.Name
			if id, ours := tags.RunnerJob(a.s.cfg.NamePrefix, rn.Name); ours {
				jobID = id
			}
		}
	}
	a.s.tracker.onRegistered(jobID, in.ID, runner)

	// The runner's long poll: whatever job GitHub gives it, or none before
	// the bootstrap's idle timeout.
	idle, cancelIdle := context.WithTimeout(ctx, a.s.opts.IdleTimeout)
	job, err := a.s.fake.WaitAssignment(idle, runnerID)
	cancelIdle()
	if err != nil {
		a.offline(log, runnerID)
		if ctx.Err() == nil {
			log.Info("simulated runner got no job within the idle timeout; shutting the instance down")
			a.shutdown(in.ID)
		}
		return
	}
	log = log.With(slog.Int64("ran_job_id", job.ID))
	select {
	case <-ctx.Done():
		if a.s.ctx.Err() == nil {
			// The instance was terminated under a running job.
			a.s.fake.RunnerLost(runnerID)
			a.s.tracker.onFailed(job.ID, in.ID, "instance terminated while its runner ran the job")
			log.Error("instance terminated while its runner was running a job")
		}
		return
	case <-time.After(a.s.opts.JobDuration):
	}
	if err := a.s.fake.CompleteJob(job.ID, ghfake.ConclusionSuccess); err != nil {
		fail("job could not complete: " + err.Error())
		return
	}
	// The runner exits after its one job; the bootstrap's exit trap shuts
	// the instance down, which terminates it.
	a.shutdown(in.ID)
}

// offline marks the runner offline, as GitHub shows a runner whose process
// stopped.
func (a *agents) offline(log *slog.Logger, runnerID int64) {
	if err := a.s.fake.SetRunnerStatus(runnerID, ghfake.RunnerStatusOffline); err != nil && !errors.Is(err, ghfake.ErrRunnerNotFound) {
		log.Warn("could not mark the runner offline", slog.String("error", err.Error()))
	}
}

// jitRetryDelays are the pauses between reads of an absent JIT config. The
// bootstrap waits 1, 2, 3 and then 5 s (JIT_RETRY_DELAYS); a sandbox
// instance boots at once, before scaleup has stored the config, so the
// first retries come sooner.
var jitRetryDelays = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second}

// jitStore is the JIT table as the instance's bootstrap reaches it: against
// moto through the proxy, signed as the runner role with a session token
// that names the instance (instance-profile credentials carry
// ec2:SourceInstanceARN), so the record holds the bootstrap's call and
// the key it names; otherwise with the sandbox's own credentials.
func (a *agents) jitStore(arn string) *jitstore.Store {
	var asInstance []func(*dynamodb.Options)
	if id, _, _ := a.s.awsCredentials(); id == "test" {
		asInstance = append(asInstance, func(o *dynamodb.Options) {
			o.BaseEndpoint = aws.String(a.s.proxy.url)
			o.Credentials = credentials.NewStaticCredentialsProvider(functionKeyID("runner"), "test", sessionTokenPrefix+arn)
		})
	}
	return jitstore.New(dynamodb.NewFromConfig(a.s.awsCfg, asInstance...), a.s.cfg.Launch.JITConfigTableName, nil)
}

// takeJIT retries Take while the entry is absent, as the bootstrap does.
func (a *agents) takeJIT(ctx context.Context, arn string) (string, error) {
	v, _, err := a.fetch(ctx, arn, a.wait)
	if err == nil && v == "" {
		// A pool marker where a config belongs (a cold instance never gets
		// one): the bootstrap ignores it and waits on, within its deadline.
		v, err = a.takeJIT(ctx, arn)
	}
	return v, err
}

// fetch retries Fetch while the entry is absent, for at most wait: a
// config or a pool marker ends it.
func (a *agents) fetch(ctx context.Context, arn string, wait time.Duration) (encoded, pool string, err error) {
	store := a.jitStore(arn)
	deadline := time.Now().Add(wait)
	for attempt := 0; ; attempt++ {
		v, p, err := store.Fetch(ctx, arn)
		switch {
		case err == nil && (v != "" || p != ""):
			return v, p, nil
		case err != nil:
			if ctx.Err() != nil {
				return "", "", ctx.Err()
			}
			a.s.log.Warn("reading the JIT config failed; retrying", slog.String("error", err.Error()))
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("no JIT config within %s", wait)
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(jitRetryDelays[min(attempt, len(jitRetryDelays)-1)]):
		}
	}
}

// shutdown terminates the instance (shutdown -h with the launch template's
// InstanceInitiatedShutdownBehavior=terminate).
func (a *agents) shutdown(id string) {
	ctx, cancel := context.WithTimeout(a.s.ctx, 30*time.Second)
	defer cancel()
	if err := a.s.instances.Terminate(ctx, id); err != nil && ctx.Err() == nil {
		a.s.log.Warn("terminate instance failed", slog.String("instance_id", id), slog.String("error", err.Error()))
	}
}

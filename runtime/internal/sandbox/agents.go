package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// agents simulate, for each instance, what the instance's bootstrap and the
// runner do: read and delete its JIT config (retrying while it is absent,
// for at most the bootstrap's wait), come online at GitHub, take the job,
// run it for the job duration, and shut the instance down.
type agents struct {
	s      *Sandbox
	jit    *jitstore.Store
	ec2    *ec2.Client
	client *http.Client
	wait   time.Duration // how long an instance waits for its JIT config

	mu      sync.Mutex
	running map[string]context.CancelFunc
	startMu sync.Mutex // one job assignment at a time, as GitHub assigns a job once
}

func newAgents(s *Sandbox) *agents {
	a := &agents{
		s:       s,
		jit:     jitstore.New(dynamodb.NewFromConfig(s.awsCfg), s.cfg.Launch.JITConfigTableName, nil),
		ec2:     ec2.NewFromConfig(s.awsCfg),
		client:  &http.Client{Timeout: 30 * time.Second},
		wait:    bootstrap.DefaultJITWait,
		running: map[string]context.CancelFunc{},
	}
	return a
}

// start runs an agent for a new instance; gone stops it when the instance
// terminates under it.
func (a *agents) start(ctx context.Context, in instanceInfo) {
	ctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.running[in.id] = cancel
	a.mu.Unlock()
	a.s.wg.Add(1)
	go func() {
		defer a.s.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.running, in.id)
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

func (a *agents) run(ctx context.Context, in instanceInfo) {
	log := a.s.log.With(slog.String("instance_id", in.id), slog.Int64("job_id", in.jobID))
	runner := in.name
	if runner == "" {
		runner = tags.RunnerName(a.s.cfg.NamePrefix, in.id)
	}
	fail := func(reason string) {
		if ctx.Err() != nil {
			return // the instance was terminated under the agent
		}
		a.s.tracker.onFailed(in.jobID, in.id, reason)
		log.Warn("simulated runner failed; shutting the instance down", slog.String("reason", reason))
		a.shutdown(in.id)
	}

	// The bootstrap: the instance's own key, read and deleted in one call.
	arn := jitstore.InstanceARN("aws", a.s.region, in.ownerID, in.id)
	encoded, err := a.takeJIT(ctx, arn)
	if err != nil {
		fail(err.Error())
		return
	}
	a.s.secrets.add(encoded)

	// The runner: online with its JIT config, then assigned the job.
	runnerID, err := a.s.fake.RunnerOnline(encoded)
	if err != nil {
		fail("runner could not come online: " + err.Error())
		return
	}
	a.s.tracker.onRegistered(in.jobID, in.id, runner)
	// However it ends, the runner process stops with the instance, and
	// GitHub shows the runner offline.
	defer func() {
		if err := a.s.fake.SetRunnerStatus(runnerID, ghfake.RunnerStatusOffline); err != nil && !errors.Is(err, ghfake.ErrRunnerNotFound) {
			log.Warn("could not mark the runner offline", slog.String("error", err.Error()))
		}
	}()
	started, err := a.startJob(in.jobID, runnerID)
	if err != nil {
		fail("job could not start: " + err.Error())
		return
	}
	if !started {
		// GitHub gave the job to another runner: this one waits for a job
		// until the bootstrap's idle timeout, then the instance shuts down
		// (unless scaledown terminates it first).
		a.s.tracker.onFailed(in.jobID, in.id, "job already taken by another runner; idle until the idle timeout")
		select {
		case <-ctx.Done():
		case <-time.After(a.s.opts.IdleTimeout):
			a.shutdown(in.id)
		}
		return
	}
	if err := a.deliver(ctx, in.jobID, ghfake.JobInProgress); err != nil {
		fail(err.Error())
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(a.s.opts.JobDuration):
	}
	if err := a.s.fake.CompleteJob(in.jobID, ghfake.ConclusionSuccess); err != nil {
		fail("job could not complete: " + err.Error())
		return
	}
	if err := a.deliver(ctx, in.jobID, ghfake.JobCompleted); err != nil {
		fail(err.Error())
		return
	}
	// The runner exits after its one job; the bootstrap's exit trap shuts
	// the instance down, which terminates it.
	a.shutdown(in.id)
}

// jitRetryDelays are the pauses between reads of an absent JIT config. The
// bootstrap waits 1, 2, 3 and then 5 s (JIT_RETRY_DELAYS); a sandbox
// instance boots at once, before scaleup has stored the config, so the
// first retries come sooner.
var jitRetryDelays = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second}

// startJob assigns the job to the runner as GitHub does, unless another
// runner already took it (then started is false).
func (a *agents) startJob(jobID, runnerID int64) (started bool, err error) {
	a.startMu.Lock()
	defer a.startMu.Unlock()
	job, ok := a.s.fake.Job(jobID)
	if !ok {
		return false, fmt.Errorf("job %d unknown to the fake", jobID)
	}
	if job.Status != ghfake.JobQueued && job.Status != ghfake.JobWaiting {
		return false, nil
	}
	return true, a.s.fake.StartJob(jobID, runnerID)
}

// takeJIT retries Take while the entry is absent, as the bootstrap does.
func (a *agents) takeJIT(ctx context.Context, arn string) (string, error) {
	deadline := time.Now().Add(a.wait)
	for attempt := 0; ; attempt++ {
		v, err := a.jit.Take(ctx, arn)
		switch {
		case err == nil:
			return v, nil
		case !errors.Is(err, jitstore.ErrNotFound):
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			a.s.log.Warn("reading the JIT config failed; retrying", slog.String("error", err.Error()))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no JIT config within %s", a.wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(jitRetryDelays[min(attempt, len(jitRetryDelays)-1)]):
		}
	}
}

// deliver sends the job's current state as a signed webhook, as GitHub
// does, redelivering (same delivery id) after a failure.
func (a *agents) deliver(ctx context.Context, jobID int64, action string) error {
	job, ok := a.s.fake.Job(jobID)
	if !ok {
		return fmt.Errorf("job %d unknown to the fake", jobID)
	}
	body := ghfake.WorkflowJobPayload(ghfake.WorkflowJobEvent{Action: action, Job: job, InstallationID: InstallationID})
	return a.s.sendWebhook(ctx, a.client, jobID, body)
}

// shutdown terminates the instance (shutdown -h with the launch template's
// InstanceInitiatedShutdownBehavior=terminate).
func (a *agents) shutdown(id string) {
	ctx, cancel := context.WithTimeout(a.s.ctx, 30*time.Second)
	defer cancel()
	if _, err := a.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil && ctx.Err() == nil {
		a.s.log.Warn("terminate instance failed", slog.String("instance_id", id), slog.String("error", err.Error()))
	}
}

// sendWebhook posts a signed workflow_job delivery to the sandbox's webhook
// endpoint. A 5xx or a transport error is redelivered with the same
// X-GitHub-Delivery (GitHub's "Redeliver"), up to 5 attempts.
func (s *Sandbox) sendWebhook(ctx context.Context, client *http.Client, jobID int64, body []byte) error {
	headers := ghfake.DeliveryHeaders("workflow_job", s.webhookSecret, body)
	var last string
	for attempt := 1; attempt <= 5; attempt++ {
		if attempt > 1 {
			s.tracker.onRetried(jobID, "webhook redelivery after "+last)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt-1) * 500 * time.Millisecond):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.webhookURL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header = headers.Clone()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = err.Error()
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode < 500 {
			if resp.StatusCode >= 300 {
				return fmt.Errorf("webhook answered %d", resp.StatusCode)
			}
			return nil
		}
		last = resp.Status
	}
	return fmt.Errorf("webhook delivery failed 5 times (last: %s)", last)
}

// Package scaledown is the scaledown Lambda's logic: it reconciles the job
// records, the EC2 instances and the GitHub runners so that nothing is
// orphaned, nothing is lost, and nothing busy is killed.
//
// One entry point takes three kinds of events: the EventBridge Scheduler
// tick (a sweep), "EC2 Spot Instance Interruption Warning" and "EC2
// Instance State-change Notification".
//
// The model is instance-centred. GitHub gives a queued job to any idle
// runner whose labels match, so two jobs with the same labels often run on
// each other's runners. An instance's own runner is the one it was launched
// with (tags.RunnerName, recorded at launch); the job it runs is
// the one whose in_progress webhook names that runner. An instance is busy
// while its own runner is, whichever job that is.
//
// A sweep reads its inputs with one paginated Query of the live index, one
// paginated DescribeInstances filtered by jitr:managed-by, and one paginated
// runner list per owner filtered by name prefix, then applies the rules:
//
//  1. the job the instance's runner ran completed (or, with no job on it,
//     the job it was launched for completed elsewhere), instance alive after
//     completedGraceSeconds: retire;
//  2. launched, runner never online within bootTimeoutSeconds: retire,
//     re-queue once if still queued on GitHub;
//  3. older than maxRuntimeSeconds: retire, unless a job runs on it that
//     GitHub says still runs;
//  4. our tag but no record launched the instance, after orphanGraceSeconds:
//     retire;
//  5. a runner with our prefix, offline, whose instance is gone: delete it;
//  6. a record whose instance is gone while its job is unfinished: mark it
//     lost, re-queue if GitHub still shows the job queued;
//  7. a job queued (by the webhook) that never launched within
//     queuedTimeoutSeconds: re-queue if GitHub still shows it queued.
//
// To retire is runtime/retire's guarded operation, the only way anything
// here terminates an instance: the instance's own runner is deleted first
// and GitHub's 422 ("still running a job") keeps the instance.
package scaledown

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/functions"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/pool"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/redelivery"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// Instances is what scaledown needs of EC2; *fleet.Launcher implements it.
// Terminate is called only through runtime/retire, which deletes the
// instance's runner first.
type Instances interface {
	List(ctx context.Context, managedBy string) ([]fleet.Instance, int, error)
	Get(ctx context.Context, ids ...string) (map[string]fleet.Instance, error)
	Terminate(ctx context.Context, instanceID string) error
	// Warm pools: refill (Launch, from the launch template's latest
	// version), and stop a stopped-pool instance once it is prepared.
	Launch(ctx context.Context, req fleet.Request) (fleet.Result, error)
	Stop(ctx context.Context, instanceID string) error
	TemplateVersion(ctx context.Context, templateID string) (int64, error)
}

// GitHub is what scaledown needs from the GitHub App client.
type GitHub interface {
	ListRunners(ctx context.Context, inst githubapp.Installation, namePrefix string) ([]githubapp.Runner, error)
	FindRunner(ctx context.Context, inst githubapp.Installation, name string) (githubapp.Runner, bool, error)
	RepositoryInstallation(ctx context.Context, repository string) (githubapp.Installation, error)
	DeleteRunner(ctx context.Context, inst githubapp.Installation, runnerID int64) error
	GetJob(ctx context.Context, inst githubapp.Installation, jobID int64) (githubapp.Job, error)
	RerunJob(ctx context.Context, inst githubapp.Installation, jobID int64) error
}

// Jobs is what scaledown needs from the job records; *state.Store implements it.
type Jobs interface {
	Get(ctx context.Context, jobID int64) (*state.Job, bool, error)
	RecordEvent(ctx context.Context, ev *state.JobEvent) (state.Outcome, error)
	Requeue(ctx context.Context, jobID int64, seenInstanceID, reason string) (bool, error)
	Finish(ctx context.Context, jobID int64, reason string) error
	MarkLost(ctx context.Context, jobID int64, instanceID, reason string) error
	MarkInstanceGone(ctx context.Context, jobID int64, instanceID string) error
	MarkInstanceInterrupted(ctx context.Context, jobID int64, instanceID string) (bool, error)
	MarkJobInterrupted(ctx context.Context, jobID int64, runnerName string) (bool, error)
	ClaimRerun(ctx context.Context, jobID int64) (bool, error)
	MarkOfferingUnavailable(ctx context.Context, offering string, until time.Time) error
	// LiveJobs lists the records of the live index (and how many pages).
	LiveJobs(ctx context.Context) ([]*state.Job, int, error)
	// RunningOn lists the live records of the jobs that ran on a runner:
	// the job on an interrupted instance.
	RunningOn(ctx context.Context, runnerName string) ([]*state.Job, error)
	// WaitingSummary counts the jobs of profiles waiting in the table for a
	// launch and says since when the oldest waits: each sweep reports them
	// and wakes them (Queue), as does a freed slot.
	WaitingSummary(ctx context.Context, profiles []string) (n int, oldest time.Time, err error)

	// Warm pools (state.Store): the pool items, refilled within the slots
	// CountSlots leaves free.
	Pooled(ctx context.Context, profile string) ([]*state.PoolInstance, error)
	AddPooled(ctx context.Context, p state.PoolInstance, others ...types.TransactWriteItem) error
	RemovePooled(ctx context.Context, instanceID string) error
	AdvancePooled(ctx context.Context, p *state.PoolInstance, from, to string) (bool, error)
	GetPooled(ctx context.Context, instanceID string) (*state.PoolInstance, bool, error)
	CountSlots(ctx context.Context, profile string) (int, error)
}

// PoolMarkers writes and reads pooled instances' pool markers in the JIT
// table; *jitstore.Store implements it.
type PoolMarkers interface {
	Marker(instanceARN, kind string) types.TransactWriteItem
	Unconsumed(ctx context.Context, instanceARNs []string) (map[string]bool, error)
}

// Enqueuer sends re-queue messages; *queue.Sender implements it.
type Enqueuer interface {
	Send(ctx context.Context, m *queue.Message) (string, error)
}

// Deps are the reconciler's collaborators.
type Deps struct {
	Instances Instances
	GitHub    GitHub
	Jobs      Jobs
	Queue     Enqueuer
	// Redeliver recovers failed webhook deliveries from the App's delivery
	// log (redelivery.Recoverer.Run); nil turns the recovery off.
	Redeliver func(ctx context.Context) (*redelivery.Report, error)
	// JIT and Identity serve the warm pools (their instances' pool markers,
	// keyed by instance ARN); required when a profile has a pool.
	JIT      PoolMarkers
	Identity jitstore.Identity
}

// Defaults for the options that are not in the configuration.
const (
	// MaxRequeues bounds how often a job is re-queued before scaledown gives
	// up on it (and says so in the log and the metrics).
	MaxRequeues = 3
	// InterruptedOfferingTTL is how long a spot pool that interrupted one of
	// our instances is avoided.
	InterruptedOfferingTTL = 10 * time.Minute
	// freshLaunch protects a runner whose instance may not be visible to
	// DescribeInstances yet (EC2 is eventually consistent).
	freshLaunch = 2 * time.Minute
)

// Reconciler runs sweeps and handles EC2 events.
type Reconciler struct {
	cfg     *config.Config
	d       Deps
	log     *slog.Logger
	metrics *metrics.Recorder
	now     func() time.Time
	rerun   bool
	retirer *retire.Retirer
	pools   *pool.Launcher // nil without Deps.JIT
}

// Option configures a Reconciler.
type Option func(*Reconciler)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(r *Reconciler) { r.log = l } }

// WithMetrics sets the metrics recorder.
func WithMetrics(m *metrics.Recorder) Option { return func(r *Reconciler) { r.metrics = m } }

// WithClock sets the clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(r *Reconciler) { r.now = now } }

// New returns a Reconciler for cfg.
func New(cfg *config.Config, d Deps, opts ...Option) *Reconciler {
	r := &Reconciler{cfg: cfg, d: d, log: slog.New(slog.DiscardHandler), now: time.Now, rerun: cfg.ScaleDown.RerunInterrupted()}
	r.retirer = retire.New(d.GitHub, d.Instances)
	for _, o := range opts {
		o(r)
	}
	if d.JIT != nil {
		r.pools = pool.New(cfg, d.Instances, d.Jobs, d.JIT, d.Identity, r.now)
	}
	return r
}

// event is the part of an EventBridge event the handler reads.
type event struct {
	DetailType string `json:"detail-type"`
	Source     string `json:"source"`
	Detail     struct {
		InstanceID     string `json:"instance-id"`
		State          string `json:"state"`
		InstanceAction string `json:"instance-action"`
	} `json:"detail"`
}

// EventBridge detail types handled besides the scheduler's tick.
const (
	SpotInterruption = "EC2 Spot Instance Interruption Warning"
	StateChange      = "EC2 Instance State-change Notification"
)

// Handle is the Lambda entry point: the redelivery schedule's event runs the
// recovery of failed deliveries, a scheduler tick (any other payload that is
// not one of the EC2 events) runs a sweep.
func (r *Reconciler) Handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var ev event
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &ev); err != nil {
			r.log.Warn("unreadable event; sweeping", slog.String("error", err.Error()))
		}
	}
	if ev.Source == functions.RedeliverySource {
		if r.d.Redeliver == nil {
			r.log.Info("redelivery is off (redelivery.enabled: false)")
			return nil, nil
		}
		return r.d.Redeliver(ctx)
	}
	switch ev.DetailType {
	case SpotInterruption:
		return nil, r.onInterruption(ctx, ev.Detail.InstanceID)
	case StateChange:
		return nil, r.onStateChange(ctx, ev.Detail.InstanceID, ev.Detail.State)
	}
	return r.Sweep(ctx)
}

// decide logs a decision with its reason and counts it as a metric.
func (r *Reconciler) decide(log *slog.Logger, rule, action string, attrs ...any) {
	r.metrics.Inc(metrics.ScaleDownDecisions, map[string]string{"Rule": rule, "Action": action})
	log.Info("scaledown decision", append([]any{slog.String("rule", rule), slog.String("action", action)}, attrs...)...)
}

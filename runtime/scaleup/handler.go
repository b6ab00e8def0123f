// Package scaleup is the scaleup Lambda's logic: it turns each scale-up
// message into exactly one running just-in-time runner.
//
// Per message (every record of a batch independently; a failure or panic in
// one is reported as that record's batch item failure and never drops the
// others):
//
//  1. resolve the launch profile from the job's labels (not ours: skipped,
//     recorded, not retried);
//  2. enforce maxRunners overall and per profile, counted from the slot
//     index (over the limit: the record comes back later);
//  3. claim the job with a conditional write carrying a lease (already
//     launched: a no-op success; claimed by a live invocation: later; a
//     claim whose lease ran out is taken over);
//  4. optionally ask GitHub whether the job is still queued;
//  5. generate the JIT config for runner <prefix>-j<job-id>-<attempt> first,
//     so that nothing is launched while GitHub refuses;
//  6. launch one instance with CreateFleet, spot first, on-demand in the same
//     call on capacity errors only, its runner's name in its Name tag;
//  7. record the launch on the job and hand the JIT config to that instance
//     only (jitstore), in one transaction. A failure after the launch
//     retires the instance through runtime/retire: a write whose response
//     was lost may have handed the config over, and its runner taken a job.
package scaleup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/labels"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/pool"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/shapes"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// GitHub is what scaleup needs from the GitHub App client.
type GitHub interface {
	GenerateJITConfig(ctx context.Context, inst githubapp.Installation, name string, labels []string) (githubapp.JITConfig, error)
	GetJob(ctx context.Context, inst githubapp.Installation, jobID int64) (githubapp.Job, error)
	DeleteRunner(ctx context.Context, inst githubapp.Installation, runnerID int64) error
	FindRunner(ctx context.Context, inst githubapp.Installation, name string) (githubapp.Runner, bool, error)
}

// Launcher launches and terminates instances; *fleet.Launcher implements it.
type Launcher interface {
	Launch(ctx context.Context, req fleet.Request) (fleet.Result, error)
	Terminate(ctx context.Context, instanceID string) error
	// Tag retags a pooled instance a job takes; Start starts a stopped one;
	// TemplateVersion dates the replacement launched into its pool.
	Tag(ctx context.Context, instanceID string, tags map[string]string) error
	Start(ctx context.Context, instanceID string) error
	TemplateVersion(ctx context.Context, templateID string) (int64, error)
	// Catalogue lists the instance types offered in the subnets' zones,
	// for jobs whose shape labels choose their types (cached).
	Catalogue(ctx context.Context, subnetIDs []string) ([]shapes.InstanceType, error)
}

// Jobs is what scaleup needs from the job records; *state.Store implements it.
type Jobs interface {
	ClaimAttempt(ctx context.Context, jobID int64, claimID, profile string, lease time.Duration) (state.ClaimOutcome, int64, error)
	RecordLaunch(ctx context.Context, jobID int64, claimID string, l state.Launch) error
	ReleaseClaim(ctx context.Context, jobID int64, claimID, reason string) error
	Wait(ctx context.Context, jobID int64, claimID, profile, reason string, since time.Time) error
	Skip(ctx context.Context, jobID int64, reason string) error
	// HoldGitHub and GitHubHold share GitHub's rate limit between
	// invocations (state.Store).
	HoldGitHub(ctx context.Context, until time.Time) error
	GitHubHold(ctx context.Context) (time.Time, error)
	// CountSlots counts the runner slots a profile holds, or all profiles
	// hold for "" (state.Store.CountSlots).
	CountSlots(ctx context.Context, profile string) (int, error)
	// Waiting lists up to limit waiting jobs of profile, oldest first, that
	// have waited since before (zero: any): jobs that cannot launch yet
	// wait in the table (see state.Wait) and are woken oldest first.
	Waiting(ctx context.Context, profile string, before time.Time, limit int32) ([]*state.Job, error)

	// Warm pools (state.Store): a job of a pooled profile takes a pooled
	// instance when one is ready (PoolCandidates, ClaimPooled), gives it
	// back when nothing was handed to it (ReturnPooled), and its launch
	// record takes the pool item in the same transaction (TakePooled).
	PoolCandidates(ctx context.Context, profile, kind string, limit int32) ([]*state.PoolInstance, error)
	ClaimPooled(ctx context.Context, instanceID, profile, kind, claimID string, lease time.Duration) (bool, error)
	ReturnPooled(ctx context.Context, p *state.PoolInstance, claimID string) error
	TakePooled(instanceID, claimID string) types.TransactWriteItem
	AddPooled(ctx context.Context, p state.PoolInstance, others ...types.TransactWriteItem) error
	RemovePooled(ctx context.Context, instanceID string) error
	// Requeue puts a launched job back to be launched again (a stopped
	// pooled instance that would not start).
	Requeue(ctx context.Context, jobID int64, seenInstanceID, reason string) (bool, error)
}

// Waker sends a wake (queue.WakeMessage) that becomes visible after delay;
// *queue.Sender's SendAfter implements it.
type Waker interface {
	SendAfter(ctx context.Context, m *queue.Message, delay time.Duration) (string, error)
}

// JITStore hands JIT configs to instances; *jitstore.Store implements it.
type JITStore interface {
	// Handover is the hand-over as an item of the launch's record
	// (state.Launch.With): both are written, or neither.
	Handover(instanceARN, encoded string) types.TransactWriteItem
	Delete(ctx context.Context, instanceARN string) error
	// Marker is a replacement pooled instance's pool marker.
	Marker(instanceARN, kind string) types.TransactWriteItem
}

// Visibility shortens a message's visibility timeout so a record that hit a
// limit comes back sooner than the queue's visibility timeout.
type Visibility interface {
	Retry(ctx context.Context, receiptHandle string, after time.Duration) error
}

// Offerings reads the spot pools scaledown saw interrupting our instances.
type Offerings interface {
	UnavailableOfferings(ctx context.Context) (map[string]time.Time, error)
}

// offeringMarker is implemented by launchers that keep an unavailable-
// offerings cache (*fleet.Launcher).
type offeringMarker interface {
	MarkUnavailable(capacityType, instanceType, az string)
}

// Identity names the account and partition that instance ARNs live in.
type Identity = jitstore.Identity

// Handler handles SQS batches of scale-up messages.
type Handler struct {
	cfg       *config.Config
	matcher   *labels.Matcher
	gh        GitHub
	launcher  Launcher
	jobs      Jobs
	jit       JITStore
	identity  Identity
	offerings Offerings
	retirer   *retire.Retirer
	waker     Waker
	pools     *pool.Launcher

	visibility Visibility
	log        *slog.Logger

	// holdMu guards what this container knows of GitHub's rate limit: the
	// end of the hold, and the time of the wake already sent for it.
	holdMu      sync.Mutex
	holdUntil   time.Time
	wakeAt      time.Time
	sharedAt    time.Time // when the hold and the interrupted pools were last read
	sharedMu    sync.Mutex
	metrics     *metrics.Recorder
	now         func() time.Time
	concurrency int
	claimMu     sync.Mutex
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(h *Handler) { h.log = l } }

// WithMetrics sets the metrics recorder (default: none).
func WithMetrics(m *metrics.Recorder) Option { return func(h *Handler) { h.metrics = m } }

// WithClock sets the clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// WithVisibility lets failed records come back after a backoff (see
// retryAfter) instead of the queue's visibility timeout.
func WithVisibility(v Visibility) Option { return func(h *Handler) { h.visibility = v } }

// WithConcurrency bounds how many records of a batch are processed at once
// (default 10, the batch size).
func WithConcurrency(n int) Option { return func(h *Handler) { h.concurrency = n } }

// Deps are the handler's required collaborators.
type Deps struct {
	GitHub   GitHub
	Launcher Launcher
	Jobs     Jobs
	JIT      JITStore
	Identity Identity
	// Offerings is optional: pools interrupted recently are skipped.
	Offerings Offerings
	// Waker wakes jobs waiting in the table (Jobs.Waiting): a job over a
	// limit waits there, not in SQS receives, and a wake launches the
	// oldest waiting jobs first.
	Waker Waker
}

// New returns a Handler for cfg (which must be valid).
func New(cfg *config.Config, d Deps, opts ...Option) *Handler {
	h := &Handler{
		cfg: cfg, matcher: labels.NewMatcher(cfg),
		gh: d.GitHub, launcher: d.Launcher, jobs: d.Jobs, jit: d.JIT, identity: d.Identity, offerings: d.Offerings,
		log: slog.New(slog.DiscardHandler), now: time.Now, concurrency: queue.ScaleUp.BatchSize,
		retirer: retire.New(d.GitHub, d.Launcher), waker: d.Waker,
	}
	for _, o := range opts {
		o(h)
	}
	if h.concurrency < 1 {
		h.concurrency = 1
	}
	h.pools = pool.New(cfg, d.Launcher, d.Jobs, d.JIT, d.Identity, h.now)
	return h
}

// sharedReadEvery bounds how often a container reads what other
// invocations share through the table (GitHub's rate-limit hold, the spot
// pools scaledown saw interrupted): at most once per this, not per batch.
// A hold missed meanwhile costs one refused GitHub call, which then holds
// this container too; a pool missed meanwhile, one launch attempt there.
const sharedReadEvery = 5 * time.Second

// Handle processes a batch and reports the records to retry.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	h.loadShared(ctx)
	var (
		mu       sync.Mutex
		failures []events.SQSBatchItemFailure
		wg       sync.WaitGroup
		sem      = make(chan struct{}, h.concurrency)
	)
	// Records of the same job run one after another (the second then finds
	// the job launched); different jobs run concurrently.
	groups := map[string][]events.SQSMessage{}
	var order []string
	for _, r := range ev.Records {
		key := jobKeyOf(r.Body)
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], r)
	}
	for _, key := range order {
		recs := groups[key]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for _, r := range recs {
				if err := h.safeRecord(ctx, r); err != nil {
					mu.Lock()
					failures = append(failures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return events.SQSEventResponse{BatchItemFailures: failures}, nil
}

// loadShared reads the hold and the interrupted pools, unless this
// container did within sharedReadEvery.
func (h *Handler) loadShared(ctx context.Context) {
	h.sharedMu.Lock()
	now := h.now()
	due := now.Sub(h.sharedAt) >= sharedReadEvery || now.Before(h.sharedAt) // a zero sharedAt is long ago
	if due {
		h.sharedAt = now
	}
	h.sharedMu.Unlock()
	if !due {
		return
	}
	h.loadOfferings(ctx)
	h.loadHold(ctx)
}

// loadHold reads the GitHub rate-limit hold other invocations recorded.
func (h *Handler) loadHold(ctx context.Context) {
	until, err := h.jobs.GitHubHold(ctx)
	if err != nil {
		h.log.Warn("could not read GitHub's rate-limit hold", slog.String("error", err.Error()))
		return
	}
	h.holdMu.Lock()
	defer h.holdMu.Unlock()
	if until.After(h.holdUntil) {
		h.holdUntil = until
	}
}

// hold returns the end of GitHub's rate limit, zero when there is none.
func (h *Handler) hold() time.Time {
	h.holdMu.Lock()
	defer h.holdMu.Unlock()
	if !h.holdUntil.After(h.now()) {
		return time.Time{}
	}
	return h.holdUntil
}

func isRateLimit(err error) bool {
	var rl *githubapp.RateLimitError
	return errors.As(err, &rl)
}

// rateLimited holds the job after GitHub's rate limit answered: the hold is
// shared with every invocation (so none asks again before the reset), the
// job waits in the table, and a wake comes at the reset.
func (h *Handler) rateLimited(ctx context.Context, a *admission, err error) error {
	var rl *githubapp.RateLimitError
	errors.As(err, &rl)
	until := h.now().Add(rl.ResetIn)
	h.holdMu.Lock()
	if until.After(h.holdUntil) {
		h.holdUntil = until
	}
	h.holdMu.Unlock()
	if herr := h.jobs.HoldGitHub(ctx, until); herr != nil {
		a.log.Warn("could not share GitHub's rate limit; other invocations find it themselves", slog.String("error", herr.Error()))
	}
	return h.holdJob(ctx, a, until, rl.Error())
}

// holdJob parks an admitted job until GitHub's rate limit resets, and makes
// sure a wake comes then (one per container and reset time).
func (h *Handler) holdJob(ctx context.Context, a *admission, until time.Time, reason string) error {
	since := time.UnixMilli(a.m.ReceivedAt)
	if a.m.ReceivedAt == 0 {
		since = h.now()
	}
	if err := h.jobs.Wait(ctx, a.m.JobID, a.claimID, a.match.Profile, "held until "+until.UTC().Format(time.RFC3339)+": "+reason, since); err != nil {
		return err // the claim expires with its lease; the message (if any) comes back
	}
	h.metrics.Inc(metrics.RateLimitHolds, map[string]string{"Profile": a.match.Profile})
	a.log.Info("job held until GitHub's rate limit resets; nothing launched", slog.String("decision", "rate_limited"),
		slog.Time("until", until), slog.String("reason", reason))
	h.wakeAtReset(ctx, until)
	return nil
}

// wakeAtReset sends a wake for when GitHub's hold ends, unless this
// container has sent one for then already. SQS delays at most 15 minutes;
// a wake that comes earlier finds the hold and sends the next one.
func (h *Handler) wakeAtReset(ctx context.Context, until time.Time) {
	delay := until.Sub(h.now()) + time.Second
	h.holdMu.Lock()
	if !h.wakeAt.Before(until) {
		h.holdMu.Unlock()
		return
	}
	h.wakeAt = until
	h.holdMu.Unlock()
	h.wake(ctx, delay, "GitHub's rate limit reset")
}

// loadOfferings feeds the launcher's cache with the pools scaledown saw
// interrupting our spot instances.
func (h *Handler) loadOfferings(ctx context.Context) {
	m, ok := h.launcher.(offeringMarker)
	if h.offerings == nil || !ok {
		return
	}
	offs, err := h.offerings.UnavailableOfferings(ctx)
	if err != nil {
		h.log.Warn("could not read interrupted spot pools", slog.String("error", err.Error()))
		return
	}
	for k := range offs {
		if capacity, typ, zone, ok := fleet.ParseOfferingKey(k); ok {
			m.MarkUnavailable(capacity, typ, zone)
		}
	}
}

// jobKeyOf groups records by job id without fully decoding them; records
// that do not decode get a key of their own.
func jobKeyOf(body string) string {
	m, err := queue.Decode(body)
	if err != nil {
		return "invalid:" + body
	}
	return strconv.FormatInt(m.JobID, 10)
}

// safeRecord processes one record; a panic fails that record only.
func (h *Handler) safeRecord(ctx context.Context, r events.SQSMessage) (err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic processing record", slog.String("message_id", r.MessageId),
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h.record(ctx, r)
}

// errLimit marks a job over a runner limit; errWaiting one parked in the
// table until a slot frees (its message is done).
var (
	errLimit   = errors.New("runner limit reached")
	errWaiting = errors.New("job waits for a runner slot")
)

func (h *Handler) record(ctx context.Context, r events.SQSMessage) error {
	log := h.log.With(slog.String("message_id", r.MessageId))
	m, err := queue.Decode(r.Body)
	if err != nil {
		// Not a job: retrying cannot help. Log and drop it.
		log.Error("invalid scale-up message dropped", slog.String("error", err.Error()))
		h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "invalid_message"})
		return nil
	}
	if m.Wake {
		return h.drain(ctx, log.With(slog.String("wake", m.Reason)), r)
	}
	log = log.With(slog.Int64("job_id", m.JobID), slog.String("repository", m.Repository))
	err = h.process(ctx, log, r, m, false)
	if err != nil && h.visibility != nil && r.ReceiptHandle != "" {
		after := h.retryAfter(err, r)
		if verr := h.visibility.Retry(ctx, r.ReceiptHandle, after); verr != nil {
			log.Warn("could not schedule the retry; the queue's visibility timeout applies", slog.String("error", verr.Error()))
		}
	}
	return err
}

// retryAfter is when a failed record comes back: with exponential backoff
// on the receive count (5 s, 10 s, 20 s ... at most 5 minutes) rather than
// the queue's whole visibility timeout, so a transient failure costs a job
// seconds, not minutes. (A job held by a limit is not retried: it waits in
// the table.)
func (h *Handler) retryAfter(_ error, r events.SQSMessage) time.Duration {
	n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
	d := 5 * time.Second
	for i := 1; i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// process launches one job. woken says the job came out of the wait index
// (a wake), so it does not queue behind other waiting jobs again.
func (h *Handler) process(ctx context.Context, log *slog.Logger, r events.SQSMessage, m *queue.Message, woken bool) error {
	a, err := h.admit(ctx, log, r, m, woken)
	if err != nil || a == nil {
		return err
	}
	return h.launch(ctx, a)
}

// admission is a job claimed for a launch within the limits.
type admission struct {
	log     *slog.Logger
	m       *queue.Message
	match   labels.Match
	profile config.Profile
	claimID string
	attempt int64
	woken   bool
	// pooled is the warm-pool instance the job claimed, nil for a launch.
	pooled *state.PoolInstance
}

// admit resolves the job's profile, claims it and checks the limits. It
// returns nil (and no error) when there is nothing to launch now: not ours,
// launched already, or waiting in the table.
func (h *Handler) admit(ctx context.Context, log *slog.Logger, r events.SQSMessage, m *queue.Message, woken bool) (*admission, error) {
	match, err := h.matcher.Resolve(m.Labels)
	if err != nil {
		reason := err.Error()
		log.Info("job skipped", slog.String("decision", "skipped"), slog.String("reason", reason))
		h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "labels"})
		if no, ok := errors.AsType[*labels.NotOursError](err); ok && no.Shape != "" {
			h.metrics.Inc(metrics.ShapeRefusals, map[string]string{"Reason": no.Shape})
		}
		if serr := h.jobs.Skip(ctx, m.JobID, reason); serr != nil {
			return nil, serr
		}
		return nil, nil
	}
	profile := h.cfg.Profiles[match.Profile]
	log = log.With(slog.String("profile", match.Profile))
	if !match.Shape.IsZero() {
		log = log.With(slog.String("shape", match.Shape.String()))
	}
	if match.Shape.NarrowsTypes() {
		if match.InstanceTypes, err = h.shapeTypes(ctx, match); err != nil {
			return nil, err
		}
		if len(match.InstanceTypes) == 0 {
			reason := fmt.Sprintf("no instance type offered in the deployment's subnets has %s (arch %s) within the shapes bounds", match.Shape, match.Arch)
			log.Info("job skipped", slog.String("decision", "skipped"), slog.String("reason", reason))
			h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "labels"})
			h.metrics.Inc(metrics.ShapeRefusals, map[string]string{"Reason": "no_type"})
			return nil, h.jobs.Skip(ctx, m.JobID, reason)
		}
		log = log.With(slog.Any("candidate_types", match.InstanceTypes))
	}

	claimID := claimIDOf(ctx, r)
	// A shape asks for other types, volume or market than the profile's
	// pooled instances have: it never takes one.
	outcome, attempt, pooled, err := h.limitAndClaim(ctx, log, m, claimID, match.Profile, profile, match.Shape.IsZero(), woken)
	if errors.Is(err, errWaiting) {
		log.Info("job waits in the table for a runner slot", slog.String("decision", "waiting"), slog.String("reason", err.Error()))
		h.metrics.Inc(metrics.LimitReached, map[string]string{"Profile": match.Profile})
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	switch outcome {
	case state.Claimed:
	case state.ClaimHeld:
		log.Info("job claimed by another invocation; retried later", slog.String("decision", "claim_held"))
		return nil, errors.New("job claimed by another invocation")
	default:
		log.Info("nothing to launch", slog.String("decision", outcome.String()))
		return nil, nil
	}
	a := &admission{log: log, m: m, match: match, profile: profile, claimID: claimID, attempt: attempt, woken: woken, pooled: pooled}
	if until := h.hold(); !until.IsZero() {
		// GitHub refuses requests until then: not a call, not a launch.
		h.returnPooled(ctx, a)
		return nil, h.holdJob(ctx, a, until, "GitHub's rate limit")
	}
	return a, nil
}

// launch generates the JIT config, launches the instance, hands the config
// over and records the launch of an admitted job.
func (h *Handler) launch(ctx context.Context, a *admission) error {
	log, m, match, claimID, attempt, woken := a.log, a.m, a.match, a.claimID, a.attempt, a.woken
	inst := githubapp.Installation{ID: m.InstallationID, Owner: m.Owner, Repository: m.Repository}
	if done, err := h.checkQueued(ctx, a, inst); done {
		h.returnPooled(ctx, a)
		return err
	}

	// The JIT config comes first: while GitHub refuses (a rate limit, an
	// outage) nothing is launched, so a held job costs no EC2 instance. Its
	// runner is therefore named before the instance exists (tags.RunnerName).
	name := tags.RunnerName(h.cfg.NamePrefix, m.JobID, attempt)
	log = log.With(slog.String("runner_name", name))
	jit, err := h.gh.GenerateJITConfig(ctx, inst, name, match.Labels)
	if err != nil {
		h.returnPooled(ctx, a)
	}
	if isRateLimit(err) {
		return h.rateLimited(ctx, a, err)
	}
	if err != nil {
		// A request that registered the runner after all leaves an offline
		// runner no instance will use: rule 5 deletes it.
		return h.release(ctx, log, m, claimID, woken, fmt.Errorf("generate JIT config: %w", err))
	}
	if a.pooled != nil {
		return h.handOverPooled(ctx, a, inst, name, jit)
	}

	res, err := h.launcher.Launch(ctx, h.fleetRequest(a, name))
	for _, le := range res.Errors {
		h.metrics.Inc(metrics.LaunchErrors, map[string]string{"Code": le.Code})
	}
	if err != nil {
		var lf *fleet.LaunchFailure
		if !errors.As(err, &lf) {
			h.metrics.Inc(metrics.LaunchErrors, map[string]string{"Code": "api"})
		}
		// No instance will ever hold this config: its runner goes.
		if derr := h.gh.DeleteRunner(ctx, inst, jit.RunnerID); derr != nil {
			log.Warn("could not delete the unused runner; scaledown will", slog.String("error", derr.Error()))
		}
		return h.release(ctx, log, m, claimID, woken, fmt.Errorf("launch: %w", err))
	}
	log = log.With(slog.String("instance_id", res.InstanceID))
	if res.SpotFallback {
		h.metrics.Inc(metrics.SpotFallbacks, map[string]string{"Profile": match.Profile})
	}

	// The launch's record and the instance's JIT config in one
	// transaction: a lost claim writes neither, so the instance never
	// gets a runner.
	arn := h.instanceARN(res.InstanceID)
	own := retire.Target{InstanceID: res.InstanceID, Installation: inst, RunnerName: name, RunnerID: jit.RunnerID}
	err = h.jobs.RecordLaunch(ctx, m.JobID, claimID, state.Launch{
		InstanceID: res.InstanceID, InstanceType: res.InstanceType, AvailabilityZone: res.AvailabilityZone,
		SubnetID: res.SubnetID, CapacityType: res.CapacityType, SpotFallback: res.SpotFallback,
		RunnerName: name, RunnerID: jit.RunnerID, LaunchedAt: h.now(), CandidateTypes: shapeCandidates(match),
		With: []types.TransactWriteItem{h.jit.Handover(arn, jit.Encoded)},
	})
	if err != nil {
		// Our claim ran out and another invocation owns the job now, or the
		// record could not be written (a write whose response was lost may
		// have stored both): this instance must not run.
		h.undo(ctx, log, own, arn)
		if errors.Is(err, state.ErrClaimLost) {
			log.Warn("claim lost before the launch was recorded; instance terminated", slog.String("decision", "claim_lost"))
			return nil
		}
		return h.release(ctx, log, m, claimID, woken, fmt.Errorf("record launch: %w", err))
	}

	h.launched(log, a, res, jit.RunnerID)
	return nil
}

// checkQueued asks GitHub whether the job still waits for a runner (when
// scaleUp.checkQueued is on). done reports that the job's handling ends
// here, with err: skipped (gone, or running on a runner not ours),
// deferred for GitHub's rate limit, or released after a failure.
func (h *Handler) checkQueued(ctx context.Context, a *admission, inst githubapp.Installation) (done bool, err error) {
	if !h.cfg.CheckQueued() {
		return false, nil
	}
	log, m := a.log, a.m
	job, err := h.gh.GetJob(ctx, inst, m.JobID)
	switch {
	case errors.Is(err, githubapp.ErrNotFound):
		return true, h.skipClaimed(ctx, log, m, "job not found on GitHub")
	case isRateLimit(err):
		return true, h.rateLimited(ctx, a, err)
	case err != nil:
		return true, h.release(ctx, log, m, a.claimID, a.woken, fmt.Errorf("check job status: %w", err))
	case job.Status != state.StatusQueued && !h.ourRunner(job.RunnerName):
		return true, h.skipClaimed(ctx, log, m, "job no longer queued on GitHub (status "+job.Status+")")
	}
	return false, nil
}

// fleetRequest is the launch of the admitted job's instance, whose runner
// is named name.
func (h *Handler) fleetRequest(a *admission, name string) fleet.Request {
	m, match, profile := a.m, a.match, a.profile
	return fleet.Request{
		JobID:            m.JobID,
		Repository:       m.Repository,
		Profile:          match.Profile,
		InstanceTypes:    match.InstanceTypes,
		ImageID:          profile.ImageID,
		Arch:             match.Arch,
		SubnetIDs:        h.cfg.Launch.SubnetIDs,
		LaunchTemplateID: h.cfg.Launch.LaunchTemplateID,
		Spot:             match.Spot,
		VolumeGiB:        match.VolumeGiB,
		// Types a shape chose from the catalogue are offered in some of
		// the subnets' zones, not necessarily in all.
		OfferedOnly: match.Shape.NarrowsTypes(),
		Tags:        tags.ForLaunch(h.cfg.NamePrefix, m.JobID, m.Repository, match.Profile, name),
	}
}

// shapeTypes chooses the instance types of a job whose shape labels narrow
// them: from EC2's catalogue of the types offered in the deployment's
// subnets (cached by the launcher), within the configuration's bounds.
// None is not an error: the job is then not served, and its record says
// why.
func (h *Handler) shapeTypes(ctx context.Context, match labels.Match) ([]string, error) {
	cat, err := h.launcher.Catalogue(ctx, h.cfg.Launch.SubnetIDs)
	if err != nil {
		return nil, fmt.Errorf("instance-type catalogue: %w", err)
	}
	return shapes.Select(cat, match.Shape, h.cfg.Shapes, match.Arch, match.Spot), nil
}

// shapeCandidates are the types to record on the job: those a shape chose.
func shapeCandidates(match labels.Match) []string {
	if !match.Shape.NarrowsTypes() {
		return nil
	}
	return match.InstanceTypes
}

// launched counts and logs a recorded launch.
func (h *Handler) launched(log *slog.Logger, a *admission, res fleet.Result, runnerID int64) {
	m, profile := a.m, a.match.Profile
	h.metrics.Inc(metrics.Launches, map[string]string{"Profile": profile, "CapacityType": res.CapacityType})
	if m.ReceivedAt > 0 {
		h.metrics.Put(metrics.QueueToLaunchSeconds, h.now().Sub(time.UnixMilli(m.ReceivedAt)).Seconds(), metrics.Seconds,
			map[string]string{"Profile": profile})
	}
	if cands := shapeCandidates(a.match); len(cands) > 0 {
		h.metrics.Inc(metrics.ShapeLaunches, map[string]string{"Profile": profile, "InstanceType": res.InstanceType})
		h.metrics.Put(metrics.ShapeCandidates, float64(len(cands)), metrics.Count, map[string]string{"Profile": profile})
	}
	log.Info("runner launched", slog.String("decision", "launched"), slog.String("capacity_type", res.CapacityType),
		slog.String("instance_type", res.InstanceType), slog.String("availability_zone", res.AvailabilityZone),
		slog.Bool("spot_fallback", res.SpotFallback), slog.Int64("runner_id", runnerID))
}

// limitAndClaim claims the job and then checks the limits, counting the
// slot the claim just took. Over a limit the job waits in the table
// (state.Wait: the claim is given back, the message is done) until a wake
// launches it; so does a new job while older ones wait near a limit
// (queueBehindWithin), first come first served. Claiming first lets a
// duplicate of a launched job succeed at once even when every slot is
// taken. Within one invocation the count and the decision run under
// a lock, so the records of one batch never exceed a limit between them;
// concurrent invocations can overshoot it by at most their number (see
// state.Store.CountSlots).
func (h *Handler) limitAndClaim(ctx context.Context, log *slog.Logger, m *queue.Message, claimID, name string, p config.Profile, poolable, woken bool) (state.ClaimOutcome, int64, *state.PoolInstance, error) {
	lease := time.Duration(h.cfg.ScaleUp.ClaimLeaseSeconds) * time.Second
	outcome, attempt, err := h.jobs.ClaimAttempt(ctx, m.JobID, claimID, name, lease)
	if err != nil || outcome != state.Claimed {
		return outcome, 0, nil, err
	}
	// A pooled instance first: taking one moves its slot to the job, so no
	// limit can be passed by it, and its conditional claim needs no lock.
	if poolable {
		if pooled := h.takeFromPool(ctx, log, name, p, claimID, lease); pooled != nil {
			return state.Claimed, attempt, pooled, nil
		}
	}
	// The count and the decision run one record at a time: claims made
	// meanwhile by this invocation's other records are counted (they may
	// make a job wait that a pool hit would have let through; it is woken
	// when a slot frees).
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	since := time.UnixMilli(m.ReceivedAt)
	if m.ReceivedAt == 0 {
		since = h.now()
	}
	var reason string
	switch free, err := h.checkLimits(ctx, name, p); {
	case errors.Is(err, errLimit):
		reason = strings.TrimPrefix(err.Error(), errLimit.Error()+": ")
	case err != nil:
		return 0, 0, nil, h.giveBack(ctx, m.JobID, claimID, name, woken, since, err)
	case !woken && free < queueBehindWithin:
		older, err := h.jobs.Waiting(ctx, name, since, 1)
		if err != nil {
			return 0, 0, nil, h.giveBack(ctx, m.JobID, claimID, name, woken, since, err)
		}
		if len(older) > 0 {
			// A slot is free, but older jobs wait for it: queue behind them
			// and wake them (their wake may have come and gone).
			reason = "older jobs wait for a runner slot"
			h.wake(ctx, 0, "a job queued behind older waiting jobs")
		}
	}
	if reason == "" {
		return state.Claimed, attempt, nil, nil
	}
	if err := h.jobs.Wait(ctx, m.JobID, claimID, name, reason, since); err != nil {
		return 0, 0, nil, err // the claim expires with its lease; the message comes back
	}
	return 0, 0, nil, fmt.Errorf("%w: %s", errWaiting, reason)
}

// queueBehindWithin: a new job checks for older waiting jobs (and queues
// behind them) only when fewer slots than this stay free after its own.
// Further from every limit no job competes for a slot: jobs that wait then
// wait for GitHub's reset or a retry, each with its own wake, and a wake
// drains up to drainBatch jobs beyond the free slots. That saves a Query
// per job on the common path.
const queueBehindWithin = drainBatch

// giveBack releases the claim after err (a woken job waits again) and
// returns err.
func (h *Handler) giveBack(ctx context.Context, jobID int64, claimID, profile string, woken bool, since time.Time, err error) error {
	release := func() error { return h.jobs.ReleaseClaim(ctx, jobID, claimID, err.Error()) }
	if woken {
		release = func() error { return h.jobs.Wait(ctx, jobID, claimID, profile, err.Error(), since) }
	}
	if rerr := release(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// wake sends a wake after delay; a failure is logged (the next slot freed,
// or scaledown's sweep, wakes the waiting jobs too).
func (h *Handler) wake(ctx context.Context, delay time.Duration, reason string) {
	if _, err := h.waker.SendAfter(ctx, queue.WakeMessage(reason), delay); err != nil {
		h.log.Warn("could not send a wake; the next freed slot or sweep wakes the waiting jobs", slog.String("error", err.Error()))
	}
}

// drainBatch bounds how many waiting jobs one wake reads beyond the free
// slots (jobs of a profile at its own limit are skipped).
const drainBatch = 10

// drain launches the oldest waiting jobs while runner slots are free: a
// wake after a slot was freed, or GitHub's rate limit reset. Each job goes
// through the same claim and limit check as a new one (a job over its
// profile's limit waits again, keeping its place).
func (h *Handler) drain(ctx context.Context, log *slog.Logger, r events.SQSMessage) error {
	if until := h.hold(); !until.IsZero() {
		log.Info("wake: GitHub's rate limit still holds", slog.String("decision", "wake_held"), slog.Time("until", until))
		h.wakeAtReset(ctx, until)
		return nil
	}
	used, err := h.jobs.CountSlots(ctx, "")
	if err != nil {
		return err
	}
	free := h.cfg.MaxRunners - used
	if free <= 0 {
		log.Info("wake: every runner slot is taken", slog.String("decision", "wake_full"))
		return nil
	}
	// The oldest waiting jobs of every profile, oldest first overall.
	want := int32(min(free+drainBatch, 100))
	var jobs []*state.Job
	for _, p := range h.cfg.ProfileNames() {
		js, err := h.jobs.Waiting(ctx, p, time.Time{}, want)
		if err != nil {
			return err
		}
		jobs = append(jobs, js...)
	}
	slices.SortStableFunc(jobs, func(a, b *state.Job) int { return a.WaitSince.Compare(b.WaitSince) })
	jobs = jobs[:min(len(jobs), int(want))]
	log.Info("wake: launching waiting jobs", slog.String("decision", "wake"), slog.Int("free_slots", free), slog.Int("waiting", len(jobs)))
	// Claims in order, oldest first, so the oldest take the free slots;
	// launches in parallel.
	var wg sync.WaitGroup
	sem := make(chan struct{}, h.concurrency)
	admitted := 0
	for _, j := range jobs {
		if admitted == free {
			break
		}
		m := &queue.Message{JobID: j.JobID, RunID: j.RunID, Repository: j.Repository, Owner: j.Owner,
			InstallationID: j.InstallationID, Labels: j.Labels, Profile: j.Profile, ReceivedAt: j.WaitSince.UnixMilli()}
		jlog := h.log.With(slog.String("message_id", r.MessageId), slog.Int64("job_id", j.JobID), slog.String("repository", j.Repository))
		if err := m.Validate(); err != nil {
			jlog.Error("waiting job cannot be launched; skipped", slog.String("error", err.Error()))
			continue
		}
		rec := events.SQSMessage{MessageId: r.MessageId + "/" + strconv.FormatInt(j.JobID, 10)}
		a, err := h.admit(ctx, jlog, rec, m, true)
		if err != nil {
			jlog.Warn("waiting job not admitted; it keeps its place", slog.String("error", err.Error()))
			continue
		}
		if a == nil {
			continue // waits again (its profile's limit), or nothing to do
		}
		admitted++
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := h.launch(ctx, a); err != nil {
				jlog.Warn("waiting job not launched; it waits again", slog.String("error", err.Error()))
			}
		}()
	}
	wg.Wait()
	return nil
}

// checkLimits returns errLimit when the runners counted (this job's claim
// included) exceed the profile's or the deployment's limit; otherwise free
// is the number of slots that stay free under the tighter of the two.
func (h *Handler) checkLimits(ctx context.Context, name string, p config.Profile) (free int, err error) {
	free = h.cfg.MaxRunners
	if p.MaxRunners > 0 {
		n, err := h.jobs.CountSlots(ctx, name)
		if err != nil {
			return 0, err
		}
		if n > p.MaxRunners {
			return 0, fmt.Errorf("%w: profile %s has %d of %d runners", errLimit, name, n-1, p.MaxRunners)
		}
		free = p.MaxRunners - n
	}
	total, err := h.jobs.CountSlots(ctx, "")
	if err != nil {
		return 0, err
	}
	if total > h.cfg.MaxRunners {
		return 0, fmt.Errorf("%w: %d of maxRunners %d", errLimit, total-1, h.cfg.MaxRunners)
	}
	return min(free, h.cfg.MaxRunners-total), nil
}

// release gives the claim back after a failure and returns the failure, so
// the record is retried.
// A job taken from the wait index has no message to retry it: after a
// failure it waits again, keeping its place, and a wake comes after
// scaleUp.limitRetrySeconds.
func (h *Handler) release(ctx context.Context, log *slog.Logger, m *queue.Message, claimID string, woken bool, cause error) error {
	log.Error("launch failed; job retried", slog.String("decision", "failed"), slog.String("error", cause.Error()))
	if woken {
		if err := h.jobs.Wait(ctx, m.JobID, claimID, m.Profile, "launch failed: "+cause.Error(), time.UnixMilli(m.ReceivedAt)); err != nil {
			log.Error("could not put the job back to wait; its claim expires and scaledown re-queues it", slog.String("error", err.Error()))
		}
		h.wake(ctx, time.Duration(h.cfg.ScaleUp.LimitRetrySeconds)*time.Second, "retry of a waiting job whose launch failed")
		return cause
	}
	if err := h.jobs.ReleaseClaim(ctx, m.JobID, claimID, cause.Error()); err != nil {
		log.Error("could not release the claim; it expires with its lease", slog.String("error", err.Error()))
	}
	return cause
}

func (h *Handler) skipClaimed(ctx context.Context, log *slog.Logger, m *queue.Message, reason string) error {
	log.Info("job skipped", slog.String("decision", "skipped"), slog.String("reason", reason))
	h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "not_queued"})
	return h.jobs.Skip(ctx, m.JobID, reason)
}

// undo retires an instance that must not run and removes what was made for
// it. Its runner may already have its JIT config and a job (GitHub gives any
// matching idle runner any queued job), so the instance goes through the
// guarded retirement: the runner is deleted first, and a busy one keeps the
// instance, which then ends itself after that job (or scaledown's orphan
// rule retires it). Failures are logged: scaledown removes whatever is left
// (an instance no record owns, a runner whose instance is gone).
func (h *Handler) undo(ctx context.Context, log *slog.Logger, t retire.Target, arn string) {
	out, err := h.retirer.Retire(ctx, t)
	switch {
	case err != nil:
		log.Error("could not retire the instance; scaledown will", slog.String("error", err.Error()))
	case out == retire.KeptBusy:
		log.Warn("instance kept: its runner is running a job; it ends itself after it", slog.String("decision", "kept_busy"))
	}
	if arn != "" {
		if err := h.jit.Delete(ctx, arn); err != nil {
			log.Warn("could not delete the JIT config entry; its TTL will", slog.String("error", err.Error()))
		}
	}
}

// ourRunner reports whether name is a runner of this deployment.
func (h *Handler) ourRunner(name string) bool {
	_, ok := tags.RunnerJob(h.cfg.NamePrefix, name)
	return ok
}

func (h *Handler) instanceARN(instanceID string) string {
	return h.identity.InstanceARN(instanceID)
}

func requestID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		return lc.AwsRequestID
	}
	return ""
}

// claimIDOf identifies this attempt at a record: the invocation's request id
// and the message id (a redelivery of the message is a new attempt).
func claimIDOf(ctx context.Context, r events.SQSMessage) string {
	if id := requestID(ctx); id != "" {
		return id + "/" + r.MessageId
	}
	return r.MessageId + "/" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

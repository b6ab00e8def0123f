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
//     call on capacity errors only, its runner's name in its Name tag, and
//     hand the JIT config to that instance only (jitstore);
//  7. record the launch on the job. A failure after the launch retires the
//     instance through runtime/retire: its runner may already have a job.
package scaleup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/labels"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/retire"
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
}

// Jobs is what scaleup needs from the job records; *state.Store implements it.
type Jobs interface {
	ClaimAttempt(ctx context.Context, jobID int64, claimID, profile string, lease time.Duration) (state.ClaimOutcome, int64, error)
	RecordLaunch(ctx context.Context, jobID int64, claimID string, l state.Launch) error
	ReleaseClaim(ctx context.Context, jobID int64, claimID, reason string) error
	Skip(ctx context.Context, jobID int64, reason string) error
}

// SlotCounter counts the runner slots a profile holds, or all profiles
// together for "".
type SlotCounter func(ctx context.Context, profile string) (int, error)

// JITStore hands JIT configs to instances; *jitstore.Store implements it.
type JITStore interface {
	Put(ctx context.Context, instanceARN, encoded string) error
	Delete(ctx context.Context, instanceARN string) error
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
type Identity struct {
	Partition, Region, Account string
}

// Handler handles SQS batches of scale-up messages.
type Handler struct {
	cfg       *config.Config
	matcher   *labels.Matcher
	gh        GitHub
	launcher  Launcher
	jobs      Jobs
	slots     SlotCounter
	jit       JITStore
	identity  Identity
	offerings Offerings
	retirer   *retire.Retirer

	visibility  Visibility
	log         *slog.Logger
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

// WithVisibility lets limit-reached records come back after
// scaleUp.limitRetrySeconds instead of the queue's visibility timeout.
func WithVisibility(v Visibility) Option { return func(h *Handler) { h.visibility = v } }

// WithConcurrency bounds how many records of a batch are processed at once
// (default 10, the batch size).
func WithConcurrency(n int) Option { return func(h *Handler) { h.concurrency = n } }

// Deps are the handler's required collaborators.
type Deps struct {
	GitHub   GitHub
	Launcher Launcher
	Jobs     Jobs
	Slots    SlotCounter
	JIT      JITStore
	Identity Identity
	// Offerings is optional: pools interrupted recently are skipped.
	Offerings Offerings
}

// New returns a Handler for cfg (which must be valid).
func New(cfg *config.Config, d Deps, opts ...Option) *Handler {
	h := &Handler{
		cfg: cfg, matcher: labels.NewMatcher(cfg),
		gh: d.GitHub, launcher: d.Launcher, jobs: d.Jobs, slots: d.Slots, jit: d.JIT, identity: d.Identity, offerings: d.Offerings,
		log: slog.New(slog.DiscardHandler), now: time.Now, concurrency: queue.ScaleUp.BatchSize,
		retirer: retire.New(d.GitHub, d.Launcher),
	}
	for _, o := range opts {
		o(h)
	}
	if h.concurrency < 1 {
		h.concurrency = 1
	}
	return h
}

// Handle processes a batch and reports the records to retry.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	h.loadOfferings(ctx)
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

// loadOfferings feeds the launcher's cache with the pools scaledown saw
// interrupting our spot instances (one read per batch).
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

// errLimit marks a record that must wait for a free runner slot.
var errLimit = errors.New("runner limit reached")

func (h *Handler) record(ctx context.Context, r events.SQSMessage) error {
	log := h.log.With(slog.String("message_id", r.MessageId))
	m, err := queue.Decode(r.Body)
	if err != nil {
		// Not a job: retrying cannot help. Log and drop it.
		log.Error("invalid scale-up message dropped", slog.String("error", err.Error()))
		h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "invalid_message"})
		return nil
	}
	log = log.With(slog.Int64("job_id", m.JobID), slog.String("repository", m.Repository))
	err = h.process(ctx, log, r, m)
	if err != nil && h.visibility != nil && r.ReceiptHandle != "" {
		after := h.retryAfter(err, r)
		if verr := h.visibility.Retry(ctx, r.ReceiptHandle, after); verr != nil {
			log.Warn("could not schedule the retry; the queue's visibility timeout applies", slog.String("error", verr.Error()))
		}
	}
	return err
}

// retryAfter is when a failed record comes back: a job held back by a
// limit after scaleUp.limitRetrySeconds; any other failure with exponential
// backoff on the receive count (5 s, 10 s, 20 s ... at most 5 minutes)
// rather than the queue's whole visibility timeout, so a transient failure
// costs a job seconds, not minutes.
func (h *Handler) retryAfter(err error, r events.SQSMessage) time.Duration {
	if errors.Is(err, errLimit) {
		return time.Duration(h.cfg.ScaleUp.LimitRetrySeconds) * time.Second
	}
	n, _ := strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
	d := 5 * time.Second
	for i := 1; i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func (h *Handler) process(ctx context.Context, log *slog.Logger, r events.SQSMessage, m *queue.Message) error {
	match, err := h.matcher.Resolve(m.Labels)
	if err != nil {
		reason := err.Error()
		log.Info("job skipped", slog.String("decision", "skipped"), slog.String("reason", reason))
		h.metrics.Inc(metrics.JobsSkipped, map[string]string{"Reason": "labels"})
		if serr := h.jobs.Skip(ctx, m.JobID, reason); serr != nil {
			return serr
		}
		return nil
	}
	profile := h.cfg.Profiles[match.Profile]
	log = log.With(slog.String("profile", match.Profile))

	claimID := claimIDOf(ctx, r)
	outcome, attempt, err := h.limitAndClaim(ctx, m.JobID, claimID, match.Profile, profile)
	if errors.Is(err, errLimit) {
		log.Info("runner limit reached; job retried later", slog.String("decision", "limit"), slog.String("reason", err.Error()))
		h.metrics.Inc(metrics.LimitReached, map[string]string{"Profile": match.Profile})
	}
	if err != nil {
		return err
	}
	switch outcome {
	case state.Claimed:
	case state.ClaimHeld:
		log.Info("job claimed by another invocation; retried later", slog.String("decision", "claim_held"))
		return errors.New("job claimed by another invocation")
	default:
		log.Info("nothing to launch", slog.String("decision", outcome.String()))
		return nil
	}

	inst := githubapp.Installation{ID: m.InstallationID, Owner: m.Owner, Repository: m.Repository}
	if h.cfg.CheckQueued() {
		job, err := h.gh.GetJob(ctx, inst, m.JobID)
		switch {
		case errors.Is(err, githubapp.ErrNotFound):
			return h.skipClaimed(ctx, log, m, "job not found on GitHub")
		case err != nil:
			return h.release(ctx, log, m, claimID, fmt.Errorf("check job status: %w", err))
		case job.Status != state.StatusQueued && !h.ourRunner(job.RunnerName):
			return h.skipClaimed(ctx, log, m, "job no longer queued on GitHub (status "+job.Status+")")
		}
	}

	// The JIT config comes first: while GitHub refuses (a rate limit, an
	// outage) nothing is launched, so a held job costs no EC2 instance. Its
	// runner is therefore named before the instance exists (tags.RunnerName).
	name := tags.RunnerName(h.cfg.NamePrefix, m.JobID, attempt)
	log = log.With(slog.String("runner_name", name))
	jit, err := h.gh.GenerateJITConfig(ctx, inst, name, match.Labels)
	if err != nil {
		// A request that registered the runner after all leaves an offline
		// runner no instance will use: rule 5 deletes it.
		return h.release(ctx, log, m, claimID, fmt.Errorf("generate JIT config: %w", err))
	}

	res, err := h.launcher.Launch(ctx, fleet.Request{
		JobID:            m.JobID,
		Repository:       m.Repository,
		Profile:          match.Profile,
		InstanceTypes:    match.InstanceTypes,
		ImageID:          profile.ImageID,
		Arch:             match.Arch,
		SubnetIDs:        h.cfg.Launch.SubnetIDs,
		LaunchTemplateID: h.cfg.Launch.LaunchTemplateID,
		Spot:             profile.UseSpot(),
		VolumeGiB:        profile.VolumeGiB,
		Tags:             tags.ForLaunch(h.cfg.NamePrefix, m.JobID, m.Repository, match.Profile, name),
	})
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
		return h.release(ctx, log, m, claimID, fmt.Errorf("launch: %w", err))
	}
	log = log.With(slog.String("instance_id", res.InstanceID))
	if res.SpotFallback {
		h.metrics.Inc(metrics.SpotFallbacks, map[string]string{"Profile": match.Profile})
	}

	arn := h.instanceARN(res.InstanceID)
	own := retire.Target{InstanceID: res.InstanceID, Installation: inst, RunnerName: name, RunnerID: jit.RunnerID}
	if err := h.jit.Put(ctx, arn, jit.Encoded); err != nil {
		// A put whose response was lost may have stored the config.
		h.undo(ctx, log, own, arn)
		return h.release(ctx, log, m, claimID, fmt.Errorf("hand over JIT config: %w", err))
	}

	err = h.jobs.RecordLaunch(ctx, m.JobID, claimID, state.Launch{
		InstanceID: res.InstanceID, InstanceType: res.InstanceType, AvailabilityZone: res.AvailabilityZone,
		SubnetID: res.SubnetID, CapacityType: res.CapacityType, SpotFallback: res.SpotFallback,
		RunnerName: name, RunnerID: jit.RunnerID, LaunchedAt: h.now(),
	})
	if err != nil {
		// Our claim ran out and another invocation owns the job now, or the
		// record could not be written: this instance must not run.
		h.undo(ctx, log, own, arn)
		if errors.Is(err, state.ErrClaimLost) {
			log.Warn("claim lost before the launch was recorded; instance terminated", slog.String("decision", "claim_lost"))
			return nil
		}
		return h.release(ctx, log, m, claimID, fmt.Errorf("record launch: %w", err))
	}

	h.metrics.Inc(metrics.Launches, map[string]string{"Profile": match.Profile, "CapacityType": res.CapacityType})
	if m.ReceivedAt > 0 {
		h.metrics.Put(metrics.QueueToLaunchSeconds, h.now().Sub(time.UnixMilli(m.ReceivedAt)).Seconds(), metrics.Seconds,
			map[string]string{"Profile": match.Profile})
	}
	log.Info("runner launched", slog.String("decision", "launched"), slog.String("capacity_type", res.CapacityType),
		slog.String("instance_type", res.InstanceType), slog.String("availability_zone", res.AvailabilityZone),
		slog.Bool("spot_fallback", res.SpotFallback), slog.Int64("runner_id", jit.RunnerID))
	return nil
}

// limitAndClaim claims the job and then checks the limits, counting the
// slot the claim just took; over a limit the claim is given back. Claiming
// first lets a duplicate of a launched job succeed at once even when every
// slot is taken. Within one invocation the two steps run under a lock, so
// the records of one batch never exceed a limit between them; concurrent
// invocations can overshoot it by at most their number (see
// state.CountSlots).
func (h *Handler) limitAndClaim(ctx context.Context, jobID int64, claimID, name string, p config.Profile) (state.ClaimOutcome, int64, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	lease := time.Duration(h.cfg.ScaleUp.ClaimLeaseSeconds) * time.Second
	outcome, attempt, err := h.jobs.ClaimAttempt(ctx, jobID, claimID, name, lease)
	if err != nil || outcome != state.Claimed {
		return outcome, 0, err
	}
	if err := h.checkLimits(ctx, name, p); err != nil {
		if rerr := h.jobs.ReleaseClaim(ctx, jobID, claimID, err.Error()); rerr != nil {
			return 0, 0, errors.Join(err, rerr)
		}
		return 0, 0, err
	}
	return state.Claimed, attempt, nil
}

// checkLimits returns errLimit when the runners counted (this job's claim
// included) exceed the profile's or the deployment's limit.
func (h *Handler) checkLimits(ctx context.Context, name string, p config.Profile) error {
	if p.MaxRunners > 0 {
		n, err := h.slots(ctx, name)
		if err != nil {
			return err
		}
		if n > p.MaxRunners {
			return fmt.Errorf("%w: profile %s has %d of %d runners", errLimit, name, n-1, p.MaxRunners)
		}
	}
	total, err := h.slots(ctx, "")
	if err != nil {
		return err
	}
	if total > h.cfg.MaxRunners {
		return fmt.Errorf("%w: %d of maxRunners %d", errLimit, total-1, h.cfg.MaxRunners)
	}
	return nil
}

// release gives the claim back after a failure and returns the failure, so
// the record is retried.
func (h *Handler) release(ctx context.Context, log *slog.Logger, m *queue.Message, claimID string, cause error) error {
	log.Error("launch failed; job retried", slog.String("decision", "failed"), slog.String("error", cause.Error()))
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
	return jitstore.InstanceARN(h.identity.Partition, h.identity.Region, h.identity.Account, instanceID)
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

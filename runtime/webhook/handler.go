// Package webhook is the webhook Lambda's logic: it authenticates GitHub's
// workflow_job deliveries, records every action on the job's record and sends
// exactly one scale-up message for each queued job this deployment serves.
//
// Order of checks, each answered before the next is tried:
//
//	method != POST            -> 405
//	body over MaxBodyBytes    -> 413
//	signature missing/invalid -> 401 (nothing parsed, nothing written)
//	event ping                -> 200; any other event but workflow_job -> 202
//	invalid JSON / payload    -> 400
//	workflow_job              -> record, maybe enqueue -> 200 (500 when AWS fails)
package webhook

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/labels"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// MaxBodyBytes is the largest body accepted (after base64 decoding).
const MaxBodyBytes = 1 << 20

// Headers GitHub sends with every delivery.
const (
	EventHeader    = "X-GitHub-Event"
	DeliveryHeader = "X-GitHub-Delivery"
	// SHA1SignatureHeader is GitHub's legacy signature; it alone is refused.
	SHA1SignatureHeader = "X-Hub-Signature"
)

// Recorder writes job events; *state.Store implements it.
type Recorder interface {
	RecordEvent(ctx context.Context, ev *state.JobEvent) (state.Outcome, error)
	ReleaseEnqueue(ctx context.Context, ev *state.JobEvent) error
	FreeRunnerSlot(ctx context.Context, launchJobID int64, runnerName string) (bool, error)
	// AnyWaiting reports whether a job of any of profiles waits for a
	// runner slot (see freeSlotForWaiters).
	AnyWaiting(ctx context.Context, profiles []string) (bool, error)
}

// Queue sends scale-up messages and wakes; *queue.Sender implements it.
type Queue interface {
	Send(ctx context.Context, m *queue.Message) (string, error)
	// SendAfter sends a wake without the queue's delay.
	SendAfter(ctx context.Context, m *queue.Message, delay time.Duration) (string, error)
}

// SecretFunc returns the webhook secret. It is called for every delivery and
// is expected to cache (secrets.Cache does).
type SecretFunc func(ctx context.Context) ([]byte, error)

// Handler handles API Gateway HTTP API (payload 2.0) requests.
type Handler struct {
	secret        SecretFunc
	store         Recorder
	queue         Queue
	matcher       *labels.Matcher
	allowedOwners map[string]bool // nil: every owner
	namePrefix    string
	profiles      []string
	keys          keyring
	log           *slog.Logger
	metrics       *metrics.Recorder
	now           func() time.Time
}

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(h *Handler) { h.log = l } }

// WithMetrics sets the metrics recorder (queue-to-start time); default none.
func WithMetrics(m *metrics.Recorder) Option { return func(h *Handler) { h.metrics = m } }

// WithClock sets the clock; the default is time.Now.
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// WithSecretRefresh reads the webhook secret again (fresh, bypassing any
// cache) when a signature does not match, at most once per every: a secret
// rotated in place is picked up at once, not when the container recycles.
// The value it replaces is still accepted for a while, for deliveries
// GitHub signed before the rotation.
func WithSecretRefresh(fresh SecretFunc, every time.Duration) Option {
	return func(h *Handler) { h.keys.fresh, h.keys.every = fresh, every }
}

// ReplacedFunc returns the value the current webhook secret replaced and
// when (secrets.Cache.Previous); a nil value when it was never rotated.
type ReplacedFunc func(ctx context.Context) ([]byte, time.Time, error)

// WithReplacedSecret lets a container that never saw the old secret (one
// started after a rotation in place) accept deliveries GitHub signed with
// it just before, for as long as a refresh would have (10 minutes after the
// rotation). It is asked only when a signature matches neither the current
// secret nor a fresh read of it, within WithSecretRefresh's limit.
func WithReplacedSecret(replaced ReplacedFunc) Option {
	return func(h *Handler) { h.keys.replaced = replaced }
}

// WithPreviousSecret accepts a second secret besides the current one, for a
// rotation window (github.previousWebhookSecretArn).
func WithPreviousSecret(previous SecretFunc) Option {
	return func(h *Handler) { h.keys.previous = previous }
}

// Deps are the handler's required collaborators.
type Deps struct {
	// Secret is the webhook secret (github.webhookSecretArn).
	Secret SecretFunc
	// Store records every delivery on the job's record.
	Store Recorder
	// Queue takes each queued job's one scale-up message, and the wakes
	// of waiting jobs when a completed job frees a runner slot.
	Queue Queue
}

// New returns a Handler for cfg (which must be valid): its profiles and
// allowed instance types decide which jobs are ours, github.allowedOwners
// whose jobs are served (case-insensitive; none: every owner), and
// namePrefix which runners are the deployment's (tags.RunnerName): a job
// that runs on one of them is recorded with the job that runner was
// launched for, which keeps the record live for scaledown (see
// state.JobEvent) and hands that runner's slot to waiting jobs when the
// job completes.
func New(cfg *config.Config, d Deps, opts ...Option) *Handler {
	h := &Handler{
		secret:     d.Secret,
		store:      d.Store,
		queue:      d.Queue,
		matcher:    labels.NewMatcher(cfg),
		namePrefix: cfg.NamePrefix,
		profiles:   cfg.ProfileNames(),
		log:        slog.New(slog.DiscardHandler),
		now:        time.Now,
	}
	if owners := cfg.GitHub.AllowedOwners; len(owners) > 0 {
		h.allowedOwners = make(map[string]bool, len(owners))
		for _, o := range owners {
			h.allowedOwners[strings.ToLower(o)] = true
		}
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Response bodies are fixed strings: nothing from the request is echoed.
func respond(status int, body string) events.APIGatewayV2HTTPResponse {
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       body,
	}
}

// Handle answers one delivery. It returns an error only for failures of the
// Lambda itself; every client-visible outcome is a response.
func (h *Handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	delivery := header(req.Headers, DeliveryHeader)
	log := h.log
	if delivery != "" {
		log = log.With(slog.String("delivery_id", truncate(delivery, 64)))
	}

	if m := req.RequestContext.HTTP.Method; m != "" && m != http.MethodPost {
		log.Warn("webhook rejected", slog.String("decision", "method_not_allowed"), slog.String("method", truncate(m, 16)))
		resp := respond(http.StatusMethodNotAllowed, `{"error":"method not allowed"}`)
		resp.Headers["Allow"] = http.MethodPost
		return resp, nil
	}

	body, status, err := rawBody(req)
	if err != nil {
		log.Warn("webhook rejected", slog.String("decision", "bad_body"), slog.String("reason", err.Error()))
		if status == http.StatusRequestEntityTooLarge {
			return respond(status, `{"error":"body too large"}`), nil
		}
		return respond(status, `{"error":"invalid body encoding"}`), nil
	}

	sig := header(req.Headers, SignatureHeader)
	if sig == "" && header(req.Headers, SHA1SignatureHeader) != "" {
		err = ErrSHA1Only
	} else {
		var unavailable error
		err, unavailable = h.verify(ctx, log, body, sig)
		if unavailable != nil {
			log.Error("webhook secret unavailable", slog.String("error", unavailable.Error()))
			return respond(http.StatusInternalServerError, `{"error":"internal error"}`), nil
		}
	}
	if err != nil {
		log.Warn("webhook rejected", slog.String("decision", "unauthorized"), slog.String("reason", err.Error()))
		return respond(http.StatusUnauthorized, `{"error":"invalid signature"}`), nil
	}

	switch event := header(req.Headers, EventHeader); event {
	case "ping":
		log.Info("webhook ping", slog.String("decision", "pong"))
		return respond(http.StatusOK, `{"status":"pong"}`), nil
	case "workflow_job":
	default:
		log.Info("webhook ignored", slog.String("decision", "ignored_event"), slog.String("event", truncate(event, 64)))
		return respond(http.StatusAccepted, `{"status":"ignored"}`), nil
	}

	p, err := decodeWorkflowJob(body)
	if err != nil {
		log.Warn("webhook rejected", slog.String("decision", "bad_payload"), slog.String("reason", err.Error()))
		return respond(http.StatusBadRequest, `{"error":"invalid workflow_job payload"}`), nil
	}
	return h.handleJob(ctx, log, delivery, p)
}

func (h *Handler) handleJob(ctx context.Context, log *slog.Logger, delivery string, p *payload) (events.APIGatewayV2HTTPResponse, error) {
	j := p.WorkflowJob
	log = log.With(
		slog.Int64("job_id", j.ID),
		slog.String("repository", truncate(p.Repository.FullName, 200)),
		slog.String("action", truncate(p.Action, 32)),
	)
	if _, known := state.Rank(p.Action); !known {
		log.Info("webhook ignored", slog.String("decision", "ignored_action"))
		return respond(http.StatusAccepted, `{"status":"ignored"}`), nil
	}

	ev := &state.JobEvent{
		DeliveryID:     truncate(delivery, 64),
		Action:         p.Action,
		JobID:          j.ID,
		RunID:          j.RunID,
		Repository:     p.Repository.FullName,
		Owner:          p.Repository.Owner.Login,
		InstallationID: p.Installation.ID,
		Workflow:       j.WorkflowName,
		JobName:        j.Name,
		CreatedAt:      j.CreatedAt,
		StartedAt:      j.StartedAt,
		CompletedAt:    j.CompletedAt,
		Conclusion:     j.Conclusion,
		RunnerName:     j.RunnerName,
		RunnerID:       j.RunnerID,
		ReceivedAt:     h.now(),
	}
	if ev.Action != state.StatusQueued && ev.Action != state.StatusWaiting {
		ev.RunnerJob, _ = tags.RunnerJob(h.namePrefix, j.RunnerName)
	}
	match, reason, shapeRefusal := h.classify(p)
	if reason == "" {
		ev.Ours, ev.Profile, ev.Labels = true, match.Profile, match.Labels
	} else {
		ev.SkipReason = reason
		ev.Labels = boundLabels(j.Labels)
	}

	outcome, err := h.store.RecordEvent(ctx, ev)
	if err != nil {
		log.Error("record job failed", slog.String("decision", "error"), slog.String("error", err.Error()))
		return respond(http.StatusInternalServerError, `{"error":"internal error"}`), nil
	}
	if ev.RunnerJob != 0 && p.Action == state.StatusCompleted {
		h.freeSlotForWaiters(ctx, log, ev.RunnerJob, j.RunnerName)
	}
	decision := outcome.String()
	switch {
	case outcome == state.Enqueue:
		msgID, err := h.queue.Send(ctx, &queue.Message{
			JobID:          j.ID,
			RunID:          j.RunID,
			Repository:     p.Repository.FullName,
			Owner:          p.Repository.Owner.Login,
			InstallationID: p.Installation.ID,
			Labels:         match.Labels,
			Profile:        match.Profile,
			ReceivedAt:     ev.ReceivedAt.UnixMilli(),
			DeliveryID:     ev.DeliveryID,
		})
		if err != nil {
			attrs := []any{slog.String("decision", "error"), slog.String("error", err.Error())}
			if rerr := h.store.ReleaseEnqueue(ctx, ev); rerr != nil {
				attrs = append(attrs, slog.String("release_error", rerr.Error()))
			}
			log.Error("enqueue failed", attrs...)
			return respond(http.StatusInternalServerError, `{"error":"internal error"}`), nil
		}
		decision = "queued"
		log = log.With(slog.String("message_id", msgID), slog.String("profile", match.Profile))
	case reason != "" && p.Action == state.StatusQueued && outcome == state.Recorded:
		decision = "skipped"
		log = log.With(slog.String("reason", reason))
		if shapeRefusal != "" {
			h.metrics.Inc(metrics.ShapeRefusals, map[string]string{"Reason": shapeRefusal})
		}
	case reason == "" && p.Action == state.StatusInProgress && outcome == state.Recorded:
		// "Time to start job": what users of self-hosted runners ask about.
		if wait, ok := queueToStart(j); ok {
			h.metrics.Put(metrics.QueueToStartSeconds, wait.Seconds(), metrics.Seconds, nil)
			log = log.With(slog.Float64("queue_to_start_seconds", wait.Seconds()))
		}
	}
	log.Info("webhook handled", slog.String("decision", decision))
	return respond(http.StatusOK, `{"status":"`+decision+`"}`), nil
}

// freeSlotForWaiters hands the slot of a runner whose job is over to the
// jobs waiting for one: the runner's instance no longer holds a runner slot
// (whichever job it was launched for), so the slot is freed and a wake
// sent. When no job waits, nothing is written: the slot is freed when the
// instance ends, moments later (scaledown's state-change rule), and a job
// that starts waiting meanwhile is woken then. That keeps the common path
// at one Query. Failures are logged for the same reason.
func (h *Handler) freeSlotForWaiters(ctx context.Context, log *slog.Logger, launchJobID int64, runnerName string) {
	any, err := h.store.AnyWaiting(ctx, h.profiles)
	if err != nil {
		log.Warn("could not tell whether jobs wait; the instance's end frees the slot", slog.String("error", err.Error()))
		return
	}
	if !any {
		return
	}
	freed, err := h.store.FreeRunnerSlot(ctx, launchJobID, runnerName)
	if err != nil {
		log.Warn("could not free the runner's slot; its instance's end will", slog.String("error", err.Error()))
		return
	}
	if !freed {
		return // freed already, or the slot is another launch's
	}
	if _, err := h.queue.SendAfter(ctx, queue.WakeMessage("a runner slot was freed"), 0); err != nil {
		log.Warn("could not wake the waiting jobs; the next sweep will", slog.String("error", err.Error()))
	}
}

// queueToStart is started_at minus created_at of an in_progress job.
func queueToStart(j *workflowJob) (time.Duration, bool) {
	created, err1 := time.Parse(time.RFC3339, j.CreatedAt)
	started, err2 := time.Parse(time.RFC3339, j.StartedAt)
	if err1 != nil || err2 != nil || started.Before(created) {
		return 0, false
	}
	return started.Sub(created), true
}

// classify returns the launch match for a job of ours, or the reason it is
// not ours and, when its shape labels are why, which kind of refusal
// (labels.ShapeMalformed, ShapeBounds, ShapeConflict).
func (h *Handler) classify(p *payload) (labels.Match, string, string) {
	if h.allowedOwners != nil && !h.allowedOwners[strings.ToLower(p.Repository.Owner.Login)] {
		return labels.Match{}, "owner not in github.allowedOwners", ""
	}
	if p.Installation.ID <= 0 {
		return labels.Match{}, "payload has no installation.id", ""
	}
	if p.Repository.FullName == "" || p.Repository.Owner.Login == "" {
		return labels.Match{}, "payload has no repository", ""
	}
	m, err := h.matcher.Resolve(p.WorkflowJob.Labels)
	if err != nil {
		var notOurs *labels.NotOursError
		if errors.As(err, &notOurs) {
			return labels.Match{}, notOurs.Reason, notOurs.Shape
		}
		return labels.Match{}, err.Error(), ""
	}
	return m, "", ""
}

// rawBody returns the request body as GitHub signed it, decoding base64 when
// API Gateway encoded it.
func rawBody(req events.APIGatewayV2HTTPRequest) ([]byte, int, error) {
	if !req.IsBase64Encoded {
		if len(req.Body) > MaxBodyBytes {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes exceeds %d", len(req.Body), MaxBodyBytes)
		}
		return []byte(req.Body), 0, nil
	}
	if base64.StdEncoding.DecodedLen(len(req.Body)) > MaxBodyBytes+2 {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("encoded body of %d bytes exceeds %d decoded", len(req.Body), MaxBodyBytes)
	}
	b, err := base64.StdEncoding.DecodeString(req.Body)
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("body is not valid base64")
	}
	if len(b) > MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes exceeds %d", len(b), MaxBodyBytes)
	}
	return b, 0, nil
}

// lowerNames holds the lower-case form of the headers read, as API Gateway
// sends them, so the common lookup allocates nothing.
var lowerNames = map[string]string{
	EventHeader:         strings.ToLower(EventHeader),
	DeliveryHeader:      strings.ToLower(DeliveryHeader),
	SignatureHeader:     strings.ToLower(SignatureHeader),
	SHA1SignatureHeader: strings.ToLower(SHA1SignatureHeader),
}

// header looks a header up; API Gateway lower-cases names, other front ends
// may not.
func header(h map[string]string, name string) string {
	if v, ok := h[lowerNames[name]]; ok {
		return v
	}
	if v, ok := h[name]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// boundLabels keeps at most a few short labels of a foreign job for the
// record, so a hostile payload cannot bloat it.
func boundLabels(l []string) []string {
	const maxN, maxLen = 16, 64
	if len(l) > maxN {
		l = l[:maxN]
	}
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = truncate(v, maxLen)
	}
	return out
}

// truncate cuts s to at most n bytes (on a rune boundary where it can).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// The test vector from GitHub's "Validating webhook deliveries" docs.
func TestSignMatchesGitHubDocsVector(t *testing.T) {
	t.Parallel()
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := webhook.Sign([]byte(testSecret), []byte("Hello, World!")); got != want {
		t.Fatalf("Sign = %s; want %s", got, want)
	}
	if err := webhook.Verify([]byte(testSecret), []byte("Hello, World!"), want); err != nil {
		t.Fatalf("Verify(docs vector) = %v", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	body := []byte("Hello, World!")
	good := webhook.Sign([]byte(testSecret), body)
	tests := []struct {
		name, header string
		want         error
	}{
		{"missing", "", webhook.ErrSignatureMissing},
		{"no prefix", strings.TrimPrefix(good, "sha256="), webhook.ErrSignatureMalformed},
		{"sha1 prefix", "sha1=" + strings.TrimPrefix(good, "sha256="), webhook.ErrSignatureMalformed},
		{"not hex", "sha256=" + strings.Repeat("zz", 32), webhook.ErrSignatureMalformed},
		{"short", good[:len(good)-2], webhook.ErrSignatureMalformed},
		{"upper-case prefix", "SHA256=" + strings.TrimPrefix(good, "sha256="), webhook.ErrSignatureMalformed},
		{"wrong", "sha256=" + strings.Repeat("00", 32), webhook.ErrSignatureMismatch},
		{"other secret", webhook.Sign([]byte("other"), body), webhook.ErrSignatureMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := webhook.Verify([]byte(testSecret), body, tc.header); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v; want %v", err, tc.want)
			}
		})
	}
}

// Every bad input gets its status and changes nothing.
func TestHandleBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	body := jobPayload(t, "queued", 1)
	tests := []struct {
		name   string
		req    func() events.APIGatewayV2HTTPRequest
		status int
	}{
		{"GET", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.RequestContext.HTTP.Method = "GET"
			return r
		}, 405},
		{"PUT", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.RequestContext.HTTP.Method = "PUT"
			return r
		}, 405},
		{"body over 1 MiB", func() events.APIGatewayV2HTTPRequest {
			return signed(bytes.Repeat([]byte(" "), webhook.MaxBodyBytes+1), "workflow_job", "d")
		}, 413},
		{"base64 body over 1 MiB", func() events.APIGatewayV2HTTPRequest {
			big := bytes.Repeat([]byte(" "), webhook.MaxBodyBytes+1)
			r := signed(big, "workflow_job", "d")
			r.Body, r.IsBase64Encoded = base64.StdEncoding.EncodeToString(big), true
			return r
		}, 413},
		{"invalid base64", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.Body, r.IsBase64Encoded = "%%%not base64", true
			return r
		}, 400},
		{"missing signature", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			delete(r.Headers, "x-hub-signature-256")
			return r
		}, 401},
		{"SHA-1 signature only", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			delete(r.Headers, "x-hub-signature-256")
			r.Headers["x-hub-signature"] = "sha1=0123456789abcdef0123456789abcdef01234567"
			return r
		}, 401},
		{"malformed signature", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.Headers["x-hub-signature-256"] = "sha256=nothex"
			return r
		}, 401},
		{"wrong signature", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.Headers["x-hub-signature-256"] = webhook.Sign([]byte("wrong secret"), body)
			return r
		}, 401},
		{"body changed after signing", func() events.APIGatewayV2HTTPRequest {
			r := signed(body, "workflow_job", "d")
			r.Body = strings.Replace(r.Body, `"x64"`, `"arm64"`, 1)
			return r
		}, 401},
		{"invalid JSON", func() events.APIGatewayV2HTTPRequest { return signed([]byte(`{"action":`), "workflow_job", "d") }, 400},
		{"workflow_job is a string", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"action":"queued","workflow_job":"x","installation":{"id":1}}`), "workflow_job", "d")
		}, 400},
		{"workflow_job is an array", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"action":"queued","workflow_job":[1],"installation":{"id":1}}`), "workflow_job", "d")
		}, 400},
		{"workflow_job is null", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"action":"queued","workflow_job":null}`), "workflow_job", "d")
		}, 400},
		{"workflow_job missing id", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"action":"queued","workflow_job":{"labels":["self-hosted"]}}`), "workflow_job", "d")
		}, 400},
		{"labels not strings", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"action":"queued","workflow_job":{"id":5,"labels":[1,2]}}`), "workflow_job", "d")
		}, 400},
		{"ping", func() events.APIGatewayV2HTTPRequest {
			return signed([]byte(`{"zen":"Keep it logically awesome."}`), "ping", "d")
		}, 200},
		{"other event", func() events.APIGatewayV2HTTPRequest { return signed(body, "push", "d") }, 202},
		{"unknown action", func() events.APIGatewayV2HTTPRequest {
			return signed(jobPayload(t, "requested", 3), "workflow_job", "d")
		}, 202},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, st, q := newMemHandler(t)
			resp, err := h.Handle(context.Background(), tc.req())
			if err != nil {
				t.Fatalf("Handle error: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d; want %d (body %s)", resp.StatusCode, tc.status, resp.Body)
			}
			if st.Writes() != 0 || q.Sent() != 0 {
				t.Errorf("bad input wrote %d records and sent %d messages; want none", st.Writes(), q.Sent())
			}
		})
	}
}

func TestHandleBase64Body(t *testing.T) {
	t.Parallel()
	h, st, q := newMemHandler(t)
	body := jobPayload(t, "queued", 11)
	req := signed(body, "workflow_job", "d1")
	req.Body, req.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
	resp, _ := h.Handle(context.Background(), req)
	if resp.StatusCode != 200 || st.Writes() != 1 || q.Sent() != 1 {
		t.Fatalf("status %d, writes %d, sent %d; want 200, 1, 1", resp.StatusCode, st.Writes(), q.Sent())
	}
}

func TestHandleHeaderCaseInsensitive(t *testing.T) {
	t.Parallel()
	h, _, q := newMemHandler(t)
	body := jobPayload(t, "queued", 12)
	req := signed(body, "workflow_job", "d1")
	req.Headers = map[string]string{
		"X-GitHub-Event":      "workflow_job",
		"X-Hub-Signature-256": webhook.Sign([]byte(testSecret), body),
	}
	if resp, _ := h.Handle(context.Background(), req); resp.StatusCode != 200 || q.Sent() != 1 {
		t.Fatalf("status %d, sent %d; want 200, 1", resp.StatusCode, q.Sent())
	}
}

func TestHandleSecretUnavailable(t *testing.T) {
	t.Parallel()
	st, q := &memStore{}, &memQueue{}
	failing := func(context.Context) ([]byte, error) { return nil, errors.New("AccessDenied") }
	h := webhook.New(testConfig(t), webhook.Deps{Secret: failing, Store: st, Queue: q})
	resp, _ := h.Handle(context.Background(), signed(jobPayload(t, "queued", 1), "workflow_job", "d"))
	if resp.StatusCode != 500 || st.Writes() != 0 {
		t.Fatalf("status %d, writes %d; want 500, 0", resp.StatusCode, st.Writes())
	}
}

// integration wires the handler to real DynamoDB and SQS (moto).
type integration struct {
	h     *webhook.Handler
	store *state.Store
	aws   *testenv.AWS
	queue queue.Created
	logs  *testkit.Buffer
}

func newIntegration(t *testing.T, opts ...webhook.Option) *integration {
	t.Helper()
	return newIntegrationWith(t, testConfig(t), nil, opts...)
}

// newIntegrationWith builds the handler for cfg; wrap, when set, wraps the
// store the handler records with.
func newIntegrationWith(t *testing.T, cfg *config.Config, wrap func(*state.Store) webhook.Recorder, opts ...webhook.Option) *integration {
	t.Helper()
	a := testenv.AWSForTest(t)
	table, q := a.JobsTable(t), a.Queue(t)
	st := state.NewStore(a.Dynamo, table, 24*time.Hour, nil)
	var rec webhook.Recorder = st
	if wrap != nil {
		rec = wrap(st)
	}
	logs := &testkit.Buffer{}
	opts = append([]webhook.Option{webhook.WithLogger(slog.New(slog.NewJSONHandler(logs, nil)))}, opts...)
	h := webhook.New(cfg, webhook.Deps{Secret: staticSecret, Store: rec, Queue: queue.NewSender(a.SQS, q.URL, 0)}, opts...)
	return &integration{h: h, store: st, aws: a, queue: q, logs: logs}
}

func (in *integration) deliver(t *testing.T, body []byte, delivery string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	resp, err := in.h.Handle(context.Background(), signed(body, "workflow_job", delivery))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (in *integration) messages(t *testing.T) []*queue.Message {
	t.Helper()
	var out []*queue.Message
	for _, b := range in.aws.ReceiveAll(t, in.queue.URL, 100) {
		m, err := queue.Decode(b)
		if err != nil {
			t.Fatalf("queue holds an invalid message: %v", err)
		}
		out = append(out, m)
	}
	return out
}

func TestDuplicateDeliveriesSendOneMessage(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	body := jobPayload(t, "queued", 100)
	// GitHub redelivers with a new delivery id; retries can repeat one.
	for _, d := range []string{"d-1", "d-2", "d-2"} {
		if resp := in.deliver(t, body, d); resp.StatusCode != 200 {
			t.Fatalf("delivery %s: status %d", d, resp.StatusCode)
		}
	}
	msgs := in.messages(t)
	if len(msgs) != 1 {
		t.Fatalf("3 deliveries sent %d messages; want 1", len(msgs))
	}
	m := msgs[0]
	if m.JobID != 100 || m.Repository != "octo-org/example-workflow" || m.Owner != "octo-org" || m.InstallationID != 2311213 || m.Profile != "default" {
		t.Errorf("message = %+v", m)
	}
	if strings.Join(m.Labels, ",") != "self-hosted,linux,x64" {
		t.Errorf("labels = %v", m.Labels)
	}
}

func TestConcurrentDuplicateDeliveries(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	body := jobPayload(t, "queued", 101)
	done := make(chan int, 8)
	for i := 0; i < 8; i++ {
		go func(i int) {
			resp, _ := in.h.Handle(context.Background(), signed(body, "workflow_job", "c-"+string(rune('a'+i))))
			done <- resp.StatusCode
		}(i)
	}
	for i := 0; i < 8; i++ {
		if s := <-done; s != 200 {
			t.Errorf("status %d", s)
		}
	}
	if n := len(in.messages(t)); n != 1 {
		t.Fatalf("8 concurrent deliveries sent %d messages; want 1", n)
	}
}

func TestActionsRecordedOutOfOrder(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	ctx := context.Background()
	in.deliver(t, jobPayload(t, "in_progress", 200), "a")
	in.deliver(t, jobPayload(t, "queued", 200), "b") // late: changes nothing, sends nothing
	job, ok, err := in.store.Get(ctx, 200)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if job.Status != state.StatusInProgress || job.RunnerName != foreignRunner || job.RunnerID != 77 || job.StartedAt == "" {
		t.Errorf("after in_progress + late queued: %+v", job)
	}
	in.deliver(t, jobPayload(t, "completed", 200), "c")
	in.deliver(t, jobPayload(t, "in_progress", 200), "d") // late again
	job, _, _ = in.store.Get(ctx, 200)
	if job.Status != state.StatusCompleted || job.Conclusion != "success" || job.CompletedAt == "" {
		t.Errorf("after completed: %+v", job)
	}
	if n := len(in.messages(t)); n != 0 {
		t.Errorf("late queued sent %d messages; want 0", n)
	}
}

// A job of ours that runs on one of our runners took the runner launched for
// another job. When its own queued delivery never came (GitHub does not
// redeliver) or comes late, its in_progress delivery takes its one enqueue,
// so one runner is still launched per job; a late queued then changes
// nothing. A job on a runner that is not ours enqueues nothing.
func TestStartedOnOurRunnerEnqueuesOnce(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	ctx := context.Background()
	ours := onRunner(jobPayload(t, "in_progress", 210), "jitr-j7-1")
	in.deliver(t, ours, "a")
	in.deliver(t, ours, "a2")                        // a duplicate delivery
	in.deliver(t, jobPayload(t, "queued", 210), "b") // late
	msgs := in.messages(t)
	if len(msgs) != 1 || msgs[0].JobID != 210 || msgs[0].Profile != "default" {
		t.Fatalf("messages %+v; want exactly one for job 210", msgs)
	}
	job, ok, err := in.store.Get(ctx, 210)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if job.RunnerJob != 7 || !job.Live || job.Status != state.StatusInProgress {
		t.Errorf("record %+v; want it live, in progress on the runner launched for job 7", job)
	}

	in.deliver(t, jobPayload(t, "in_progress", 211), "c")
	if n := len(in.messages(t)); n != 0 {
		t.Fatalf("a job on a foreign runner sent %d messages; want 0", n)
	}
	if job, _, _ := in.store.Get(ctx, 211); job.RunnerJob != 0 || job.Live {
		t.Errorf("record of a job on a foreign runner %+v; want no instance, not live", job)
	}
}

func TestQueuedActionDecidesNotStatus(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	body := jobPayload(t, "queued", 300)
	// Real payloads can say action queued with status waiting.
	body = bytes.Replace(body, []byte(`"status":"queued"`), []byte(`"status":"waiting"`), 1)
	in.deliver(t, body, "w")
	if n := len(in.messages(t)); n != 1 {
		t.Fatalf("sent %d; want 1", n)
	}
	// The waiting action itself launches nothing.
	in.deliver(t, jobPayload(t, "waiting", 301), "w2")
	if n := len(in.messages(t)); n != 0 {
		t.Fatalf("waiting action sent %d; want 0", n)
	}
}

func TestForeignJobsRecordedNotQueued(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	cases := []struct {
		id     int64
		labels []string
	}{
		{400, []string{"ubuntu-latest"}},
		{401, []string{"self-hosted", "linux", "x64", "other-team"}},
		{402, []string{"self-hosted", "windows"}},
		{403, []string{"linux", "x64"}},
		{404, []string{"self-hosted", "x64", "arm64"}},
		{405, []string{"self-hosted", "'; rm -rf / #", "$(reboot)"}},
	}
	for _, c := range cases {
		if resp := in.deliver(t, jobPayload(t, "queued", c.id, c.labels...), "f"); resp.StatusCode != 200 {
			t.Errorf("job %d: status %d; want 200", c.id, resp.StatusCode)
		}
		job, ok, _ := in.store.Get(context.Background(), c.id)
		if !ok || job.Ours || job.SkipReason == "" || job.Enqueued {
			t.Errorf("job %d: record %+v; want a skipped record with a reason", c.id, job)
		}
	}
	if n := len(in.messages(t)); n != 0 {
		t.Fatalf("foreign jobs sent %d messages; want 0", n)
	}
}

func TestProfileAndInstanceTypeLabels(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	in.deliver(t, jobPayload(t, "queued", 500, "self-hosted", "GPU"), "p1")
	in.deliver(t, jobPayload(t, "queued", 501, "self-hosted", "linux", "c6i.2xlarge"), "p2")
	got := map[int64]string{}
	for _, m := range in.messages(t) {
		got[m.JobID] = m.Profile + "|" + strings.Join(m.Labels, ",")
	}
	if got[500] != "gpu|self-hosted,gpu" || got[501] != "default|self-hosted,linux,c6i.2xlarge" {
		t.Fatalf("messages = %v", got)
	}
}

func TestOwnerAllowList(t *testing.T) {
	t.Parallel()
	owners := func(o ...string) *config.Config {
		c := testConfig(t)
		c.GitHub.AllowedOwners = o
		return c
	}
	in := newIntegrationWith(t, owners("Some-Other-Org"), nil)
	in.deliver(t, jobPayload(t, "queued", 600), "o1")
	if n := len(in.messages(t)); n != 0 {
		t.Fatalf("owner outside allow-list sent %d; want 0", n)
	}
	job, _, _ := in.store.Get(context.Background(), 600)
	if job.Ours || !strings.Contains(job.SkipReason, "allowedOwners") {
		t.Errorf("record = %+v", job)
	}

	allowed := newIntegrationWith(t, owners("OCTO-ORG"), nil)
	allowed.deliver(t, jobPayload(t, "queued", 601), "o2")
	if n := len(allowed.messages(t)); n != 1 {
		t.Fatalf("allowed owner (other case) sent %d; want 1", n)
	}
}

// failingQueue fails every send, as SQS might.
type failingQueue struct{}

func (failingQueue) Send(context.Context, *queue.Message) (string, error) {
	return "", errors.New("send scale-up message: ServiceUnavailable")
}

func (q failingQueue) SendAfter(ctx context.Context, m *queue.Message, _ time.Duration) (string, error) {
	return q.Send(ctx, m)
}

func TestSendFailureReleasesClaim(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	table, q := a.JobsTable(t), a.Queue(t)
	st := state.NewStore(a.Dynamo, table, time.Hour, nil)
	body := jobPayload(t, "queued", 700)

	broken := webhook.New(testConfig(t), webhook.Deps{Secret: staticSecret, Store: st, Queue: failingQueue{}})
	resp, _ := broken.Handle(context.Background(), signed(body, "workflow_job", "r1"))
	if resp.StatusCode != 500 {
		t.Fatalf("status %d; want 500 when SQS fails", resp.StatusCode)
	}
	job, _, _ := st.Get(context.Background(), 700)
	if job.Enqueued {
		t.Fatal("failed send left the enqueue claim in place; a redelivery could never enqueue")
	}

	fixed := webhook.New(testConfig(t), webhook.Deps{Secret: staticSecret, Store: st, Queue: queue.NewSender(a.SQS, q.URL, 0)})
	if resp, _ := fixed.Handle(context.Background(), signed(body, "workflow_job", "r2")); resp.StatusCode != 200 {
		t.Fatalf("redelivery status %d", resp.StatusCode)
	}
	if n := len(a.ReceiveAll(t, q.URL, 10)); n != 1 {
		t.Fatalf("redelivery sent %d; want 1", n)
	}
}

func TestLogsCarryNoBodyOrSecret(t *testing.T) {
	t.Parallel()
	in := newIntegration(t)
	body := jobPayload(t, "queued", 800)
	in.deliver(t, body, "l1")
	in.deliver(t, body, "l2")
	bad := signed(body, "workflow_job", "l3")
	bad.Headers["x-hub-signature-256"] = webhook.Sign([]byte("nope"), body)
	_, _ = in.h.Handle(context.Background(), bad)

	out := in.logs.String()
	for _, leak := range []string{testSecret, "e3103f8eb03e1ad7f2331c5446b23c070fc54055", "MDEyOk9yZ2FuaXphdGlvbjY4MTE2NzI=", bad.Headers["x-hub-signature-256"]} {
		if strings.Contains(out, leak) {
			t.Errorf("logs contain %q", leak)
		}
	}
	for _, want := range []string{`"delivery_id":"l1"`, `"job_id":800`, `"decision":"queued"`, `"decision":"duplicate"`, `"decision":"unauthorized"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
}

func TestQueueToStartMetric(t *testing.T) {
	t.Parallel()
	var out testkit.Buffer
	in := newIntegration(t, webhook.WithMetrics(metrics.New(&out, "webhook", "jitr")))
	body := jobPayload(t, "in_progress", 900)
	body = bytes.Replace(body, []byte(`"started_at":"2021-06-15T19:22:27Z"`), []byte(`"started_at":"2021-06-15T19:22:58Z"`), 1)
	in.deliver(t, body, "s1")
	if !strings.Contains(out.String(), `"QueueToStartSeconds":31`) {
		t.Fatalf("no queue-to-start metric of 31 s in %s", out.String())
	}
}

// A completed job on one of our runners hands that runner's slot to the
// jobs that wait: the slot is freed and one wake sent. When none waits,
// nothing is written: the slot stays until the instance ends.
func TestCompletedJobHandsItsSlotToWaitingJobs(t *testing.T) {
	t.Parallel()
	for _, waiting := range []bool{false, true} {
		t.Run(map[bool]string{false: "none-waits", true: "jobs-wait"}[waiting], func(t *testing.T) {
			t.Parallel()
			var asked int
			in := newIntegrationWith(t, testConfig(t), func(st *state.Store) webhook.Recorder {
				return waitingStore{Store: st, waiting: waiting, asked: &asked}
			})
			ctx := context.Background()
			in.deliver(t, jobPayload(t, "queued", 7), "q")
			in.messages(t) // the job's own scale-up message
			if out, _, err := in.store.ClaimAttempt(ctx, 7, "claim-1", "default", time.Minute); err != nil || out != state.Claimed {
				t.Fatalf("claim: %v %v", out, err)
			}
			if err := in.store.RecordLaunch(ctx, 7, "claim-1", state.Launch{InstanceID: "i-7", InstanceType: "t3.large",
				CapacityType: "spot", RunnerName: "jitr-j7-1", RunnerID: 77}); err != nil {
				t.Fatal(err)
			}
			in.deliver(t, onRunner(jobPayload(t, "completed", 7), "jitr-j7-1"), "c")
			job, _, err := in.store.Get(ctx, 7)
			if err != nil {
				t.Fatal(err)
			}
			wakes := in.messages(t)
			if asked != 1 {
				t.Fatalf("asked %d times whether jobs wait; want once", asked)
			}
			if waiting {
				if job.SlotProfile != "" || len(wakes) != 1 || !wakes[0].Wake {
					t.Fatalf("slot %q, messages %+v; want the slot freed and one wake", job.SlotProfile, wakes)
				}
				return
			}
			if job.SlotProfile != "default" || len(wakes) != 0 {
				t.Fatalf("slot %q, messages %+v; want the slot kept (the instance's end frees it) and no wake", job.SlotProfile, wakes)
			}
		})
	}
}

// waitingStore answers AnyWaiting as told and counts the questions.
type waitingStore struct {
	*state.Store
	waiting bool
	asked   *int
}

func (w waitingStore) AnyWaiting(context.Context, []string) (bool, error) {
	*w.asked++
	return w.waiting, nil
}

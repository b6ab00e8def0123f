package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const testSecret = "It's a Secret to Everybody"

func testConfig(tb testing.TB) *config.Config {
	tb.Helper()
	c, err := config.Parse([]byte(`{
	  "github": {"apiUrl": "https://api.github.com", "appId": 1, "privateKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:key",
	             "webhookSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hook", "scope": "org", "runnerGroup": "Default"},
	  "queueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q", "tableName": "t", "namePrefix": "jitr", "runnerVersion": "2.332.0",
	  "maxRunners": 10, "launch": {"launchTemplateId": "lt-1", "subnetIds": ["subnet-1"]}, "defaultProfile": "default",
	  "allowedInstanceTypes": ["c6i.*"],
	  "profiles": {"default": {"instanceTypes": ["t3.large"], "imageId": "ami-1", "arch": "x64", "volumeGiB": 30},
	               "gpu": {"instanceTypes": ["g5.xlarge"], "imageId": "ami-2", "arch": "x64", "volumeGiB": 100}}}`))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func staticSecret(ctx context.Context) ([]byte, error) { return []byte(testSecret), nil }

// memStore is a focused in-memory Recorder for tests that must prove nothing
// is written, and for the fuzz target and benchmarks that exclude AWS calls.
type memStore struct {
	mu       sync.Mutex
	writes   int
	enqueued map[int64]bool
}

func (m *memStore) RecordEvent(_ context.Context, ev *state.JobEvent) (state.Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if ev.Action == state.StatusQueued && ev.Ours {
		if m.enqueued == nil {
			m.enqueued = map[int64]bool{}
		}
		if m.enqueued[ev.JobID] {
			return state.Duplicate, nil
		}
		m.enqueued[ev.JobID] = true
		return state.Enqueue, nil
	}
	return state.Recorded, nil
}

func (m *memStore) ReleaseEnqueue(_ context.Context, ev *state.JobEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.enqueued, ev.JobID)
	return nil
}

func (m *memStore) FreeRunnerSlot(context.Context, int64, string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	return true, nil
}

func (m *memStore) AnyWaiting(context.Context, []string) (bool, error) { return false, nil }

func (m *memStore) Writes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes
}

type memQueue struct {
	mu   sync.Mutex
	sent []*queue.Message
	err  error
}

func (q *memQueue) Send(_ context.Context, m *queue.Message) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	q.sent = append(q.sent, m)
	return "msg-1", nil
}

func (q *memQueue) SendAfter(ctx context.Context, m *queue.Message, _ time.Duration) (string, error) {
	return q.Send(ctx, m)
}

func (q *memQueue) Sent() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.sent)
}

func fixture(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/workflow_job_queued.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// foreignRunner is the runner jobPayload's started jobs run on: not one of
// the deployment's (testConfig's namePrefix is jitr).
const foreignRunner = "build-box-7"

// onRunner moves a jobPayload onto the runner named name.
func onRunner(body []byte, name string) []byte {
	return bytes.Replace(body, []byte(`"`+foreignRunner+`"`), []byte(`"`+name+`"`), 1)
}

// jobPayload returns the fixture with the given action, job id and labels.
func jobPayload(tb testing.TB, action string, jobID int64, lbls ...string) []byte {
	tb.Helper()
	var p map[string]any
	if err := json.Unmarshal(fixture(tb), &p); err != nil {
		tb.Fatal(err)
	}
	p["action"] = action
	j := p["workflow_job"].(map[string]any)
	j["id"] = jobID
	j["status"] = action
	if len(lbls) > 0 {
		j["labels"] = lbls
	}
	switch action {
	case state.StatusInProgress:
		j["runner_name"], j["runner_id"] = foreignRunner, 77
	case state.StatusCompleted:
		j["runner_name"], j["runner_id"] = foreignRunner, 77
		j["conclusion"], j["completed_at"] = "success", "2021-06-15T19:30:00Z"
	}
	b, err := json.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// signed returns a POST request as API Gateway delivers it, signed with testSecret.
func signed(body []byte, event, delivery string) events.APIGatewayV2HTTPRequest {
	req := events.APIGatewayV2HTTPRequest{
		Headers: map[string]string{
			"content-type":        "application/json",
			"x-github-event":      event,
			"x-github-delivery":   delivery,
			"x-hub-signature-256": webhook.Sign([]byte(testSecret), body),
		},
		Body: string(body),
	}
	req.RequestContext.HTTP.Method = "POST"
	return req
}

func newMemHandler(tb testing.TB, opts ...webhook.Option) (*webhook.Handler, *memStore, *memQueue) {
	tb.Helper()
	st, q := &memStore{}, &memQueue{}
	return webhook.New(testConfig(tb), webhook.Deps{Secret: staticSecret, Store: st, Queue: q}, opts...), st, q
}

package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// payloadOfSize returns a realistic queued payload grown to about n bytes
// with workflow steps, as large real deliveries are.
func payloadOfSize(tb testing.TB, n int) []byte {
	tb.Helper()
	var p map[string]any
	if err := json.Unmarshal(fixture(tb), &p); err != nil {
		tb.Fatal(err)
	}
	j := p["workflow_job"].(map[string]any)
	var steps []map[string]any
	for i := 1; ; i++ {
		b, _ := json.Marshal(p)
		if len(b) >= n {
			return b
		}
		steps = append(steps, map[string]any{
			"name": fmt.Sprintf("Run step number %d of the build", i), "status": "queued", "conclusion": nil,
			"number": i, "started_at": "2021-06-15T19:22:27Z", "completed_at": nil,
		})
		j["steps"] = steps
	}
}

// enqueueAll always answers Enqueue, so every iteration takes the full path.
type enqueueAll struct{}

func (enqueueAll) RecordEvent(context.Context, *state.JobEvent) (state.Outcome, error) {
	return state.Enqueue, nil
}
func (enqueueAll) ReleaseEnqueue(context.Context, *state.JobEvent) error { return nil }
func (enqueueAll) FreeRunnerSlot(context.Context, int64, string) (bool, error) {
	return true, nil
}

func (enqueueAll) AnyWaiting(context.Context, []string) (bool, error) { return false, nil }

type discardQueue struct{}

func (discardQueue) Send(context.Context, *queue.Message) (string, error) { return "m", nil }
func (discardQueue) SendAfter(context.Context, *queue.Message, time.Duration) (string, error) {
	return "m", nil
}

// BenchmarkHandler20KB measures the handler on a signed 20 KB delivery,
// excluding AWS calls. Targets: <= 100 µs and <= 60 allocations per op.
func BenchmarkHandler20KB(b *testing.B) {
	body := payloadOfSize(b, 20<<10)
	req := signed(body, "workflow_job", "bench")
	h := webhook.New(testConfig(b), webhook.Deps{Secret: staticSecret, Store: enqueueAll{}, Queue: discardQueue{}})
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, _ := h.Handle(ctx, req)
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

// ColdStart measures one cold start of a function: from starting a new
// emulator process to the first response, which includes the process
// start, reading JITR_CONFIG, the Secrets Manager fetch (and for scaleup
// the STS call) and one small invocation: a signed ping (webhook), an empty
// batch (scaleup), a sweep (scaledown). The new environment is stopped
// afterwards and never serves other invocations.
func (s *Sandbox) ColdStart(ctx context.Context, name string) (time.Duration, error) {
	f, ok := s.lambdas[name]
	if !ok {
		return 0, fmt.Errorf("no function %q", name)
	}
	var event []byte
	switch name {
	case FuncWebhook:
		body := []byte(`{"zen":"Design for failure.","hook_id":1}`)
		ev := events.APIGatewayV2HTTPRequest{
			Version: "2.0", RouteKey: "POST " + WebhookPath, RawPath: WebhookPath,
			Headers: map[string]string{},
			Body:    string(body),
		}
		for k, v := range ghfake.DeliveryHeaders("ping", s.webhookSecret, body) {
			ev.Headers[strings.ToLower(k)] = v[0]
		}
		ev.RequestContext.HTTP.Method = "POST"
		ev.RequestContext.HTTP.Path = WebhookPath
		event, _ = json.Marshal(ev)
	case FuncScaleup:
		event = []byte(`{"Records":[]}`)
	default:
		event = SweepEvent
	}
	start := time.Now()
	e, err := f.newEnvironment(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		e.rie.Stop(time.Second)
		_ = e.file.Close()
	}()
	out, err := f.post(ctx, e, event)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if isFunctionError(out) {
		return 0, fmt.Errorf("%s: %s", name, truncate(string(out), 300))
	}
	return took, nil
}

// CPU returns, per function, the processor time its running bootstrap
// processes have used so far (the function's own code; the emulator's is
// not in it). An environment that exited takes its time with it.
func (s *Sandbox) CPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, f := range s.lambdas {
		for _, pid := range f.pids() {
			if v, err := testenv.CPUTime(pid); err == nil {
				out[name] += v
			}
		}
	}
	return out
}

// PeakRSS returns, per function, the largest peak resident set size (VmHWM)
// of its running bootstrap processes, in bytes.
func (s *Sandbox) PeakRSS() map[string]int64 {
	out := map[string]int64{}
	for name, f := range s.lambdas {
		for _, pid := range f.pids() {
			if v, err := testenv.PeakRSS(pid); err == nil && v > out[name] {
				out[name] = v
			}
		}
	}
	return out
}

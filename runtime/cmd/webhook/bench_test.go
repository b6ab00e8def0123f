package main_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// BenchmarkColdStart measures one cold start of the compiled bootstrap under
// the Runtime Interface Emulator with moto: from starting the emulator
// process to the first response, which includes the process start, reading
// JITR_CONFIG, the Secrets Manager fetch, and a queued delivery's DynamoDB
// and SQS calls. Target: <= 40 ms.
func BenchmarkColdStart(b *testing.B) {
	d := testenv.NewDeployment(b, secret)
	bin := testenv.BuildLambda(b, "./runtime/cmd/webhook")
	env := d.LambdaEnv(b)
	ctx := context.Background()
	var samples []time.Duration
	job := 1
	for b.Loop() {
		body := queuedBody(job)
		job++
		ev := event(b, body, webhook.Sign([]byte(secret), []byte(body)))
		start := time.Now()
		r, err := testenv.StartRIE(ctx, bin, env)
		if err != nil {
			b.Fatal(err)
		}
		out, err := r.Invoke(ctx, ev)
		elapsed := time.Since(start)
		_ = r.Close()
		if err != nil {
			b.Fatalf("%v\n%s", err, r.Output())
		}
		var resp events.APIGatewayV2HTTPResponse
		if json.Unmarshal(out, &resp) != nil || resp.StatusCode != 200 {
			b.Fatalf("response %s", out)
		}
		samples = append(samples, elapsed)
	}
	reportPercentiles(b, samples, "cold")
}

// BenchmarkWarmLatency measures warm invocations of the bootstrap under the
// emulator, each a new queued job: signature, parse, one DynamoDB
// UpdateItem and one SQS SendMessage against moto. Target: p50 <= 15 ms.
func BenchmarkWarmLatency(b *testing.B) {
	d := testenv.NewDeployment(b, secret)
	bin := testenv.BuildLambda(b, "./runtime/cmd/webhook")
	ctx := context.Background()
	r, err := testenv.StartRIE(ctx, bin, d.LambdaEnv(b))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	warm := queuedBody(1)
	if _, err := r.Invoke(ctx, event(b, warm, webhook.Sign([]byte(secret), []byte(warm)))); err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	job := 2
	for b.Loop() {
		// Enough deliveries for stable percentiles whatever b.N is.
		for i := 0; i < 50; i++ {
			body := queuedBody(job)
			job++
			ev := event(b, body, webhook.Sign([]byte(secret), []byte(body)))
			start := time.Now()
			if _, err := r.Invoke(ctx, ev); err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
		}
	}
	reportPercentiles(b, samples, "warm")
}

// BenchmarkBootstrapSize reports the size of the linux/arm64 bootstrap built
// exactly as `make build` builds it. Target: <= 15 MB.
func BenchmarkBootstrapSize(b *testing.B) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "bootstrap")
	for b.Loop() {
		args := append([]string{"build"}, testenv.BuildFlags...)
		cmd := exec.Command("go", append(args, "-o", out, "./runtime/cmd/webhook")...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, o)
		}
	}
	st, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size())/1e6, "MB")
}

func reportPercentiles(b *testing.B, samples []time.Duration, name string) {
	b.Helper()
	slices.Sort(samples)
	pct := func(p float64) float64 {
		i := int(p * float64(len(samples)-1))
		return float64(samples[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), name+"-p50-ms")
	b.ReportMetric(pct(0.99), name+"-p99-ms")
	b.ReportMetric(0, "ns/op")
}

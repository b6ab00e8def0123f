package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// poolBenchReport is what BenchmarkSandboxPools writes to
// out/bench-sandbox-pools.json.
type poolBenchReport struct {
	Date    string            `json:"date"`
	Machine map[string]string `json:"machine"`
	Runs    []poolBenchRun    `json:"runs"`
}

type poolBenchRun struct {
	Pool string           `json:"pool"`
	Rate float64          `json:"rate"`
	Jobs int              `json:"jobs"`
	Sum  *sandbox.Summary `json:"summary"`
	// RefillSeconds: from the load's end until the pool was full again.
	RefillSeconds float64 `json:"refillSeconds,omitempty"`
}

// BenchmarkSandboxPools measures what a hot pool of 20 changes at 10 jobs/s
// (100 jobs, 200 ms each, SQS delay 0, no faults), against the same load
// without a pool, each in a sandbox of its own: webhook -> launch (the
// record shows the instance) and webhook -> runner online (its instance
// read the JIT config), the CreateFleet requests for jobs and into the
// pool, and how long the pool took to be full again after the load
// (target: within 60 s). Simulated hot instances poll every 100 ms
// (sandbox.HotPollInterval); on AWS the bootstrap polls every second.
// Figures go to out/bench-sandbox-pools.json.
func BenchmarkSandboxPools(b *testing.B) {
	const jobs, size = 100, 20
	rate := benchRate(b)
	rep := poolBenchReport{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine()}
	for _, pool := range []string{"none", "hot=20"} {
		b.Run("pool="+pool, func(b *testing.B) {
			overlay := `{}`
			if pool != "none" {
				overlay = fmt.Sprintf(`{"profiles": {"default": {"pool": {"hot": {"size": %d}}}}}`, size)
			}
			ctx := context.Background()
			s, err := sandbox.Start(ctx, sandbox.Options{
				Listen: "127.0.0.1:0", JobDuration: 200 * time.Millisecond, SweepInterval: time.Hour,
				ConfigOverlay: []byte(overlay), LogDir: benchLogDir(b, pool), HotPollInterval: benchHotPoll(b),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			store := state.NewStore(dynamodb.NewFromConfig(s.AWSConfig()), s.Config().TableName, time.Hour, nil)
			full := func() bool {
				items, err := store.Pooled(ctx, "default")
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, p := range items {
					if p.Kind == jitstore.PoolHot && p.State == state.PoolReady {
						n++
					}
				}
				return n >= size
			}
			waitFull := func(within time.Duration) time.Duration {
				start := time.Now()
				for !full() {
					if time.Since(start) > within {
						b.Fatalf("pool not full within %s", within)
					}
					time.Sleep(100 * time.Millisecond)
				}
				return time.Since(start)
			}
			if pool != "none" {
				// The pool is filled by a sweep (on AWS every 5 minutes);
				// during and after the load only the replacements each
				// hit launches refill it.
				if _, err := s.Sweep(ctx); err != nil {
					b.Fatal(err)
				}
				waitFull(2 * time.Minute)
			}
			var sum *sandbox.Summary
			for b.Loop() {
				sum, err = s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: rate, Timeout: 5 * time.Minute})
				if err != nil {
					b.Fatal(err)
				}
			}
			if !sum.OK() {
				b.Errorf("load not OK: %+v", sum)
			}
			run := poolBenchRun{Pool: pool, Rate: rate, Jobs: jobs, Sum: sum}
			if pool != "none" {
				run.RefillSeconds = waitFull(2 * time.Minute).Seconds()
				b.ReportMetric(run.RefillSeconds, "refill-s")
			}
			rep.Runs = append(rep.Runs, run)
			b.ReportMetric(sum.WebhookToOnline.P50*1000, "online-p50-ms")
			b.ReportMetric(sum.WebhookToOnline.P95*1000, "online-p95-ms")
			b.ReportMetric(sum.WebhookToLaunch.P50*1000, "launch-p50-ms")
			b.ReportMetric(float64(sum.AWS.JobLaunchRequests), "job-createfleet")
			b.ReportMetric(float64(sum.PoolHits), "pool-hits")
			b.ReportMetric(0, "ns/op")
		})
	}
	writePoolReport(b, rep)
}

func writePoolReport(b *testing.B, rep poolBenchReport) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		b.Fatal(err)
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(root, "out", "bench-sandbox-pools.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	var w strings.Builder
	fmt.Fprintf(&w, "\nwarm pools (%s, %s)\n", rep.Date, path)
	fmt.Fprintf(&w, "%-8s %5s %11s %9s %11s %9s %6s %9s %9s %8s %14s\n", "pool", "rate", "online p50", "p95", "launch p50", "p95",
		"hits", "job CF", "pool CF", "refill", "UpdateItem p50")
	for _, r := range rep.Runs {
		fmt.Fprintf(&w, "%-8s %5g %10.3fs %8.3fs %10.3fs %8.3fs %6d %9d %9d %7.1fs %13.1fms\n", r.Pool, r.Rate, r.Sum.WebhookToOnline.P50,
			r.Sum.WebhookToOnline.P95, r.Sum.WebhookToLaunch.P50, r.Sum.WebhookToLaunch.P95, r.Sum.PoolHits, r.Sum.AWS.JobLaunchRequests,
			r.Sum.AWS.PoolLaunchRequests, r.RefillSeconds, r.Sum.AWSLatency["dynamodb.UpdateItem"].P50*1000)
	}
	fmt.Print(w.String())
}

// benchLogDir keeps the sandbox's logs under JITR_BENCH_LOGDIR when set.
func benchLogDir(b *testing.B, name string) string {
	if d := os.Getenv("JITR_BENCH_LOGDIR"); d != "" {
		return filepath.Join(d, strings.ReplaceAll(name, "=", "-"))
	}
	return b.TempDir()
}

// benchRate is the jobs per second of BenchmarkSandboxPools: 10, or
// JITR_BENCH_RATE.
func benchRate(b *testing.B) float64 {
	if v := os.Getenv("JITR_BENCH_RATE"); v != "" {
		var r float64
		if _, err := fmt.Sscan(v, &r); err != nil || r <= 0 {
			b.Fatalf("JITR_BENCH_RATE=%q", v)
		}
		return r
	}
	return 10
}

// benchHotPoll is how often simulated hot instances poll: the bootstrap's
// second, or JITR_BENCH_HOT_POLL (a Go duration).
func benchHotPoll(b *testing.B) time.Duration {
	if v := os.Getenv("JITR_BENCH_HOT_POLL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("JITR_BENCH_HOT_POLL=%q", v)
		}
		return d
	}
	return sandbox.HotPollInterval
}

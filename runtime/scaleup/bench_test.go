package scaleup_test

import (
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// BenchmarkBurst200 sends a burst of 200 queued jobs through the handler in
// batches of 10 against moto and the GitHub fake, with a warm container.
// Reports launches per second (target >= 20) and GitHub calls per job
// (target <= 1.05: the JIT call plus the amortised token).
func BenchmarkBurst200(b *testing.B) {
	const jobs = 200
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b, config.ScopeOrg, func(c *config.Config) { c.MaxRunners = 1000 })
		// Warm the container: the runner group lookup and the token are
		// per-container costs, amortised over its life.
		if failed := h.run(h.batch(h.enqueue(jobs + 1))); len(failed) != 0 {
			b.Fatalf("warm-up failed %v", failed)
		}
		var batches [][]queue.Message
		var cur []queue.Message
		for i := int64(1); i <= jobs; i++ {
			cur = append(cur, h.enqueue(i))
			if len(cur) == queue.ScaleUp.BatchSize {
				batches = append(batches, cur)
				cur = nil
			}
		}
		h.gh.ResetCalls()
		b.StartTimer()
		start := time.Now()
		for _, bt := range batches {
			if failed := h.run(h.batch(bt...)); len(failed) != 0 {
				b.Fatalf("failed %v", failed)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(jobs)/elapsed.Seconds(), "launches/s")
		b.ReportMetric(float64(h.gh.TotalCalls())/jobs, "gh-calls/job")
		if n := len(h.instances()); n != jobs+1 {
			b.Fatalf("%d instances; want %d", n, jobs+1)
		}
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
}

package sandbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

// benchReport is what BenchmarkSandbox writes to out/bench-sandbox.json.
type benchReport struct {
	Date    string             `json:"date"`
	Machine map[string]string  `json:"machine"`
	Cold    map[string]float64 `json:"coldStartP50Ms"`
	ColdMax map[string]float64 `json:"coldStartMaxMs"`
	SizeMB  map[string]float64 `json:"bootstrapSizeMB"`
	Loads   []loadReport       `json:"loads"`
	PeakRSS map[string]float64 `json:"peakRssMB"`
	Memory  map[string]int     `json:"configuredMemoryMB"`
}

type loadReport struct {
	Rate    float64          `json:"rate"`
	Summary *sandbox.Summary `json:"summary"`
}

// BenchmarkSandbox measures the control plane end to end on this machine,
// with one sandbox (moto, the GitHub fake, the Lambdas under the emulator)
// for every sub-benchmark, and writes the figures to out/bench-sandbox.json:
//
//   - ColdStart/<fn>: a new emulator process to its first response
//     (target <= 40 ms);
//   - Size/<fn>: the linux/arm64 bootstrap as `make build` builds it
//     (target <= 20 MB);
//   - Load/rate=<r>: webhook-to-launch latency at r jobs/s with SQS delay 0
//     (target at 10 jobs/s: p50 <= 1 s, p99 <= 3 s), launches per second,
//     GitHub calls per job;
//   - PeakRSS/<fn>: the largest VmHWM of the function's processes after the
//     loads (must fit the configured memory: 128 MB for webhook).
//
// One sweep over 2,000 records is BenchmarkSweep2000 in runtime/scaledown.
func BenchmarkSandbox(b *testing.B) {
	ctx := context.Background()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen:        "127.0.0.1:0",
		JobDuration:   200 * time.Millisecond,
		SweepInterval: time.Hour,
		LogDir:        b.TempDir(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	rep := benchReport{
		Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(),
		Cold: map[string]float64{}, ColdMax: map[string]float64{}, SizeMB: map[string]float64{},
		PeakRSS: map[string]float64{}, Memory: map[string]int{},
	}
	fns := []string{sandbox.FuncWebhook, sandbox.FuncScaleup, sandbox.FuncScaledown}

	for _, fn := range fns {
		b.Run("ColdStart/"+fn, func(b *testing.B) {
			var samples []time.Duration
			for b.Loop() {
				for range 5 { // enough for a stable median whatever b.N is
					d, err := s.ColdStart(ctx, fn)
					if err != nil {
						b.Fatal(err)
					}
					samples = append(samples, d)
				}
			}
			p := sandbox.NewPercentiles(samples)
			rep.Cold[fn], rep.ColdMax[fn] = p.P50*1000, p.Max*1000
			b.ReportMetric(p.P50*1000, "p50-ms")
			b.ReportMetric(p.Max*1000, "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
	for _, fn := range fns {
		b.Run("Size/"+fn, func(b *testing.B) {
			var size int64
			for b.Loop() {
				size = armSize(b, fn)
			}
			rep.SizeMB[fn] = float64(size) / 1e6
			b.ReportMetric(float64(size)/1e6, "MB")
			b.ReportMetric(0, "ns/op")
		})
	}
	for _, l := range []struct {
		rate float64
		jobs int
	}{{1, 10}, {10, 100}, {50, 250}} {
		b.Run(fmt.Sprintf("Load/rate=%g", l.rate), func(b *testing.B) {
			var sum *sandbox.Summary
			for b.Loop() {
				sum, err = s.RunLoad(ctx, sandbox.Load{Jobs: l.jobs, Rate: l.rate, Timeout: 5 * time.Minute})
				if err != nil {
					b.Fatal(err)
				}
			}
			if !sum.OK() {
				b.Errorf("load at %g jobs/s not OK: %+v", l.rate, sum)
			}
			rep.Loads = append(rep.Loads, loadReport{Rate: l.rate, Summary: sum})
			w := sum.WebhookToLaunch
			b.ReportMetric(w.P50*1000, "launch-p50-ms")
			b.ReportMetric(w.P95*1000, "launch-p95-ms")
			b.ReportMetric(w.P99*1000, "launch-p99-ms")
			b.ReportMetric(sum.WebhookToInProgress.P50*1000, "start-p50-ms")
			b.ReportMetric(sum.LaunchesPerSecond, "launches/s")
			b.ReportMetric(sum.GitHubCallsPerJob, "gh-calls/job")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("PeakRSS", func(b *testing.B) {
		for b.Loop() {
		}
		for fn, v := range s.PeakRSS() {
			mem, _ := sandbox.SpecOf(fn)
			rep.PeakRSS[fn], rep.Memory[fn] = float64(v)/(1<<20), mem
			b.ReportMetric(float64(v)/(1<<20), fn+"-MB")
			if v > int64(mem)<<20 {
				b.Errorf("%s peaked at %.1f MB; its configured memory is %d MB", fn, float64(v)/(1<<20), mem)
			}
		}
		b.ReportMetric(0, "ns/op")
	})
	writeReport(b, rep)
}

// armSize builds a function for linux/arm64 exactly as `make build` does and
// returns the binary's size.
func armSize(b *testing.B, fn string) int64 {
	root, err := testenv.ModuleRoot()
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "bootstrap")
	args := append([]string{"build"}, testenv.BuildFlags...)
	cmd := exec.Command("go", append(args, "-o", out, "./runtime/cmd/"+fn)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, o)
	}
	st, err := os.Stat(out)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

// machine describes the machine the figures come from.
func machine() map[string]string {
	m := map[string]string{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "go": runtime.Version()}
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	m["nproc"] = run("nproc")
	for _, line := range strings.Split(run("lscpu"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Model name" {
			m["cpu"] = strings.TrimSpace(v)
		}
	}
	for _, line := range strings.Split(run("free", "-h"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Mem:" {
			m["memory"] = f[1]
		}
	}
	return m
}

func writeReport(b *testing.B, rep benchReport) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		b.Fatal(err)
	}
	slices.SortFunc(rep.Loads, func(x, y loadReport) int { return int(x.Rate - y.Rate) })
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(root, "out")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "bench-sandbox.json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	printReport(rep, path)
}

// printReport prints the figures as one table on stdout (make bench shows
// it next to the benchmark lines).
func printReport(rep benchReport, path string) {
	var w strings.Builder
	fmt.Fprintf(&w, "\nsandbox benchmark (%s, %s)\n", rep.Date, path)
	fmt.Fprintf(&w, "%-34s %14s %14s %14s\n", "", "webhook", "scaleup", "scaledown")
	fns := []string{sandbox.FuncWebhook, sandbox.FuncScaleup, sandbox.FuncScaledown}
	row := func(name, unit string, m map[string]float64) {
		fmt.Fprintf(&w, "%-34s", name)
		for _, fn := range fns {
			fmt.Fprintf(&w, " %11.1f %-2s", m[fn], unit)
		}
		w.WriteString("\n")
	}
	row("cold start p50 (target <= 40 ms)", "ms", rep.Cold)
	row("bootstrap size (target <= 20 MB)", "MB", rep.SizeMB)
	row("peak RSS under load", "MB", rep.PeakRSS)
	mem := map[string]float64{}
	for k, v := range rep.Memory {
		mem[k] = float64(v)
	}
	row("configured memory", "MB", mem)
	fmt.Fprintf(&w, "\n%-10s %10s %10s %10s %12s %14s\n", "rate/s", "launch p50", "p95", "p99", "launches/s", "GitHub/job")
	for _, l := range rep.Loads {
		p := l.Summary.WebhookToLaunch
		fmt.Fprintf(&w, "%-10.0f %9.3fs %9.3fs %9.3fs %12.1f %14.2f\n", l.Rate, p.P50, p.P95, p.P99,
			l.Summary.LaunchesPerSecond, l.Summary.GitHubCallsPerJob)
	}
	fmt.Print(w.String())
}

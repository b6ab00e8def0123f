package sandbox

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jit-runners/jit-runners/runtime/fleet"
)

// Percentiles of a latency, in seconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// NewPercentiles computes nearest-rank percentiles of samples.
func NewPercentiles(samples []time.Duration) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)].Seconds()
	}
	return Percentiles{N: len(s), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: s[len(s)-1].Seconds()}
}

// Summary sums up one RunLoad.
type Summary struct {
	Jobs              int `json:"jobs"`
	Completed         int `json:"completed"`
	InstancesLaunched int `json:"instancesLaunched"`
	// RunnersOnline counts the instances whose runner came online.
	RunnersOnline        int     `json:"runnersOnline"`
	Spot                 int     `json:"spot"`
	OnDemand             int     `json:"onDemand"`
	SpotFallbacks        int     `json:"spotFallbacks"`
	Deliveries           int     `json:"deliveries"`
	Duplicates           int     `json:"duplicates"`
	Retries              int     `json:"retries"`
	Failures             int     `json:"failures"`
	GitHubCalls          int     `json:"githubCalls"`
	GitHubCallsPerJob    float64 `json:"githubCallsPerJob"`
	GitHubInjectedFaults int     `json:"githubInjectedFaults"`
	// GitHubJITRateLimited counts the JIT configs the fake refused for the
	// App's per-minute budget (ghfake.DefaultJITPerMinute), as GitHub's
	// secondary rate limit does.
	GitHubJITRateLimited int        `json:"githubJitRateLimited"`
	AWS                  FaultStats `json:"aws"`
	// AWSLatency is, per AWS operation, how long the emulator took to
	// answer during the load (seconds): a saturated emulator shows here.
	AWSLatency     map[string]Percentiles `json:"awsLatencySeconds,omitempty"`
	AWSCallsPerJob float64                `json:"awsCallsPerJob"`
	// CPUPerJobMs is each Lambda's own processor time over the load per
	// job, in milliseconds (the emulator's and moto's not included): our
	// cost, apart from the emulated AWS's.
	CPUPerJobMs     map[string]float64 `json:"cpuPerJobMs,omitempty"`
	WebhookToLaunch Percentiles        `json:"webhookToLaunchSeconds"`
	// WebhookToOnline: from the queued delivery to the job's runner online
	// (its instance read its JIT config).
	WebhookToOnline Percentiles `json:"webhookToOnlineSeconds"`
	// PoolHits counts the jobs whose instance came from a warm pool; Pools
	// what the sandbox saw of the pools over the whole run.
	PoolHits            int         `json:"poolHits"`
	Pools               PoolStats   `json:"pools"`
	WebhookToInProgress Percentiles `json:"webhookToInProgressSeconds"`
	// QueuedDeliveriesFailed counts the jobs whose queued delivery failed
	// at our endpoint before any succeeded (GitHub never retries them);
	// Recovery is how long those took from that failure to their enqueue
	// (through the delivery log's redelivery).
	QueuedDeliveriesFailed int         `json:"queuedDeliveriesFailed"`
	Recovery               Percentiles `json:"recoverySeconds"`
	LaunchesPerSecond      float64     `json:"launchesPerSecond"`
	InstancesRunning       int         `json:"instancesRunning"`
	RunnersRegistered      int         `json:"runnersRegistered"`
	// Swaps counts the jobs that ran on a runner launched for another job
	// (GitHub's choice, the normal case under load).
	Swaps int `json:"swaps"`
	// BusyRunnersKilled counts the instances terminated while their runner
	// ran a job (must be 0); BusyDeleteRefusals the deletions of busy
	// runners GitHub refused with 422 (each one a kill avoided).
	BusyRunnersKilled  int     `json:"busyRunnersKilled"`
	KilledJobs         []int64 `json:"killedJobs,omitempty"`
	BusyDeleteRefusals int     `json:"busyDeleteRefusals"`
	JobsLost           int     `json:"jobsLost"`
	LostJobs           []int64 `json:"lostJobs,omitempty"`
	Leaks              []Leak  `json:"leaks,omitempty"`
	Elapsed            float64 `json:"elapsedSeconds"`
}

// OK reports whether no job was lost, no busy runner was killed and
// nothing leaked: no instance running, no runner registered, no secret in a
// log.
func (s *Summary) OK() bool {
	return s.JobsLost == 0 && s.BusyRunnersKilled == 0 && s.InstancesRunning == 0 && s.RunnersRegistered == 0 && len(s.Leaks) == 0
}

func (s *Sandbox) summarize(ctx context.Context, ids []int64, start time.Time) *Summary {
	sum := &Summary{Jobs: len(ids)}
	var toLaunch, toOnline, toStart, recovery []time.Duration
	var firstReceived, lastLaunch time.Time
	for _, j := range s.tracker.snapshot(ids) {
		sum.Deliveries += j.deliveries
		sum.Duplicates += j.duplicates
		sum.Retries += j.retries
		sum.Failures += len(j.failures)
		sum.InstancesLaunched += len(j.instances)
		sum.RunnersOnline += len(j.runners)
		if !j.completed.IsZero() {
			sum.Completed++
		}
		if _, own := j.instances[j.ranOn]; j.ranOn != "" && !own {
			sum.Swaps++
		}
		if !j.done() {
			sum.JobsLost++
			sum.LostJobs = append(sum.LostJobs, j.id)
		}
		switch j.capacityType {
		case fleet.CapacityTypeSpot:
			sum.Spot++
		case fleet.CapacityTypeOnDemand:
			sum.OnDemand++
		}
		if j.spotFallback {
			sum.SpotFallbacks++
		}
		if j.received.IsZero() {
			continue
		}
		if firstReceived.IsZero() || j.received.Before(firstReceived) {
			firstReceived = j.received
		}
		if !j.launched.IsZero() {
			toLaunch = append(toLaunch, j.launched.Sub(j.received))
			if j.launched.After(lastLaunch) {
				lastLaunch = j.launched
			}
		}
		if !j.inProgress.IsZero() {
			toStart = append(toStart, j.inProgress.Sub(j.received))
		}
		if !j.registered.IsZero() {
			toOnline = append(toOnline, j.registered.Sub(j.received))
		}
		if j.fromPool != "" {
			sum.PoolHits++
		}
		if !j.queuedFailed.IsZero() {
			sum.QueuedDeliveriesFailed++
			if !j.queued.IsZero() {
				recovery = append(recovery, j.queued.Sub(j.queuedFailed))
			}
		}
	}
	sum.WebhookToLaunch = NewPercentiles(toLaunch)
	sum.WebhookToInProgress = NewPercentiles(toStart)
	sum.WebhookToOnline = NewPercentiles(toOnline)
	sum.Pools = s.tracker.poolStats()
	sum.Recovery = NewPercentiles(recovery)
	if span := lastLaunch.Sub(firstReceived).Seconds(); span > 0 && len(toLaunch) > 1 {
		sum.LaunchesPerSecond = float64(len(toLaunch)) / span
	}
	if n, err := s.countAlive(ctx); err == nil {
		sum.InstancesRunning = n
	} else {
		sum.InstancesRunning = -1
	}
	sum.RunnersRegistered = len(s.fake.Runners(""))
	for _, id := range s.fake.BusyLostJobs() {
		if slices.Contains(ids, id) {
			sum.KilledJobs = append(sum.KilledJobs, id)
		}
	}
	sum.BusyRunnersKilled = len(sum.KilledJobs)
	sum.Leaks = s.ScanLogs()
	sum.Elapsed = time.Since(start).Seconds()
	return sum
}

// Print writes the summary as a table.
func (s *Summary) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	lat := func(p Percentiles) string {
		if p.N == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %.3fs  p95 %.3fs  p99 %.3fs  max %.3fs  (n=%d)", p.P50, p.P95, p.P99, p.Max, p.N)
	}
	fmt.Fprintln(tw, "summary\t")
	row("jobs", "%d (%d completed) in %.1fs", s.Jobs, s.Completed, s.Elapsed)
	row("instances launched", "%d (spot %d, on-demand %d, spot fallbacks %d); runners online %d", s.InstancesLaunched, s.Spot, s.OnDemand, s.SpotFallbacks, s.RunnersOnline)
	row("deliveries", "%d (duplicates recognised %d)", s.Deliveries, s.Duplicates)
	row("retries", "%d", s.Retries)
	row("failures observed", "%d", s.Failures)
	row("github calls", "%d (%.2f per job; injected faults %d; JIT configs refused for the per-minute budget %d)",
		s.GitHubCalls, s.GitHubCallsPerJob, s.GitHubInjectedFaults, s.GitHubJITRateLimited)
	row("aws calls (lambdas)", "%d (%.1f per job; injected 500s %d; spot requests %d, spot capacity errors %d)",
		s.AWS.Requests, s.AWSCallsPerJob, s.AWS.Injected500, s.AWS.SpotRequests, s.AWS.InjectedSpot)
	for _, fn := range slices.Sorted(maps.Keys(s.AWS.Calls)) {
		ops := s.AWS.Calls[fn]
		var total int64
		for _, n := range ops {
			total += n
		}
		names := slices.Sorted(maps.Keys(ops))
		sort.SliceStable(names, func(i, j int) bool { return ops[names[i]] > ops[names[j]] })
		var parts []string
		for _, op := range names {
			parts = append(parts, fmt.Sprintf("%s %.2f", op, float64(ops[op])/float64(max(s.Jobs, 1))))
		}
		row("  aws calls per job: "+fn, "%.1f (%s)", float64(total)/float64(max(s.Jobs, 1)), strings.Join(parts, ", "))
	}
	if len(s.CPUPerJobMs) > 0 {
		var parts []string
		for _, fn := range slices.Sorted(maps.Keys(s.CPUPerJobMs)) {
			parts = append(parts, fmt.Sprintf("%s %.2f", fn, s.CPUPerJobMs[fn]))
		}
		row("lambda CPU ms per job", "%s", strings.Join(parts, ", "))
	}
	row("webhook -> launch", "%s", lat(s.WebhookToLaunch))
	row("webhook -> runner online", "%s", lat(s.WebhookToOnline))
	if s.Pools.Launched > 0 {
		row("warm pools", "%d jobs took a pooled instance; pooled instances launched %d, taken %d, retired unused %d, idle now %d; CreateFleet requests: for jobs %d, into pools %d",
			s.PoolHits, s.Pools.Launched, s.Pools.Taken, s.Pools.RetiredUnused, s.Pools.Idle, s.AWS.JobLaunchRequests, s.AWS.PoolLaunchRequests)
	}
	row("webhook -> in_progress", "%s", lat(s.WebhookToInProgress))
	if s.QueuedDeliveriesFailed > 0 {
		row("queued deliveries failed", "%d, recovered %d: %s", s.QueuedDeliveriesFailed, s.Recovery.N, lat(s.Recovery))
	}
	row("launches per second", "%.2f", s.LaunchesPerSecond)
	row("instances still running", "%d (idle pooled instances not counted)", s.InstancesRunning)
	row("runners still registered", "%d", s.RunnersRegistered)
	row("jobs run on another job's runner", "%d of %d", s.Swaps, s.Jobs)
	row("busy runners killed", "%d%s (deletions refused with 422: %d)", s.BusyRunnersKilled, lostList(s.KilledJobs), s.BusyDeleteRefusals)
	row("jobs lost", "%d%s", s.JobsLost, lostList(s.LostJobs))
	row("secrets in logs", "%d", len(s.Leaks))
	verdict := "OK"
	if !s.OK() {
		verdict = "FAILED"
	}
	row("result", "%s", verdict)
	_ = tw.Flush()
}

func lostList(ids []int64) string {
	if len(ids) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(" (")
	for i, id := range ids {
		if i == 10 {
			fmt.Fprintf(&b, ", ... %d more", len(ids)-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d", id)
	}
	b.WriteString(")")
	return b.String()
}

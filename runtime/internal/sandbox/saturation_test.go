package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// envInt and envDuration read a test size from the environment (make e2e
// sets the long ones).
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q", name, v)
	}
	return d
}

// TestSaturation runs more jobs than maxRunners allows (2): the jobs over
// the limit wait in the table, not in SQS receives, and start as slots free.
// Every job runs exactly once, GitHub starts them oldest first, nothing
// reaches the dead-letter queue (whose depth is what the DLQ alarm watches),
// and the AWS calls per minute are reported. make test: 8 jobs of 2 s;
// make e2e: JITR_SAT_JOBS=40 JITR_SAT_DURATION=30s.
func TestSaturation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	jobs := envInt(t, "JITR_SAT_JOBS", 8)
	duration := envDuration(t, "JITR_SAT_DURATION", 2*time.Second)
	const maxRunners = 2
	dir := t.TempDir()
	stdout := &testkit.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen: "127.0.0.1:0",
		ConfigOverlay: []byte(`{"maxRunners": 2, "scaleDown": {"completedGraceSeconds": 1, "bootTimeoutSeconds": 60,
		  "orphanGraceSeconds": 60, "maxRuntimeSeconds": 900, "queuedTimeoutSeconds": 45}, "scaleUp": {"claimLeaseSeconds": 30}}`),
		SweepInterval:     20 * time.Second,
		JobDuration:       duration,
		IdleTimeout:       20 * time.Second,
		VisibilityTimeout: 5 * time.Second,
		LogDir:            filepath.Join(dir, "logs"),
		Stdout:            stdout,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	// Watch the dead-letter queue and the instances alive while the load runs.
	sqsAPI, ec2API := sqs.NewFromConfig(s.AWSConfig()), ec2.NewFromConfig(s.AWSConfig())
	var mu sync.Mutex
	dlqMax, aliveMax := 0, 0
	watch, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for watch.Err() == nil {
			d := dlqDepth(watch, sqsAPI, s.DeadLetterQueueURL())
			a := countAlive(watch, ec2API, s.Config().NamePrefix)
			mu.Lock()
			dlqMax, aliveMax = max(dlqMax, d), max(aliveMax, a)
			mu.Unlock()
			select {
			case <-watch.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	before := s.AWSCalls()
	started := time.Now()
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: 20, Timeout: time.Duration(jobs/maxRunners+4) * (duration + 20*time.Second)})
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(started)
	calls := s.AWSCalls().Requests - before.Requests
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())
	t.Logf("%d jobs of %s with maxRunners %d in %s: %d AWS calls by the Lambdas (%.1f per job, %.0f per minute); at most %d instances alive at once",
		jobs, duration, maxRunners, elapsed.Round(time.Second), calls, float64(calls)/float64(jobs), float64(calls)/elapsed.Minutes(), aliveMax)

	if !sum.OK() || sum.Completed != jobs {
		t.Errorf("summary not OK: %d of %d completed, lost %v, killed %v, running %d", sum.Completed, jobs, sum.LostJobs, sum.KilledJobs, sum.InstancesRunning)
	}
	fake := s.GitHubFake()
	order := fake.Assignments()
	if len(order) != jobs {
		t.Errorf("GitHub started %d jobs; want each of %d exactly once: %v", len(order), jobs, order)
	}
	if !slices.IsSorted(order) {
		t.Errorf("jobs started in the order %v; want oldest first", order)
	}
	seen := map[int64]bool{}
	for _, id := range order {
		if seen[id] {
			t.Errorf("job %d started twice", id)
		}
		seen[id] = true
		if j, _ := fake.Job(id); j.Status != ghfake.JobCompleted || j.Conclusion != ghfake.ConclusionSuccess {
			t.Errorf("job %d ended %s/%s; want completed/success", id, j.Status, j.Conclusion)
		}
	}
	if dlqMax != 0 || dlqDepth(ctx, sqsAPI, s.DeadLetterQueueURL()) != 0 {
		t.Errorf("the dead-letter queue held up to %d messages; saturation must not reach it", dlqMax)
	}
	if sum.InstancesLaunched != jobs {
		t.Errorf("%d instances launched for %d jobs; want one each", sum.InstancesLaunched, jobs)
	}
	// Concurrent scaleup invocations may each take the last slot (the slot
	// index is eventually consistent); never more.
	if aliveMax > maxRunners+queue.ScaleUp.MaxConcurrency {
		t.Errorf("%d instances alive at once with maxRunners %d", aliveMax, maxRunners)
	}
}

// dlqDepth is the dead-letter queue's messages, visible or not (-1 when it
// cannot be read).
func dlqDepth(ctx context.Context, api *sqs.Client, url string) int {
	out, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return -1
	}
	n := 0
	for _, v := range out.Attributes {
		k, _ := strconv.Atoi(v)
		n += k
	}
	return n
}

// countAlive counts the deployment's instances not terminated (0 when EC2
// cannot be read).
func countAlive(ctx context.Context, api *ec2.Client, prefix string) int {
	out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{prefix}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
		},
		MaxResults: aws.Int32(1000),
	})
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range out.Reservations {
		n += len(r.Instances)
	}
	return n
}

// TestRateLimit: GitHub's secondary rate limit refuses every JIT config for
// a while (make test: 15 s, make e2e: JITR_RATE_LIMIT_WINDOW=60s). Jobs
// queued meanwhile wait in the table: no instance is launched while the
// limit lasts, so scaleup never has to terminate one, and every job is
// served after the reset.
func TestRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	window := envDuration(t, "JITR_RATE_LIMIT_WINDOW", 15*time.Second)
	const jobs = 10
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen:        "127.0.0.1:0",
		ConfigOverlay: []byte(shortTimeouts),
		SweepInterval: 20 * time.Second, JobDuration: time.Second, IdleTimeout: 20 * time.Second,
		VisibilityTimeout: 5 * time.Second, LogDir: filepath.Join(dir, "logs"), Stdout: &testkit.Buffer{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	fake := s.GitHubFake()
	fake.RateLimitFor(window, ghfake.RouteOrgJITConfig, ghfake.RouteRepoJITConfig)
	limitEnds := time.Now().Add(window)

	// Count the instances launched while the limit lasts.
	ec2API := ec2.NewFromConfig(s.AWSConfig())
	launchedDuring := make(chan int, 1)
	go func() {
		n := 0
		for time.Now().Before(limitEnds.Add(-time.Second)) && ctx.Err() == nil {
			n = max(n, countInstances(t, ec2API, s.Config().NamePrefix))
			time.Sleep(500 * time.Millisecond)
		}
		launchedDuring <- n
	}()
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: 5, Timeout: window + 3*time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())
	if n := <-launchedDuring; n != 0 {
		t.Errorf("%d instances launched while GitHub refused JIT configs; want 0", n)
	}
	if fake.RateLimited() == 0 {
		t.Fatal("no request met the rate limit: the test did not test it")
	}
	launched := countInstances(t, ec2API, s.Config().NamePrefix)
	if !sum.OK() || sum.Completed != jobs || launched != jobs || sum.RunnersOnline != jobs {
		t.Errorf("after the reset: %d of %d completed, %d instances launched, %d runners online, lost %v; want every job served by one instance, none undone",
			sum.Completed, jobs, launched, sum.RunnersOnline, sum.LostJobs)
	}
	t.Logf("rate limit of %s: %d JIT config requests refused, %d instances launched during it, %d after", window, fake.RateLimited(), 0, launched)
}

// TestLostDeliveries: 10 % of queued deliveries are refused at our endpoint
// (429 or 500, before the Lambda), which GitHub never retries, and the
// webhook secret is rotated in place halfway through. Every job is recovered
// through the App's delivery log (scaledown's redelivery, every 5 s here)
// and runs once; nothing is lost. make test: 40 jobs; make e2e:
// JITR_LOST_JOBS=300.
func TestLostDeliveries(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	jobs := envInt(t, "JITR_LOST_JOBS", 40)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen: "127.0.0.1:0", ConfigOverlay: []byte(shortTimeouts),
		SweepInterval: 20 * time.Second, RedeliveryInterval: 5 * time.Second, DeliveryFaultRate: 0.1,
		JobDuration: time.Second, IdleTimeout: 20 * time.Second, VisibilityTimeout: 5 * time.Second,
		LogDir: filepath.Join(dir, "logs"), Stdout: &testkit.Buffer{}, EventsFile: filepath.Join(dir, "events.jsonl"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	defer logFailures(t, filepath.Join(dir, "events.jsonl"))
	rate := 10.0
	rotated := make(chan error, 1)
	go func() {
		time.Sleep(time.Duration(float64(jobs)/rate/2*float64(time.Second)) + time.Second)
		rotated <- s.RotateWebhookSecret(ctx)
	}()
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: rate, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-rotated; err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())
	fake := s.GitHubFake()
	if !sum.OK() || sum.Completed != jobs {
		t.Errorf("%d of %d completed, lost %v", sum.Completed, jobs, sum.LostJobs)
	}
	if sum.QueuedDeliveriesFailed == 0 {
		t.Fatal("no queued delivery failed: the test did not test the recovery")
	}
	if sum.Recovery.N != sum.QueuedDeliveriesFailed {
		t.Errorf("%d jobs lost their queued delivery, %d recovered", sum.QueuedDeliveriesFailed, sum.Recovery.N)
	}
	// The rotation cost no delivery: the webhook read the new secret on
	// its first mismatch (a refused one would show as 401 here).
	for _, d := range fake.Deliveries() {
		if d.StatusCode == http.StatusUnauthorized {
			t.Errorf("delivery %s (%s of job %d) answered 401 around the secret rotation", d.GUID, d.Action, d.JobID)
		}
	}
	// The recovery redelivers every failed delivery, even of a job that
	// came back another way meanwhile (its in_progress delivery on another
	// job's runner enqueues it): it cannot know. It may still be catching
	// up when the last job completes (scaledown runs one invocation at a
	// time, sweeps included), so it gets a minute, twelve runs here.
	deadline := time.Now().Add(time.Minute)
	for fake.Redeliveries() < sum.QueuedDeliveriesFailed && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	if fake.Redeliveries() < sum.QueuedDeliveriesFailed {
		t.Errorf("%d redeliveries for %d failed queued deliveries a minute after the load", fake.Redeliveries(), sum.QueuedDeliveriesFailed)
	}
	t.Logf("%d of %d jobs lost their queued delivery; all recovered through the delivery log: p50 %.1fs, p99 %.1fs (%d redeliveries asked for, secret rotated mid-run)",
		sum.QueuedDeliveriesFailed, jobs, sum.Recovery.P50, sum.Recovery.P99, fake.Redeliveries())
}

// logFailures logs the failures the events file recorded, by reason.
func logFailures(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	reasons := map[string]int{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var ev sandbox.Event
		if json.Unmarshal(line, &ev) == nil && ev.Event == sandbox.EvFailed {
			reasons[ev.Reason]++
		}
	}
	t.Logf("failures by reason: %v", reasons)
}

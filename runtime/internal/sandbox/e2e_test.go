package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// shortTimeouts is the --config overlay of the end-to-end runs: scaledown
// acts within seconds instead of minutes, and a failed record comes back
// after a short visibility timeout.
const shortTimeouts = `{"scaleDown": {"completedGraceSeconds": 1, "bootTimeoutSeconds": 60, "orphanGraceSeconds": 30,
  "maxRuntimeSeconds": 600, "queuedTimeoutSeconds": 45}, "scaleUp": {"claimLeaseSeconds": 30}}`

// e2eJobs is the number of jobs: 50, or JITR_E2E_JOBS (make e2e: 300);
// JITR_E2E_RATE sets the rate (default 25 jobs/s).
func e2eJobs(t *testing.T) int {
	if v := os.Getenv("JITR_E2E_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("JITR_E2E_JOBS=%q", v)
		}
		return n
	}
	return 50
}

// sweepInterval: the long run sweeps every 10 s while jobs launch, so that
// sweeps race with launches; the short one (make test) sweeps every 30 s,
// mostly after its burst, and at the end.
func sweepInterval(jobs int) time.Duration {
	if jobs > 100 {
		return 10 * time.Second
	}
	return 30 * time.Second
}

// TestEndToEnd runs the whole control plane with a burst of jobs at a high
// rate, 30% duplicate deliveries and transient faults everywhere (GitHub 5xx
// and secondary rate limits, AWS 500s, spot capacity errors), under GitHub's
// real semantics: the fake gives each queued job to any idle runner whose
// labels match (so jobs run on each other's runners), its runner lists show
// a runner busy only after a lag, and it never redelivers a failed webhook.
// Every job gets exactly one instance launched, runs once on one runner and
// is cleaned up; no busy runner is killed, nothing is lost, nothing leaks,
// and no process logs a secret.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	jobs := e2eJobs(t)
	dir := t.TempDir()
	if keep := os.Getenv("JITR_E2E_LOGDIR"); keep != "" {
		dir = keep // kept after the test, for a look at the logs
	}
	stdout, logs := &testkit.Buffer{}, &testkit.Buffer{}
	eventsFile := filepath.Join(dir, "events.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen:            "127.0.0.1:0",
		ConfigOverlay:     []byte(shortTimeouts),
		SweepInterval:     sweepInterval(jobs),
		JobDuration:       time.Second,
		IdleTimeout:       20 * time.Second,
		VisibilityTimeout: 5 * time.Second,
		FaultRate:         0.1,
		EventsFile:        eventsFile,
		LogDir:            filepath.Join(dir, "logs"),
		Stdout:            stdout,
		Progress:          true,
		Logger:            slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Bursts of 25 queued jobs a second (and their duplicates) need
		// more concurrent webhook executions than the default 8, as Lambda
		// would give them; with 8, deliveries queue in the sandbox's front
		// and GitHub's 10 s timeout fails them.
		WebhookConcurrency: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()
	rate := 25.0
	if v := os.Getenv("JITR_E2E_RATE"); v != "" {
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate <= 0 {
			t.Fatalf("JITR_E2E_RATE=%q", v)
		}
	}
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: rate, DupRate: 0.3, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())

	// Independent checks against moto and the fake. One runner registered
	// per job, plus one per re-queue the job records count (a job re-queued
	// because it waited for a runner longer than the boot timeout, or its
	// instance died before serving any job); an instance that never
	// registered a runner was undone by scaleup after a GitHub call failed
	// (the JIT config is generated after the launch), so there are no more
	// of those than injected GitHub faults.
	api := ec2.NewFromConfig(s.AWSConfig())
	prefix := s.Config().NamePrefix
	requeues := sumRequeues(t, s)
	launched := countInstances(t, api, prefix)
	registered := sum.RunnersOnline
	if registered != jobs+requeues {
		t.Errorf("%d runners came online; want exactly %d (%d jobs, %d re-queues)", registered, jobs+requeues, jobs, requeues)
	}
	if undone := launched - registered; undone < 0 || undone > sum.GitHubInjectedFaults {
		t.Errorf("%d instances launched, %d registered a runner: %d undone with %d GitHub faults injected", launched, registered, undone, sum.GitHubInjectedFaults)
	}
	if requeues > jobs/20 {
		t.Errorf("%d re-queues for %d jobs; a swap must not cost a second launch", requeues, jobs)
	}
	if n := countInstances(t, api, prefix, "pending", "running", "stopping", "stopped", "shutting-down"); n != 0 {
		t.Errorf("%d instances still running after completion and a sweep; want 0", n)
	}
	fake := s.GitHubFake()
	if n := len(fake.Runners("")); n != 0 {
		t.Errorf("%d runners still registered; want 0", n)
	}
	// Each JIT config request made a runner (launched or undone), met an
	// injected fault, or was refused for the App's per-minute budget.
	if n, refused := fake.JITConfigRequests(), fake.InjectedFaults()+fake.JITRateLimited(); n < registered || n > launched+refused {
		t.Errorf("%d JIT config requests (%d injected faults, %d refused for the budget); want %d to %d",
			n, fake.InjectedFaults(), fake.JITRateLimited(), registered, launched+refused)
	}
	if sum.JobsLost != 0 || !sum.OK() {
		t.Errorf("summary not OK: lost %d %v, busy runners killed %d %v, running %d, registered %d, leaks %v", sum.JobsLost, sum.LostJobs,
			sum.BusyRunnersKilled, sum.KilledJobs, sum.InstancesRunning, sum.RunnersRegistered, sum.Leaks)
	}
	if n := fake.BusyRunnersLost(); n != 0 {
		t.Errorf("%d runners went away while running a job (jobs %v); want 0", n, fake.BusyLostJobs())
	}
	// Swaps are the normal case: a burst brings runners online together.
	if sum.Swaps == 0 {
		t.Errorf("no job ran on another job's runner; the fake's assignment is kinder than GitHub's")
	}
	// GitHub never redelivers by itself: a redelivery is the recovery
	// asking for one, and only for a delivery whose attempts all failed
	// (no fault is injected in front of the webhook here; one fails only
	// when the machine is too slow to answer within GitHub's 10 s).
	failed := map[string]bool{}
	for _, d := range fake.Deliveries() {
		if !d.OK() && !d.Redelivery {
			failed[d.GUID] = true
		}
	}
	redelivered := 0
	for _, d := range fake.Deliveries() {
		if !d.Redelivery {
			continue
		}
		redelivered++
		if !failed[d.GUID] {
			t.Errorf("delivery %s was redelivered, though no attempt of it had failed", d.GUID)
		}
	}
	if redelivered > 0 {
		t.Logf("%d deliveries timed out at GitHub's 10 s on this machine and were redelivered by the recovery", redelivered)
	}
	if sum.Duplicates == 0 || sum.Deliveries <= jobs {
		t.Errorf("deliveries %d, duplicates recognised %d; want some duplicates at a 30%% rate", sum.Deliveries, sum.Duplicates)
	}
	if sum.Retries == 0 {
		t.Errorf("no SQS redelivery happened; want some (processed records are left undeleted at the fault rate)")
	}
	// Every AWS request the Lambdas made is attributed to the function that
	// signed it (the per-function record the IAM sufficiency check reads),
	// and each function made some.
	var attributed int64
	for _, fn := range []string{"webhook", "scaleup", "scaledown", "runner"} {
		if len(sum.AWS.ByFunction[fn]) == 0 {
			t.Errorf("no AWS calls recorded for %s: %v", fn, sum.AWS.ByFunction)
		}
	}
	// Each instance's bootstrap named its own key (dynamodb:LeadingKeys is
	// its ARN), and each launch carried our tag, template and subnets.
	for fact, n := range sum.AWS.ByCondition["runner"] {
		if strings.Contains(fact, "LeadingKeys=") && !strings.HasSuffix(fact, "=own-instance") {
			t.Errorf("runner: %d calls with %s", n, fact)
		}
	}
	if sum.AWS.ByCondition["runner"]["dynamodb:DeleteItem dynamodb:LeadingKeys=own-instance"] == 0 {
		t.Errorf("no bootstrap hand-over recorded: %v", sum.AWS.ByCondition)
	}
	if sum.AWS.ByCondition["scaleup"]["ec2:RunInstances ec2:LaunchTemplate=launch-template"] == 0 {
		t.Errorf("no launch recorded with its template: %v", sum.AWS.ByCondition["scaleup"])
	}
	for _, ops := range sum.AWS.Calls {
		for _, n := range ops {
			attributed += n
		}
	}
	if attributed != sum.AWS.Requests {
		t.Errorf("%d of %d AWS requests attributed to a function", attributed, sum.AWS.Requests)
	}
	for fn, calls := range sum.AWS.ByResource {
		for call := range calls {
			if strings.Contains(call, " unknown:") {
				t.Errorf("%s called %s: not one of the deployment's resources", fn, call)
			}
		}
	}
	if len(sum.AWS.ByResource["scaleup"]) == 0 {
		t.Errorf("no resources recorded for scaleup: %v", sum.AWS.ByResource)
	}
	// make test hands the record to the IAM sufficiency check
	// (stack/policycheck), which compares it with the plan's policies.
	if out := os.Getenv("JITR_AWS_CALLS_OUT"); out != "" {
		writeCallRecord(t, sum.AWS, out)
	}
	if sum.AWS.Injected500 == 0 || sum.GitHubInjectedFaults == 0 {
		t.Errorf("no faults injected: AWS %+v, GitHub %d", sum.AWS, sum.GitHubInjectedFaults)
	}
	if sum.AWS.InjectedSpot > 0 && sum.SpotFallbacks == 0 {
		t.Errorf("%d spot capacity errors injected but no job fell back to on-demand", sum.AWS.InjectedSpot)
	}

	// Every job went through every transition, in order, with one runner.
	checkEvents(t, eventsFile, jobs)

	// Stop everything, then read every process's output.
	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	secrets := s.Secrets()
	if len(secrets) < jobs+2 {
		t.Fatalf("the sandbox knows %d secrets; want the App key, the webhook secret and %d JIT configs", len(secrets), jobs)
	}
	ready := func(line string) bool { return strings.HasPrefix(line, "ready ") }
	leaks := sandbox.FindLeaks("stdout", stdout.String(), secrets, ready)
	leaks = append(leaks, sandbox.FindLeaks("sandbox log", logs.String(), secrets, nil)...)
	files := 0
	_ = filepath.WalkDir(s.LogDir(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			return nil
		}
		files++
		leaks = append(leaks, sandbox.FindLeaks(filepath.Base(path), string(b), secrets, nil)...)
		return nil
	})
	if files < 4 {
		t.Errorf("%d log files (moto, webhook, scaleup, scaledown at least); want >= 4", files)
	}
	for _, l := range leaks {
		t.Errorf("secret in a log: %s line %d: %s", l.File, l.Line, l.What)
	}
}

func countInstances(t *testing.T, api *ec2.Client, prefix string, states ...string) int {
	t.Helper()
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{prefix}}}, MaxResults: aws.Int32(1000)}
	if len(states) > 0 {
		in.Filters = append(in.Filters, types.Filter{Name: aws.String("instance-state-name"), Values: states})
	}
	n := 0
	p := ec2.NewDescribeInstancesPaginator(api, in)
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Reservations {
			n += len(r.Instances)
		}
	}
	return n
}

// checkEvents reads the events file: every job has each of its
// transitions (received first; queued or duplicate, in progress and
// completed; launched and terminated for the instance launched for it) and
// ran on exactly one runner; every instance registered its runner once.
//
// Beyond "received first" the transitions are not ordered: GitHub gives up
// on a delivery after 10 s while the webhook still processes it, so the
// answer to a slow queued delivery may come after the job's in_progress,
// and the instance launched for a job may run (and end with) another job.
func checkEvents(t *testing.T, path string, jobs int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	// "queued" may be "duplicate" instead, when the first delivery's answer
	// was lost and a redelivery found the job enqueued.
	want := []string{sandbox.EvQueued, sandbox.EvLaunched, sandbox.EvInProgress, sandbox.EvCompleted, sandbox.EvTerminated}
	first := map[int64]map[string]time.Time{}
	ranOn := map[int64]map[string]bool{}
	registered := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev sandbox.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("events file line %q: %v", sc.Text(), err)
		}
		if ev.JobID == 0 || ev.Event == "" || ev.At.IsZero() {
			t.Fatalf("incomplete event %q", sc.Text())
		}
		if first[ev.JobID] == nil {
			first[ev.JobID], ranOn[ev.JobID] = map[string]time.Time{}, map[string]bool{}
		}
		if _, ok := first[ev.JobID][ev.Event]; !ok {
			first[ev.JobID][ev.Event] = ev.At
		}
		switch ev.Event {
		case sandbox.EvInProgress:
			ranOn[ev.JobID][ev.RunnerName] = true
		case sandbox.EvRegistered:
			registered[ev.InstanceID]++
		}
	}
	if len(first) != jobs {
		t.Errorf("events for %d jobs; want %d", len(first), jobs)
	}
	for id, evs := range first {
		received, ok := evs[sandbox.EvReceived]
		if !ok {
			t.Errorf("job %d: no %s event", id, sandbox.EvReceived)
			continue
		}
		for _, name := range want {
			at, ok := evs[name]
			if !ok && name == sandbox.EvQueued {
				at, ok = evs[sandbox.EvDuplicate]
			}
			switch {
			case !ok:
				t.Errorf("job %d: no %s event", id, name)
			case at.Before(received):
				t.Errorf("job %d: %s at %s before its first delivery at %s", id, name, at, received)
			}
		}
		if len(ranOn[id]) != 1 {
			t.Errorf("job %d ran on runners %v; want exactly one", id, ranOn[id])
		}
	}
	for inst, n := range registered {
		if n != 1 {
			t.Errorf("instance %s registered its runner %d times; want once", inst, n)
		}
	}
}

// With an external GitHub API the sandbox runs no fake and no agents: it
// launches for the deliveries it receives, using the given App and secret,
// and prints no secret in its ready line.
func TestExternalGitHub(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the sandbox")
	}
	gh := ghfake.NewForTest(t, ghfake.WithAppID(777))
	gh.AddInstallation(sandbox.InstallationID, sandbox.Owner)
	const secret = "external-webhook-secret"
	stdout := &testkit.Buffer{}
	ctx := context.Background()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen: "127.0.0.1:0", LogDir: t.TempDir(), Stdout: stdout, SweepInterval: time.Hour,
		GitHub: &sandbox.ExternalGitHub{APIURL: gh.URL(), AppID: gh.AppID(), PrivateKeyPEM: gh.PrivateKeyPEM(), WebhookSecret: secret},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if r := s.Ready(); r.WebhookSecret != "" || r.GitHub != strings.TrimSuffix(gh.URL(), "/") || s.GitHubFake() != nil {
		t.Errorf("ready %+v; want the external API and no secret", r)
	}
	if strings.Contains(stdout.String(), secret) {
		t.Error("the given webhook secret was printed")
	}
	if _, err := s.RunLoad(ctx, sandbox.Load{Jobs: 1}); err == nil {
		t.Error("RunLoad accepted without the built-in fake")
	}
	body := ghfake.WorkflowJobPayload(ghfake.WorkflowJobEvent{Action: "queued",
		Job: ghfake.Job{ID: 4711, Owner: sandbox.Owner, Repo: sandbox.Repo, Labels: sandbox.JobLabels}, InstallationID: sandbox.InstallationID})
	req, err := ghfake.NewWebhookRequest(ctx, s.Ready().Webhook, "workflow_job", []byte(secret), body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("delivery: %d", resp.StatusCode)
	}
	api := ec2.NewFromConfig(s.AWSConfig())
	deadline := time.Now().Add(30 * time.Second)
	for countInstances(t, api, s.Config().NamePrefix) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no instance launched within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for gh.JITConfigRequests() == 0 || len(gh.Runners("")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no runner registered at the external API within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sumRequeues adds up the re-queues the job records count (scaledown's
// rules 2, 6 and 7), read straight from the table.
func sumRequeues(t *testing.T, s *sandbox.Sandbox) int {
	t.Helper()
	n := 0
	p := dynamodb.NewScanPaginator(dynamodb.NewFromConfig(s.AWSConfig()), &dynamodb.ScanInput{
		TableName: aws.String(s.Config().TableName), ProjectionExpression: aws.String("requeues"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range page.Items {
			if v, ok := item["requeues"].(*dbtypes.AttributeValueMemberN); ok {
				k, err := strconv.Atoi(v.Value)
				if err != nil {
					t.Fatal(err)
				}
				n += k
			}
		}
	}
	return n
}

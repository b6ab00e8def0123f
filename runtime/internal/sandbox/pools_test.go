package sandbox_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// poolOverlay gives the default profile a hot pool of 3 and a stopped pool
// of 1 (the --config a user would pass), with the short timeouts, within
// maxRunners 5: the pools hold four slots, so a job alone that takes a
// pooled instance has its replacement launched into the fifth, and a burst
// larger than the limit drains both pools (the stopped one too), then
// waits for slots.
const poolOverlay = `{"maxRunners": 5, "scaleDown": {"completedGraceSeconds": 1, "bootTimeoutSeconds": 60, "orphanGraceSeconds": 30,
  "maxRuntimeSeconds": 600, "queuedTimeoutSeconds": 45}, "scaleUp": {"claimLeaseSeconds": 30},
  "profiles": {"default": {"pool": {"hot": {"size": 3}, "stopped": {"size": 1}, "maxAgeMinutes": 30}}}}`

// TestWarmPools runs the control plane with warm pools: the sweep fills
// them (the stopped one through its first boot and stop), jobs take pooled
// instances (hot ones, and the stopped one, started for its job and served
// from its second boot) before anything is launched for them, each pooled
// instance serves at most one job, the pools refill, and a new launch
// template version replaces every pooled instance (an age-out). Nothing is
// lost, no busy runner is killed, no secret is logged.
func TestWarmPools(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	dir := t.TempDir()
	stdout, logs := &testkit.Buffer{}, &testkit.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen:        "127.0.0.1:0",
		ConfigOverlay: []byte(poolOverlay),
		SweepInterval: 2 * time.Second,
		JobDuration:   time.Second,
		IdleTimeout:   20 * time.Second,
		EventsFile:    filepath.Join(dir, "events.jsonl"),
		LogDir:        filepath.Join(dir, "logs"),
		Stdout:        stdout,
		Logger:        slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	store := state.NewStore(dynamodb.NewFromConfig(s.AWSConfig()), s.Config().TableName, time.Hour, nil)
	ready := func(kind string) []*state.PoolInstance {
		items, err := store.Pooled(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		var out []*state.PoolInstance
		for _, p := range items {
			if p.Kind == kind && p.State == state.PoolReady {
				out = append(out, p)
			}
		}
		return out
	}
	waitFull := func(what string, within time.Duration, extra func([]*state.PoolInstance) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			hot, stopped := ready(jitstore.PoolHot), ready(jitstore.PoolStopped)
			if len(hot) == 3 && len(stopped) == 1 && (extra == nil || extra(append(hot, stopped...))) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s: pools not full within %s: %d hot, %d stopped ready", what, within, len(hot), len(stopped))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	took := waitFull("first fill", 90*time.Second, nil)
	t.Logf("pools filled (the stopped one booted, prepared and stopped) in %s", took)
	first := map[string]bool{}

	// One job alone: it takes a hot instance, and with a slot free (the
	// pools hold four of five) its invocation launches a replacement.
	one, err := s.RunLoad(ctx, sandbox.Load{Jobs: 1, Rate: 1, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !one.OK() || one.PoolHits != 1 || one.AWS.JobLaunchRequests != 0 || one.AWS.Calls["scaleup"]["ec2.DescribeLaunchTemplates"] == 0 {
		t.Fatalf("one job: ok %v, pool hits %d, CreateFleet for jobs %d, scaleup calls %v; want a hit, no launch for the job, a replacement",
			one.OK(), one.PoolHits, one.AWS.JobLaunchRequests, one.AWS.Calls["scaleup"])
	}
	waitFull("replacement", 60*time.Second, nil)
	for _, p := range append(ready(jitstore.PoolHot), ready(jitstore.PoolStopped)...) {
		first[p.InstanceID] = true
	}

	// A burst of eight within maxRunners 5: jobs take the hot instances
	// first, then the stopped one (started for its job: its second boot);
	// replacements need a free slot and none while jobs wait, so the pools
	// drain, the jobs beyond them wait for slots and are launched for (or
	// take a replacement) as the first ones end.
	const burst = 8
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: burst, Rate: 50, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())
	if !sum.OK() || sum.Completed != burst {
		t.Fatalf("summary not OK: %d of %d completed, lost %v, busy killed %v, running %d, registered %d, leaks %v",
			sum.Completed, burst, sum.LostJobs, sum.KilledJobs, sum.InstancesRunning, sum.RunnersRegistered, sum.Leaks)
	}
	// Each job one instance: a pooled one, or one launched for it.
	if got := sum.PoolHits + int(sum.AWS.JobLaunchRequests); got != burst || sum.PoolHits < 4 {
		t.Errorf("%d pool hits + %d launches for jobs; want %d in all, at least the 4 pooled instances ready before the burst",
			sum.PoolHits, sum.AWS.JobLaunchRequests, burst)
	}
	for id := range first {
		if p, ok, err := store.GetPooled(ctx, id); err != nil || !ok || p.State != state.PoolTaken {
			t.Errorf("pooled instance %s not taken by a job during the load: %+v (err %v)", id, p, err)
		}
	}
	if sum.AWS.Calls["scaleup"]["ec2.StartInstances"] == 0 {
		t.Errorf("no stopped pooled instance was started: %v", sum.AWS.Calls["scaleup"])
	}
	// One runner per job: each instance, pooled or not, served one job.
	if sum.RunnersOnline != burst {
		t.Errorf("%d runners online for %d jobs; want one per job", sum.RunnersOnline, burst)
	}

	// The pools refill after the load (replacements at each hit, the sweep
	// for the rest).
	refill := waitFull("refill", 60*time.Second, nil)
	t.Logf("pools full again %s after the load", refill)

	// A new launch template version (a new runner version or bootstrap):
	// every pooled instance is replaced by one of the new version.
	api := ec2.NewFromConfig(s.AWSConfig())
	lt := s.Config().Launch.LaunchTemplateID
	out, err := api.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateId: aws.String(lt), SourceVersion: aws.String("$Latest"), VersionDescription: aws.String("new runner version"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{},
	})
	if err != nil {
		t.Fatal(err)
	}
	version := aws.ToInt64(out.LaunchTemplateVersion.VersionNumber)
	old := map[string]bool{}
	for _, p := range append(ready(jitstore.PoolHot), ready(jitstore.PoolStopped)...) {
		old[p.InstanceID] = true
	}
	replaced := waitFull("age-out", 90*time.Second, func(ps []*state.PoolInstance) bool {
		for _, p := range ps {
			if p.TemplateVersion != version || old[p.InstanceID] {
				return false
			}
		}
		return true
	})
	t.Logf("pools replaced for launch template version %d in %s", version, replaced)
	for id := range old {
		if alive, err := instanceAlive(ctx, api, id); err != nil || alive {
			t.Errorf("outdated pooled instance %s still alive (err %v)", id, err)
		}
	}

	final := s.AWSCalls()
	for _, fn := range []string{"scaleup", "scaledown"} {
		for fact, n := range final.ByCondition[fn] {
			if strings.Contains(fact, "managed-by=") && !strings.HasSuffix(fact, "=name-prefix") {
				t.Errorf("%s: %d calls with %s", fn, n, fact)
			}
		}
	}
	if final.ByCondition["scaleup"]["ec2:CreateTags@existing aws:ResourceTag/jitr:managed-by=name-prefix"] == 0 {
		t.Errorf("no retag of a taken pooled instance recorded: %v", final.ByCondition["scaleup"])
	}
	// make test hands this record to the IAM sufficiency check too: the
	// pool's calls are not in the end-to-end run's.
	if out := os.Getenv("JITR_AWS_CALLS_OUT"); out != "" {
		writeCallRecord(t, final, PoolsRecord(out))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	leaks := sandbox.FindLeaks("sandbox log", logs.String(), s.Secrets(), nil)
	for _, l := range leaks {
		t.Errorf("secret in a log: %s line %d: %s", l.File, l.Line, l.What)
	}
}

// PoolsRecord is where TestWarmPools writes its AWS call record beside the
// end-to-end run's (stack/policycheck reads both).
func PoolsRecord(out string) string { return strings.TrimSuffix(out, ".json") + "-pools.json" }

func instanceAlive(ctx context.Context, api *ec2.Client, id string) (bool, error) {
	out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return false, err
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			switch in.State.Name {
			case "pending", "running", "stopping", "stopped":
				return true, nil
			}
		}
	}
	return false, nil
}

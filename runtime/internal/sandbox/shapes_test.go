package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// shapesOverlay bounds the shapes a job may ask for, as a platform team
// would: at most 16 vCPUs and 64 GiB, no GPU.
const shapesOverlay = `{"maxRunners": 20, "shapes": {"maxCpu": 16, "maxRamGiB": 64, "maxDiskGiB": 200, "gpu": false}}`

// shapeWant is what a job's shape labels ask of its instance, written out
// by hand for each label set (not parsed by the code under test).
type shapeWant struct {
	labels         []string
	cpuMin, cpuMax int32 // 0: any
	ramMin, ramMax int64 // MiB; 0: any
	families       []string
	capacity       string // the first CreateFleet's capacity type
	volumeGiB      int32
	shape          bool // types chosen from the catalogue (>= 6 candidates)
}

var shapeJobs = []shapeWant{
	{labels: []string{"self-hosted", "cpu=4", "ram=16"}, cpuMin: 4, cpuMax: 4, ramMin: 16384, ramMax: 16384,
		capacity: "spot", volumeGiB: 30, shape: true},
	{labels: []string{"self-hosted", "linux", "cpu=2-8", "family=c7i+m7i", "spot=false"}, cpuMin: 2, cpuMax: 8,
		families: []string{"c7i", "m7i"}, capacity: "on-demand", volumeGiB: 30, shape: true},
	{labels: []string{"self-hosted", "x64", "ram=32+", "disk=60"}, ramMin: 32768, ramMax: 65536, cpuMax: 16,
		capacity: "spot", volumeGiB: 60, shape: true},
	{labels: []string{"self-hosted", "linux", "x64"}, capacity: "spot", volumeGiB: 30},
}

// TestShapes runs jobs of mixed machine shapes through the whole control
// plane: each job's instance has the vCPUs and memory its labels ask for,
// within the deployment's bounds; each shape's CreateFleet offered at
// least 6 instance types; jobs beyond the bounds, or malformed, are not
// served and their records say why.
func TestShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	dir := t.TempDir()
	stdout, logs := &testkit.Buffer{}, &testkit.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := sandbox.Start(ctx, sandbox.Options{
		Listen:        "127.0.0.1:0",
		ConfigOverlay: []byte(shapesOverlay),
		SweepInterval: 5 * time.Second,
		JobDuration:   time.Second,
		EventsFile:    filepath.Join(dir, "events.jsonl"),
		LogDir:        filepath.Join(dir, "logs"),
		Stdout:        stdout,
		Logger:        slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	// A sweep first, as the scheduler's first one would: it stores the
	// instance-type catalogue, which every scaleup container then reads
	// instead of walking EC2.
	if _, err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.AWSCalls()
	var labelSets [][]string
	for _, w := range shapeJobs {
		labelSets = append(labelSets, w.labels)
	}
	const jobs = 12
	sum, err := s.RunLoad(ctx, sandbox.Load{Jobs: jobs, Rate: 4, Labels: labelSets, Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	sum.Print(&table)
	t.Logf("\n%s", table.String())
	if !sum.OK() || sum.Completed != jobs {
		t.Fatalf("summary not OK: %d of %d completed, lost %v, busy killed %v, leaks %v",
			sum.Completed, jobs, sum.LostJobs, sum.KilledJobs, sum.Leaks)
	}

	// Each job's instance, read back from EC2 (moto), against what its
	// labels asked for.
	api := ec2.NewFromConfig(s.AWSConfig())
	store := state.NewStore(dynamodb.NewFromConfig(s.AWSConfig()), s.Config().TableName, time.Hour, nil)
	fleets := s.FleetRequests()
	seen := map[int]int{}
	for _, fr := range fleets {
		id, err := strconv.ParseInt(fr.JobID, 10, 64)
		if err != nil {
			t.Fatalf("CreateFleet without a job id tag: %+v", fr)
		}
		j, ok, err := store.Get(ctx, id)
		if err != nil || !ok {
			t.Fatalf("job %d: %v", id, err)
		}
		k := slices.IndexFunc(shapeJobs, func(w shapeWant) bool { return slices.Equal(w.labels, j.Labels) })
		if k < 0 {
			t.Fatalf("job %d has labels %v, none of the load's", id, j.Labels)
		}
		w := shapeJobs[k]
		seen[k]++
		if w.shape && len(fr.Types) < 6 {
			t.Errorf("job %d (%v): CreateFleet offered %d types %v; want at least 6", id, w.labels, len(fr.Types), fr.Types)
		}
		if !w.shape && len(fr.Types) != 1 {
			t.Errorf("job %d (%v): CreateFleet offered %v; want the profile's one type", id, w.labels, fr.Types)
		}
		if fr.Capacity != w.capacity {
			t.Errorf("job %d (%v): CreateFleet for %s; want %s", id, w.labels, fr.Capacity, w.capacity)
		}
		for _, typ := range append(fr.Types, j.InstanceType) {
			checkShapeType(t, ctx, api, id, typ, w)
		}
		if w.shape && !slices.Equal(j.CandidateTypes, fr.Types) {
			t.Errorf("job %d: record's candidate types %v; CreateFleet offered %v", id, j.CandidateTypes, fr.Types)
		}
		if fr.VolumeGiB != int(w.volumeGiB) {
			t.Errorf("job %d (%v): CreateFleet maps a %d GiB root volume; want %d", id, w.labels, fr.VolumeGiB, w.volumeGiB)
		}
	}
	for k, w := range shapeJobs {
		if seen[k] == 0 {
			t.Errorf("no CreateFleet for the jobs labelled %v", w.labels)
		}
	}

	// Jobs not served for their shape: the webhook refuses malformed and
	// out-of-bounds ones, scaleup one that no offered type fits.
	fake := s.GitHubFake()
	refused := map[int64]string{}
	for labels, why := range map[string]string{
		"self-hosted,cpu=32":          "shapes.maxCpu (16 vCPUs)",
		"self-hosted,gpu=1":           "shapes.gpu is false",
		"self-hosted,disk=500":        "shapes.maxDiskGiB (200 GiB)",
		"self-hosted,cpu=four":        `shape label "cpu=four"`,
		"self-hosted,cpu=$(reboot)":   `shape label "cpu=$(reboot)"`,
		"self-hosted,cpu=3,family=c7": "no instance type offered",
	} {
		id := time.Now().UnixNano()/1000 + int64(len(refused))
		if _, d := fake.QueueJob(ctx, ghfake.Job{ID: id, Owner: sandbox.Owner, Repo: sandbox.Repo, Labels: strings.Split(labels, ",")}); !d.OK() {
			t.Fatalf("delivery of %s: %s", labels, d.Status)
		}
		refused[id] = why
	}
	deadline := time.Now().Add(30 * time.Second)
	for id, why := range refused {
		for {
			j, ok, err := store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if ok && j.SkipReason != "" {
				if !strings.Contains(j.SkipReason, why) || j.InstanceID != "" {
					t.Errorf("job %d (%v): skip reason %q, instance %q; want %q and no instance", id, j.Labels, j.SkipReason, j.InstanceID, why)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %d: no skip reason recorded within 30 s", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := len(s.FleetRequests()); n != len(fleets) {
		t.Errorf("%d CreateFleet calls for refused jobs", n-len(fleets))
	}

	final := s.AWSCalls()
	if before.Calls["scaledown"]["ec2.DescribeInstanceTypes"] == 0 || before.Calls["scaledown"]["ec2.DescribeInstanceTypeOfferings"] == 0 {
		t.Errorf("the sweep did not read the catalogue: %v", before.Calls["scaledown"])
	}
	for _, op := range []string{"ec2.DescribeInstanceTypes", "ec2.DescribeInstanceTypeOfferings"} {
		if n := final.Calls["scaleup"][op] - before.Calls["scaleup"][op]; n != 0 {
			t.Errorf("scaleup made %d %s calls; its containers should read the catalogue the sweep stored", n, op)
		}
	}
	// make test hands this record to the IAM sufficiency check too: the
	// catalogue's calls are not in the other runs'.
	if out := os.Getenv("JITR_AWS_CALLS_OUT"); out != "" {
		writeCallRecord(t, final, strings.TrimSuffix(out, ".json")+"-shapes.json")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, l := range sandbox.FindLeaks("sandbox log", logs.String(), s.Secrets(), nil) {
		t.Errorf("secret in a log: %s line %d: %s", l.File, l.Line, l.What)
	}
}

// checkShapeType reads typ from EC2's catalogue and checks it against w.
func checkShapeType(t *testing.T, ctx context.Context, api *ec2.Client, id int64, typ string, w shapeWant) {
	t.Helper()
	out, err := api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceType(typ)}})
	if err != nil || len(out.InstanceTypes) != 1 {
		t.Fatalf("describe %s: %v", typ, err)
	}
	info := out.InstanceTypes[0]
	cpu, ram := aws.ToInt32(info.VCpuInfo.DefaultVCpus), aws.ToInt64(info.MemoryInfo.SizeInMiB)
	bad := func(what string) {
		t.Errorf("job %d (%v): %s (%d vCPUs, %d MiB): %s", id, w.labels, typ, cpu, ram, what)
	}
	if w.cpuMin > 0 && cpu < w.cpuMin || w.cpuMax > 0 && cpu > w.cpuMax {
		bad("vCPUs outside what the labels ask")
	}
	if w.ramMin > 0 && ram < w.ramMin || w.ramMax > 0 && ram > w.ramMax {
		bad("memory outside what the labels ask")
	}
	if !w.shape {
		return
	}
	// The deployment's bounds: 16 vCPUs, 64 GiB, no GPU, x86_64.
	if cpu > 16 || ram > 64*1024 {
		bad("beyond shapes.maxCpu 16 / maxRamGiB 64")
	}
	if info.GpuInfo != nil && len(info.GpuInfo.Gpus) > 0 {
		bad("has a GPU; shapes.gpu is false")
	}
	if !slices.Contains(info.ProcessorInfo.SupportedArchitectures, ec2types.ArchitectureTypeX8664) {
		bad("not x86_64")
	}
	if len(w.families) > 0 && !slices.ContainsFunc(w.families, func(f string) bool { return strings.HasPrefix(typ, f) }) {
		bad("not of the families the labels name")
	}
}

// writeCallRecord writes a run's AWS call record where stack/policycheck's
// sufficiency check reads it.
func writeCallRecord(t *testing.T, calls sandbox.FaultStats, path string) {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"operations": calls.ByFunction, "resources": calls.ByResource, "conditions": calls.ByCondition}, "", " ")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Errorf("write the AWS call record: %v", err)
	}
}

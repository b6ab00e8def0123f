package scaleup_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// withMetrics gives the harness's handler a metrics recorder writing to
// the returned buffer (EMF lines).
func withMetrics(h *harness) *testkit.Buffer {
	buf := &testkit.Buffer{}
	h.handler = h.p.ScaleUp(h.p.ScaleUpDeps(), scaleup.WithVisibility(h.retries), scaleup.WithMetrics(metrics.New(buf, "scaleup", h.cfg.NamePrefix)))
	return buf
}

// describeType reads one instance type from moto's catalogue directly, not
// through the launcher's catalogue code, so the checks below do not share
// code with what chose the type.
func describeType(t *testing.T, api *ec2.Client, name string) types.InstanceTypeInfo {
	t.Helper()
	out, err := api.DescribeInstanceTypes(context.Background(), &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(name)}})
	if err != nil || len(out.InstanceTypes) != 1 {
		t.Fatalf("describe %s: %v", name, err)
	}
	return out.InstanceTypes[0]
}

func overrideTypes(in *ec2.CreateFleetInput) []string {
	var out []string
	for _, c := range in.LaunchTemplateConfigs {
		for _, o := range c.Overrides {
			if !slices.Contains(out, string(o.InstanceType)) {
				out = append(out, string(o.InstanceType))
			}
		}
	}
	return out
}

// A job asking for cpu=4, ram=16, disk=100 and on-demand gets one instance
// of a type with exactly 4 vCPUs and 16 GiB, launched on demand over many
// candidate types with a 100 GiB root volume; the record names the
// candidates.
func TestShapeJobLaunchesAFittingType(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeRepo)
	emf := withMetrics(h)
	id := h.p.NextJobID()
	msg := h.enqueue(id, "self-hosted", "cpu=4", "ram=16", "disk=100", "spot=false")
	if failed := h.run(h.batch(msg)); len(failed) > 0 {
		t.Fatalf("failed records %v; logs:\n%s", failed, h.logs)
	}
	j := h.job(id)
	if j.Phase != state.PhaseLaunched || j.CapacityType != "on-demand" {
		t.Fatalf("job %+v; want launched on demand", j)
	}
	if len(j.CandidateTypes) < 6 || !slices.Contains(j.CandidateTypes, j.InstanceType) {
		t.Fatalf("candidates %v (launched %s); want at least 6, the launched one among them", j.CandidateTypes, j.InstanceType)
	}
	api := ec2.NewFromConfig(h.aws.Config)
	for _, name := range append([]string{j.InstanceType}, j.CandidateTypes...) {
		info := describeType(t, api, name)
		if v, m := aws.ToInt32(info.VCpuInfo.DefaultVCpus), aws.ToInt64(info.MemoryInfo.SizeInMiB); v != 4 || m != 16384 {
			t.Errorf("%s has %d vCPUs and %d MiB; the job asked for 4 and 16 GiB", name, v, m)
		}
		if info.GpuInfo != nil && len(info.GpuInfo.Gpus) > 0 {
			t.Errorf("%s has a GPU; the job asked for none", name)
		}
		if !slices.Contains(info.ProcessorInfo.SupportedArchitectures, types.ArchitectureTypeX8664) {
			t.Errorf("%s is not x86_64", name)
		}
	}
	ins := h.ec2.FleetInputs()
	if len(ins) != 1 {
		t.Fatalf("%d CreateFleet calls; want 1", len(ins))
	}
	in := ins[0]
	if in.TargetCapacitySpecification.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeOnDemand {
		t.Errorf("capacity %s; spot=false asks for on-demand", in.TargetCapacitySpecification.DefaultTargetCapacityType)
	}
	if got := overrideTypes(in); len(got) < 6 {
		t.Errorf("CreateFleet offered %v; want at least 6 types", got)
	}
	for _, o := range in.LaunchTemplateConfigs[0].Overrides {
		if len(o.BlockDeviceMappings) != 1 || aws.ToInt32(o.BlockDeviceMappings[0].Ebs.VolumeSize) != 100 {
			t.Fatalf("override %s maps %+v; want the 100 GiB root volume disk=100 asked for", o.InstanceType, o.BlockDeviceMappings)
		}
	}
	if !strings.Contains(h.logs.String(), `"candidate_types"`) {
		t.Errorf("no candidate types in the logs")
	}
	if m := emf.String(); !strings.Contains(m, `"ShapeLaunches"`) || !strings.Contains(m, `"InstanceType":"`+j.InstanceType+`"`) ||
		!strings.Contains(m, `"ShapeCandidates"`) {
		t.Errorf("metrics %s; want ShapeLaunches for %s and ShapeCandidates", m, j.InstanceType)
	}
}

// The platform team's bounds narrow what a shape may choose.
func TestShapeBoundsNarrowTheTypes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeRepo, func(c *config.Config) {
		c.Shapes = config.Shapes{MaxCPU: 8, Families: []string{"c7i", "m7i"}}
	})
	id := h.p.NextJobID()
	if failed := h.run(h.batch(h.enqueue(id, "self-hosted", "cpu=2+"))); len(failed) > 0 {
		t.Fatalf("failed records %v; logs:\n%s", failed, h.logs)
	}
	j := h.job(id)
	if j.Phase != state.PhaseLaunched || len(j.CandidateTypes) < 6 {
		t.Fatalf("job %+v; want launched over at least 6 candidates", j)
	}
	api := ec2.NewFromConfig(h.aws.Config)
	for _, name := range j.CandidateTypes {
		info := describeType(t, api, name)
		v := aws.ToInt32(info.VCpuInfo.DefaultVCpus)
		if v < 2 || v > 8 || !strings.HasPrefix(name, "c7i") && !strings.HasPrefix(name, "m7i") {
			t.Errorf("candidate %s (%d vCPUs) is outside cpu=2+ within maxCpu 8 and families c7i, m7i", name, v)
		}
	}
	if spot := h.ec2.FleetInputs()[0].TargetCapacitySpecification.DefaultTargetCapacityType; spot != types.DefaultTargetCapacityTypeSpot {
		t.Errorf("capacity %s; the default profile asks for spot first", spot)
	}
}

// A shape no offered type has: the job is skipped, the record says why,
// and nothing is launched or claimed.
func TestShapeWithoutAFittingTypeIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, config.ScopeRepo)
	emf := withMetrics(h)
	id := h.p.NextJobID()
	if failed := h.run(h.batch(h.enqueue(id, "self-hosted", "cpu=3", "family=c7i"))); len(failed) > 0 {
		t.Fatalf("failed records %v", failed)
	}
	j := h.job(id)
	if j.Phase != state.PhaseSkipped || !strings.Contains(j.SkipReason, "no instance type") || !strings.Contains(j.SkipReason, "cpu=3 family=c7i") {
		t.Fatalf("job phase %s, reason %q; want skipped, saying no type has cpu=3 family=c7i", j.Phase, j.SkipReason)
	}
	if n := len(h.ec2.FleetInputs()); n != 0 {
		t.Fatalf("%d CreateFleet calls for a job no type serves", n)
	}
	if m := emf.String(); !strings.Contains(m, `"ShapeRefusals"`) || !strings.Contains(m, `"Reason":"no_type"`) {
		t.Errorf("metrics %s; want ShapeRefusals for no_type", m)
	}
}

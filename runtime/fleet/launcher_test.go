package fleet_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

func TestLaunchSpot(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	req := n.request(101)

	res, err := l.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.InstanceID == "" || res.CapacityType != fleet.CapacityTypeSpot || res.SpotFallback {
		t.Fatalf("got %+v; want a spot instance without fallback", res)
	}
	if res.InstanceType != "t3.large" || res.SubnetID != n.subnets[0] || res.AvailabilityZone != n.zones[0] {
		t.Errorf("got %s in %s (%s); want t3.large in %s (%s), moto's pick", res.InstanceType, res.AvailabilityZone, res.SubnetID, n.zones[0], n.subnets[0])
	}
	if len(res.Errors) != 0 {
		t.Errorf("got errors %v; want none", res.Errors)
	}

	inputs := api.FleetInputs()
	if len(inputs) != 1 {
		t.Fatalf("got %d CreateFleet calls; want 1", len(inputs))
	}
	in := inputs[0]
	if in.Type != types.FleetTypeInstant {
		t.Errorf("got fleet type %q; want instant", in.Type)
	}
	tc := in.TargetCapacitySpecification
	if aws.ToInt32(tc.TotalTargetCapacity) != 1 || tc.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeSpot {
		t.Errorf("got target capacity %d %q; want 1 spot", aws.ToInt32(tc.TotalTargetCapacity), tc.DefaultTargetCapacityType)
	}
	if in.SpotOptions.AllocationStrategy != types.SpotAllocationStrategyPriceCapacityOptimized {
		t.Errorf("got spot allocation %q; want price-capacity-optimized", in.SpotOptions.AllocationStrategy)
	}
	if in.OnDemandOptions.AllocationStrategy != types.FleetOnDemandAllocationStrategyLowestPrice {
		t.Errorf("got on-demand allocation %q; want lowest-price", in.OnDemandOptions.AllocationStrategy)
	}
	if len(in.LaunchTemplateConfigs) != 1 {
		t.Fatalf("got %d launch template configs; want 1", len(in.LaunchTemplateConfigs))
	}
	spec := in.LaunchTemplateConfigs[0].LaunchTemplateSpecification
	if aws.ToString(spec.LaunchTemplateId) != n.lt || aws.ToString(spec.Version) != "$Latest" {
		t.Errorf("got launch template %s@%s; want %s@$Latest", aws.ToString(spec.LaunchTemplateId), aws.ToString(spec.Version), n.lt)
	}
	want := []offering{
		{"t3.large", n.subnets[0], n.zones[0]}, {"t3.large", n.subnets[1], n.zones[1]},
		{"m5.large", n.subnets[0], n.zones[0]}, {"m5.large", n.subnets[1], n.zones[1]},
	}
	if got := overridesOf(in); !reflect.DeepEqual(got, want) {
		t.Errorf("got overrides %v; want %v", got, want)
	}
	for _, o := range in.LaunchTemplateConfigs[0].Overrides {
		if aws.ToString(o.ImageId) != n.image {
			t.Errorf("override %s: got image %q; want %q", o.InstanceType, aws.ToString(o.ImageId), n.image)
		}
		if len(o.BlockDeviceMappings) != 1 {
			t.Fatalf("override %s: got %d block device mappings; want 1", o.InstanceType, len(o.BlockDeviceMappings))
		}
		bd := o.BlockDeviceMappings[0]
		if aws.ToString(bd.DeviceName) != "/dev/xvda" || aws.ToInt32(bd.Ebs.VolumeSize) != 30 || bd.Ebs.VolumeType != types.VolumeTypeGp3 ||
			!aws.ToBool(bd.Ebs.Encrypted) || !aws.ToBool(bd.Ebs.DeleteOnTermination) {
			t.Errorf("override %s: got root volume %s %dGiB %s encrypted=%v delete=%v; want /dev/xvda 30GiB gp3 encrypted, deleted on termination",
				o.InstanceType, aws.ToString(bd.DeviceName), aws.ToInt32(bd.Ebs.VolumeSize), bd.Ebs.VolumeType, aws.ToBool(bd.Ebs.Encrypted), aws.ToBool(bd.Ebs.DeleteOnTermination))
		}
	}
	var tagged []types.ResourceType
	for _, ts := range in.TagSpecifications {
		tagged = append(tagged, ts.ResourceType)
		got := map[string]string{}
		for _, tag := range ts.Tags {
			got[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
		}
		if !reflect.DeepEqual(got, req.Tags) {
			t.Errorf("%s tags: got %v; want %v", ts.ResourceType, got, req.Tags)
		}
	}
	if !reflect.DeepEqual(tagged, []types.ResourceType{types.ResourceTypeInstance, types.ResourceTypeVolume}) {
		t.Errorf("got tag specifications for %v; want instance and volume", tagged)
	}

	// What moto made of it.
	inst := n.instance(t, res.InstanceID)
	if inst.InstanceLifecycle != types.InstanceLifecycleTypeSpot {
		t.Errorf("moto: got lifecycle %q; want spot", inst.InstanceLifecycle)
	}
	if aws.ToString(inst.SubnetId) != res.SubnetID || string(inst.InstanceType) != res.InstanceType {
		t.Errorf("moto: got %s in %s; want %s in %s", inst.InstanceType, aws.ToString(inst.SubnetId), res.InstanceType, res.SubnetID)
	}
	if got := n.tags(t, res.InstanceID); !reflect.DeepEqual(got, req.Tags) {
		t.Errorf("moto: got instance tags %v; want %v", got, req.Tags)
	}
}

func TestLaunchSpotCapacityFallsBackToOnDemand(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	api.Answer(func(_ int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		if capacityType(in) == fleet.CapacityTypeSpot {
			return testenv.FleetErrors(in, "InsufficientInstanceCapacity"), nil
		}
		return nil, nil
	})

	res, err := l.Launch(context.Background(), n.request(102))
	if err != nil {
		t.Fatal(err)
	}
	if !res.SpotFallback || res.CapacityType != fleet.CapacityTypeOnDemand || res.InstanceID == "" {
		t.Fatalf("got %+v; want an on-demand instance after spot fallback", res)
	}
	inputs := api.FleetInputs()
	if len(inputs) != 2 || capacityType(inputs[0]) != "spot" || capacityType(inputs[1]) != "on-demand" {
		t.Fatalf("got %d CreateFleet calls; want spot then on-demand", len(inputs))
	}
	if !reflect.DeepEqual(overridesOf(inputs[1]), overridesOf(inputs[0])) {
		t.Errorf("on-demand overrides %v; want the spot request's %v", overridesOf(inputs[1]), overridesOf(inputs[0]))
	}
	if len(res.Errors) != 4 {
		t.Errorf("got %d errors in the result; want the 4 spot override errors", len(res.Errors))
	}
	for _, e := range res.Errors {
		if e.Code != "InsufficientInstanceCapacity" || e.CapacityType != "spot" || e.InstanceType == "" || e.AvailabilityZone == "" || e.SubnetID == "" {
			t.Errorf("got error %+v; want a spot ICE naming its override", e)
		}
	}
	for _, o := range overridesOf(inputs[0]) {
		if !l.IsUnavailable("spot", o.instanceType, o.zone) {
			t.Errorf("spot %s in %s not cached as unavailable", o.instanceType, o.zone)
		}
		if l.IsUnavailable("on-demand", o.instanceType, o.zone) {
			t.Errorf("on-demand %s in %s cached as unavailable; only spot failed", o.instanceType, o.zone)
		}
	}
	if inst := n.instance(t, res.InstanceID); inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		t.Errorf("moto: instance is spot; want on-demand")
	}

	// The next launch goes straight to on-demand: every spot offering is cached.
	res, err = l.Launch(context.Background(), n.request(103))
	if err != nil {
		t.Fatal(err)
	}
	if got := api.FleetInputs(); len(got) != 3 || capacityType(got[2]) != "on-demand" {
		t.Errorf("got %d CreateFleet calls, last %s; want one more, on-demand", len(got), capacityType(got[len(got)-1]))
	}
	if !res.SpotFallback || res.CapacityType != "on-demand" {
		t.Errorf("got %+v; want on-demand with SpotFallback", res)
	}
}

func TestLaunchReadsOverrideErrorsAlongsideInstance(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	// EC2 reports the pools it tried and could not use next to the instance it
	// launched from another pool.
	api.Edit(func(in *ec2.CreateFleetInput, out *ec2.CreateFleetOutput) {
		for _, o := range in.LaunchTemplateConfigs[0].Overrides {
			if o.InstanceType == "m5.large" && aws.ToString(o.SubnetId) == n.subnets[1] {
				out.Errors = append(out.Errors, testenv.FleetError(in, o, "InsufficientInstanceCapacity"))
			}
		}
	})

	res, err := l.Launch(context.Background(), n.request(104))
	if err != nil {
		t.Fatal(err)
	}
	if res.CapacityType != "spot" || res.SpotFallback {
		t.Errorf("got %+v; want spot without fallback", res)
	}
	want := []fleet.LaunchError{{
		Code: "InsufficientInstanceCapacity", Message: "injected InsufficientInstanceCapacity",
		InstanceType: "m5.large", SubnetID: n.subnets[1], AvailabilityZone: n.zones[1], CapacityType: "spot",
	}}
	if !reflect.DeepEqual(res.Errors, want) {
		t.Errorf("got errors %+v; want %+v", res.Errors, want)
	}
	if !l.IsUnavailable("spot", "m5.large", n.zones[1]) {
		t.Error("spot m5.large in the second zone not cached as unavailable")
	}
	if l.IsUnavailable("spot", "m5.large", n.zones[0]) || l.IsUnavailable("spot", "t3.large", n.zones[1]) {
		t.Error("offerings that did not fail are cached as unavailable")
	}
}

func TestUnavailableOfferingSkippedUntilTTL(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	clock := testkit.NewClock(fakeStart)
	l, api := newLauncher(t, n, fleet.WithClock(clock.Now), fleet.WithUnavailableTTL(time.Minute))

	l.MarkUnavailable("spot", "t3.large", n.zones[0])
	l.MarkUnavailable("on-demand", "m5.large", n.zones[1]) // another capacity type: no effect on spot
	if _, err := l.Launch(context.Background(), n.request(105)); err != nil {
		t.Fatal(err)
	}
	want := []offering{{"t3.large", n.subnets[1], n.zones[1]}, {"m5.large", n.subnets[0], n.zones[0]}, {"m5.large", n.subnets[1], n.zones[1]}}
	if got := overridesOf(api.FleetInputs()[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("with t3.large in %s cached: got overrides %v; want %v", n.zones[0], got, want)
	}

	clock.Advance(time.Minute)
	if l.IsUnavailable("spot", "t3.large", n.zones[0]) {
		t.Fatal("offering still unavailable after the TTL")
	}
	if _, err := l.Launch(context.Background(), n.request(106)); err != nil {
		t.Fatal(err)
	}
	if got := overridesOf(api.FleetInputs()[1]); len(got) != 4 {
		t.Errorf("after the TTL: got overrides %v; want all 4", got)
	}
}

func TestLaunchAllSpotCachedGoesOnDemand(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	for _, it := range []string{"t3.large", "m5.large"} {
		for _, az := range n.zones {
			l.MarkUnavailable("spot", it, az)
		}
	}
	res, err := l.Launch(context.Background(), n.request(107))
	if err != nil {
		t.Fatal(err)
	}
	inputs := api.FleetInputs()
	if len(inputs) != 1 || capacityType(inputs[0]) != "on-demand" {
		t.Fatalf("got %d CreateFleet calls; want exactly one, on-demand", len(inputs))
	}
	if len(overridesOf(inputs[0])) != 4 {
		t.Errorf("got on-demand overrides %v; want all 4", overridesOf(inputs[0]))
	}
	if !res.SpotFallback || res.CapacityType != "on-demand" || len(res.Errors) != 0 {
		t.Errorf("got %+v; want on-demand with SpotFallback and no errors", res)
	}
}

func TestLaunchOnDemandSkipsCachedUnlessNoneLeft(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	req := n.request(108)
	req.Spot = false
	req.InstanceTypes = []string{"t3.large"}

	l.MarkUnavailable("on-demand", "t3.large", n.zones[0])
	if _, err := l.Launch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	l.MarkUnavailable("on-demand", "t3.large", n.zones[1])
	if _, err := l.Launch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	inputs := api.FleetInputs()
	if got, want := overridesOf(inputs[0]), []offering{{"t3.large", n.subnets[1], n.zones[1]}}; !reflect.DeepEqual(got, want) {
		t.Errorf("one zone cached: got overrides %v; want %v", got, want)
	}
	if got := overridesOf(inputs[1]); len(got) != 2 {
		t.Errorf("every on-demand offering cached: got overrides %v; want both (last resort)", got)
	}
}

func TestLaunchNonCapacityErrorDoesNotFallBack(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	for _, tc := range []struct {
		name   string
		code   string
		answer func(in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error)
		lt     string // launch template id; "" = the network's
	}{
		{name: "override InvalidParameterValue", code: "InvalidParameterValue", answer: func(in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
			return testenv.FleetErrors(in, "InvalidParameterValue"), nil
		}},
		{name: "override ICE mixed with InvalidAMIID.Malformed", code: "InvalidAMIID.Malformed", answer: func(in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
			out := testenv.FleetErrors(in, "InsufficientInstanceCapacity")
			out.Errors[1].ErrorCode = aws.String("InvalidAMIID.Malformed")
			return out, nil
		}},
		{name: "API UnauthorizedOperation", code: "UnauthorizedOperation", answer: func(*ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
			return nil, &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."}
		}},
		{name: "moto InvalidLaunchTemplateId.NotFound", code: "InvalidLaunchTemplateId.NotFound", lt: "lt-0123456789abcdef0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, api := newLauncher(t, n)
			if tc.answer != nil {
				api.Answer(func(_ int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) { return tc.answer(in) })
			}
			req := n.request(109)
			if tc.lt != "" {
				req.LaunchTemplateID = tc.lt
			}
			res, err := l.Launch(context.Background(), req)
			if err == nil {
				t.Fatalf("got %+v; want an error", res)
			}
			if got := len(api.FleetInputs()); got != 1 {
				t.Errorf("got %d CreateFleet calls; want 1 (no fallback)", got)
			}
			lf, ok := errors.AsType[*fleet.LaunchFailure](err)
			if !ok {
				t.Fatalf("got %T %v; want a *LaunchFailure", err, err)
			}
			if !slices.ContainsFunc(lf.Errors, func(e fleet.LaunchError) bool { return e.Code == tc.code && e.CapacityType == "spot" }) {
				t.Errorf("got errors %+v; want a spot %s", lf.Errors, tc.code)
			}
			if fleet.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true; want false", err)
			}
		})
	}
}

func TestLaunchThrottledIsRetryable(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	api.Answer(func(int, *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	})
	_, err := l.Launch(context.Background(), n.request(110))
	if err == nil {
		t.Fatal("got no error; want RequestLimitExceeded")
	}
	if got := len(api.FleetInputs()); got != 1 {
		t.Errorf("got %d CreateFleet calls; want 1 (throttling is no reason for on-demand)", got)
	}
	if !fleet.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false; want true", err)
	}
	if _, ok := errors.AsType[*fleet.LaunchFailure](err); !ok {
		t.Errorf("got %T; want a *LaunchFailure", err)
	}
	if apiErr, ok := errors.AsType[smithy.APIError](err); !ok || apiErr.ErrorCode() != "RequestLimitExceeded" {
		t.Errorf("errors.As smithy.APIError: got %v; want RequestLimitExceeded", apiErr)
	}
}

func TestLaunchSpotAndOnDemandCapacityIsRetryable(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	api.Answer(func(_ int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return testenv.FleetErrors(in, "InsufficientInstanceCapacity"), nil
	})
	_, err := l.Launch(context.Background(), n.request(111))
	lf, ok := errors.AsType[*fleet.LaunchFailure](err)
	if !ok {
		t.Fatalf("got %v; want a *LaunchFailure", err)
	}
	if len(api.FleetInputs()) != 2 || len(lf.Errors) != 8 {
		t.Errorf("got %d calls and %d errors; want 2 calls (spot, on-demand) and 8 errors", len(api.FleetInputs()), len(lf.Errors))
	}
	if !fleet.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false; want true", err)
	}
	if !l.IsUnavailable("on-demand", "t3.large", n.zones[0]) {
		t.Error("on-demand offering not cached after its capacity error")
	}
}

func TestLaunchOnDemandOnly(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	req := n.request(112)
	req.Spot = false
	res, err := l.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	inputs := api.FleetInputs()
	if len(inputs) != 1 || capacityType(inputs[0]) != "on-demand" {
		t.Fatalf("got %d CreateFleet calls; want exactly one, on-demand", len(inputs))
	}
	if res.CapacityType != "on-demand" || res.SpotFallback {
		t.Errorf("got %+v; want on-demand without SpotFallback", res)
	}
	if inst := n.instance(t, res.InstanceID); inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		t.Error("moto: instance is spot; want on-demand")
	}
}

func TestSubnetZonesLookedUpOnce(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newLauncher(t, n)
	// Concurrent first launches, as in a warm container serving a batch.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			_, err := l.Launch(context.Background(), n.request(int64(120+i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Launch(context.Background(), n.request(125)); err != nil {
		t.Fatal(err)
	}
	if api.SubnetCalls() != 1 {
		t.Errorf("got %d DescribeSubnets calls for 5 launches; want 1", api.SubnetCalls())
	}
}

func TestLaunchInvalidRequest(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	for _, tc := range []struct {
		name   string
		change func(*fleet.Request)
	}{
		{"no instance types", func(r *fleet.Request) { r.InstanceTypes = nil }},
		{"no subnets", func(r *fleet.Request) { r.SubnetIDs = []string{""} }},
		{"no launch template", func(r *fleet.Request) { r.LaunchTemplateID = "" }},
		{"negative volume", func(r *fleet.Request) { r.VolumeGiB = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, api := newLauncher(t, n)
			req := n.request(130)
			tc.change(&req)
			_, err := l.Launch(context.Background(), req)
			if !errors.Is(err, fleet.ErrInvalidRequest) {
				t.Errorf("got %v; want ErrInvalidRequest", err)
			}
			if fleet.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true; want false", err)
			}
			if len(api.FleetInputs()) != 0 || api.SubnetCalls() != 0 {
				t.Error("an invalid request reached EC2")
			}
		})
	}

	t.Run("unknown subnet", func(t *testing.T) {
		t.Parallel()
		l, _ := newLauncher(t, n)
		req := n.request(131)
		req.SubnetIDs = []string{"subnet-0123456789abcdef0"}
		_, err := l.Launch(context.Background(), req)
		if err == nil || fleet.IsRetryable(err) {
			t.Errorf("got %v (retryable %v); want a non-retryable error", err, fleet.IsRetryable(err))
		}
	})
}

func TestTagAndTerminate(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, _ := newLauncher(t, n)
	ctx := context.Background()
	res, err := l.Launch(ctx, n.request(140))
	if err != nil {
		t.Fatal(err)
	}
	name := "jitr-" + res.InstanceID
	if err := l.Tag(ctx, res.InstanceID, map[string]string{"Name": name}); err != nil {
		t.Fatal(err)
	}
	if got := n.tags(t, res.InstanceID)["Name"]; got != name {
		t.Errorf("got Name %q; want %q", got, name)
	}
	if err := l.Terminate(ctx, res.InstanceID); err != nil {
		t.Fatal(err)
	}
	if st := n.instance(t, res.InstanceID).State.Name; st != types.InstanceStateNameShuttingDown && st != types.InstanceStateNameTerminated {
		t.Errorf("got state %q; want shutting-down or terminated", st)
	}
	if err := l.Terminate(ctx, res.InstanceID); err != nil {
		t.Errorf("terminate again: %v; want nil", err)
	}
}

func TestTerminateUnknownInstance(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, _ := newLauncher(t, n)
	if err := l.Terminate(context.Background(), "i-0123456789abcdef0"); err != nil {
		t.Errorf("got %v; want nil for an instance that does not exist", err)
	}
}

package testenv

import (
	"context"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/fleet"
)

// FaultyEC2 is the moto client with what moto never does added on top:
// CreateFleet errors queued by a test and answered per override, the way
// EC2 answers an instant fleet that placed nothing (HTTP 200, one error per
// override, no instance); a test's own answer or edit of moto's; and a
// record of every CreateFleet input and DescribeSubnets call.
type FaultyEC2 struct {
	fleet.EC2API

	mu          sync.Mutex
	faults      []fleetFault
	inputs      []*ec2.CreateFleetInput
	subnetCalls int
	answer      func(call int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error)
	edit        func(in *ec2.CreateFleetInput, out *ec2.CreateFleetOutput)
}

type fleetFault struct {
	capacity types.DefaultTargetCapacityType // "" for any request
	code     string
	left     int
}

// NewFaultyEC2 wraps api (a client of moto).
func NewFaultyEC2(api fleet.EC2API) *FaultyEC2 { return &FaultyEC2{EC2API: api} }

// FailCreateFleet makes the next n CreateFleet requests of capacity type
// capacity ("" for any) fail on every override with code
// ("InsufficientInstanceCapacity", "InvalidParameterValue", ...). Queued
// faults apply in the order they were queued.
func (f *FaultyEC2) FailCreateFleet(capacity types.DefaultTargetCapacityType, code string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fleetFault{capacity: capacity, code: code, left: n})
}

// Answer lets fn answer CreateFleet first (call counts from 1); a nil
// output and nil error pass the call on.
func (f *FaultyEC2) Answer(fn func(call int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = fn
}

// Edit lets fn change moto's CreateFleet answers.
func (f *FaultyEC2) Edit(fn func(in *ec2.CreateFleetInput, out *ec2.CreateFleetOutput)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.edit = fn
}

// CreateFleet records the input, then fails it as queued, answers it as
// the test says, or passes it to moto.
func (f *FaultyEC2) CreateFleet(ctx context.Context, in *ec2.CreateFleetInput, opts ...func(*ec2.Options)) (*ec2.CreateFleetOutput, error) {
	f.mu.Lock()
	f.inputs = append(f.inputs, in)
	call := len(f.inputs)
	code := f.takeFault(in.TargetCapacitySpecification.DefaultTargetCapacityType)
	answer, edit := f.answer, f.edit
	f.mu.Unlock()
	if code != "" {
		return FleetErrors(in, code), nil
	}
	if answer != nil {
		if out, err := answer(call, in); out != nil || err != nil {
			return out, err
		}
	}
	out, err := f.EC2API.CreateFleet(ctx, in, opts...)
	if err == nil && edit != nil {
		edit(in, out)
	}
	return out, err
}

// takeFault returns the code of the first queued fault for capacity, or
// "". The caller holds f.mu.
func (f *FaultyEC2) takeFault(capacity types.DefaultTargetCapacityType) string {
	for i := range f.faults {
		ft := &f.faults[i]
		if ft.left > 0 && (ft.capacity == "" || ft.capacity == capacity) {
			ft.left--
			return ft.code
		}
	}
	return ""
}

// FleetErrors is what EC2 answers when no override of in could launch:
// one error per override with code, and no instance.
func FleetErrors(in *ec2.CreateFleetInput, code string) *ec2.CreateFleetOutput {
	out := &ec2.CreateFleetOutput{FleetId: aws.String("fleet-injected")}
	for _, c := range in.LaunchTemplateConfigs {
		for _, o := range c.Overrides {
			out.Errors = append(out.Errors, FleetError(in, o, code))
		}
	}
	return out
}

// FleetError is EC2's error for one override of in.
func FleetError(in *ec2.CreateFleetInput, o types.FleetLaunchTemplateOverridesRequest, code string) types.CreateFleetError {
	return types.CreateFleetError{
		ErrorCode:    aws.String(code),
		ErrorMessage: aws.String("injected " + code),
		Lifecycle:    types.InstanceLifecycle(in.TargetCapacitySpecification.DefaultTargetCapacityType),
		LaunchTemplateAndOverrides: &types.LaunchTemplateAndOverridesResponse{
			Overrides: &types.FleetLaunchTemplateOverrides{
				InstanceType: o.InstanceType, SubnetId: o.SubnetId, AvailabilityZone: o.AvailabilityZone, ImageId: o.ImageId,
			},
		},
	}
}

// DescribeSubnets counts the call and passes it on.
func (f *FaultyEC2) DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, opts ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	f.mu.Lock()
	f.subnetCalls++
	f.mu.Unlock()
	return f.EC2API.DescribeSubnets(ctx, in, opts...)
}

// FleetInputs returns every CreateFleet input so far.
func (f *FaultyEC2) FleetInputs() []*ec2.CreateFleetInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*ec2.CreateFleetInput(nil), f.inputs...)
}

// SubnetCalls counts the DescribeSubnets calls so far.
func (f *FaultyEC2) SubnetCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subnetCalls
}

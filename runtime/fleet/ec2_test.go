package fleet_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

// recordingEC2 is the real moto client with what moto cannot do added on top:
// it records every CreateFleet input and DescribeSubnets call, and lets a test
// answer a CreateFleet call itself (capacity and other EC2 errors) or edit
// moto's answer.
type recordingEC2 struct {
	fleet.EC2API

	mu              sync.Mutex
	fleetInputs     []*ec2.CreateFleetInput
	describeSubnets int
	// answer, if set, is asked first; a nil output and nil error pass the
	// call on to moto.
	answer func(call int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error)
	// edit, if set, changes moto's answer.
	edit func(in *ec2.CreateFleetInput, out *ec2.CreateFleetOutput)
}

func (r *recordingEC2) CreateFleet(ctx context.Context, in *ec2.CreateFleetInput, optFns ...func(*ec2.Options)) (*ec2.CreateFleetOutput, error) {
	r.mu.Lock()
	r.fleetInputs = append(r.fleetInputs, in)
	call := len(r.fleetInputs)
	answer, edit := r.answer, r.edit
	r.mu.Unlock()
	if answer != nil {
		if out, err := answer(call, in); out != nil || err != nil {
			return out, err
		}
	}
	out, err := r.EC2API.CreateFleet(ctx, in, optFns...)
	if err == nil && edit != nil {
		edit(in, out)
	}
	return out, err
}

func (r *recordingEC2) DescribeSubnets(ctx context.Context, in *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	r.mu.Lock()
	r.describeSubnets++
	r.mu.Unlock()
	return r.EC2API.DescribeSubnets(ctx, in, optFns...)
}

func (r *recordingEC2) subnetCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.describeSubnets
}

func (r *recordingEC2) inputs() []*ec2.CreateFleetInput {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*ec2.CreateFleetInput(nil), r.fleetInputs...)
}

// overrideErrors is what EC2 answers when no override of in could launch:
// one error per override and no instance.
func overrideErrors(in *ec2.CreateFleetInput, code string) *ec2.CreateFleetOutput {
	out := &ec2.CreateFleetOutput{FleetId: aws.String("fleet-injected")}
	lt := in.LaunchTemplateConfigs[0]
	for _, o := range lt.Overrides {
		out.Errors = append(out.Errors, fleetError(in, o, code))
	}
	return out
}

func fleetError(in *ec2.CreateFleetInput, o types.FleetLaunchTemplateOverridesRequest, code string) types.CreateFleetError {
	return types.CreateFleetError{
		ErrorCode:    aws.String(code),
		ErrorMessage: aws.String("injected " + code),
		Lifecycle:    types.InstanceLifecycle(in.TargetCapacitySpecification.DefaultTargetCapacityType),
		LaunchTemplateAndOverrides: &types.LaunchTemplateAndOverridesResponse{
			Overrides: &types.FleetLaunchTemplateOverrides{
				InstanceType:     o.InstanceType,
				SubnetId:         o.SubnetId,
				AvailabilityZone: o.AvailabilityZone,
				ImageId:          o.ImageId,
			},
		},
	}
}

func capacityType(in *ec2.CreateFleetInput) string {
	return string(in.TargetCapacitySpecification.DefaultTargetCapacityType)
}

type offering struct{ instanceType, subnet, zone string }

func overridesOf(in *ec2.CreateFleetInput) []offering {
	var out []offering
	for _, o := range in.LaunchTemplateConfigs[0].Overrides {
		out = append(out, offering{string(o.InstanceType), aws.ToString(o.SubnetId), aws.ToString(o.AvailabilityZone)})
	}
	return out
}

// fakeStart is where the tests' clocks start.
var fakeStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// network is a VPC with one subnet in each of two zones and a launch
// template, on the shared moto server.
type network struct {
	client  *ec2.Client
	subnets []string
	zones   []string // zones[i] is the zone of subnets[i]
	lt      string
	image   string
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	ctx := context.Background()
	client := ec2.NewFromConfig(testenv.AWSForTest(t).Config)
	name := testenv.UniqueName(t)

	// An AMI moto knows by its id, with Amazon Linux's root device.
	n := &network{client: client, image: testenv.ImageX64.ID, zones: []string{"us-east-1a", "us-east-1b"}}

	vpc, err := client.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.20.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	for i, az := range n.zones {
		s, err := client.CreateSubnet(ctx, &ec2.CreateSubnetInput{
			VpcId:            vpc.Vpc.VpcId,
			CidrBlock:        aws.String(fmt.Sprintf("10.20.%d.0/24", i)),
			AvailabilityZone: aws.String(az),
		})
		if err != nil {
			t.Fatal(err)
		}
		n.subnets = append(n.subnets, aws.ToString(s.Subnet.SubnetId))
	}
	lt, err := client.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &types.RequestLaunchTemplateData{
			ImageId:                           aws.String(n.image),
			InstanceType:                      types.InstanceTypeT3Micro,
			InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.lt = aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	return n
}

func (n *network) request(jobID int64) fleet.Request {
	return fleet.Request{
		JobID:            jobID,
		Repository:       "octo/repo",
		Profile:          "default",
		InstanceTypes:    []string{"t3.large", "m5.large"},
		ImageID:          n.image,
		Arch:             "x64",
		SubnetIDs:        n.subnets,
		LaunchTemplateID: n.lt,
		Spot:             true,
		VolumeGiB:        30,
		Tags: map[string]string{
			"jitr:managed-by": "jitr",
			"jitr:job-id":     fmt.Sprint(jobID),
			"jitr:repository": "octo/repo",
			"jitr:profile":    "default",
		},
	}
}

// instance describes one instance in moto.
func (n *network) instance(t *testing.T, id string) types.Instance {
	t.Helper()
	out, err := n.client.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("describe instances %s: got %d reservations", id, len(out.Reservations))
	}
	return out.Reservations[0].Instances[0]
}

func (n *network) tags(t *testing.T, resourceID string) map[string]string {
	t.Helper()
	out, err := n.client.DescribeTags(context.Background(), &ec2.DescribeTagsInput{
		Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{resourceID}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{}
	for _, tag := range out.Tags {
		tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return tags
}

func newLauncher(t *testing.T, n *network, opts ...fleet.Option) (*fleet.Launcher, *recordingEC2) {
	t.Helper()
	api := &recordingEC2{EC2API: n.client}
	return fleet.New(api, opts...), api
}

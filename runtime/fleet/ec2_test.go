package fleet_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

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

func newLauncher(t *testing.T, n *network, opts ...fleet.Option) (*fleet.Launcher, *testenv.FaultyEC2) {
	t.Helper()
	api := testenv.NewFaultyEC2(n.client)
	return fleet.New(api, opts...), api
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/launchspec"
)

// Network is a VPC with two subnets, a runner security group and the runner
// launch template (launchspec.Runner, with the rendered bootstrap as
// user-data), as the stack creates them.
type Network struct {
	VPCID            string
	SubnetIDs        []string
	SecurityGroupID  string
	LaunchTemplateID string
}

// NetworkParams name the network's resources and the bootstrap's values.
type NetworkParams struct {
	Name      string
	Bootstrap bootstrap.Params
}

// TestRunnerSHA256 is a well-formed digest for tests' bootstrap params; no
// test downloads a runner.
const TestRunnerSHA256 = "0000000000000000000000000000000000000000000000000000000000000000"

// CreateNetwork creates a Network with api (moto, or any EC2-compatible API).
func CreateNetwork(ctx context.Context, api *ec2.Client, p NetworkParams) (*Network, error) {
	vpc, err := api.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.42.0.0/16")})
	if err != nil {
		return nil, fmt.Errorf("create VPC: %w", err)
	}
	n := &Network{VPCID: aws.ToString(vpc.Vpc.VpcId)}
	region := api.Options().Region
	var apiErr smithy.APIError
	for i, az := range []string{"a", "b"} {
		cidr := fmt.Sprintf("10.42.%d.0/20", i*16)
		s, err := api.CreateSubnet(ctx, &ec2.CreateSubnetInput{
			VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(region + az),
		})
		switch {
		case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidSubnet.Conflict":
			// A retried create whose first response was lost: the VPC is
			// this call's own, so the subnet holding the range is ours.
			out, derr := api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
				{Name: aws.String("vpc-id"), Values: []string{n.VPCID}}, {Name: aws.String("cidr-block"), Values: []string{cidr}},
			}})
			if derr != nil || len(out.Subnets) != 1 {
				return nil, fmt.Errorf("create subnet: %w (and describe: %w)", err, derr)
			}
			n.SubnetIDs = append(n.SubnetIDs, aws.ToString(out.Subnets[0].SubnetId))
		case err != nil:
			return nil, fmt.Errorf("create subnet: %w", err)
		default:
			n.SubnetIDs = append(n.SubnetIDs, aws.ToString(s.Subnet.SubnetId))
		}
	}
	sgName := p.Name + "-runners"
	sg, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String(sgName), Description: aws.String("jit-runners runners: no ingress"), VpcId: vpc.Vpc.VpcId,
	})
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidGroup.Duplicate":
		// A retried create whose first response was lost; the name is ours.
		out, derr := api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
			{Name: aws.String("group-name"), Values: []string{sgName}}, {Name: aws.String("vpc-id"), Values: []string{n.VPCID}},
		}})
		if derr != nil || len(out.SecurityGroups) != 1 {
			return nil, fmt.Errorf("create security group: %w (and describe: %w)", err, derr)
		}
		n.SecurityGroupID = aws.ToString(out.SecurityGroups[0].GroupId)
	case err != nil:
		return nil, fmt.Errorf("create security group: %w", err)
	default:
		n.SecurityGroupID = aws.ToString(sg.GroupId)
	}
	userData, err := bootstrap.Render(p.Bootstrap)
	if err != nil {
		return nil, err
	}
	ltName := p.Name + "-runner"
	lt, err := api.CreateLaunchTemplate(ctx, launchspec.Runner.CreateInput(launchspec.Params{
		Name: ltName, UserData: userData, SecurityGroupIDs: []string{n.SecurityGroupID},
	}))
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidLaunchTemplateName.AlreadyExistsException":
		// A retry of a create whose response was lost (moto ignores the
		// client token): the name is unique to this network, so it is ours.
		out, derr := api.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{ltName}})
		if derr != nil || len(out.LaunchTemplates) != 1 {
			return nil, fmt.Errorf("create launch template: %w (and describe: %w)", err, derr)
		}
		n.LaunchTemplateID = aws.ToString(out.LaunchTemplates[0].LaunchTemplateId)
	case err != nil:
		return nil, fmt.Errorf("create launch template: %w", err)
	default:
		n.LaunchTemplateID = aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	}
	return n, nil
}

// Network creates a uniquely named Network on moto for the test.
func (a *AWS) Network(tb testing.TB, jitTable string) *Network {
	tb.Helper()
	name := UniqueName(tb)
	n, err := CreateNetwork(context.Background(), ec2.NewFromConfig(a.Config), NetworkParams{
		Name: name,
		Bootstrap: bootstrap.Params{
			RunnerVersion: "2.332.0", NamePrefix: "jitr", JITTable: jitTable,
			RunnerSHA256X64: TestRunnerSHA256, RunnerSHA256ARM64: TestRunnerSHA256,
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// Instances returns the instances moto holds with tag jitr:managed-by=prefix
// in the given states (all states when none).
func (a *AWS) Instances(tb testing.TB, prefix string, states ...string) []types.Instance {
	tb.Helper()
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:jitr:managed-by"), Values: []string{prefix}}}}
	if len(states) > 0 {
		in.Filters = append(in.Filters, types.Filter{Name: aws.String("instance-state-name"), Values: states})
	}
	var out []types.Instance
	p := ec2.NewDescribeInstancesPaginator(ec2.NewFromConfig(a.Config), in)
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
	}
	return out
}

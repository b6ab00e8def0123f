package testenv

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestCreateNetworkSurvivesReplayedCreates: every create of the network
// applied twice still gives one usable network, made of the first
// attempt's resources where a second one would conflict.
func TestCreateNetworkSurvivesReplayedCreates(t *testing.T) {
	t.Parallel()
	a := AWSForTest(t)
	rt := NewReplay(func(op string) bool { return strings.HasPrefix(op, "Create") })
	api := ec2.NewFromConfig(a.Config, func(o *ec2.Options) { o.HTTPClient = rt.Client() })
	name := UniqueName(t)
	n, err := CreateNetwork(context.Background(), api, NetworkParams{
		Name: name,
		Bootstrap: bootstrap.Params{
			RunnerVersion: "2.332.0", NamePrefix: "jitr", JITTable: "jit",
			RunnerSHA256X64: TestRunnerSHA256, RunnerSHA256ARM64: TestRunnerSHA256,
		},
	})
	if err != nil {
		t.Fatalf("create network with every create replayed: %v", err)
	}
	got := strings.Join(rt.Replayed(), ",")
	if want := "CreateVpc,CreateSubnet,CreateSubnet,CreateSecurityGroup,CreateLaunchTemplate"; got != want {
		t.Fatalf("replayed %s; want %s", got, want)
	}
	plain := ec2.NewFromConfig(a.Config)
	subnets, err := plain.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{SubnetIds: n.SubnetIDs})
	if err != nil || len(subnets.Subnets) != 2 {
		t.Fatalf("subnets %v: %v", n.SubnetIDs, err)
	}
	for _, s := range subnets.Subnets {
		if aws.ToString(s.VpcId) != n.VPCID {
			t.Errorf("subnet %s is in %s; want the network's VPC %s", aws.ToString(s.SubnetId), aws.ToString(s.VpcId), n.VPCID)
		}
	}
	groups, err := plain.DescribeSecurityGroups(context.Background(), &ec2.DescribeSecurityGroupsInput{GroupIds: []string{n.SecurityGroupID}})
	if err != nil || aws.ToString(groups.SecurityGroups[0].VpcId) != n.VPCID {
		t.Fatalf("security group %s: %v", n.SecurityGroupID, err)
	}
	lts, err := plain.DescribeLaunchTemplates(context.Background(), &ec2.DescribeLaunchTemplatesInput{
		Filters: []types.Filter{{Name: aws.String("launch-template-name"), Values: []string{name + "-runner"}}},
	})
	if err != nil || len(lts.LaunchTemplates) != 1 || aws.ToString(lts.LaunchTemplates[0].LaunchTemplateId) != n.LaunchTemplateID {
		t.Fatalf("launch template %s: %+v %v", n.LaunchTemplateID, lts, err)
	}
}

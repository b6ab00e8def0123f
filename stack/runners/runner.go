package runners

import (
	"encoding/base64"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ec2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/launchspec"
)

// runnerOut is what runner instances start from.
type runnerOut struct {
	securityGroup   *ec2.SecurityGroup
	role            *iam.Role
	instanceProfile *iam.InstanceProfile
	template        *ec2.LaunchTemplate
	// imageARNs are the ARNs of every profile's AMI (IAM scopes launches
	// to them).
	imageARNs pulumi.StringArrayOutput
}

// Egress of the runner security group. Jobs need the internet (GitHub,
// package registries); outbound SSH is blocked by default so a compromised
// job cannot use the runner to reach SSH servers, unless
// RunnerOptions.AllowSSHEgress lifts it.
func egressRules(allowSSH bool) ec2.SecurityGroupEgressArray {
	v4, v6 := pulumi.StringArray{pulumi.String("0.0.0.0/0")}, pulumi.StringArray{pulumi.String("::/0")}
	rule := func(desc, proto string, from, to int) ec2.SecurityGroupEgressArgs {
		return ec2.SecurityGroupEgressArgs{
			Description: pulumi.String(desc), Protocol: pulumi.String(proto),
			FromPort: pulumi.Int(from), ToPort: pulumi.Int(to), CidrBlocks: v4, Ipv6CidrBlocks: v6,
		}
	}
	if allowSSH {
		return ec2.SecurityGroupEgressArray{rule("all outbound", "-1", 0, 0)}
	}
	return ec2.SecurityGroupEgressArray{
		rule("TCP below SSH", "tcp", 0, 21),
		rule("TCP above SSH", "tcp", 23, 65535),
		rule("all UDP", "udp", 0, 65535),
		ec2.SecurityGroupEgressArgs{
			Description: pulumi.String("ICMP"), Protocol: pulumi.String("icmp"),
			FromPort: pulumi.Int(-1), ToPort: pulumi.Int(-1), CidrBlocks: v4,
		},
		ec2.SecurityGroupEgressArgs{
			Description: pulumi.String("ICMPv6"), Protocol: pulumi.String("58"),
			FromPort: pulumi.Int(-1), ToPort: pulumi.Int(-1), Ipv6CidrBlocks: v6,
		},
	}
}

// runnerResources creates the security group, the runner role and instance
// profile, and the launch template.
func (d *deployment) runnerResources() error {
	r := &d.runner
	var err error
	if r.securityGroup, err = ec2.NewSecurityGroup(d.ctx, d.n("runner"), &ec2.SecurityGroupArgs{
		Description: pulumi.String("jit-runners " + d.name + " runner instances"),
		VpcId:       d.net.vpcID,
		Egress:      egressRules(d.args.Runner.AllowSSHEgress),
		Tags:        d.tags("Name", d.n("runner")),
	}, d.opts()...); err != nil {
		return err
	}
	if err := d.runnerRole(); err != nil {
		return err
	}
	r.imageARNs = d.imageARNs()
	r.template, err = ec2.NewLaunchTemplate(d.ctx, d.n("runner"), d.launchTemplate(), d.opts()...)
	return err
}

// runnerRole creates the runner role with its one policy (plus Session
// Manager's when enabled) and its instance profile.
func (d *deployment) runnerRole() error {
	r := &d.runner
	var err error
	if r.role, err = d.role("runner", "ec2.amazonaws.com"); err != nil {
		return err
	}
	doc := pulumi.All(d.data.jit.Arn).ApplyT(func(v []any) (string, error) {
		return d.runnerPolicy(v[0].(string)).JSON()
	}).(pulumi.StringOutput)
	if _, err := iam.NewRolePolicy(d.ctx, d.n("runner"), &iam.RolePolicyArgs{Role: r.role.ID(), Policy: doc}, d.opts()...); err != nil {
		return err
	}
	if d.args.Runner.SSMSessionManager {
		if _, err := iam.NewRolePolicy(d.ctx, d.n("runner-ssm"), &iam.RolePolicyArgs{
			Role: r.role.ID(), Policy: pulumi.String(mustJSON(d.sessionManagerPolicy())),
		}, d.opts()...); err != nil {
			return err
		}
	}
	r.instanceProfile, err = iam.NewInstanceProfile(d.ctx, d.n("runner"), &iam.InstanceProfileArgs{
		Role: r.role.Name, Tags: d.tags(),
	}, d.opts()...)
	return err
}

// imageARNs are the ARNs of every profile's AMI, each once.
func (d *deployment) imageARNs() pulumi.StringArrayOutput {
	a := d.args
	imageIDs := pulumi.StringArray{}
	for _, name := range sortedKeys(a.Profiles) {
		imageIDs = append(imageIDs, a.Profiles[name].ImageID)
	}
	return imageIDs.ToStringArrayOutput().ApplyT(func(ids []string) []string {
		seen := map[string]bool{}
		var arns []string
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				arns = append(arns, "arn:"+d.partition+":ec2:"+d.region+"::image/"+id)
			}
		}
		return arns
	}).(pulumi.StringArrayOutput)
}

// launchTemplate is the runner launch template: the default profile's
// image, the rendered bootstrap as user-data, launchspec.Runner's settings,
// the instance profile and the security group (on a public interface when
// runners get public IPs).
func (d *deployment) launchTemplate() *ec2.LaunchTemplateArgs {
	a, r := d.args, &d.runner
	userData := d.data.jit.Name.ApplyT(func(table string) (string, error) {
		script, err := bootstrap.Render(a.bootstrapParams(table))
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString([]byte(script)), nil
	}).(pulumi.StringOutput)

	spec := launchspec.Runner
	lt := &ec2.LaunchTemplateArgs{
		Description:                       pulumi.String("jit-runners " + d.name + ": one single-use GitHub Actions runner per instance"),
		ImageId:                           a.Profiles[a.DefaultProfile].ImageID,
		UserData:                          userData,
		InstanceInitiatedShutdownBehavior: pulumi.String(spec.ShutdownBehavior),
		MetadataOptions: ec2.LaunchTemplateMetadataOptionsArgs{
			HttpEndpoint:            pulumi.String("enabled"),
			HttpTokens:              pulumi.String(spec.MetadataHTTPTokens),
			HttpPutResponseHopLimit: pulumi.Int(a.Runner.MetadataHopLimit),
			InstanceMetadataTags:    pulumi.String(enabled(spec.InstanceMetadataTags)),
		},
		IamInstanceProfile:   ec2.LaunchTemplateIamInstanceProfileArgs{Arn: r.instanceProfile.Arn},
		UpdateDefaultVersion: pulumi.Bool(true),
		Tags:                 d.tags(),
	}
	sgs := pulumi.StringArray{r.securityGroup.ID()}
	if a.Network.AssociatePublicIP {
		lt.NetworkInterfaces = ec2.LaunchTemplateNetworkInterfaceArray{ec2.LaunchTemplateNetworkInterfaceArgs{
			DeviceIndex:              pulumi.Int(0),
			AssociatePublicIpAddress: pulumi.String("true"),
			SecurityGroups:           sgs,
			DeleteOnTermination:      pulumi.String("true"),
		}}
	} else {
		lt.VpcSecurityGroupIds = sgs
	}
	return lt
}

func enabled(on bool) string {
	if on {
		return "enabled"
	}
	return "disabled"
}

// SelfInstanceARN is the IAM policy variable that resolves to the ARN of the
// instance whose role credentials sign the request (see docs/security.md).
// IAM accepts it in condition values only: a Resource must be an ARN.
const SelfInstanceARN = "${ec2:SourceInstanceARN}"

// runnerPolicy is the runner role's only policy: take its own JIT config
// (the JIT table's key, jitstore.AttrInstanceARN, is the instance ARN, so
// dynamodb:LeadingKeys must equal the caller's).
//
// The role cannot terminate anything, not even its own instance: IAM has no
// valid way to say "only the caller's instance" in a Resource, and job code
// runs with these credentials. The bootstrap ends with shutdown -h now,
// which terminates the instance because the launch template sets
// InstanceInitiatedShutdownBehavior=terminate (launchspec.Runner), and
// scaledown terminates whatever is left of an instance whose runner is gone.
func (d *deployment) runnerPolicy(jitTableARN string) PolicyDocument {
	return policy(
		allow("TakeOwnJITConfig", []string{"dynamodb:DeleteItem"}, []string{jitTableARN},
			cond("ForAllValues:StringEquals", "dynamodb:LeadingKeys", []string{SelfInstanceARN})),
	)
}

// sessionManagerPolicy is what the SSM agent needs for Session Manager
// shells and nothing more: register the instance and open the session
// channels. AmazonSSMManagedInstanceCore would also grant ssm:GetParameter(s)
// on every parameter in the region to the job code running on the runner.
func (d *deployment) sessionManagerPolicy() PolicyDocument {
	return policy(
		allow("RegisterWithSessionManager", []string{"ssm:UpdateInstanceInformation"}, []string{d.ec2ARN("instance/*")}),
		allow("OpenSessionChannels", sessionChannelActions, []string{"*"}),
	)
}

// sessionChannelActions are the Session Manager channel actions; they
// support no resource-level permissions.
var sessionChannelActions = []string{
	"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
	"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
}

// mustJSON encodes a policy built from constants and configuration.
func mustJSON(doc PolicyDocument) string {
	s, err := doc.JSON()
	if err != nil {
		panic(err)
	}
	return s
}

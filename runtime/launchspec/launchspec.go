// Package launchspec defines the runner launch template: what every runner
// instance starts from. The Pulumi stack creates it from Template, and so do
// the sandbox and the tests (through CreateInput), so the settings that keep
// instances safe and short-lived are written down once.
package launchspec

import (
	"encoding/base64"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Template holds the launch template's fixed settings.
type Template struct {
	// MetadataHTTPTokens "required" is IMDSv2 only.
	MetadataHTTPTokens string
	// MetadataHopLimit 2 lets containers on the runner reach IMDS through
	// the Docker bridge; 1 keeps them out. Configurable in the stack.
	MetadataHopLimit int
	// ShutdownBehavior "terminate": a runner that shuts itself down is gone.
	ShutdownBehavior string
	// VolumeType, VolumeGiB and Encrypted describe the root volume. The
	// launcher maps it at launch under the AMI's own root device name (the
	// template has no mapping: a fixed name would add a second volume on an
	// AMI whose root device is another); a profile's volumeGiB replaces
	// VolumeGiB.
	VolumeType string
	VolumeGiB  int
	Encrypted  bool
	// InstanceMetadataTags exposes the instance's tags in IMDS (off: the
	// runner has no need for them).
	InstanceMetadataTags bool
}

// Runner is the runner launch template's specification.
var Runner = Template{
	MetadataHTTPTokens: "required",
	MetadataHopLimit:   2,
	ShutdownBehavior:   "terminate",
	VolumeType:         "gp3",
	VolumeGiB:          30,
	Encrypted:          true,
}

// Params are a deployment's values for the template.
type Params struct {
	Name               string
	UserData           string // the rendered bootstrap script (plain text)
	SecurityGroupIDs   []string
	InstanceProfileARN string // "" in emulators without IAM
	AssociatePublicIP  bool
	Tags               map[string]string
}

// CreateInput returns the SDK request creating the template with p.
func (t Template) CreateInput(p Params) *ec2.CreateLaunchTemplateInput {
	data := &types.RequestLaunchTemplateData{
		UserData:                          aws.String(base64.StdEncoding.EncodeToString([]byte(p.UserData))),
		InstanceInitiatedShutdownBehavior: types.ShutdownBehavior(t.ShutdownBehavior),
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpTokens:              types.LaunchTemplateHttpTokensState(t.MetadataHTTPTokens),
			HttpPutResponseHopLimit: aws.Int32(int32(t.MetadataHopLimit)),
			HttpEndpoint:            types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
			InstanceMetadataTags:    tagsState(t.InstanceMetadataTags),
		},
	}
	if p.InstanceProfileARN != "" {
		data.IamInstanceProfile = &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Arn: aws.String(p.InstanceProfileARN)}
	}
	if p.AssociatePublicIP {
		data.NetworkInterfaces = []types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{{
			DeviceIndex: aws.Int32(0), AssociatePublicIpAddress: aws.Bool(true), Groups: p.SecurityGroupIDs,
			DeleteOnTermination: aws.Bool(true),
		}}
	} else {
		data.SecurityGroupIds = p.SecurityGroupIDs
	}
	// The client token makes a retried request (the SDK retries after a
	// lost response) return the template the first attempt created.
	in := &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(p.Name), LaunchTemplateData: data, ClientToken: aws.String(p.Name)}
	if len(p.Tags) > 0 {
		var tt []types.Tag
		for k, v := range p.Tags {
			tt = append(tt, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeLaunchTemplate, Tags: tt}}
	}
	return in
}

func tagsState(on bool) types.LaunchTemplateInstanceMetadataTagsState {
	if on {
		return types.LaunchTemplateInstanceMetadataTagsStateEnabled
	}
	return types.LaunchTemplateInstanceMetadataTagsStateDisabled
}

package sandbox

import (
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestCreateFleetFacts: the recorder reads the values AWS would evaluate
// from the request itself, so a launch that forgets the volume's tag, names
// another template or a foreign subnet shows it.
func TestCreateFleetFacts(t *testing.T) {
	c := &conditionContext{classes: map[string]string{"jitr": "name-prefix", "lt-1": "launch-template", "subnet-1": "subnet"}}
	form := url.Values{
		"Action": {"CreateFleet"},
		"LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId": {"lt-2"},
		"LaunchTemplateConfigs.1.Overrides.1.SubnetId":                         {"subnet-1"},
		"LaunchTemplateConfigs.1.Overrides.2.SubnetId":                         {"subnet-9"},
		"TagSpecification.1.ResourceType":                                      {"instance"},
		"TagSpecification.1.Tag.1.Key":                                         {"Name"},
		"TagSpecification.1.Tag.1.Value":                                       {"jitr-i"},
		"TagSpecification.1.Tag.2.Key":                                         {"jitr:managed-by"},
		"TagSpecification.1.Tag.2.Value":                                       {"jitr"},
	}
	facts := c.conditionFacts(httptest.NewRequest("POST", "/", nil), "ec2.CreateFleet", form, nil)
	for _, want := range []string{
		"ec2:RunInstances aws:RequestTag/jitr:managed-by=name-prefix", // the instance
		"ec2:RunInstances aws:RequestTag/jitr:managed-by=absent",      // the volume: no tag specification
		"ec2:RunInstances ec2:LaunchTemplate=other:lt-2",
		"ec2:CreateFleet ec2:Subnet=subnet",
		"ec2:CreateFleet ec2:Subnet=other:subnet-9",
		"ec2:CreateTags ec2:CreateAction=CreateFleet",
	} {
		if !slices.Contains(facts, want) {
			t.Errorf("facts %q lack %q", facts, want)
		}
	}
}

// TestLeadingKeyFacts: the bootstrap's key is its own instance's ARN or
// not, as ec2:SourceInstanceARN would say.
func TestLeadingKeyFacts(t *testing.T) {
	c := &conditionContext{}
	own := "arn:aws:ec2:eu-west-1:123456789012:instance/i-1"
	for key, want := range map[string]string{own: "own-instance", strings.Replace(own, "i-1", "i-2", 1): "other-instance"} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("X-Amz-Security-Token", sessionTokenPrefix+own)
		body := `{"TableName":"jit","Key":{"instanceArn":{"S":"` + key + `"}}}`
		facts := c.conditionFacts(r, "dynamodb.DeleteItem", nil, []byte(body))
		if !slices.Contains(facts, "dynamodb:DeleteItem dynamodb:LeadingKeys="+want) {
			t.Errorf("key %s: facts %q, want %s", key, facts, want)
		}
	}
}

package labels_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/labels"
)

func matcher(t *testing.T) *labels.Matcher {
	t.Helper()
	c, err := config.Parse([]byte(`{
	  "github": {"appId": 1, "privateKeySecretArn": "arn:k", "webhookSecretArn": "arn:h", "scope": "repo"},
	  "queueUrl": "https://sqs.local/q", "tableName": "t", "runnerVersion": "2.332.0", "maxRunners": 5,
	  "launch": {"launchTemplateId": "lt-1", "subnetIds": ["subnet-1"]},
	  "allowedInstanceTypes": ["c6i.*", "m7g.large"],
	  "profiles": {"default": {"imageId": "ami-x64"},
	               "gpu": {"instanceTypes": ["g5.xlarge", "g5.2xlarge"], "imageId": "ami-gpu", "arch": "x64"},
	               "graviton": {"instanceTypes": ["c7g.large"], "imageId": "ami-arm", "arch": "arm64"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	return labels.NewMatcher(c)
}

func TestResolve(t *testing.T) {
	t.Parallel()
	m := matcher(t)
	tests := []struct {
		labels               []string
		profile, arch, types string
		out                  string
	}{
		{[]string{"self-hosted", "linux", "x64"}, "default", "x64", "t3.large", "self-hosted,linux,x64"},
		{[]string{"self-hosted"}, "default", "x64", "t3.large", "self-hosted"},
		{[]string{"Self-Hosted", "LINUX", "X64"}, "default", "x64", "t3.large", "self-hosted,linux,x64"},
		{[]string{"self-hosted", "self-hosted", "linux"}, "default", "x64", "t3.large", "self-hosted,linux"},
		{[]string{"self-hosted", "gpu"}, "gpu", "x64", "g5.xlarge,g5.2xlarge", "self-hosted,gpu"},
		{[]string{"self-hosted", "linux", "arm64"}, "graviton", "arm64", "c7g.large", "self-hosted,linux,arm64"},
		{[]string{"self-hosted", "c6i.4xlarge"}, "default", "x64", "c6i.4xlarge", "self-hosted,c6i.4xlarge"},
		{[]string{"self-hosted", "m7g.large"}, "graviton", "arm64", "m7g.large", "self-hosted,m7g.large"},
		{[]string{"self-hosted", "gpu", "g5.2xlarge"}, "gpu", "x64", "g5.2xlarge", "self-hosted,gpu,g5.2xlarge"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.labels, ","), func(t *testing.T) {
			t.Parallel()
			got, err := m.Resolve(tc.labels)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Profile != tc.profile || got.Arch != tc.arch || strings.Join(got.InstanceTypes, ",") != tc.types || strings.Join(got.Labels, ",") != tc.out {
				t.Fatalf("got %+v; want profile %s arch %s types %s labels %s", got, tc.profile, tc.arch, tc.types, tc.out)
			}
		})
	}
}

func TestResolveNotOurs(t *testing.T) {
	t.Parallel()
	m := matcher(t)
	long := strings.Repeat("a", 300)
	many := make([]string, 100)
	for i := range many {
		many[i] = "self-hosted"
	}
	for _, l := range [][]string{
		nil,
		{"ubuntu-latest"},
		{"linux", "x64"},
		{"self-hosted", "windows"},
		{"self-hosted", "x64", "arm64"},
		{"self-hosted", "gpu", "graviton"},
		{"self-hosted", "c6i.large", "c6i.xlarge"},
		{"self-hosted", "c5.large"},     // not allowed by a pattern
		{"self-hosted", "m7g.xlarge"},   // only m7g.large is allowed
		{"self-hosted", "gpu", "arm64"}, // gpu is x64
		{"self-hosted", "c6i.large", "arm64"},
		{"self-hosted", "gpu", "c7g.large"}, // arm type on an x64 profile
		{"self-hosted", ""},
		{"self-hosted", long},
		{"self-hosted", "$(reboot)"},
		{"self-hosted", "a'; rm -rf / #"},
		many,
	} {
		_, err := m.Resolve(l)
		var no *labels.NotOursError
		if !errors.As(err, &no) || no.Reason == "" {
			t.Errorf("Resolve(%.60q) = %v; want a NotOursError with a reason", l, err)
		}
	}
}

func TestArchOf(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string]string{
		"t3.large": "x64", "c6i.large": "x64", "g5.xlarge": "x64", "g4ad.xlarge": "x64", "p4d.24xlarge": "x64", "m7i-flex.large": "x64",
		"c7g.large": "arm64", "m6gd.large": "arm64", "t4g.small": "arm64", "c6gn.large": "arm64", "im4gn.large": "arm64",
		"g5g.xlarge": "arm64", "a1.large": "arm64", "hpc7g.4xlarge": "arm64", "r8g.large": "arm64", "is4gen.large": "arm64",
	} {
		if got := labels.ArchOf(typ); got != want {
			t.Errorf("ArchOf(%s) = %s; want %s", typ, got, want)
		}
	}
}

// An instance type a profile lists is served from that profile's image.
func TestInstanceTypeListedByProfile(t *testing.T) {
	t.Parallel()
	got, err := matcher(t).Resolve([]string{"self-hosted", "g5.2xlarge"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Profile != "gpu" || strings.Join(got.InstanceTypes, ",") != "g5.2xlarge" {
		t.Fatalf("got %+v; want the gpu profile with g5.2xlarge", got)
	}
}

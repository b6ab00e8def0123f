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
	return matcherWith(t, `"allowedInstanceTypes": ["c6i.*", "m7g.large"],
	  "profiles": {"default": {"imageId": "ami-x64"},
	               "gpu": {"instanceTypes": ["g5.xlarge", "g5.2xlarge"], "imageId": "ami-gpu", "arch": "x64"},
	               "graviton": {"instanceTypes": ["c7g.large"], "imageId": "ami-arm", "arch": "arm64"}}`)
}

// matcherWith returns a Matcher for a valid deployment document with keys
// (a JSON fragment: allowed instance types, shapes, profiles) added.
func matcherWith(t *testing.T, keys string) *labels.Matcher {
	t.Helper()
	c, err := config.Parse([]byte(`{
	  "github": {"appId": 1, "privateKeySecretArn": "arn:k", "webhookSecretArn": "arn:h", "scope": "repo"},
	  "queueUrl": "https://sqs.local/q", "tableName": "t", "runnerVersion": "2.332.0", "maxRunners": 5,
	  "launch": {"launchTemplateId": "lt-1", "subnetIds": ["subnet-1"]}, ` + keys + `}`))
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

// Shape labels ride along a profile (named or the default of the job's
// architecture): they replace its types (left to scaleup), and disk= and
// spot= its volume and spot preference.
func TestResolveShapes(t *testing.T) {
	t.Parallel()
	m := matcher(t)
	tests := []struct {
		labels        []string
		profile, arch string
		types         string // the profile's types, kept when the shape does not narrow them
		shape         string
		spot          bool
		volume        int
	}{
		{[]string{"self-hosted", "cpu=4", "ram=16"}, "default", "x64", "", "cpu=4 ram=16", true, 30},
		{[]string{"self-hosted", "CPU=8-16", "Family=C7I+M7I", "spot=false"}, "default", "x64", "", "cpu=8-16 family=c7i+m7i spot=false", false, 30},
		{[]string{"self-hosted", "arch=arm64", "cpu=2+"}, "graviton", "arm64", "", "cpu=2+ arch=arm64", true, 30},
		{[]string{"self-hosted", "family=c7g+m7g"}, "graviton", "arm64", "", "family=c7g+m7g", true, 30},             // Graviton families: arm64
		{[]string{"self-hosted", "family=c7g+m7i", "cpu=4"}, "default", "x64", "", "cpu=4 family=c7g+m7i", true, 30}, // mixed: the default's arch
		{[]string{"self-hosted", "gpu", "gpu=1"}, "gpu", "x64", "", "gpu=1", true, 30},
		{[]string{"self-hosted", "disk=200"}, "default", "x64", "t3.large", "disk=200", true, 200},
		{[]string{"self-hosted", "graviton", "spot=false", "arch=arm64"}, "graviton", "arm64", "c7g.large", "arch=arm64 spot=false", false, 30},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.labels, ","), func(t *testing.T) {
			t.Parallel()
			got, err := m.Resolve(tc.labels)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Profile != tc.profile || got.Arch != tc.arch || strings.Join(got.InstanceTypes, ",") != tc.types ||
				got.Shape.String() != tc.shape || got.Spot != tc.spot || got.VolumeGiB != tc.volume {
				t.Fatalf("got profile %s arch %s types %v shape %q spot %v volume %d; want %s %s %q %q %v %d",
					got.Profile, got.Arch, got.InstanceTypes, got.Shape, got.Spot, got.VolumeGiB,
					tc.profile, tc.arch, tc.types, tc.shape, tc.spot, tc.volume)
			}
			// The runner registers with the job's own labels, shape ones too.
			if len(got.Labels) != len(tc.labels) {
				t.Fatalf("runner labels %v; want the job's %v", got.Labels, tc.labels)
			}
		})
	}
	// Without shape labels the launch keeps the profile's settings.
	got, err := m.Resolve([]string{"self-hosted"})
	if err != nil || !got.Shape.IsZero() || !got.Spot || got.VolumeGiB != 30 {
		t.Fatalf("plain job: %+v, %v", got, err)
	}
}

// A malformed shape label, or one beyond the bounds, makes the job not ours,
// and the reason names the label and the bound.
func TestResolveShapesNotOurs(t *testing.T) {
	t.Parallel()
	m := matcherWith(t, `"allowedInstanceTypes": ["c6i.*"],
	  "shapes": {"maxCpu": 16, "maxRamGiB": 64, "maxDiskGiB": 200, "families": ["c7", "m7i"], "gpu": false},
	  "profiles": {"default": {"imageId": "ami-x64"}}`)
	for labs, want := range map[string]string{
		"cpu=abc":             `shape label "cpu=abc"`,
		"cpu=4,cpu=8":         "given twice",
		"size=large":          "unknown key",
		"cpu=$(reboot)":       `"cpu=$(reboot)"`,
		"family=c7i;rm -rf /": "each family must be",
		"cpu=32":              "shapes.maxCpu (16 vCPUs)",
		"cpu=17+":             "shapes.maxCpu",
		"ram=128":             "shapes.maxRamGiB (64 GiB)",
		"disk=500":            "shapes.maxDiskGiB (200 GiB)",
		"gpu=1":               "shapes.gpu is false",
		"family=r7i":          "family r7i is outside shapes.families (c7, m7i)",
		"family=m7g":          "family m7g is outside",
		"c6i.large,cpu=2":     "use one or the other",
		"arch=arm64,x64":      "both x64 and arm64",
		"arch=arm64":          "no profile has arch arm64",
		"family=c7g":          "no profile has arch arm64", // Graviton families, and no arm64 profile
	} {
		l := append([]string{"self-hosted"}, strings.Split(labs, ",")...)
		_, err := m.Resolve(l)
		var no *labels.NotOursError
		if !errors.As(err, &no) || !strings.Contains(no.Reason, want) {
			t.Errorf("Resolve(%q) = %v; want a NotOursError saying %q", l, err, want)
		}
	}
	// Within the bounds: a range partly beyond a bound is narrowed, not refused.
	for _, labs := range []string{"cpu=8-32", "family=c7i", "family=c", "ram=16+", "disk=200", "gpu=0"} {
		if _, err := m.Resolve([]string{"self-hosted", labs}); err != nil {
			t.Errorf("Resolve(%s): %v; want ours", labs, err)
		}
	}
}

// A refusal for shape labels says which kind it is (the ShapeRefusals
// metric's reason); other refusals say none.
func TestShapeRefusalKinds(t *testing.T) {
	t.Parallel()
	m := matcherWith(t, `"allowedInstanceTypes": ["c6i.*"], "shapes": {"maxCpu": 8},
	  "profiles": {"default": {"imageId": "ami-x64"}}`)
	for labs, want := range map[string]string{
		"cpu=x":           labels.ShapeMalformed,
		"cpu=9":           labels.ShapeBounds,
		"cpu=2,c6i.large": labels.ShapeConflict,
		"arch=arm64,x64":  labels.ShapeConflict,
		"windows":         "",
	} {
		_, err := m.Resolve(append([]string{"self-hosted"}, strings.Split(labs, ",")...))
		var no *labels.NotOursError
		if !errors.As(err, &no) {
			t.Errorf("%s: %v; want a NotOursError", labs, err)
		} else if no.Shape != want {
			t.Errorf("%s: %v (kind %q); want kind %q", labs, err, no.Shape, want)
		}
	}
}

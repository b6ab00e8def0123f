package program_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/program"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// twoArchs are profiles of both architectures and one with its own image.
const twoArchs = `{"default": {"instanceTypes": ["t3.large"]}, "arm": {"instanceTypes": ["c7g.large"], "arch": "arm64"},
	"pinned": {"instanceTypes": ["m6i.large"], "imageId": "ami-0aaaaaaaaaaaaaaaa"}}`

// runWith runs the program with mocks m and options o.
func runWith(t *testing.T, m *plan.Mocks, o program.Options, cfg map[string]string) error {
	t.Helper()
	o.Builder = fakeBuilder(t)
	return plan.Run(program.New(o), m, plan.WithConfig(cfg, secretKeys))
}

func images(t *testing.T, m *plan.Mocks) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, p := range runtimeConfig(t, m).Profiles {
		out[name] = p.ImageID
	}
	return out
}

// amiLookup is one aws:ec2/getAmi call.
type amiLookup struct {
	Name, Arch, State string
	Owners            []string
	MostRecent        bool
}

func amiLookups(m *plan.Mocks) []amiLookup {
	var out []amiLookup
	for _, inv := range m.Invokes() {
		if inv.Token != "aws:ec2/getAmi:getAmi" {
			continue
		}
		args := plan.Plain(inv.Args)
		l := amiLookup{MostRecent: args["mostRecent"] == true}
		for _, o := range args["owners"].([]any) {
			l.Owners = append(l.Owners, o.(string))
		}
		for _, f := range args["filters"].([]any) {
			f := f.(map[string]any)
			v := f["values"].([]any)[0].(string)
			switch f["name"] {
			case "name":
				l.Name = v
			case "architecture":
				l.Arch = v
			case "state":
				l.State = v
			}
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b amiLookup) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// TestAMIModeStock: each profile without an image gets the Amazon Linux 2023
// AMI of its architecture, read once per architecture from its parameter.
func TestAMIModeStock(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:profiles"] = twoArchs
	m := mustRun(t, cfg, secretKeys)
	want := []string{
		"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
		"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
	}
	if got := parameterLookups(m); !reflect.DeepEqual(got, want) {
		t.Errorf("SSM lookups %v, want %v", got, want)
	}
	p := plan.NewMocks().Parameters
	if got, w := images(t, m), map[string]string{"default": p[want[1]], "arm": p[want[0]], "pinned": "ami-0aaaaaaaaaaaaaaaa"}; !reflect.DeepEqual(got, w) {
		t.Errorf("images %v, want %v", got, w)
	}
	if n := len(amiLookups(m)); n != 0 {
		t.Errorf("%d AMI lookups in mode stock", n)
	}
}

// TestAMIModePrebaked: the newest available jit-runners AMI of the stack's
// runner version, per architecture, from the configured owners.
func TestAMIModePrebaked(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:profiles"] = twoArchs
	// Account ids as YAML numbers, as `pulumi config set --path` stores them.
	cfg["jit-runners:ami"] = `{"mode": "prebaked", "owners": [123456789012, 98765432101, "self"]}`
	m := mustRun(t, cfg, secretKeys)
	owners := []string{"123456789012", "098765432101", "self"}
	x64, arm := "jit-runner-*-runner2.332.0-*-x86_64", "jit-runner-*-runner2.332.0-*-arm64"
	want := []amiLookup{
		{Name: arm, Arch: "arm64", State: "available", Owners: owners, MostRecent: true},
		{Name: x64, Arch: "x86_64", State: "available", Owners: owners, MostRecent: true},
	}
	if got := amiLookups(m); !reflect.DeepEqual(got, want) {
		t.Errorf("AMI lookups %+v\nwant %+v", got, want)
	}
	if program.PrebakedAMIName("2.332.0", "x64") != x64 {
		t.Errorf("PrebakedAMIName %s", program.PrebakedAMIName("2.332.0", "x64"))
	}
	if got, w := images(t, m), map[string]string{"default": plan.ImageID(x64), "arm": plan.ImageID(arm), "pinned": "ami-0aaaaaaaaaaaaaaaa"}; !reflect.DeepEqual(got, w) {
		t.Errorf("images %v, want %v", got, w)
	}
	if got := parameterLookups(m); len(got) != 0 {
		t.Errorf("SSM lookups %v in mode prebaked", got)
	}

	// Another runner version looks for AMIs of that version.
	cfg["jit-runners:runnerVersion"] = "2.333.0"
	cfg["jit-runners:runnerSha256"] = `{"x64": "` + strings.Repeat("1", 64) + `", "arm64": "` + strings.Repeat("2", 64) + `"}`
	cfg["jit-runners:profiles"] = `{"default": {"instanceTypes": ["t3.large"]}}`
	m = mustRun(t, cfg, secretKeys)
	if got := amiLookups(m); len(got) != 1 || got[0].Name != "jit-runner-*-runner2.333.0-*-x86_64" {
		t.Errorf("AMI lookups %+v", got)
	}

	// A marketplace owner is refused with the reason, and nothing is looked up.
	bad := map[string]string{}
	for k, v := range cfg {
		bad[k] = v
	}
	bad["jit-runners:ami"] = `{"mode": "prebaked", "owners": ["123456789012", "aws-marketplace"]}`
	m = plan.NewMocks()
	if err := runWith(t, m, program.Options{}, bad); err == nil || !strings.Contains(err.Error(), "jit-runners:ami.owners[1]: must not be aws-marketplace") {
		t.Errorf("aws-marketplace owner: error %v", err)
	}
	if got := amiLookups(m); len(got) != 0 {
		t.Errorf("AMI lookups %+v with a refused owner", got)
	}

	// None published: the error says what was looked for and which keys to check.
	m = plan.NewMocks()
	m.Images = map[string]string{"jit-runner-*-runner2.333.0-*-x86_64": ""}
	err := runWith(t, m, program.Options{}, cfg)
	if err == nil || !strings.Contains(err.Error(), "jit-runners:ami.mode: no jit-runners AMI named jit-runner-*-runner2.333.0-*-x86_64") ||
		!strings.Contains(err.Error(), "jit-runners:ami.owners") {
		t.Errorf("error %v", err)
	}
}

// TestAMIModeBuild: the program hands the build to the component: one Packer
// build per architecture, whose AMI the launch template and JITR_CONFIG use.
func TestAMIModeBuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(t.TempDir(), "tools.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntrue\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := required()
	cfg["jit-runners:profiles"] = twoArchs
	cfg["jit-runners:ami"] = `{"mode": "build", "jitRunnersVersion": "v0.9.0", "extraScript": "` + script + `"}`
	cfg["jit-runners:network"] = `{"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["subnet-0aaaaaaaaaaaaaaaa"], "associatePublicIp": true}`
	m := plan.NewMocks()
	if err := runWith(t, m, program.Options{AMIBuildDir: dir}, cfg); err != nil {
		t.Fatal(err)
	}
	var builds []plan.Resource
	for _, r := range m.Resources() {
		if r.Type == runners.CommandType {
			builds = append(builds, r)
		}
	}
	if len(builds) != 2 || builds[0].Name != "jitr-ami-arm64" || builds[1].Name != "jitr-ami-x64" {
		t.Fatalf("builds %v", builds)
	}
	for _, b := range builds {
		env := plan.Plain(b.Inputs)["environment"].(map[string]any)
		for k, v := range map[string]string{
			"JITR_PACKER_DIR": dir, "PKR_VAR_jit_runners_version": "v0.9.0", "PKR_VAR_runner_version": "2.332.0",
			"PKR_VAR_subnet_id": "subnet-0aaaaaaaaaaaaaaaa", "PKR_VAR_associate_public_ip_address": "true",
		} {
			if env[k] != v {
				t.Errorf("%s: %s=%v, want %s", b.Name, k, env[k], v)
			}
		}
		if s, _ := env["PKR_VAR_extra_script"].(string); !strings.HasPrefix(s, "extra-") {
			t.Errorf("%s: extra_script %q", b.Name, s)
		} else if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			t.Errorf("extra script not in the template directory: %v", err)
		}
		if _, ok := env["JITR_PACKER"].(string); !ok {
			t.Errorf("%s: no packer command", b.Name)
		}
	}
	x64, arm := plan.ImageID("jitr-ami-x64"), plan.ImageID("jitr-ami-arm64")
	if got, w := images(t, m), map[string]string{"default": x64, "arm": arm, "pinned": "ami-0aaaaaaaaaaaaaaaa"}; !reflect.DeepEqual(got, w) {
		t.Errorf("images %v, want %v", got, w)
	}
	for _, r := range m.Resources() {
		if r.Type == "aws:ec2/launchTemplate:LaunchTemplate" {
			if r.Inputs["imageId"] != resource.NewStringProperty(x64) || !slices.Contains(r.Dependencies, builds[1].URN) {
				t.Errorf("launch template image %v, dependencies %v", r.Inputs["imageId"], r.Dependencies)
			}
		}
	}
	if n := len(parameterLookups(m)) + len(amiLookups(m)); n != 0 {
		t.Errorf("%d image lookups in mode build", n)
	}
}

// TestAMIModeIDPerArch: ami.ids gives each architecture its image; a
// profile's imageId wins.
func TestAMIModeIDPerArch(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:profiles"] = twoArchs
	cfg["jit-runners:ami"] = `{"mode": "id", "ids": {"x64": "ami-0bbbbbbbbbbbbbbbb", "arm64": "ami-0cccccccccccccccc"}}`
	m := mustRun(t, cfg, secretKeys)
	if got, w := images(t, m), map[string]string{"default": "ami-0bbbbbbbbbbbbbbbb", "arm": "ami-0cccccccccccccccc", "pinned": "ami-0aaaaaaaaaaaaaaaa"}; !reflect.DeepEqual(got, w) {
		t.Errorf("images %v, want %v", got, w)
	}
	if n := len(parameterLookups(m)) + len(amiLookups(m)); n != 0 {
		t.Errorf("%d image lookups in mode id", n)
	}
	// An architecture without an id needs each of its profiles' imageId.
	cfg["jit-runners:ami"] = `{"mode": "id", "ids": {"x64": "ami-0bbbbbbbbbbbbbbbb"}}`
	if _, err := runProgram(t, cfg, secretKeys); err == nil || !strings.Contains(err.Error(), "jit-runners:profiles.arm.imageId: is required with ami.mode \"id\" unless jit-runners:ami.ids.arm64 is set") {
		t.Errorf("error %v", err)
	}
}

package runners_test

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/packer"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// buildArgs returns sampleArgs with the AMIs of "default" (x64) and "arm"
// (arm64) built, and a "pinned" x64 profile that brings its own.
func buildArgs(t *testing.T) *runners.RunnersArgs {
	a := sampleArgs(t)
	a.Profiles = map[string]runners.Profile{
		"default": {InstanceTypes: []string{"t3.large"}},
		"arm":     {InstanceTypes: []string{"c7g.large"}, Arch: "arm64"},
		"pinned":  {InstanceTypes: []string{"m6i.large"}, ImageID: pulumi.String("ami-0aaaaaaaaaaaaaaaa")},
	}
	a.AMIBuild = &runners.AMIBuild{
		Dir: t.TempDir(), Packer: "/opt/packer/bin/packer", PluginPath: "/opt/packer/plugins",
	}
	return a
}

// env returns a command's environment.
func env(t *testing.T, r plan.Resource) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range inputs(r)["environment"].(map[string]any) {
		out[k] = v.(string)
	}
	return out
}

// packerVars returns the Packer variables a command passes (PKR_VAR_*).
func packerVars(env map[string]string) map[string]string {
	vars := map[string]string{}
	for k, v := range env {
		if name, ok := strings.CutPrefix(k, "PKR_VAR_"); ok {
			vars[name] = v
		}
	}
	return vars
}

func trigger(t *testing.T, r plan.Resource) string {
	t.Helper()
	return at(t, inputs(r), "triggers", 0).(string)
}

// TestAMIBuild: one Packer build per architecture that a profile without
// an image runs on; its AMI is those profiles' image, in the launch template
// and JITR_CONFIG, which therefore depend on the build.
func TestAMIBuild(t *testing.T) {
	t.Parallel()
	args := buildArgs(t)
	m := deploy(t, args)
	cmds := ofType(m, runners.CommandType)
	if got := names(cmds); !reflect.DeepEqual(got, []string{"ci-ami-arm64", "ci-ami-x64"}) {
		t.Fatalf("build commands %v", got)
	}
	x64, arm := one(t, m, runners.CommandType, "ci-ami-x64"), one(t, m, runners.CommandType, "ci-ami-arm64")
	for _, c := range []struct {
		cmd    plan.Resource
		source string
	}{{x64, "x86_64"}, {arm, "arm64"}} {
		e := env(t, c.cmd)
		want := map[string]string{
			"AWS_REGION": "eu-west-1", "JITR_PACKER_SOURCE": c.source, "JITR_PACKER_DIR": args.AMIBuild.Dir,
			"JITR_PACKER": "/opt/packer/bin/packer", "PACKER_PLUGIN_PATH": "/opt/packer/plugins",
			"PKR_VAR_region": "eu-west-1", "PKR_VAR_runner_version": config.DefaultRunnerVersion,
			"PKR_VAR_runner_sha256_x64": config.DefaultRunnerSHA256X64, "PKR_VAR_runner_sha256_arm64": config.DefaultRunnerSHA256ARM64,
			"PKR_VAR_jit_runners_version": runners.DefaultAMIVersion,
			"PKR_VAR_ami_public":          "false", "PKR_VAR_distribute": "false",
			"PKR_VAR_manifest_path": "manifest-" + c.source + ".json",
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("%s: %s=%q, want %q", c.cmd.Name, k, e[k], v)
			}
		}
		// Nothing secret, nothing but what the build needs.
		for k := range e {
			if !strings.HasPrefix(k, "PKR_VAR_") && !strings.HasPrefix(k, "JITR_") && !slices.Contains([]string{"AWS_REGION", "PACKER_PLUGIN_PATH", "CHECKPOINT_DISABLE"}, k) {
				t.Errorf("%s: unexpected variable %s", c.cmd.Name, k)
			}
		}
		for k, v := range plan.Entries([]plan.Resource{c.cmd})[0].Inputs["environment"].(map[string]any) {
			if v == plan.SecretValue {
				t.Errorf("%s: %s is a secret", c.cmd.Name, k)
			}
		}
		for _, k := range []string{"PKR_VAR_subnet_id", "PKR_VAR_extra_script"} {
			if _, ok := e[k]; ok {
				t.Errorf("%s: %s set without an existing VPC or an extra script", c.cmd.Name, k)
			}
		}
		// The trigger is the hash of the template, its scripts and these variables.
		h, err := packer.Hash(packerVars(e))
		if err != nil {
			t.Fatal(err)
		}
		if got := trigger(t, c.cmd); got != h {
			t.Errorf("%s: trigger %s, want packer.Hash(vars) %s", c.cmd.Name, got, h)
		}
		in := inputs(c.cmd)
		for key, action := range map[string]string{"create": "build", "update": "reuse", "delete": "delete"} {
			if s, _ := in[key].(string); !strings.HasSuffix(s, "\n"+action+"\n") || !strings.Contains(s, "set -euo pipefail") {
				t.Errorf("%s: %s runs %.80q", c.cmd.Name, key, s)
			}
		}
		if !reflect.DeepEqual(in["interpreter"], []any{"/bin/bash", "-c"}) {
			t.Errorf("%s: interpreter %v", c.cmd.Name, in["interpreter"])
		}
		if c.cmd.Parent != one(t, m, runners.ComponentType, "ci").URN {
			t.Errorf("%s: parent %s", c.cmd.Name, c.cmd.Parent)
		}
	}
	if trigger(t, x64) == trigger(t, arm) {
		t.Error("both architectures have the same trigger")
	}

	// The built AMI (the last line of the command's stdout) is the image.
	x64AMI, armAMI := plan.ImageID("ci-ami-x64"), plan.ImageID("ci-ami-arm64")
	lt := one(t, m, "aws:ec2/launchTemplate:LaunchTemplate", "ci-runner")
	if got := inputs(lt)["imageId"]; got != x64AMI {
		t.Errorf("launch template image %v, want %s", got, x64AMI)
	}
	if !slices.Contains(lt.Dependencies, x64.URN) {
		t.Errorf("the launch template does not depend on the x64 build: %v", lt.Dependencies)
	}
	scaleup := one(t, m, "aws:lambda/function:Function", "ci-scaleup")
	c, err := config.Parse([]byte(at(t, inputs(scaleup), "environment", "variables", config.EnvVar).(string)))
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]string{}
	for name, p := range c.Profiles {
		images[name] = p.ImageID
	}
	if want := map[string]string{"default": x64AMI, "arm": armAMI, "pinned": "ami-0aaaaaaaaaaaaaaaa"}; !reflect.DeepEqual(images, want) {
		t.Errorf("JITR_CONFIG images %v, want %v", images, want)
	}
	for _, dep := range []string{x64.URN, arm.URN} {
		if !slices.Contains(scaleup.Dependencies, dep) {
			t.Errorf("the scaleup Lambda does not depend on %s", dep)
		}
	}
	uses := statement(t, policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-scaleup"), "policy"), "LaunchFromThisDeployment").Resource
	for _, id := range []string{x64AMI, armAMI} {
		if !slices.Contains(uses, "arn:aws:ec2:eu-west-1::image/"+id) {
			t.Errorf("launches may not use the built %s: %v", id, uses)
		}
	}

	// The template is where the build runs.
	for _, f := range []string{"jit-runner.pkr.hcl", "variables.pkr.hcl", "scripts/50-runner.sh"} {
		if _, err := os.Stat(filepath.Join(args.AMIBuild.Dir, f)); err != nil {
			t.Errorf("template directory: %v", err)
		}
	}
}

// TestAMIBuildTriggers: a change to any Packer variable changes the trigger
// (a new AMI); the same arguments give the same trigger.
func TestAMIBuildTriggers(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "tools.sh")
	writeFile := func(content string) {
		if err := os.WriteFile(script, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func(change func(a *runners.RunnersArgs)) (string, map[string]string) {
		a := buildArgs(t)
		change(a)
		cmd := one(t, deploy(t, a), runners.CommandType, "ci-ami-x64")
		return trigger(t, cmd), env(t, cmd)
	}
	base, _ := build(func(*runners.RunnersArgs) {})
	if again, _ := build(func(*runners.RunnersArgs) {}); again != base {
		t.Errorf("the same build has two triggers: %s, %s", base, again)
	}
	// Where packer and the template are does not rebuild the AMI.
	if moved, _ := build(func(a *runners.RunnersArgs) { a.AMIBuild.Packer = "packer"; a.AMIBuild.PluginPath = "" }); moved != base {
		t.Error("the packer command changes the trigger")
	}
	triggers := map[string]string{"the defaults": base}
	writeFile("#!/bin/sh\necho one\n")
	triggers["an extra script"], _ = build(func(a *runners.RunnersArgs) { a.AMIBuild.ExtraScript = script })
	writeFile("#!/bin/sh\necho two\n")
	var e map[string]string
	triggers["another extra script"], e = build(func(a *runners.RunnersArgs) { a.AMIBuild.ExtraScript = script })
	if extra := e["PKR_VAR_extra_script"]; !strings.HasPrefix(extra, "extra-") || filepath.IsAbs(extra) {
		t.Errorf("extra_script %q: want a name in the template directory", extra)
	}
	for _, c := range []struct {
		name   string
		change func(a *runners.RunnersArgs)
		want   map[string]string
	}{
		{"runner version", func(a *runners.RunnersArgs) {
			a.RunnerVersion, a.RunnerSHA256X64, a.RunnerSHA256ARM64 = "2.333.0", strings.Repeat("1", 64), strings.Repeat("2", 64)
		}, map[string]string{"PKR_VAR_runner_version": "2.333.0", "PKR_VAR_runner_sha256_x64": strings.Repeat("1", 64)}},
		{"jit-runners version", func(a *runners.RunnersArgs) { a.AMIBuild.JITRunnersVersion = "v1.2.3" },
			map[string]string{"PKR_VAR_jit_runners_version": "v1.2.3"}},
		{"existing VPC", func(a *runners.RunnersArgs) {
			a.Network = runners.Network{
				VpcID:     pulumi.String("vpc-0123456789abcdef0"),
				SubnetIDs: pulumi.ToStringArray([]string{"subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"}),
			}
		}, map[string]string{"PKR_VAR_subnet_id": "subnet-0aaaaaaaaaaaaaaaa", "PKR_VAR_associate_public_ip_address": "false"}},
	} {
		var e map[string]string
		triggers[c.name], e = build(c.change)
		for k, v := range c.want {
			if e[k] != v {
				t.Errorf("%s: %s=%q, want %q", c.name, k, e[k], v)
			}
		}
	}
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(triggers)) {
		if other, dup := seen[triggers[name]]; dup {
			t.Errorf("%s: same trigger as %s", name, other)
		}
		seen[triggers[name]] = name
	}
}

// TestAMIBuildNotNeeded: no build when every profile has its image.
func TestAMIBuildNotNeeded(t *testing.T) {
	t.Parallel()
	a := sampleArgs(t)
	a.AMIBuild = &runners.AMIBuild{Dir: filepath.Join(t.TempDir(), "unused")}
	m := deploy(t, a)
	if got := ofType(m, runners.CommandType); len(got) != 0 {
		t.Errorf("built %v", names(got))
	}
	if _, err := os.Stat(a.AMIBuild.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("template written without a build: %v", err)
	}
}

// TestAMIBuildPreview: a preview registers the builds but writes no template.
func TestAMIBuildPreview(t *testing.T) {
	t.Parallel()
	a := buildArgs(t)
	a.AMIBuild.Dir = filepath.Join(a.AMIBuild.Dir, "template")
	m := plan.NewMocks()
	preview := func(info *pulumi.RunInfo) { info.DryRun = true }
	if err := plan.Run(func(ctx *pulumi.Context) error {
		_, err := runners.NewRunners(ctx, "ci", a)
		return err
	}, m, preview); err != nil {
		t.Fatal(err)
	}
	if got := names(ofType(m, runners.CommandType)); len(got) != 2 {
		t.Errorf("builds %v", got)
	}
	if _, err := os.Stat(a.AMIBuild.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a preview wrote the template: %v", err)
	}
}

func TestAMIBuildValidate(t *testing.T) {
	t.Parallel()
	a := buildArgs(t)
	a.AMIBuild.JITRunnersVersion = "1.0 beta"
	a.AMIBuild.ExtraScript = filepath.Join(t.TempDir(), "missing.sh")
	_, err := a.Validate()
	for _, key := range []string{"AMIBuild.JITRunnersVersion", "AMIBuild.ExtraScript"} {
		found := false
		for _, e := range unjoinAll(err) {
			var ae *runners.ArgError
			if errors.As(e, &ae) && ae.Key == key {
				found = true
			}
		}
		if !found {
			t.Errorf("no error for %s in %v", key, err)
		}
	}
	// Without AMIBuild a profile needs its image.
	a.AMIBuild = nil
	if _, err := a.Validate(); err == nil || !strings.Contains(err.Error(), "profiles.default.imageId") {
		t.Errorf("error %v, want one naming profiles.default.imageId", err)
	}
}

func unjoinAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoinAll(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// fakeTools writes stand-ins for packer and aws into a directory: packer
// records its arguments and working directory and writes the manifest
// (or fails with FAKE_PACKER_FAIL); aws records its arguments and answers
// describe-images by image id with one snapshot.
func fakeTools(t *testing.T) (bin, calls string) {
	t.Helper()
	bin = t.TempDir()
	calls = filepath.Join(bin, "calls.log")
	scripts := map[string]string{
		"packer": `#!/bin/bash
printf 'packer %s (in %s, runner %s)\n' "$*" "$PWD" "$PKR_VAR_runner_version" >>"` + calls + `"
echo "==> building"
if [[ -n ${FAKE_PACKER_FAIL:-} ]]; then echo "error: $FAKE_PACKER_FAIL"; exit 1; fi
cat >"$PKR_VAR_manifest_path" <<EOF
{
  "builds": [
    {
      "name": "x86_64",
      "artifact_id": "us-east-1:ami-0ffffffffffffffff,$PKR_VAR_region:ami-0123456789abcdef0"
    }
  ]
}
EOF
`,
		"aws": `#!/bin/bash
printf 'aws %s\n' "$*" >>"` + calls + `"
case "$*" in
*"describe-images"*"--image-ids"*) echo "snap-0aaaaaaaaaaaaaaaa" ;;
esac
`,
	}
	for name, s := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin, calls
}

// runAction runs a command input (create, update, delete) of the x64 build
// the way the command provider does: the interpreter, the environment.
func runAction(t *testing.T, cmd plan.Resource, key, path string, extraEnv ...string) (stdout, stderr string, err error) {
	t.Helper()
	in := inputs(cmd)
	e := []string{"PATH=" + path, "HOME=" + t.TempDir()}
	for k, v := range env(t, cmd) {
		e = append(e, k+"="+v)
	}
	c := exec.Command("/bin/bash", "-c", in[key].(string))
	c.Env = append(e, extraEnv...)
	c.Dir = t.TempDir()
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err = c.Run()
	return out.String(), errOut.String(), err
}

// TestAMIBuildCommands runs the build, update and delete commands against
// stand-ins for packer and the AWS CLI.
func TestAMIBuildCommands(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("no /bin/bash")
	}
	t.Parallel()
	bin, calls := fakeTools(t)
	a := buildArgs(t)
	a.AMIBuild.Packer = filepath.Join(bin, "packer")
	cmd := one(t, deploy(t, a), runners.CommandType, "ci-ami-x64")
	path := bin + ":/usr/bin:/bin"
	log := func() string {
		b, _ := os.ReadFile(calls)
		_ = os.Remove(calls)
		return string(b)
	}

	// create: packer builds x86_64 in the template directory; stdout ends with this region's AMI.
	out, stderr, err := runAction(t, cmd, "create", path)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "jitr:build-id=jitr-x64-") || lines[1] != "ami-0123456789abcdef0" {
		t.Errorf("build printed %q", out)
	}
	buildID := strings.TrimPrefix(lines[0], "jitr:build-id=")
	got := log()
	for _, want := range []string{"packer build -color=false -only=jit-runner.amazon-ebs.x86_64 -var build_id=" + buildID + " .",
		"(in " + a.AMIBuild.Dir + ", runner " + config.DefaultRunnerVersion + ")"} {
		if !strings.Contains(got, want) {
			t.Errorf("calls lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "aws ") {
		t.Errorf("a good build called aws:\n%s", got)
	}
	if log, err := os.ReadFile(filepath.Join(a.AMIBuild.Dir, "build-x86_64.log")); err != nil || !strings.Contains(string(log), "==> building") {
		t.Errorf("build log %q (%v)", log, err)
	}

	// update without a new trigger: the same AMI, no build.
	again, stderr, err := runAction(t, cmd, "update", path, "PULUMI_COMMAND_STDOUT="+strings.TrimSpace(out))
	if err != nil || strings.TrimSpace(again) != strings.TrimSpace(out) {
		t.Errorf("update printed %q (%v)\n%s", again, err, stderr)
	}
	if got := log(); got != "" {
		t.Errorf("update ran %s", got)
	}
	if _, _, err := runAction(t, cmd, "update", path, "PULUMI_COMMAND_STDOUT=garbage"); err == nil {
		t.Error("update without an AMI id succeeded")
	}

	// delete: the AMI, its snapshot, and whatever carries the build's tag.
	if _, stderr, err := runAction(t, cmd, "delete", path, "PULUMI_COMMAND_STDOUT="+strings.TrimSpace(out)); err != nil {
		t.Fatalf("delete: %v\n%s", err, stderr)
	}
	got = log()
	for _, want := range []string{
		"aws ec2 deregister-image --region eu-west-1 --image-id ami-0123456789abcdef0",
		"aws ec2 delete-snapshot --region eu-west-1 --snapshot-id snap-0aaaaaaaaaaaaaaaa",
		"Name=tag:jitr:build-id,Values=" + buildID,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("delete calls lack %q:\n%s", want, got)
		}
	}

	// A failed build shows Packer's output and removes what carries its tag.
	_, stderr, err = runAction(t, cmd, "create", path, "FAKE_PACKER_FAIL=no default VPC")
	if err == nil || !strings.Contains(stderr, "error: no default VPC") {
		t.Errorf("failed build: %v\n%s", err, stderr)
	}
	if got := log(); !strings.Contains(got, "describe-images --region eu-west-1 --owners self --filters Name=tag:jitr:build-id,Values=jitr-x64-") {
		t.Errorf("no cleanup after a failed build:\n%s", got)
	}

	// Without packer the build says how to get it.
	b := buildArgs(t)
	b.AMIBuild.Packer = filepath.Join(t.TempDir(), "packer")
	missing := one(t, deploy(t, b), runners.CommandType, "ci-ami-x64")
	if _, stderr, err := runAction(t, missing, "create", path); err == nil || !strings.Contains(stderr, "make ami.tools") {
		t.Errorf("build without packer: %v\n%s", err, stderr)
	}
}

package runners

import (
	"crypto/sha256"
	_ "embed" // ami.sh
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi-command/sdk/go/command/local"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/packer"
	"github.com/jit-runners/jit-runners/runtime/config"
)

// AMIBuild builds the runner AMI with Packer (packer/jit-runner.pkr.hcl) as a
// resource of the deployment: one local.Command per architecture that a
// profile without ImageID runs on. The command runs `packer build` for that
// architecture only, private and in the stack's region; its stdout ends with
// the AMI id, which becomes those profiles' image (launch template and
// JITR_CONFIG), so they depend on the build. Its trigger is packer.Hash of the
// template, the scripts and the variables: any change builds a new AMI, and
// the old one is deregistered (with its snapshots) once nothing uses it. The
// machine running `pulumi up` needs packer with the amazon plugin, AWS
// credentials in its environment, and the AWS CLI to deregister.
type AMIBuild struct {
	// JITRunnersVersion names the AMI (jit_runners_version). Default
	// DefaultAMIVersion.
	JITRunnersVersion string
	// ExtraScript is the path of a script run as root on the build
	// instance after the tools are installed (extra_script); its content is
	// part of the trigger. Empty: none.
	ExtraScript string
	// Dir is where the template is written (a fixed directory per
	// deployment, rewritten by every `pulumi up`). Default
	// <os.UserCacheDir()>/jit-runners/packer/<project>/<stack>/<name>.
	Dir string
	// Packer is the packer command. Default "packer", from PATH.
	Packer string
	// PluginPath is PACKER_PLUGIN_PATH, where the amazon plugin is. Empty:
	// the environment's, or Packer's default directory.
	PluginPath string
}

// DefaultAMIVersion is AMIBuild.JITRunnersVersion's default, the template's
// own default.
const DefaultAMIVersion = "dev"

// CommandType is the type token of the Packer build resources.
const CommandType = "command:local:Command"

// AMIArchitectures maps a runner architecture (config.Profile.Arch) to the
// EC2 architecture, which is also the template's source name and the last
// element of a jit-runners AMI name.
var AMIArchitectures = map[string]string{
	config.ArchX64:   "x86_64",
	config.ArchARM64: "arm64",
}

// amiScript is the build command (see ami.sh).
//
//go:embed ami.sh
var amiScript string

// The AMI's name part, as the template checks it.
var amiVersionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`)

var amiIDRE = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)

// validate checks b, reporting errors as AMIBuild.<Field>.
func (b *AMIBuild) validate(add func(key, format string, args ...any)) {
	if !amiVersionRE.MatchString(b.JITRunnersVersion) {
		add("AMIBuild.JITRunnersVersion", "must be 1-64 of letters, digits, '.', '_', '+', '-' (it is part of the AMI name), got %q", b.JITRunnersVersion)
	}
	if b.ExtraScript != "" {
		if fi, err := os.Stat(b.ExtraScript); err != nil {
			add("AMIBuild.ExtraScript", "%v", err)
		} else if !fi.Mode().IsRegular() {
			add("AMIBuild.ExtraScript", "%s is not a file", b.ExtraScript)
		}
	}
}

// packerVars returns the Packer variables of the build of arch (x64 or
// arm64) in region: the deployment's runner version and digests, a private
// AMI in the build region only, and (with an existing VPC) the first runner
// subnet. extraScript is the name of the extra script in the template
// directory, or empty. The stack passes them as PKR_VAR_* and triggers a
// rebuild on packer.Hash of them.
func (a RunnersArgs) packerVars(region, arch, extraScript string) pulumi.StringMapOutput {
	vars := pulumi.StringMap{
		"region":              pulumi.String(region),
		"runner_version":      pulumi.String(a.RunnerVersion),
		"runner_sha256_x64":   pulumi.String(a.RunnerSHA256X64),
		"runner_sha256_arm64": pulumi.String(a.RunnerSHA256ARM64),
		"jit_runners_version": pulumi.String(a.AMIBuild.JITRunnersVersion),
		"ami_public":          pulumi.String("false"),
		"distribute":          pulumi.String("false"),
		// Relative to the template directory, where the build runs.
		"manifest_path": pulumi.String("manifest-" + AMIArchitectures[arch] + ".json"),
	}
	if extraScript != "" {
		vars["extra_script"] = pulumi.String(extraScript)
	}
	if a.Network.byo() {
		// The build instance goes where runners go; Packer reaches it over
		// SSH on its public IP when runners get one, else on its private IP.
		vars["subnet_id"] = a.Network.SubnetIDs.ToStringArrayOutput().ApplyT(func(ids []string) (string, error) {
			if len(ids) == 0 {
				return "", fmt.Errorf("no subnet for the AMI build")
			}
			return ids[0], nil
		}).(pulumi.StringOutput)
		vars["associate_public_ip_address"] = pulumi.String(strconv.FormatBool(a.Network.AssociatePublicIP))
	}
	return vars.ToStringMapOutput()
}

// amiBuilds creates the Packer builds when AMIBuild is set and gives every
// profile without ImageID the AMI built for its architecture.
func (d *deployment) amiBuilds() error {
	b := d.args.AMIBuild
	if b == nil {
		return nil
	}
	users := map[string][]string{} // arch -> profiles
	for _, name := range sortedKeys(d.args.Profiles) {
		if p := d.args.Profiles[name]; p.ImageID == nil {
			arch := p.Arch
			if arch == "" {
				arch = config.ArchX64
			}
			users[arch] = append(users[arch], name)
		}
	}
	if len(users) == 0 {
		return nil
	}
	dir, err := b.dir(d.ctx, d.name)
	if err != nil {
		return err
	}
	extra, err := d.prepareTemplate(dir)
	if err != nil {
		return err
	}
	profiles := maps.Clone(d.args.Profiles)
	for _, arch := range sortedKeys(users) {
		image, err := d.amiBuild(dir, arch, extra)
		if err != nil {
			return err
		}
		for _, name := range users[arch] {
			p := profiles[name]
			p.ImageID = image
			profiles[name] = p
		}
	}
	d.args.Profiles = profiles
	return nil
}

// dir returns the template directory.
func (b *AMIBuild) dir(ctx *pulumi.Context, name string) (string, error) {
	if b.Dir != "" {
		return filepath.Abs(b.Dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("packer template directory: %w", err)
	}
	return filepath.Join(base, "jit-runners", "packer", pathSafe(ctx.Project()), pathSafe(ctx.Stack()), pathSafe(name)), nil
}

var unsafePath = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func pathSafe(s string) string {
	s = unsafePath.ReplaceAllString(s, "_")
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	return s
}

// prepareTemplate writes the template and the extra script (named by its
// SHA-256, so its content is part of the variables' hash) into dir, and
// returns the extra script's name. A preview writes nothing.
func (d *deployment) prepareTemplate(dir string) (string, error) {
	b := d.args.AMIBuild
	var script []byte
	extra := ""
	if b.ExtraScript != "" {
		var err error
		if script, err = os.ReadFile(b.ExtraScript); err != nil {
			return "", fmt.Errorf("AMI extra script: %w", err)
		}
		sum := sha256.Sum256(script)
		extra = "extra-" + hex.EncodeToString(sum[:]) + ".sh"
	}
	if d.ctx.DryRun() {
		return extra, nil
	}
	if err := packer.WriteTo(dir); err != nil {
		return "", err
	}
	if extra != "" {
		if err := os.WriteFile(filepath.Join(dir, extra), script, 0o755); err != nil {
			return "", fmt.Errorf("AMI extra script: %w", err)
		}
	}
	return extra, nil
}

// amiBuild creates the build of arch and returns its AMI id.
func (d *deployment) amiBuild(dir, arch, extra string) (pulumi.StringOutput, error) {
	b := d.args.AMIBuild
	source := AMIArchitectures[arch]
	vars := d.args.packerVars(d.region, arch, extra)
	trigger := vars.ApplyT(func(v map[string]string) (string, error) {
		return packer.Hash(v)
	}).(pulumi.StringOutput)
	packerCmd := b.Packer
	if packerCmd == "" {
		packerCmd = "packer"
	}
	env := vars.ApplyT(func(v map[string]string) map[string]string {
		env := map[string]string{
			"AWS_REGION":         d.region,
			"CHECKPOINT_DISABLE": "1",
			"JITR_PACKER":        packerCmd,
			"JITR_PACKER_DIR":    dir,
			"JITR_PACKER_SOURCE": source,
			"JITR_BUILD_NAME":    d.args.NamePrefix + "-" + arch,
		}
		if b.PluginPath != "" {
			env["PACKER_PLUGIN_PATH"] = b.PluginPath
		}
		for k, val := range v {
			env["PKR_VAR_"+k] = val
		}
		return env
	}).(pulumi.StringMapOutput)
	action := func(a string) pulumi.StringPtrInput { return pulumi.String(amiScript + "\n" + a + "\n") }
	cmd, err := local.NewCommand(d.ctx, d.n("ami-"+arch), &local.CommandArgs{
		Create:      action("build"),
		Update:      action("reuse"),
		Delete:      action("delete"),
		Interpreter: pulumi.ToStringArray([]string{"/bin/bash", "-c"}),
		Environment: env,
		Triggers:    pulumi.Array{trigger},
	}, d.opts()...)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	return cmd.Stdout.ApplyT(builtAMI).(pulumi.StringOutput), nil
}

// builtAMI returns the AMI id on the last line of a build's stdout.
func builtAMI(stdout string) (string, error) {
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	id := strings.TrimSpace(lines[len(lines)-1])
	if !amiIDRE.MatchString(id) {
		return "", fmt.Errorf("the AMI build's output does not end with an AMI id: %q", id)
	}
	return id, nil
}

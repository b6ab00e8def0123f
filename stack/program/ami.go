package program

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ec2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ssm"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// ownerRE matches what ami.owners takes: an account id, or the owner aliases
// self and amazon. Not aws-marketplace: any seller can publish a marketplace
// AMI under any name, and the lookup takes the most recent match by name, so
// a look-alike published later would become the runners' AMI (AMI name
// squatting).
var ownerRE = regexp.MustCompile(`^([0-9]{12}|self|amazon)$`)

// checkAMI checks the ami.* keys against the mode: each key applies to one
// mode only, so a key set for another mode is a mistake worth reporting.
func (c *Config) checkAMI(mode string, add func(key, format string, args ...any)) {
	a := c.AMI
	only := func(key, keyMode string) {
		if mode != keyMode {
			add(key, "applies to ami.mode %q only (ami.mode is %q)", keyMode, mode)
		}
	}
	if len(a.Owners) > 0 {
		only("ami.owners", AMIPrebaked)
	} else if mode == AMIPrebaked {
		add("ami.owners", "is required with ami.mode %q: the AWS account ids that publish the jit-runners AMIs (yours: \"self\"); "+
			"there is no official publisher: pulumi config set --path '%s[0]' 123456789012", AMIPrebaked, Key("ami.owners"))
	}
	for i, o := range a.Owners {
		switch {
		case string(o) == "aws-marketplace":
			add(fmt.Sprintf("ami.owners[%d]", i), "must not be aws-marketplace: anyone can publish a marketplace AMI under a look-alike name, "+
				"and the newest match by name would run your jobs; name the publisher's account id instead")
		case !ownerRE.MatchString(string(o)):
			add(fmt.Sprintf("ami.owners[%d]", i), "must be an AWS account id (12 digits) or an owner alias (self, amazon), got %q", o)
		}
	}
	if a.JITRunnersVersion != "" {
		only("ami.jitRunnersVersion", AMIBuild)
	}
	if a.ExtraScript != "" {
		only("ami.extraScript", AMIBuild)
	}
	for _, arch := range []string{config.ArchX64, config.ArchARM64} {
		id := a.IDs.get(arch)
		if id == "" {
			continue
		}
		key := "ami.ids." + arch
		only(key, AMIID)
		if !strings.HasPrefix(id, "ami-") {
			add(key, "must be an AMI id (ami-...), got %q", id)
		}
	}
}

// amiBuild returns the component's AMI build settings. Packer and its
// amazon plugin are the ones `make ami.tools` put into the project's .tools
// when they are there, else packer from PATH and the plugin from
// PACKER_PLUGIN_PATH or Packer's own plugin directory.
func (c *Config) amiBuild(ctx *pulumi.Context, o Options) *runners.AMIBuild {
	root := projectDir(ctx)
	b := &runners.AMIBuild{JITRunnersVersion: c.AMI.JITRunnersVersion, ExtraScript: c.AMI.ExtraScript, Dir: o.AMIBuildDir}
	if b.ExtraScript != "" && !filepath.IsAbs(b.ExtraScript) && root != "" {
		b.ExtraScript = filepath.Join(root, b.ExtraScript)
	}
	if root == "" {
		return b
	}
	tools := filepath.Join(root, ".tools")
	if fi, err := os.Stat(filepath.Join(tools, "bin", "packer")); err == nil && fi.Mode().IsRegular() {
		b.Packer = filepath.Join(tools, "bin", "packer")
	}
	if os.Getenv("PACKER_PLUGIN_PATH") == "" {
		if fi, err := os.Stat(filepath.Join(tools, "packer-plugins")); err == nil && fi.IsDir() {
			b.PluginPath = filepath.Join(tools, "packer-plugins")
		}
	}
	return b
}

// projectDir returns the directory of Pulumi.yaml: the CLI says where it
// is; elsewhere (the plan, tests) the nearest one above the working
// directory. Empty when there is none.
func projectDir(ctx *pulumi.Context) string {
	if d := ctx.RootDirectory(); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "Pulumi.yaml")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// lookupImages gives every profile without imageId the stock or prebaked
// image of its architecture, each looked up once.
func (c *Config) lookupImages(ctx *pulumi.Context, mode string, a *runners.RunnersArgs, profiles map[string]Profile) error {
	images := map[string]string{}
	for _, name := range sortedKeys(a.Profiles) {
		if profiles[name].ImageID != "" {
			continue
		}
		arch := profiles[name].Arch
		if arch == "" {
			arch = config.ArchX64
		}
		if images[arch] == "" {
			var err error
			if mode == AMIPrebaked {
				images[arch], err = c.prebakedImage(ctx, a.RunnerVersion, arch)
			} else {
				images[arch], err = stockImage(ctx, arch)
			}
			if err != nil {
				return err
			}
		}
		p := a.Profiles[name]
		p.ImageID = pulumi.String(images[arch])
		a.Profiles[name] = p
	}
	return nil
}

func stockImage(ctx *pulumi.Context, arch string) (string, error) {
	param := StockAMIParameters[arch]
	res, err := ssm.LookupParameter(ctx, &ssm.LookupParameterArgs{Name: param})
	if err != nil {
		return "", fmt.Errorf("%s: read the Amazon Linux 2023 AMI of %s from SSM parameter %s: %w", Key("ami.mode"), arch, param, err)
	}
	return res.Value, nil
}

// prebakedImage finds the newest available jit-runners AMI of the runner
// version and architecture that ami.owners publish.
func (c *Config) prebakedImage(ctx *pulumi.Context, runnerVersion, arch string) (string, error) {
	owners := make([]string, len(c.AMI.Owners))
	for i, o := range c.AMI.Owners {
		owners[i] = string(o)
	}
	name := PrebakedAMIName(runnerVersion, arch)
	mostRecent := true
	res, err := ec2.LookupAmi(ctx, &ec2.LookupAmiArgs{
		MostRecent: &mostRecent,
		Owners:     owners,
		Filters: []ec2.GetAmiFilter{
			{Name: "name", Values: []string{name}},
			{Name: "architecture", Values: []string{runners.AMIArchitectures[arch]}},
			{Name: "state", Values: []string{"available"}},
		},
	})
	if err != nil {
		return "", fmt.Errorf("%s: no jit-runners AMI named %s owned by %s in this region (%w); check %s, or build one (make ami.build, or ami.mode %q)",
			Key("ami.mode"), name, strings.Join(owners, ", "), err, Key("ami.owners"), AMIBuild)
	}
	return res.Id, nil
}

// quoted lists values as `"a", "b" or "c"`.
func quoted(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = fmt.Sprintf("%q", v)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

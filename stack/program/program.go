// Package program is the jit-runners Pulumi program: it reads the stack
// configuration (`pulumi config`, keys jit-runners:*), validates all of it
// before anything is created, resolves the AMIs, creates one
// runners.Runners and exports its outputs. stack/main.go runs it;
// `make plan` and the tests run it under mocks (package plan).
package program

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// Options change how the program builds the deployment.
type Options struct {
	// Builder builds the Lambda archives (default runners.GoBuilder).
	Builder runners.Builder
	// AMIBuildDir is where ami.mode build writes the Packer template
	// (default runners.AMIBuild's).
	AMIBuildDir string
}

// Run is the program with the default options.
func Run(ctx *pulumi.Context) error { return New(Options{})(ctx) }

// New returns the program.
func New(o Options) pulumi.RunFunc {
	return func(ctx *pulumi.Context) error {
		c, err := Load(ctx)
		if err != nil {
			return err
		}
		args, err := c.Args(ctx, o)
		if err != nil {
			return err
		}
		r, err := runners.NewRunners(ctx, args.NamePrefix, args)
		if err != nil {
			return err
		}
		ctx.Export("webhookUrl", r.WebhookURL)
		ctx.Export("queueUrl", r.QueueURL)
		ctx.Export("deadLetterQueueUrl", r.DeadLetterQueueURL)
		ctx.Export("tableName", r.TableName)
		ctx.Export("launchTemplateIds", r.LaunchTemplateIDs)
		ctx.Export("securityGroupId", r.SecurityGroupID)
		ctx.Export("runnerRoleArn", r.RunnerRoleARN)
		ctx.Export("dashboardName", r.DashboardName)
		return nil
	}
}

var pemRE = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`)

// Args validates the configuration (every problem at once, each naming its
// key), then resolves the stock or prebaked AMIs and returns the
// component's arguments (with ami.mode build, the component builds them).
func (c *Config) Args(ctx *pulumi.Context, o Options) (*runners.RunnersArgs, error) {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, keyError(key, format, args...)) }

	mode := c.AMI.Mode
	if mode == "" {
		mode = AMIStock
	}
	if !slices.Contains(AMIModes, mode) {
		add("ami.mode", "must be one of %s, got %q", quoted(AMIModes), mode)
	}
	c.checkAMI(mode, add)
	profiles := c.Profiles
	namesDefault := c.DefaultProfile == "" || c.DefaultProfile == config.DefaultProfileName
	if _, ok := profiles[config.DefaultProfileName]; profiles == nil || (!ok && namesDefault) {
		// The default profile is always there unless another is named
		// default: setting profiles.gpu.* must not remove it.
		profiles = clone(profiles)
		profiles[config.DefaultProfileName] = Profile{}
	}

	a := &runners.RunnersArgs{
		NamePrefix: c.NamePrefix,
		GitHub: runners.GitHubArgs{
			AppID: c.GitHub.AppID, APIURL: c.GitHub.APIURL, Scope: c.GitHub.Scope,
			RunnerGroup: c.GitHub.RunnerGroup, AllowedOwners: c.GitHub.AllowedOwners,
			PreviousWebhookSecretARN: c.GitHub.PreviousWebhookSecretARN,
		},
		RunnerVersion: c.RunnerVersion, RunnerSHA256X64: c.RunnerSHA256.X64, RunnerSHA256ARM64: c.RunnerSHA256.ARM64,
		MaxRunners: c.MaxRunners, DefaultProfile: c.DefaultProfile, Profiles: map[string]runners.Profile{},
		AllowedInstanceTypes: c.AllowedInstanceTypes, Shapes: c.Shapes, QueueDelaySeconds: c.QueueDelaySeconds,
		RecordRetentionSeconds: c.RecordRetentionSeconds, LogLevel: c.LogLevel,
		ScaleDown: c.ScaleDown, ScaleUp: c.ScaleUp, Redelivery: c.Redelivery,
		Runner: runners.RunnerOptions{
			IdleTimeoutSeconds: c.Runner.IdleTimeoutSeconds, JITWaitSeconds: c.Runner.JITWaitSeconds,
			MetadataHopLimit: c.Runner.MetadataHopLimit, AllowSSHEgress: c.Runner.AllowSSHEgress,
			SSMSessionManager: c.Runner.SSMSessionManager, DownloadBaseURL: c.Runner.DownloadBaseURL,
		},
		LogRetentionDays:     c.LogRetentionDays,
		ThrottlingBurstLimit: c.API.ThrottlingBurstLimit, ThrottlingRateLimit: c.API.ThrottlingRateLimit,
		AlarmEmail: c.Alarms.Email, Tags: c.Tags, Builder: o.Builder,
	}
	a.Network = c.network(add)

	c.profileArgs(a, profiles, mode, add)
	if mode == AMIBuild {
		a.AMIBuild = c.amiBuild(ctx, o)
	}

	c.githubSecrets(a, add)

	// The component fills in the defaults (one layer: runners.RunnersArgs
	// withDefaults) and checks everything; its errors are renamed to the
	// configuration keys they come from.
	valid, err := a.Validate()
	if _, known := runners.KnownRunnerChecksums[valid.RunnerVersion]; !known {
		// Ahead of the component's own "must be 64 hex digits", which
		// dedupe then drops: this says where the digests come from.
		if c.RunnerSHA256.X64 == "" {
			add("runnerSha256.x64", "is required for runnerVersion %s: the SHA-256 of actions-runner-linux-x64-%s.tar.gz from the release notes", valid.RunnerVersion, valid.RunnerVersion)
		}
		if c.RunnerSHA256.ARM64 == "" {
			add("runnerSha256.arm64", "is required for runnerVersion %s: the SHA-256 of actions-runner-linux-arm64-%s.tar.gz from the release notes", valid.RunnerVersion, valid.RunnerVersion)
		}
	}
	if err != nil {
		errs = append(errs, translate(err)...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(dedupe(errs)...)
	}
	a = &valid

	// Only now, with everything valid, look up the images.
	if mode == AMIStock || mode == AMIPrebaked {
		if err := c.lookupImages(ctx, mode, a, profiles); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// network maps the network keys onto the component's: an existing VPC
// (vpcId and subnetIds) or a new one.
func (c *Config) network(add func(key, format string, args ...any)) runners.Network {
	n := c.Network
	if n.VpcID != "" || len(n.SubnetIDs) > 0 {
		if n.VpcID == "" {
			add("network.vpcId", "is required with network.subnetIds")
		}
		if len(n.SubnetIDs) == 0 {
			add("network.subnetIds", "is required with network.vpcId (the subnets runners launch into)")
		}
		for i, s := range n.SubnetIDs {
			if !strings.HasPrefix(s, "subnet-") {
				add(fmt.Sprintf("network.subnetIds[%d]", i), "must be a subnet id (subnet-...), got %q", s)
			}
		}
		if !strings.HasPrefix(n.VpcID, "vpc-") && n.VpcID != "" {
			add("network.vpcId", "must be a VPC id (vpc-...), got %q", n.VpcID)
		}
		if n.CIDR != "" || n.AZCount != 0 || len(n.AvailabilityZones) > 0 || n.NATGateway {
			add("network", "cidr, azCount, availabilityZones and natGateway describe a new VPC; remove them when vpcId and subnetIds name an existing one")
		}
		return runners.Network{
			VpcID: pulumi.String(n.VpcID), SubnetIDs: pulumi.ToStringArray(n.SubnetIDs), AssociatePublicIP: n.AssociatePublicIP,
		}
	}
	if n.AssociatePublicIP {
		add("network.associatePublicIp", "applies to an existing VPC only; a new VPC gives runners public IPs unless natGateway is true")
	}
	return runners.Network{
		CIDR: n.CIDR, AZCount: n.AZCount, AvailabilityZones: n.AvailabilityZones, NATGateway: n.NATGateway,
	}
}

// profileArgs maps each profile onto the component's, with the image the
// AMI mode gives it (stock and prebaked images are looked up once
// everything is valid; with mode build the component builds them).
func (c *Config) profileArgs(a *runners.RunnersArgs, profiles map[string]Profile, mode string, add func(key, format string, args ...any)) {
	const lookupPlaceholder = "ami-lookup"
	for name, p := range profiles {
		rp := runners.Profile{
			InstanceTypes: p.InstanceTypes, Arch: p.Arch, Spot: p.Spot, VolumeGiB: p.VolumeGiB, MaxRunners: p.MaxRunners, Pool: p.Pool,
		}
		switch {
		case p.ImageID != "":
			rp.ImageID = pulumi.String(p.ImageID)
		case mode == AMIBuild:
			// The component builds it (a.AMIBuild).
		case mode != AMIID:
			// stock or prebaked (or an invalid mode, reported above)
			rp.ImageID = pulumi.String(lookupPlaceholder)
		case c.AMI.IDs.get(p.Arch) != "":
			rp.ImageID = pulumi.String(c.AMI.IDs.get(p.Arch))
		default:
			arch := p.Arch
			if arch == "" {
				arch = config.ArchX64
			}
			add("profiles."+name+".imageId", "is required with ami.mode %q unless %s is set (or use ami.mode %q for Amazon Linux 2023)",
				AMIID, Key("ami.ids."+arch), AMIStock)
			continue
		}
		a.Profiles[name] = rp
	}
}

// githubSecrets sets the App key and the webhook secret: each a value (a
// secret is created) or the ARN of an existing secret, never both.
func (c *Config) githubSecrets(a *runners.RunnersArgs, add func(key, format string, args ...any)) {
	g := c.GitHub
	secretPair := func(valueKey, value, arnKey, arn, hint string) (v, ref pulumi.StringInput) {
		switch {
		case value != "" && arn != "":
			add(valueKey, "set either %s or %s, not both", Key(valueKey), Key(arnKey))
		case value != "":
			return pulumi.ToSecret(pulumi.String(value)).(pulumi.StringOutput), nil
		case arn != "":
			return nil, pulumi.String(arn)
		default:
			add(valueKey, "is required: %s (or set %s to an existing Secrets Manager secret)", hint, Key(arnKey))
		}
		return nil, nil
	}
	a.GitHub.PrivateKey, a.GitHub.PrivateKeySecretARN = secretPair("githubPrivateKey", c.GitHubPrivateKey,
		"github.privateKeySecretArn", g.PrivateKeySecretARN, "pulumi config set --secret jit-runners:githubPrivateKey < app.private-key.pem")
	a.GitHub.WebhookSecret, a.GitHub.WebhookSecretARN = secretPair("githubWebhookSecret", c.GitHubWebhookSecret,
		"github.webhookSecretArn", g.WebhookSecretARN, "pulumi config set --secret jit-runners:githubWebhookSecret <the App's webhook secret>")
	if c.GitHubPrivateKey != "" && !pemRE.MatchString(c.GitHubPrivateKey) {
		add("githubPrivateKey", "is not a PEM private key (use the .pem file GitHub generated for the App)")
	}

}

// translate turns the component's validation errors into errors naming
// configuration keys.
func translate(err error) []error {
	var out []error
	for _, e := range unjoin(err) {
		var ke *config.KeyError
		var pe *bootstrap.ParamError
		var ae *runners.ArgError
		switch {
		case errors.As(e, &ke):
			out = append(out, keyError(configKey(ke.Key), "%s", ke.Reason))
		case errors.As(e, &pe):
			if k, ok := bootstrapKeys[pe.Field]; ok {
				out = append(out, keyError(k, "%s", pe.Reason))
			} else {
				out = append(out, e)
			}
		case errors.As(e, &ae):
			if ae.Key == "github.privateKeySecretArn" || ae.Key == "github.webhookSecretArn" {
				continue // Args checks the secrets itself, naming the keys users set
			}
			out = append(out, keyError(argKey(ae.Key), "%s", ae.Reason))
		default:
			out = append(out, e)
		}
	}
	return out
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// configKey maps a JITR_CONFIG key to the configuration key it comes from.
func configKey(k string) string {
	if rest, ok := strings.CutPrefix(k, "launch.subnetIds"); ok {
		return "network.subnetIds" + rest
	}
	if k == "launch.associatePublicIp" {
		return "network.associatePublicIp"
	}
	return k
}

var bootstrapKeys = map[string]string{
	"RunnerVersion":      "runnerVersion",
	"NamePrefix":         "namePrefix",
	"IdleTimeoutSeconds": "runner.idleTimeoutSeconds",
	"JITWaitSeconds":     "runner.jitWaitSeconds",
	"RunnerSHA256X64":    "runnerSha256.x64",
	"RunnerSHA256ARM64":  "runnerSha256.arm64",
	"DownloadBaseURL":    "runner.downloadBaseUrl",
}

var argKeys = map[string]string{
	"Network":                    "network",
	"Network.CIDR":               "network.cidr",
	"Network.AZCount":            "network.azCount",
	"LogRetentionDays":           "logRetentionDays",
	"Runner.MetadataHopLimit":    "runner.metadataHopLimit",
	"ThrottlingBurstLimit":       "api.throttlingBurstLimit",
	"ThrottlingRateLimit":        "api.throttlingRateLimit",
	"Tags":                       "tags",
	"AMIBuild.JITRunnersVersion": "ami.jitRunnersVersion",
	"AMIBuild.ExtraScript":       "ami.extraScript",
}

func argKey(k string) string {
	if v, ok := argKeys[k]; ok {
		return v
	}
	if rest, ok := strings.CutPrefix(k, "Network.AvailabilityZones"); ok {
		return "network.availabilityZones" + rest
	}
	return k
}

// dedupe keeps the first error per key (the runtime and the bootstrap both
// check runnerVersion and namePrefix).
func dedupe(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		var ce *ConfigError
		if errors.As(e, &ce) {
			if seen[ce.Key] {
				continue
			}
			seen[ce.Key] = true
		}
		out = append(out, e)
	}
	return out
}

func clone(m map[string]Profile) map[string]Profile {
	out := make(map[string]Profile, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

package runners

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/functions"
	"github.com/jit-runners/jit-runners/runtime/launchspec"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// RunnersArgs configures one jit-runners deployment. Values the stack must
// know while planning (names that become resource names or IAM condition
// values, the set of profiles, the network shape) are plain Go values; values
// that may come from other resources (AMI ids, an existing VPC, secrets) are
// Pulumi inputs.
type RunnersArgs struct {
	// NamePrefix names runners (<prefix>-j<job-id>-<attempt>) and is the value of
	// the jitr:managed-by tag every IAM condition checks. Default "jitr".
	NamePrefix string

	GitHub GitHubArgs

	// RunnerVersion is the actions/runner release; RunnerSHA256X64 and
	// RunnerSHA256ARM64 are the SHA-256 digests of its Linux tarballs
	// (see the release notes). Default version: config.DefaultRunnerVersion,
	// whose digests are known (KnownRunnerChecksums).
	RunnerVersion     string
	RunnerSHA256X64   string
	RunnerSHA256ARM64 string

	// MaxRunners caps the runners alive at once. Default DefaultMaxRunners.
	MaxRunners int
	// DefaultProfile names the profile for jobs that name none. Default config.DefaultProfileName.
	DefaultProfile string
	// Profiles are the kinds of runner a job can ask for by label. Required.
	Profiles map[string]Profile
	// AllowedInstanceTypes are patterns of instance types a job may name.
	AllowedInstanceTypes []string
	// Shapes bounds the machine shapes jobs ask for by label (config.Shapes;
	// every bound off unless set).
	Shapes config.Shapes

	// QueueDelaySeconds, RecordRetentionSeconds, LogLevel, ScaleDown,
	// ScaleUp and Redelivery pass through to JITR_CONFIG (see
	// docs/configuration.md).
	QueueDelaySeconds      int
	RecordRetentionSeconds int
	LogLevel               string
	ScaleDown              config.ScaleDown
	ScaleUp                config.ScaleUp
	Redelivery             config.Redelivery

	Network Network
	Runner  RunnerOptions

	// LogRetentionDays is the retention of the Lambdas' log groups. Default 30.
	LogRetentionDays int
	// ThrottlingBurstLimit and ThrottlingRateLimit throttle the webhook API
	// stage. Defaults 1000 and 500 requests per second: a 1,000-job matrix
	// queues its jobs at once (see docs/stack.md).
	ThrottlingBurstLimit int
	ThrottlingRateLimit  float64
	// AlarmEmail, when set, subscribes this address to an SNS topic that
	// every alarm notifies.
	AlarmEmail string
	// Tags are added to every taggable resource (jitr:managed-by is always
	// set to NamePrefix).
	Tags map[string]string

	// AMIBuild, when set, builds the AMI of every profile that has no
	// ImageID with Packer during `pulumi up` (see AMIBuild).
	AMIBuild *AMIBuild

	// Builder builds the Lambda deployment archives. Default: a GoBuilder
	// (go build in the caller's module, see GoBuilder).
	Builder Builder
}

// GitHubArgs describes the GitHub App. Each secret is either created from a
// value (PrivateKey, WebhookSecret; pass Pulumi secrets) or referenced by the
// ARN of an existing Secrets Manager secret (PrivateKeySecretARN,
// WebhookSecretARN); exactly one of each pair must be set.
type GitHubArgs struct {
	AppID         int64
	APIURL        string
	Scope         string
	RunnerGroup   string
	AllowedOwners []string

	PrivateKey          pulumi.StringInput
	PrivateKeySecretARN pulumi.StringInput
	WebhookSecret       pulumi.StringInput
	WebhookSecretARN    pulumi.StringInput
	// PreviousWebhookSecretARN is an existing secret the webhook accepts
	// besides the current one while a rotation is under way. Optional.
	PreviousWebhookSecretARN string
}

// Profile is one kind of runner (see config.Profile).
type Profile struct {
	InstanceTypes []string
	// ImageID is the AMI; it may come from another resource (an SSM
	// parameter lookup, another stack). Required unless
	// RunnersArgs.AMIBuild is set, which builds the AMI of every profile
	// without one.
	ImageID    pulumi.StringInput
	Arch       string
	Spot       *bool
	VolumeGiB  int
	MaxRunners int
	// Pool keeps instances ready before jobs come (config.Pool). Optional.
	Pool *config.Pool
}

// Network says where runners run: an existing VPC (VpcID and SubnetIDs set)
// or a new one (CIDR, AZ count, optional NAT).
type Network struct {
	// VpcID and SubnetIDs bring your own VPC; nothing is created.
	VpcID     pulumi.StringInput
	SubnetIDs pulumi.StringArrayInput
	// AssociatePublicIP gives runners a public IPv4 address. For a new VPC it
	// is decided by NATGateway (no NAT: public subnets and public IPs).
	AssociatePublicIP bool

	// CIDR of a new VPC (default 10.0.0.0/16). Subnets are /20s: public ones
	// from the bottom of the range, private ones from its middle.
	CIDR string
	// AvailabilityZones to use; empty: the first AZCount (default 2) zones of
	// the region.
	AvailabilityZones []string
	AZCount           int
	// NATGateway creates private subnets behind one NAT gateway for the
	// runners (off by default: runners get public IPs in public subnets).
	NATGateway bool
}

// RunnerOptions tune the runner instances.
type RunnerOptions struct {
	// IdleTimeoutSeconds: an instance with no job after this shuts down.
	IdleTimeoutSeconds int
	// JITWaitSeconds: how long an instance waits for its JIT config.
	JITWaitSeconds int
	// MetadataHopLimit is IMDSv2's hop limit (default launchspec.Runner's:
	// 2, so containers on the runner reach IMDS; 1 keeps them out).
	MetadataHopLimit int
	// AllowSSHEgress lifts the default block on outbound TCP port 22 (git
	// over SSH from jobs needs it).
	AllowSSHEgress bool
	// SSMSessionManager lets operators open Session Manager shells on
	// runners: the runner role gets the agent's minimal policy (register,
	// open channels), not AmazonSSMManagedInstanceCore, whose parameter
	// reads would reach job code.
	SSMSessionManager bool
	// DownloadBaseURL is a mirror of the runner releases (default GitHub's).
	DownloadBaseURL string
}

// KnownRunnerChecksums are the published SHA-256 digests of
// actions-runner-linux-{x64,arm64}-<version>.tar.gz for the versions this
// stack knows, so the default version needs no configuration.
var KnownRunnerChecksums = map[string]struct{ X64, ARM64 string }{
	config.DefaultRunnerVersion: {X64: config.DefaultRunnerSHA256X64, ARM64: config.DefaultRunnerSHA256ARM64},
}

// Defaults of RunnersArgs fields that JITR_CONFIG does not default itself.
// withDefaults is the one place they (and the runtime defaults the stack
// needs before JITR_CONFIG exists: name prefix, runner version, default
// profile) are applied; the program passes unset keys through unset.
const (
	DefaultMaxRunners           = 20
	DefaultLogRetentionDays     = 30
	DefaultThrottlingBurstLimit = 1000
	DefaultThrottlingRateLimit  = 500
	DefaultVPCCIDR              = "10.0.0.0/16"
	DefaultAZCount              = 2
)

// Lambda settings: one definition, runtime/functions, shared with the sandbox.
var (
	webhookMemoryMB       = functions.Webhook.MemoryMB
	webhookTimeout        = functions.Webhook.TimeoutSeconds
	scaleupMemoryMB       = functions.Scaleup.MemoryMB
	scaledownMemoryMB     = functions.Scaledown.MemoryMB
	scaledownTimeout      = functions.Scaledown.TimeoutSeconds
	scaledownConcurrency  = functions.Scaledown.ReservedConcurrency
	scaledownScheduleRate = functions.ScaledownSchedule
)

// logRetentionDays are the values CloudWatch Logs accepts.
var logRetentionDays = map[int]bool{
	1: true, 3: true, 5: true, 7: true, 14: true, 30: true, 60: true, 90: true, 120: true, 150: true,
	180: true, 365: true, 400: true, 545: true, 731: true, 1096: true, 1827: true, 2192: true,
	2557: true, 2922: true, 3288: true, 3653: true,
}

var azRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$`)

// Placeholders stand in for values the stack creates when the arguments are
// validated before any resource exists.
const (
	placeholderQueueURL  = "https://sqs.planned.invalid/queue"
	placeholderTable     = "planned-table"
	placeholderTemplate  = "lt-planned"
	placeholderSubnet    = "subnet-planned"
	placeholderSecretARN = "arn:aws:secretsmanager:planned"
	placeholderImage     = "ami-planned"
)

// ArgError reports an invalid RunnersArgs field. Key names the field as the
// JITR_CONFIG key it becomes (github.appId, profiles.gpu.imageId) or, for
// stack-only settings, its RunnersArgs path (Network.AZCount).
type ArgError struct {
	Key    string
	Reason string
}

func (e *ArgError) Error() string { return fmt.Sprintf("runners: %s: %s", e.Key, e.Reason) }

// withDefaults returns a copy of a with the defaults filled in.
func (a RunnersArgs) withDefaults() RunnersArgs {
	if a.NamePrefix == "" {
		a.NamePrefix = config.DefaultNamePrefix
	}
	if a.RunnerVersion == "" {
		a.RunnerVersion = config.DefaultRunnerVersion
	}
	if known, ok := KnownRunnerChecksums[a.RunnerVersion]; ok {
		if a.RunnerSHA256X64 == "" {
			a.RunnerSHA256X64 = known.X64
		}
		if a.RunnerSHA256ARM64 == "" {
			a.RunnerSHA256ARM64 = known.ARM64
		}
	}
	if a.DefaultProfile == "" {
		a.DefaultProfile = config.DefaultProfileName
	}
	if a.MaxRunners == 0 {
		a.MaxRunners = DefaultMaxRunners
	}
	if a.LogRetentionDays == 0 {
		a.LogRetentionDays = DefaultLogRetentionDays
	}
	if a.ThrottlingBurstLimit == 0 {
		a.ThrottlingBurstLimit = DefaultThrottlingBurstLimit
	}
	if a.ThrottlingRateLimit == 0 {
		a.ThrottlingRateLimit = DefaultThrottlingRateLimit
	}
	if a.Runner.MetadataHopLimit == 0 {
		a.Runner.MetadataHopLimit = launchspec.Runner.MetadataHopLimit
	}
	if a.AMIBuild != nil {
		b := *a.AMIBuild
		if b.JITRunnersVersion == "" {
			b.JITRunnersVersion = DefaultAMIVersion
		}
		a.AMIBuild = &b
	}
	if !a.Network.byo() {
		if a.Network.CIDR == "" {
			a.Network.CIDR = DefaultVPCCIDR
		}
		if a.Network.AZCount == 0 && len(a.Network.AvailabilityZones) == 0 {
			a.Network.AZCount = DefaultAZCount
		}
		a.Network.AssociatePublicIP = !a.Network.NATGateway
	}
	return a
}

func (n Network) byo() bool { return n.VpcID != nil || n.SubnetIDs != nil }

// runtimeConfig returns the JITR_CONFIG document for a with the given
// values of what the stack creates.
func (a RunnersArgs) runtimeConfig(v createdValues) *config.Config {
	c := &config.Config{
		GitHub: config.GitHub{
			APIURL: a.GitHub.APIURL, AppID: a.GitHub.AppID, Scope: a.GitHub.Scope,
			RunnerGroup: a.GitHub.RunnerGroup, AllowedOwners: a.GitHub.AllowedOwners,
			PrivateKeySecretARN: v.privateKeySecretARN, WebhookSecretARN: v.webhookSecretARN,
			PreviousWebhookSecretARN: a.GitHub.PreviousWebhookSecretARN,
		},
		QueueURL:      v.queueURL,
		TableName:     v.tableName,
		NamePrefix:    a.NamePrefix,
		RunnerVersion: a.RunnerVersion,
		MaxRunners:    a.MaxRunners,
		Launch: config.Launch{
			LaunchTemplateID:   v.launchTemplateID,
			SubnetIDs:          v.subnetIDs,
			JITConfigTableName: v.jitTableName,
			AssociatePublicIP:  a.Network.AssociatePublicIP,
		},
		DefaultProfile:         a.DefaultProfile,
		ScaleDown:              a.ScaleDown,
		ScaleUp:                a.ScaleUp,
		Redelivery:             a.Redelivery,
		Profiles:               map[string]config.Profile{},
		AllowedInstanceTypes:   a.AllowedInstanceTypes,
		Shapes:                 a.Shapes,
		QueueDelaySeconds:      a.QueueDelaySeconds,
		RecordRetentionSeconds: a.RecordRetentionSeconds,
		LogLevel:               a.LogLevel,
	}
	for name, p := range a.Profiles {
		c.Profiles[name] = config.Profile{
			InstanceTypes: p.InstanceTypes, ImageID: v.imageIDs[name], Arch: p.Arch,
			Spot: p.Spot, VolumeGiB: p.VolumeGiB, MaxRunners: p.MaxRunners, Pool: p.Pool,
		}
	}
	return c
}

// createdValues are the values JITR_CONFIG takes from resources.
type createdValues struct {
	queueURL, tableName, jitTableName, launchTemplateID string
	privateKeySecretARN, webhookSecretARN               string
	subnetIDs                                           []string
	imageIDs                                            map[string]string
}

// bootstrapParams returns the user-data parameters for jitTable.
func (a RunnersArgs) bootstrapParams(jitTable string) bootstrap.Params {
	return bootstrap.Params{
		RunnerVersion: a.RunnerVersion, NamePrefix: a.NamePrefix, JITTable: jitTable,
		IdleTimeoutSeconds: a.Runner.IdleTimeoutSeconds, JITWaitSeconds: a.Runner.JITWaitSeconds,
		RunnerSHA256X64: a.RunnerSHA256X64, RunnerSHA256ARM64: a.RunnerSHA256ARM64,
		DownloadBaseURL: a.Runner.DownloadBaseURL,
	}
}

// Validate fills defaults into a copy of a and checks every field before any
// resource is created, so a bad argument fails the preview. Errors are joined
// *config.KeyError (JITR_CONFIG keys), *bootstrap.ParamError (user-data
// parameters) and *ArgError (stack settings).
func (a RunnersArgs) Validate() (RunnersArgs, error) {
	a = a.withDefaults()
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &ArgError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}

	v := createdValues{
		queueURL: placeholderQueueURL, tableName: placeholderTable, jitTableName: placeholderTable,
		launchTemplateID: placeholderTemplate, subnetIDs: []string{placeholderSubnet},
		privateKeySecretARN: placeholderSecretARN, webhookSecretARN: placeholderSecretARN,
		imageIDs: map[string]string{},
	}
	for name, p := range a.Profiles {
		if p.ImageID != nil || a.AMIBuild != nil {
			v.imageIDs[name] = placeholderImage
		}
	}
	if a.AMIBuild != nil {
		a.AMIBuild.validate(add)
	}
	// Validate fills the runtime's defaults into its own copy; the
	// profiles map is copied by runtimeConfig, so a stays untouched.
	if err := a.runtimeConfig(v).Validate(); err != nil {
		errs = append(errs, err)
	}
	p := a.bootstrapParams(placeholderTable)
	if err := p.Validate(); err != nil {
		errs = append(errs, err)
	}

	g := a.GitHub
	checkSecret := func(key string, value, arn pulumi.StringInput, valueField, arnField string) {
		switch {
		case value == nil && arn == nil:
			add(key, "is required: set GitHub.%s (a secret is created) or GitHub.%s (an existing secret)", valueField, arnField)
		case value != nil && arn != nil:
			add(key, "set only one of GitHub.%s and GitHub.%s", valueField, arnField)
		}
	}
	checkSecret("github.privateKeySecretArn", g.PrivateKey, g.PrivateKeySecretARN, "PrivateKey", "PrivateKeySecretARN")
	checkSecret("github.webhookSecretArn", g.WebhookSecret, g.WebhookSecretARN, "WebhookSecret", "WebhookSecretARN")

	n := a.Network
	if n.byo() {
		if n.VpcID == nil || n.SubnetIDs == nil {
			add("Network", "an existing VPC needs both VpcID and SubnetIDs")
		}
		if n.NATGateway || n.CIDR != "" || n.AZCount != 0 || len(n.AvailabilityZones) != 0 {
			add("Network", "CIDR, AZCount, AvailabilityZones and NATGateway describe a new VPC; they cannot be combined with VpcID/SubnetIDs")
		}
	} else {
		prefix, err := netip.ParsePrefix(n.CIDR)
		switch {
		case err != nil || !prefix.Addr().Is4():
			add("Network.CIDR", "must be an IPv4 CIDR such as 10.0.0.0/16, got %q", n.CIDR)
		case prefix.Bits() < 16 || prefix.Bits() > 18:
			add("Network.CIDR", "must be a /16 to /18 (subnets are /20s), got /%d", prefix.Bits())
		case prefix.Masked() != prefix:
			add("Network.CIDR", "%q has host bits set; did you mean %s?", n.CIDR, prefix.Masked())
		}
		if len(n.AvailabilityZones) > 0 && n.AZCount != 0 && n.AZCount != len(n.AvailabilityZones) {
			add("Network.AZCount", "is %d but %d availability zones are listed", n.AZCount, len(n.AvailabilityZones))
		}
		if count := max(n.AZCount, len(n.AvailabilityZones)); count < 1 || count > maxAZs(prefix.Bits()) {
			add("Network.AZCount", "must be between 1 and %d for a /%d, got %d", maxAZs(prefix.Bits()), prefix.Bits(), count)
		}
		for i, az := range n.AvailabilityZones {
			if !azRE.MatchString(az) {
				add(fmt.Sprintf("Network.AvailabilityZones[%d]", i), "is not an availability zone name: %q", az)
			}
		}
	}
	if !logRetentionDays[a.LogRetentionDays] {
		add("LogRetentionDays", "must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...), got %d", a.LogRetentionDays)
	}
	if a.Runner.MetadataHopLimit < 1 || a.Runner.MetadataHopLimit > 64 {
		add("Runner.MetadataHopLimit", "must be between 1 and 64, got %d", a.Runner.MetadataHopLimit)
	}
	if a.ThrottlingBurstLimit < 1 {
		add("ThrottlingBurstLimit", "must be positive, got %d", a.ThrottlingBurstLimit)
	}
	if a.ThrottlingRateLimit <= 0 {
		add("ThrottlingRateLimit", "must be positive, got %g", a.ThrottlingRateLimit)
	}
	if s := queue.ScaleUp; s.VisibilityTimeoutSeconds < 6*s.ScaleupTimeoutSeconds {
		add("queue.ScaleUp", "visibility timeout %d s is under 6 x the scaleup timeout (%d s)", s.VisibilityTimeoutSeconds, s.ScaleupTimeoutSeconds)
	}
	for k := range a.Tags {
		if k == managedByTag {
			add("Tags", "%q is set by the stack (to NamePrefix)", k)
		}
	}
	return a, errors.Join(errs...)
}

// maxAZs is how many AZs a VPC of the given prefix length can serve with
// /20 public and private subnets.
func maxAZs(bits int) int {
	if bits < 16 || bits > 20 {
		return 0
	}
	return min(6, 1<<(20-bits)/2)
}

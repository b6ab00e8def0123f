package program

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// Namespace is the namespace of every stack configuration key (the project
// name): `pulumi config set jit-runners:maxRunners 50`.
const Namespace = "jit-runners"

// Config is the stack configuration. Its JSON names are the configuration
// keys; where a key becomes a JITR_CONFIG key it has the same name and shape,
// so an error in either names the same key. Pulumi.yaml declares every key
// with its description and default (a test keeps the two in step).
type Config struct {
	NamePrefix string `json:"namePrefix"`
	GitHub     GitHub `json:"github"`
	// GitHubPrivateKey and GitHubWebhookSecret must be set with --secret.
	// Each may instead be an existing secret (github.*SecretArn).
	GitHubPrivateKey    string `json:"githubPrivateKey"`
	GitHubWebhookSecret string `json:"githubWebhookSecret"`

	RunnerVersion        string             `json:"runnerVersion"`
	RunnerSHA256         RunnerSHA256       `json:"runnerSha256"`
	MaxRunners           int                `json:"maxRunners"`
	DefaultProfile       string             `json:"defaultProfile"`
	Profiles             map[string]Profile `json:"profiles"`
	AllowedInstanceTypes []string           `json:"allowedInstanceTypes"`
	Shapes               config.Shapes      `json:"shapes"`
	AMI                  AMI                `json:"ami"`

	Network Network `json:"network"`
	Runner  Runner  `json:"runner"`

	ScaleDown              config.ScaleDown  `json:"scaleDown"`
	ScaleUp                config.ScaleUp    `json:"scaleUp"`
	Redelivery             config.Redelivery `json:"redelivery"`
	QueueDelaySeconds      int               `json:"queueDelaySeconds"`
	RecordRetentionSeconds int               `json:"recordRetentionSeconds"`
	LogLevel               string            `json:"logLevel"`
	LogRetentionDays       int               `json:"logRetentionDays"`

	API    API               `json:"api"`
	Alarms Alarms            `json:"alarms"`
	Tags   map[string]string `json:"tags"`
}

// GitHub is the App (JITR_CONFIG's github, without the secrets' values).
type GitHub struct {
	AppID               int64    `json:"appId"`
	APIURL              string   `json:"apiUrl"`
	Scope               string   `json:"scope"`
	RunnerGroup         string   `json:"runnerGroup"`
	AllowedOwners       []string `json:"allowedOwners"`
	PrivateKeySecretARN string   `json:"privateKeySecretArn"`
	WebhookSecretARN    string   `json:"webhookSecretArn"`
	// PreviousWebhookSecretARN: a second secret accepted during a rotation.
	PreviousWebhookSecretARN string `json:"previousWebhookSecretArn"`
}

// RunnerSHA256 are the runner tarballs' digests.
type RunnerSHA256 struct {
	X64   string `json:"x64"`
	ARM64 string `json:"arm64"`
}

// Profile is JITR_CONFIG's profile, key for key (one definition); imageId
// may be left out where ami.mode gives the image.
type Profile = config.Profile

// AMI modes.
const (
	// AMIStock uses the latest Amazon Linux 2023 AMI of each profile's
	// architecture (its public SSM parameter) where a profile has no imageId.
	AMIStock = "stock"
	// AMIPrebaked uses the newest jit-runners AMI (packer/) for the
	// stack's runner version and each architecture, published by ami.owners.
	AMIPrebaked = "prebaked"
	// AMIBuild builds that AMI with Packer during `pulumi up`.
	AMIBuild = "build"
	// AMIID uses ami.ids per architecture, or each profile's imageId.
	AMIID = "id"
)

// AMIModes are the values of ami.mode.
var AMIModes = []string{AMIStock, AMIPrebaked, AMIBuild, AMIID}

// AMI says where images come from. A profile's own imageId always wins.
type AMI struct {
	Mode string `json:"mode"`
	// Owners (prebaked) are the accounts that publish the jit-runners AMIs:
	// account ids or "self".
	Owners []Owner `json:"owners"`
	// JITRunnersVersion and ExtraScript (build) are the template's
	// jit_runners_version and extra_script (a path on the machine running
	// `pulumi up`, relative to the project directory).
	JITRunnersVersion string `json:"jitRunnersVersion"`
	ExtraScript       string `json:"extraScript"`
	// IDs (id) are the AMI per architecture.
	IDs ArchImages `json:"ids"`
}

// ArchImages are AMI ids by runner architecture.
type ArchImages struct {
	X64   string `json:"x64"`
	ARM64 string `json:"arm64"`
}

// get returns the image of arch ("" for x64).
func (a ArchImages) get(arch string) string {
	switch arch {
	case "", config.ArchX64:
		return a.X64
	case config.ArchARM64:
		return a.ARM64
	}
	return ""
}

// Owner is an AMI owner: an account id or an alias ("self"). YAML and
// `pulumi config set` turn an account id into a number; Owner takes that
// too, zero-padded to the 12 digits of an account id.
type Owner string

// UnmarshalJSON implements json.Unmarshaler.
func (o *Owner) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*o = Owner(s)
		return nil
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("an AMI owner must be an account id or an alias, got %s", b)
	}
	*o = Owner(fmt.Sprintf("%012d", n))
	return nil
}

// PrebakedAMIName is the name filter of the jit-runners AMIs of a runner
// version and architecture: the template names them
// jit-runner-<jit-runners version>-runner<runner version>-<timestamp>-<arch>.
func PrebakedAMIName(runnerVersion, arch string) string {
	return "jit-runner-*-runner" + runnerVersion + "-*-" + runners.AMIArchitectures[arch]
}

// StockAMIParameters are the public SSM parameters holding the latest
// Amazon Linux 2023 AMI per runner architecture.
var StockAMIParameters = map[string]string{
	config.ArchX64:   "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
	config.ArchARM64: "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
}

// Network is the VPC: an existing one (vpcId, subnetIds) or a new one.
type Network struct {
	VpcID             string   `json:"vpcId"`
	SubnetIDs         []string `json:"subnetIds"`
	AssociatePublicIP bool     `json:"associatePublicIp"`
	CIDR              string   `json:"cidr"`
	AZCount           int      `json:"azCount"`
	AvailabilityZones []string `json:"availabilityZones"`
	NATGateway        bool     `json:"natGateway"`
}

// Runner tunes the instances.
type Runner struct {
	IdleTimeoutSeconds int    `json:"idleTimeoutSeconds"`
	JITWaitSeconds     int    `json:"jitWaitSeconds"`
	MetadataHopLimit   int    `json:"metadataHopLimit"`
	AllowSSHEgress     bool   `json:"allowSshEgress"`
	SSMSessionManager  bool   `json:"ssmSessionManager"`
	DownloadBaseURL    string `json:"downloadBaseUrl"`
}

// API throttles the webhook endpoint.
type API struct {
	ThrottlingBurstLimit int     `json:"throttlingBurstLimit"`
	ThrottlingRateLimit  float64 `json:"throttlingRateLimit"`
}

// Alarms says who hears about alarms.
type Alarms struct {
	Email string `json:"email"`
}

// SecretKeys are the keys that must be set with --secret.
var SecretKeys = []string{"githubPrivateKey", "githubWebhookSecret"}

// Keys returns every top-level configuration key, sorted.
func Keys() []string {
	t := reflect.TypeFor[Config]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, config.JSONName(t.Field(i)))
	}
	sort.Strings(keys)
	return keys
}

// Key returns the full name of a configuration key.
func Key(key string) string { return Namespace + ":" + key }

// ConfigError reports a problem with one configuration key; Key is the
// full key as `pulumi config set --path` takes it
// (jit-runners:profiles.gpu.instanceTypes[0]).
type ConfigError struct {
	Key    string
	Reason string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Reason }

func keyError(key, format string, args ...any) error {
	return &ConfigError{Key: Key(key), Reason: fmt.Sprintf(format, args...)}
}

// Load reads the stack configuration. Every problem is reported at once,
// each naming its key; nothing is defaulted here (see Args).
func Load(ctx *pulumi.Context) (*Config, error) {
	doc := map[string]any{}
	var errs []error
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		key := config.JSONName(f)
		raw, ok := ctx.GetConfig(Key(key))
		if !ok {
			continue
		}
		v, err := scalar(f.Type, raw)
		if err != nil {
			errs = append(errs, keyError(key, "%v", err))
			continue
		}
		doc[key] = v
	}
	for _, p := range config.CheckKeys(doc, t, "", config.KeyCheck{
		Kinds:          true,
		NumberAsString: func(t reflect.Type) bool { return t == reflect.TypeFor[Owner]() }, // an account id YAML read as a number
	}) {
		errs = append(errs, keyError(p.Key, "%s", p.Reason))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", Namespace, err)
	}
	for _, k := range SecretKeys {
		v, _ := ctx.GetConfig(Key(k))
		if v != "" && !ctx.IsConfigSecret(Key(k)) {
			errs = append(errs, keyError(k, "must be set as a secret: pulumi config set --secret %s ...", Key(k)))
		}
	}
	return &c, errors.Join(errs...)
}

// scalar turns a configuration value (the CLI passes every value as a
// string, objects and arrays as JSON) into the JSON value for type t.
func scalar(t reflect.Type, raw string) (any, error) {
	switch t.Kind() {
	case reflect.String:
		return raw, nil
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("must be an integer, got %q", raw)
		}
		return n, nil
	case reflect.Float64:
		n, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return nil, fmt.Errorf("must be a number, got %q", raw)
		}
		return n, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("must be true or false, got %q", raw)
		}
		return b, nil
	}
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return nil, fmt.Errorf("must be JSON (set it with --path), got %q", raw)
	}
	return v, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

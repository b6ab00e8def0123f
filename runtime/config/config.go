// Package config defines the one JSON document every jit-runners Lambda reads
// from the environment variable JITR_CONFIG. The Pulumi stack builds the same
// document from this type, so the stack and the runtime cannot drift apart.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvVar is the environment variable that carries the configuration document.
const EnvVar = "JITR_CONFIG"

// Defaults for optional keys. docs/configuration.md documents each of them.
const (
	DefaultAPIURL                 = "https://api.github.com"
	DefaultRunnerGroup            = "Default"
	DefaultNamePrefix             = "jitr"
	DefaultProfileName            = "default" // the profile of jobs that name none
	DefaultInstanceType           = "t3.large"
	DefaultVolumeGiB              = 30
	DefaultCompletedGraceSeconds  = 120
	DefaultBootTimeoutSeconds     = 600
	DefaultOrphanGraceSeconds     = 300
	DefaultMaxRuntimeSeconds      = 86400
	DefaultQueuedTimeoutSeconds   = 900
	DefaultRecordRetentionSeconds = 7 * 24 * 3600
	DefaultIdleTimeoutSeconds     = 600
	DefaultClaimLeaseSeconds      = 120
	DefaultLimitRetrySeconds      = 30
	DefaultRedeliveryMaxPerRun    = 100
	DefaultRedeliveryLookback     = 60 // minutes
	// DefaultRunnerVersion is the actions/runner version a deployment pins
	// unless it says otherwise; the Packer template's runner_version default
	// is checked against it (packer/packer_test.go), so the pre-baked AMI's
	// marker and the bootstrap's comparison come from this one setting.
	DefaultRunnerVersion = "2.332.0"
	// DefaultRunnerSHA256X64 and DefaultRunnerSHA256ARM64 are the published
	// sha256 digests of actions-runner-linux-{x64,arm64}-2.332.0.tar.gz; the
	// stock-AMI bootstrap verifies the download against them and the Packer
	// template's defaults must equal them (packer/packer_test.go).
	DefaultRunnerSHA256X64   = "f2094522a6b9afeab07ffb586d1eb3f190b6457074282796c497ce7dce9e0f2a"
	DefaultRunnerSHA256ARM64 = "b72f0599cdbd99dd9513ab64fcb59e424fc7359c93b849e8f5efdd5a72f743a6"
)

// Scope values for GitHub.Scope.
const (
	ScopeRepo = "repo"
	ScopeOrg  = "org"
)

// Architecture values for Profile.Arch; they match the runner's own names.
const (
	ArchX64   = "x64"
	ArchARM64 = "arm64"
)

// Config is the whole runtime configuration of one deployment.
type Config struct {
	GitHub         GitHub             `json:"github"`
	QueueURL       string             `json:"queueUrl"`
	TableName      string             `json:"tableName"`
	NamePrefix     string             `json:"namePrefix"`
	RunnerVersion  string             `json:"runnerVersion"`
	MaxRunners     int                `json:"maxRunners"`
	Launch         Launch             `json:"launch"`
	DefaultProfile string             `json:"defaultProfile"`
	ScaleDown      ScaleDown          `json:"scaleDown"`
	Profiles       map[string]Profile `json:"profiles"`

	// ScaleUp tunes the scaleup Lambda; every key is optional.
	ScaleUp ScaleUp `json:"scaleUp,omitempty"`
	// Redelivery recovers webhook deliveries that failed: GitHub never
	// retries one by itself. Every key is optional.
	Redelivery Redelivery `json:"redelivery,omitempty"`

	// AllowedInstanceTypes lists patterns ("c6i.*", "m7g.large") of instance
	// types a job may name directly in runs-on. Empty: none.
	AllowedInstanceTypes []string `json:"allowedInstanceTypes,omitempty"`
	// QueueDelaySeconds delays each scale-up message (0..900). Default 0.
	QueueDelaySeconds int `json:"queueDelaySeconds,omitempty"`
	// RecordRetentionSeconds is how long a job record lives after its last
	// update before DynamoDB TTL removes it. Default 7 days.
	RecordRetentionSeconds int `json:"recordRetentionSeconds,omitempty"`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `json:"logLevel,omitempty"`
}

// GitHub describes the GitHub App and where its API lives.
type GitHub struct {
	APIURL              string `json:"apiUrl"`
	AppID               int64  `json:"appId"`
	PrivateKeySecretARN string `json:"privateKeySecretArn"`
	WebhookSecretARN    string `json:"webhookSecretArn"`
	// PreviousWebhookSecretARN is accepted besides WebhookSecretARN while
	// a rotation is under way (docs/operations.md). Optional.
	PreviousWebhookSecretARN string `json:"previousWebhookSecretArn,omitempty"`
	Scope                    string `json:"scope"`
	RunnerGroup              string `json:"runnerGroup"`
	// AllowedOwners limits the organisations or users whose jobs are served
	// (case-insensitive). Empty: every owner the App is installed on.
	AllowedOwners []string `json:"allowedOwners,omitempty"`
}

// Launch holds what every launch shares.
type Launch struct {
	LaunchTemplateID string   `json:"launchTemplateId"`
	SubnetIDs        []string `json:"subnetIds"`
	// JITConfigTableName is the DynamoDB table that hands each instance its
	// JIT runner configuration. Required by scaleup only.
	JITConfigTableName string `json:"jitConfigTableName,omitempty"`
	// AssociatePublicIP gives runners a public IPv4 address (public subnets
	// without NAT). Default false.
	AssociatePublicIP bool `json:"associatePublicIp,omitempty"`
}

// ScaleDown holds the reconciler's thresholds; every key is optional.
type ScaleDown struct {
	CompletedGraceSeconds int `json:"completedGraceSeconds,omitempty"`
	BootTimeoutSeconds    int `json:"bootTimeoutSeconds,omitempty"`
	OrphanGraceSeconds    int `json:"orphanGraceSeconds,omitempty"`
	MaxRuntimeSeconds     int `json:"maxRuntimeSeconds,omitempty"`
	// QueuedTimeoutSeconds: a job recorded as queued that has not launched
	// after this long is re-queued if GitHub still shows it queued.
	QueuedTimeoutSeconds int `json:"queuedTimeoutSeconds,omitempty"`
	// RerunInterruptedJobs re-runs, once, a job that failed after its spot
	// instance was interrupted (default true; the GitHub App then needs
	// Actions: read & write).
	RerunInterruptedJobs *bool `json:"rerunInterruptedJobs,omitempty"`
}

// Redelivery configures the recovery of failed webhook deliveries from the
// App's delivery log (scaledown, on its own schedule).
type Redelivery struct {
	// Enabled turns the recovery on (default true; the App's delivery log
	// needs no permission beyond the App's own JWT).
	Enabled *bool `json:"enabled,omitempty"`
	// MaxPerRun bounds the redeliveries one run asks for (default 100).
	MaxPerRun int `json:"maxPerRun,omitempty"`
	// LookbackMinutes is how far back the first run reads the log (default
	// 60; GitHub keeps three days of it).
	LookbackMinutes int `json:"lookbackMinutes,omitempty"`
}

// On reports whether failed deliveries are recovered.
func (r Redelivery) On() bool { return r.Enabled == nil || *r.Enabled }

// RerunInterrupted reports whether interrupted jobs are re-run.
func (s ScaleDown) RerunInterrupted() bool {
	return s.RerunInterruptedJobs == nil || *s.RerunInterruptedJobs
}

// ScaleUp holds the scaleup Lambda's options.
type ScaleUp struct {
	// CheckStillQueued asks GitHub whether a job is still queued before
	// launching for it. Default: on when queueDelaySeconds > 0 (a delayed
	// job may have been taken or cancelled meanwhile), else off (it would
	// cost a GitHub call per job for little gain).
	CheckStillQueued *bool `json:"checkStillQueued,omitempty"`
	// ClaimLeaseSeconds is how long a claim holds a job before another
	// invocation may take it over (default 120: twice the scaleup timeout,
	// well under the queue's visibility timeout).
	ClaimLeaseSeconds int `json:"claimLeaseSeconds,omitempty"`
	// LimitRetrySeconds is when a waiting job whose launch failed is tried
	// again (default 30). Jobs held by maxRunners wait in the table until a
	// slot frees, not for this delay.
	LimitRetrySeconds int `json:"limitRetrySeconds,omitempty"`
}

// CheckQueued reports whether scaleup asks GitHub if a job is still queued.
func (c *Config) CheckQueued() bool {
	if c.ScaleUp.CheckStillQueued != nil {
		return *c.ScaleUp.CheckStillQueued
	}
	return c.QueueDelaySeconds > 0
}

// Profile is one kind of runner a job can ask for by label.
type Profile struct {
	InstanceTypes []string `json:"instanceTypes"`
	ImageID       string   `json:"imageId"`
	Arch          string   `json:"arch"`
	// Spot requests spot capacity first (default true).
	Spot      *bool `json:"spot,omitempty"`
	VolumeGiB int   `json:"volumeGiB"`
	// MaxRunners caps this profile's concurrent runners. 0: only the
	// deployment-wide maxRunners applies.
	MaxRunners int `json:"maxRunners,omitempty"`
}

// UseSpot reports whether the profile asks for spot capacity first.
func (p Profile) UseSpot() bool { return p.Spot == nil || *p.Spot }

// Parse decodes and validates a configuration document. Unknown keys are an
// error; so is anything Validate rejects. Defaults are filled in.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("config: empty document")
	}
	// Keys first, on the generic document: an unknown or misspelt key is
	// reported with its whole path (scaleDown.bogus), which encoding/json's
	// "unknown field" does not give.
	if err := strictKeys(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", describeDecodeError(err, data))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: trailing data after the JSON document")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// FromEnv reads and parses the document in JITR_CONFIG.
func FromEnv() (*Config, error) {
	v, ok := os.LookupEnv(EnvVar)
	if !ok {
		return nil, fmt.Errorf("config: environment variable %s is not set", EnvVar)
	}
	return Parse([]byte(v))
}

// describeDecodeError turns encoding/json's messages into ones that name the
// key in the document's own spelling.
func describeDecodeError(err error, data []byte) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// encoding/json leaves map keys out of Field ("profiles.volumeGiB");
		// the generic walk has the whole path.
		key := typeErr.Field
		if p := kindProblems(data); len(p) > 0 {
			key = p[0].Key
		}
		return fmt.Errorf("key %q: expected %s, got JSON %s", key, typeErr.Type, typeErr.Value)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Errorf("invalid JSON at byte %d: %w", syntaxErr.Offset, err)
	}
	// "json: unknown field \"x\"" already names the key.
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// Marshal encodes the configuration the way the stack writes it into JITR_CONFIG.
func (c *Config) Marshal() ([]byte, error) { return json.Marshal(c) }

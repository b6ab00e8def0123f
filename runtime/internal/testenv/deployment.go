package testenv

import (
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
)

// Deployment is one jit-runners deployment's resources on the shared moto
// server, named uniquely for the test, and the configuration naming them.
type Deployment struct {
	AWS           *AWS
	Config        *config.Config
	Queue         string // queue URL
	DLQ           string // dead-letter queue URL
	Table         string
	WebhookSecret string
}

// DeploymentOption adjusts the configuration before it is validated.
type DeploymentOption func(*config.Config)

// NewDeployment creates the jobs table, the queue pair and the webhook secret
// on moto and returns a valid configuration that names them.
func NewDeployment(tb testing.TB, webhookSecret string, opts ...DeploymentOption) *Deployment {
	tb.Helper()
	a := AWSForTest(tb)
	q := a.Queue(tb)
	d := &Deployment{AWS: a, Queue: q.URL, DLQ: q.DLQURL, Table: a.JobsTable(tb), WebhookSecret: webhookSecret}
	cfg := &config.Config{
		GitHub: config.GitHub{
			APIURL:              "http://127.0.0.1:1",
			AppID:               1,
			PrivateKeySecretARN: a.Secret(tb, "not a key: set by tests that call GitHub"),
			WebhookSecretARN:    a.Secret(tb, webhookSecret),
			Scope:               config.ScopeOrg,
		},
		QueueURL:      q.URL,
		TableName:     d.Table,
		RunnerVersion: config.DefaultRunnerVersion, // required: the stack sets it
		MaxRunners:    100,
		Launch:        config.Launch{LaunchTemplateID: "lt-0123456789abcdef0", SubnetIDs: []string{"subnet-0123456789abcdef0"}},
		Profiles: map[string]config.Profile{
			config.DefaultProfileName: {InstanceTypes: []string{config.DefaultInstanceType}, ImageID: ImageX64.ID, Arch: config.ArchX64},
		},
	}
	for _, o := range opts {
		o(cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("test deployment config: %v", err)
	}
	d.Config = cfg
	return d
}

// ConfigJSON returns the JITR_CONFIG document for d.
func (d *Deployment) ConfigJSON(tb testing.TB) string {
	tb.Helper()
	b, err := d.Config.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// LambdaEnv returns the environment a Lambda of d runs with: JITR_CONFIG and
// the moto endpoint. No secret is in it.
func (d *Deployment) LambdaEnv(tb testing.TB) []string {
	tb.Helper()
	return append(MotoForTest(tb).Env(), config.EnvVar+"="+d.ConfigJSON(tb))
}

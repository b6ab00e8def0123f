package program_test

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/program"
	"github.com/jit-runners/jit-runners/stack/runners"
)

const testKey = "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key\n-----END RSA PRIVATE KEY-----\n"

func fakeBuilder(t *testing.T) runners.Builder {
	dir := t.TempDir()
	return runners.BuilderFunc(func(_ context.Context, importPath string) (runners.Archive, error) {
		z, err := runners.ZipBootstrap([]byte(importPath))
		if err != nil {
			return runners.Archive{}, err
		}
		return runners.WriteArchive(dir, z)
	})
}

// required is the least configuration that deploys.
func required() map[string]string {
	return map[string]string{
		"jit-runners:github":              `{"appId": 123456, "scope": "org"}`,
		"jit-runners:githubPrivateKey":    testKey,
		"jit-runners:githubWebhookSecret": "hook",
	}
}

var secretKeys = []string{"jit-runners:githubPrivateKey", "jit-runners:githubWebhookSecret"}

func runProgram(t *testing.T, cfg map[string]string, secret []string) (*plan.Mocks, error) {
	t.Helper()
	m := plan.NewMocks()
	err := plan.Run(program.New(program.Options{Builder: fakeBuilder(t)}), m, plan.WithConfig(cfg, secret))
	return m, err
}

func mustRun(t *testing.T, cfg map[string]string, secret []string) *plan.Mocks {
	t.Helper()
	m, err := runProgram(t, cfg, secret)
	if err != nil {
		t.Fatalf("program failed: %v", err)
	}
	return m
}

// runtimeConfig returns the scaleup Lambda's JITR_CONFIG, parsed.
func runtimeConfig(t *testing.T, m *plan.Mocks) *config.Config {
	t.Helper()
	for _, r := range m.Resources() {
		if r.Type == "aws:lambda/function:Function" && strings.HasSuffix(r.Name, "-scaleup") {
			env := plan.Plain(r.Inputs)["environment"].(map[string]any)["variables"].(map[string]any)
			c, err := config.Parse([]byte(env[config.EnvVar].(string)))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatal("no scaleup function")
	return nil
}

func parameterLookups(m *plan.Mocks) []string {
	var out []string
	for _, inv := range m.Invokes() {
		if inv.Token == "aws:ssm/getParameter:getParameter" {
			out = append(out, inv.Args["name"].StringValue())
		}
	}
	sort.Strings(out)
	return out
}

// TestSampleStack runs the program with the sample stack file and the
// project's defaults, as `make plan` does.
func TestSampleStack(t *testing.T) {
	t.Parallel()
	cfg, secret, err := plan.StackConfig("../../Pulumi.yaml", "../testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(secret, secretKeys) {
		t.Errorf("secret keys %v", secret)
	}
	m := mustRun(t, cfg, secret)
	// The stock AMI of each architecture is read once, from its parameter.
	want := []string{program.StockAMIParameters["arm64"], program.StockAMIParameters["x64"]}
	if got := parameterLookups(m); !reflect.DeepEqual(got, want) {
		t.Errorf("SSM lookups %v, want %v", got, want)
	}
	c := runtimeConfig(t, m)
	mocks := plan.NewMocks()
	x64 := mocks.Parameters[program.StockAMIParameters["x64"]]
	arm := mocks.Parameters[program.StockAMIParameters["arm64"]]
	images := map[string]string{}
	for name, p := range c.Profiles {
		images[name] = p.ImageID
	}
	if w := map[string]string{"default": x64, "gpu": x64, "arm": arm}; !reflect.DeepEqual(images, w) {
		t.Errorf("profile images %v, want %v", images, w)
	}
	if c.MaxRunners != 50 || c.GitHub.AppID != 123456 || !reflect.DeepEqual(c.GitHub.AllowedOwners, []string{"my-org"}) {
		t.Errorf("config %+v", c)
	}
	if got := len(m.Resources()); got < 50 {
		t.Errorf("only %d resources", got)
	}
}

func TestAMIModeID(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:ami"] = `{"mode": "id"}`
	if _, err := runProgram(t, cfg, secretKeys); err == nil || !strings.Contains(err.Error(), "jit-runners:profiles.default.imageId") {
		t.Errorf("error %v, want one naming jit-runners:profiles.default.imageId", err)
	}
	cfg["jit-runners:profiles"] = `{"default": {"imageId": "ami-0123456789abcdef0"}}`
	m := mustRun(t, cfg, secretKeys)
	if got := parameterLookups(m); len(got) != 0 {
		t.Errorf("looked up %v with every image given", got)
	}
	if got := runtimeConfig(t, m).Profiles["default"].ImageID; got != "ami-0123456789abcdef0" {
		t.Errorf("default image %s", got)
	}
}

// TestStockAMIPerArchitecture: a profile's architecture picks its SSM
// parameter; a profile's own imageId wins.
func TestStockAMIPerArchitecture(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:profiles"] = `{"default": {"instanceTypes": ["t4g.large"], "arch": "arm64"}, "pinned": {"instanceTypes": ["m6i.large"], "imageId": "ami-0aaaaaaaaaaaaaaaa"}}`
	m := mustRun(t, cfg, secretKeys)
	if got := parameterLookups(m); !reflect.DeepEqual(got, []string{"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"}) {
		t.Errorf("SSM lookups %v", got)
	}
	c := runtimeConfig(t, m)
	if c.Profiles["default"].ImageID != plan.NewMocks().Parameters[program.StockAMIParameters["arm64"]] || c.Profiles["pinned"].ImageID != "ami-0aaaaaaaaaaaaaaaa" {
		t.Errorf("images %+v", c.Profiles)
	}
}

func TestExistingSecrets(t *testing.T) {
	t.Parallel()
	const key = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app-key-AbCdEf"
	const hook = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hook-AbCdEf"
	cfg := map[string]string{
		"jit-runners:github": `{"appId": 1, "scope": "repo", "privateKeySecretArn": "` + key + `", "webhookSecretArn": "` + hook + `"}`,
	}
	m := mustRun(t, cfg, nil)
	for _, r := range m.Resources() {
		if strings.HasPrefix(r.Type, "aws:secretsmanager/") {
			t.Errorf("created %s %s with existing secrets", r.Type, r.Name)
		}
	}
	c := runtimeConfig(t, m)
	if c.GitHub.PrivateKeySecretARN != key || c.GitHub.WebhookSecretARN != hook {
		t.Errorf("secrets %s %s", c.GitHub.PrivateKeySecretARN, c.GitHub.WebhookSecretARN)
	}
}

// TestProfilesKeepDefault: adding a profile key by key keeps "default".
func TestProfilesKeepDefault(t *testing.T) {
	t.Parallel()
	cfg := required()
	cfg["jit-runners:profiles"] = `{"gpu": {"instanceTypes": ["g5.xlarge"]}}`
	c := runtimeConfig(t, mustRun(t, cfg, secretKeys))
	if _, ok := c.Profiles["default"]; !ok || len(c.Profiles) != 2 {
		t.Errorf("profiles %v", c.Profiles)
	}
	if got := c.Profiles["default"].InstanceTypes; !reflect.DeepEqual(got, []string{"t3.large"}) {
		t.Errorf("default profile types %v", got)
	}
}

// TestInvalidConfig: every invalid configuration fails before anything is
// created, with an error naming the key as `pulumi config set` spells it.
func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		set    map[string]string
		unset  []string
		secret []string // nil: secretKeys
		want   []string
	}{
		{"no App", nil, []string{"jit-runners:github"}, nil, []string{"jit-runners:github.appId", "jit-runners:github.scope"}},
		{"no private key", nil, []string{"jit-runners:githubPrivateKey"}, nil, []string{"jit-runners:githubPrivateKey: is required"}},
		{"private key not secret", nil, nil, []string{"jit-runners:githubWebhookSecret"}, []string{"jit-runners:githubPrivateKey: must be set as a secret"}},
		{"private key not PEM", map[string]string{"jit-runners:githubPrivateKey": "hunter2"}, nil, nil, []string{"jit-runners:githubPrivateKey: is not a PEM private key"}},
		{"key and ARN", map[string]string{"jit-runners:github": `{"appId": 1, "scope": "org", "webhookSecretArn": "arn:aws:secretsmanager:x"}`}, nil, nil,
			[]string{"jit-runners:githubWebhookSecret: set either"}},
		{"bad instance type", map[string]string{"jit-runners:profiles": `{"gpu": {"instanceTypes": ["G5 XL"]}}`}, nil, nil,
			[]string{"jit-runners:profiles.gpu.instanceTypes[0]"}},
		{"wrong kind deep down", map[string]string{"jit-runners:profiles": `{"gpu": {"instanceTypes": ["g5.xlarge"], "volumeGiB": "big"}}`}, nil, nil,
			[]string{"jit-runners:profiles.gpu.volumeGiB: must be an integer"}},
		{"unknown key", map[string]string{"jit-runners:network": `{"natGatway": true}`}, nil, nil,
			[]string{"jit-runners:network.natGatway: unknown key"}},
		{"key spelt with the wrong case", map[string]string{"jit-runners:github": `{"appID": 1, "scope": "org"}`}, nil, nil,
			[]string{`jit-runners:github.appID: unknown key (did you mean "appId"?)`}},
		{"not an integer", map[string]string{"jit-runners:maxRunners": "many"}, nil, nil, []string{"jit-runners:maxRunners: must be an integer"}},
		{"unknown runner version", map[string]string{"jit-runners:runnerVersion": "2.333.0"}, nil, nil,
			[]string{"jit-runners:runnerSha256.x64: is required", "jit-runners:runnerSha256.arm64: is required"}},
		{"bad digest", map[string]string{"jit-runners:runnerSha256": `{"x64": "abc"}`}, nil, nil, []string{"jit-runners:runnerSha256.x64: must be 64 hex digits"}},
		{"bad CIDR", map[string]string{"jit-runners:network": `{"cidr": "10.0.0.0/8"}`}, nil, nil, []string{"jit-runners:network.cidr"}},
		{"existing VPC without subnets", map[string]string{"jit-runners:network": `{"vpcId": "vpc-0123"}`}, nil, nil, []string{"jit-runners:network.subnetIds: is required"}},
		{"existing VPC and NAT", map[string]string{"jit-runners:network": `{"vpcId": "vpc-0123", "subnetIds": ["subnet-1"], "natGateway": true}`}, nil, nil,
			[]string{"jit-runners:network: cidr, azCount"}},
		{"log retention", map[string]string{"jit-runners:logRetentionDays": "31"}, nil, nil, []string{"jit-runners:logRetentionDays"}},
		{"AMI mode", map[string]string{"jit-runners:ami": `{"mode": "packer"}`}, nil, nil, []string{`jit-runners:ami.mode: must be one of "stock", "prebaked", "build" or "id"`}},
		{"prebaked without owners", map[string]string{"jit-runners:ami": `{"mode": "prebaked"}`}, nil, nil,
			[]string{`jit-runners:ami.owners: is required with ami.mode "prebaked"`}},
		{"bad owner", map[string]string{"jit-runners:ami": `{"mode": "prebaked", "owners": ["self", "me"]}`}, nil, nil,
			[]string{`jit-runners:ami.owners[1]: must be an AWS account id`}},
		{"owners without prebaked", map[string]string{"jit-runners:ami": `{"owners": ["self"]}`}, nil, nil,
			[]string{`jit-runners:ami.owners: applies to ami.mode "prebaked" only (ami.mode is "stock")`}},
		{"build keys without build", map[string]string{"jit-runners:ami": `{"mode": "id", "jitRunnersVersion": "v1", "extraScript": "x.sh", "ids": {"x64": "ami-0b"}}`}, nil, nil,
			[]string{`jit-runners:ami.jitRunnersVersion: applies to ami.mode "build" only`, `jit-runners:ami.extraScript: applies to ami.mode "build" only`}},
		{"ids without id", map[string]string{"jit-runners:ami": `{"mode": "build", "ids": {"arm64": "ami-0b"}}`}, nil, nil,
			[]string{`jit-runners:ami.ids.arm64: applies to ami.mode "id" only`}},
		{"bad id", map[string]string{"jit-runners:ami": `{"mode": "id", "ids": {"x64": "0b"}}`}, nil, nil,
			[]string{`jit-runners:ami.ids.x64: must be an AMI id`}},
		{"bad AMI version", map[string]string{"jit-runners:ami": `{"mode": "build", "jitRunnersVersion": "1.0 beta"}`}, nil, nil,
			[]string{`jit-runners:ami.jitRunnersVersion: must be 1-64 of letters`}},
		{"missing extra script", map[string]string{"jit-runners:ami": `{"mode": "build", "extraScript": "/nonexistent/tools.sh"}`}, nil, nil,
			[]string{`jit-runners:ami.extraScript: stat /nonexistent/tools.sh`}},
		{"owner of the wrong kind", map[string]string{"jit-runners:ami": `{"mode": "prebaked", "owners": [true]}`}, nil, nil,
			[]string{`jit-runners:ami.owners[0]: must be a string`}},
		{"name prefix", map[string]string{"jit-runners:namePrefix": "JITR"}, nil, nil, []string{"jit-runners:namePrefix"}},
		{"default profile", map[string]string{"jit-runners:defaultProfile": "linux"}, nil, nil, []string{"jit-runners:defaultProfile"}},
		{"hop limit", map[string]string{"jit-runners:runner": `{"metadataHopLimit": 0.5}`}, nil, nil, []string{"jit-runners:runner.metadataHopLimit: must be an integer"}},
		{"scale down", map[string]string{"jit-runners:scaleDown": `{"maxRuntimeSeconds": 60}`}, nil, nil, []string{"jit-runners:scaleDown.maxRuntimeSeconds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := required()
			for _, k := range tt.unset {
				delete(cfg, k)
			}
			for k, v := range tt.set {
				cfg[k] = v
			}
			secret := tt.secret
			if secret == nil {
				secret = secretKeys
			}
			m, err := runProgram(t, cfg, secret)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "not-a-key") {
				t.Errorf("error shows the private key: %v", err)
			}
			if n := len(m.Resources()); n != 0 {
				t.Errorf("%d resources registered despite invalid configuration", n)
			}
			if n := len(m.Invokes()); n != 0 {
				t.Errorf("%d provider calls made despite invalid configuration", n)
			}
		})
	}
}

// TestSecretsStaySecret: the secret values never appear in the plan.
func TestSecretsStaySecret(t *testing.T) {
	t.Parallel()
	m := mustRun(t, required(), secretKeys)
	var buf strings.Builder
	if err := plan.Write(&buf, m.Resources()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "not-a-key") || strings.Contains(buf.String(), `"hook"`) {
		t.Error("a secret value is in the plan")
	}
	var doc struct {
		Resources []plan.Entry `json:"resources"`
	}
	if err := json.Unmarshal([]byte(buf.String()), &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range doc.Resources {
		if r.Type == "aws:secretsmanager/secretVersion:SecretVersion" {
			n++
			if r.Inputs["secretString"] != plan.SecretValue {
				t.Errorf("%s secretString %v", r.Name, r.Inputs["secretString"])
			}
		}
	}
	if n != 2 {
		t.Errorf("%d secret versions", n)
	}
}

package config_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
)

func valid(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/valid.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The document in DESIGN.md parses as is.
func TestParseDesignExample(t *testing.T) {
	t.Parallel()
	b, _ := os.ReadFile("testdata/valid.json")
	c, err := config.Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.GitHub.AppID != 1 || c.GitHub.Scope != "org" || c.MaxRunners != 100 || c.Launch.SubnetIDs[0] != "subnet-0123456789abcdef0" {
		t.Errorf("decoded %+v", c)
	}
	p := c.Profiles["default"]
	if !p.UseSpot() || p.VolumeGiB != 30 || p.Arch != "x64" {
		t.Errorf("profile %+v", p)
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	m := valid(t)
	delete(m, "scaleDown")
	gh := m["github"].(map[string]any)
	delete(gh, "apiUrl")
	delete(gh, "runnerGroup")
	p := m["profiles"].(map[string]any)["default"].(map[string]any)
	delete(p, "instanceTypes")
	delete(p, "spot")
	delete(p, "volumeGiB")
	delete(p, "arch")
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	want := config.ScaleDown{CompletedGraceSeconds: 120, BootTimeoutSeconds: 600, OrphanGraceSeconds: 300, MaxRuntimeSeconds: 86400, QueuedTimeoutSeconds: 900}
	if c.ScaleDown != want {
		t.Errorf("scaleDown = %+v; want %+v", c.ScaleDown, want)
	}
	d := c.Profiles["default"]
	if got := strings.Join(d.InstanceTypes, ","); got != "t3.large" || !d.UseSpot() || d.VolumeGiB != 30 || d.Arch != "x64" {
		t.Errorf("default profile = %+v", d)
	}
	if c.GitHub.APIURL != "https://api.github.com" || c.GitHub.RunnerGroup != "Default" || c.RecordRetentionSeconds != 604800 || c.LogLevel != "info" {
		t.Errorf("defaults = %+v", c)
	}
}

func TestSpotFalseIsKept(t *testing.T) {
	t.Parallel()
	m := valid(t)
	m["profiles"].(map[string]any)["default"].(map[string]any)["spot"] = false
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if c.Profiles["default"].UseSpot() {
		t.Fatal("spot: false decoded as spot")
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		key    string
	}{
		{"unknown top-level key", func(m map[string]any) { m["maxRunner"] = 3 }, "maxRunner"},
		{"unknown nested key", func(m map[string]any) { m["github"].(map[string]any)["appID"] = 3 }, "github.appID"},
		{"unknown key deep down", func(m map[string]any) { m["scaleDown"].(map[string]any)["bogus"] = 1 }, "scaleDown.bogus"},
		{"unknown profile key", func(m map[string]any) {
			m["profiles"].(map[string]any)["default"].(map[string]any)["imageID"] = "ami-1"
		}, "profiles.default.imageID"},
		{"missing queueUrl", func(m map[string]any) { delete(m, "queueUrl") }, "queueUrl"},
		{"missing tableName", func(m map[string]any) { delete(m, "tableName") }, "tableName"},
		{"missing appId", func(m map[string]any) { delete(m["github"].(map[string]any), "appId") }, "github.appId"},
		{"missing privateKeySecretArn", func(m map[string]any) { delete(m["github"].(map[string]any), "privateKeySecretArn") }, "github.privateKeySecretArn"},
		{"webhookSecretArn not an ARN", func(m map[string]any) { m["github"].(map[string]any)["webhookSecretArn"] = "hunter2" }, "github.webhookSecretArn"},
		{"bad scope", func(m map[string]any) { m["github"].(map[string]any)["scope"] = "enterprise" }, "github.scope"},
		{"missing runnerVersion", func(m map[string]any) { delete(m, "runnerVersion") }, "runnerVersion"},
		{"bad runnerVersion", func(m map[string]any) { m["runnerVersion"] = "latest" }, "runnerVersion"},
		{"missing maxRunners", func(m map[string]any) { delete(m, "maxRunners") }, "maxRunners"},
		{"maxRunners wrong type", func(m map[string]any) { m["maxRunners"] = "many" }, "maxRunners"},
		{"profile key wrong type", func(m map[string]any) {
			m["profiles"].(map[string]any)["default"].(map[string]any)["volumeGiB"] = "big"
		}, "profiles.default.volumeGiB"},
		{"missing launchTemplateId", func(m map[string]any) { delete(m["launch"].(map[string]any), "launchTemplateId") }, "launch.launchTemplateId"},
		{"missing subnetIds", func(m map[string]any) { delete(m["launch"].(map[string]any), "subnetIds") }, "launch.subnetIds"},
		{"bad subnet", func(m map[string]any) { m["launch"].(map[string]any)["subnetIds"] = []string{"sg-1"} }, "launch.subnetIds[0]"},
		{"bad namePrefix", func(m map[string]any) { m["namePrefix"] = "x'; reboot; '" }, "namePrefix"},
		{"no profiles", func(m map[string]any) { delete(m, "profiles") }, "profiles"},
		{"defaultProfile unknown", func(m map[string]any) { m["defaultProfile"] = "gpu" }, "defaultProfile"},
		{"profile without image", func(m map[string]any) {
			delete(m["profiles"].(map[string]any)["default"].(map[string]any), "imageId")
		}, "profiles.default.imageId"},
		{"profile bad arch", func(m map[string]any) { m["profiles"].(map[string]any)["default"].(map[string]any)["arch"] = "amd64" }, "profiles.default.arch"},
		{"profile bad instance type", func(m map[string]any) {
			m["profiles"].(map[string]any)["default"].(map[string]any)["instanceTypes"] = []string{"t3.large", "$(reboot)"}
		}, "profiles.default.instanceTypes[1]"},
		{"profile named like a reserved label", func(m map[string]any) {
			m["profiles"].(map[string]any)["linux"] = map[string]any{"imageId": "ami-1", "instanceTypes": []string{"t3.large"}}
		}, "profiles.linux"},
		{"profile name upper case", func(m map[string]any) {
			m["profiles"].(map[string]any)["GPU"] = map[string]any{"imageId": "ami-1", "instanceTypes": []string{"g5.xlarge"}}
		}, "profiles.GPU"},
		{"negative scaleDown", func(m map[string]any) { m["scaleDown"].(map[string]any)["orphanGraceSeconds"] = -1 }, "scaleDown.orphanGraceSeconds"},
		{"bad instance type pattern", func(m map[string]any) { m["allowedInstanceTypes"] = []string{"c6i.[*"} }, "allowedInstanceTypes[0]"},
		{"queue delay over SQS limit", func(m map[string]any) { m["queueDelaySeconds"] = 901 }, "queueDelaySeconds"},
		{"bad allowed owner", func(m map[string]any) { m["github"].(map[string]any)["allowedOwners"] = []string{"a b"} }, "github.allowedOwners[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := valid(t)
			tc.mutate(m)
			_, err := config.Parse(encode(t, m))
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q does not name %s", err, tc.key)
			}
		})
	}
}

func TestValidationErrorsAreKeyErrors(t *testing.T) {
	t.Parallel()
	m := valid(t)
	delete(m, "queueUrl")
	delete(m, "tableName")
	_, err := config.Parse(encode(t, m))
	var ke *config.KeyError
	if !errors.As(err, &ke) || ke.Key != "queueUrl" {
		t.Fatalf("error %v; want a *KeyError for queueUrl first", err)
	}
	if !strings.Contains(err.Error(), "tableName") {
		t.Errorf("error %q does not list every problem", err)
	}
}

func TestParseRejectsBadDocuments(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "   ", "null x", "{", `{"queueUrl": 5}`, `[]`, string(mustRead(t)) + "{}"} {
		if _, err := config.Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%.30q) accepted", doc)
		}
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(config.EnvVar, string(mustRead(t)))
	if _, err := config.FromEnv(); err != nil {
		t.Fatal(err)
	}
	if err := os.Unsetenv(config.EnvVar); err != nil {
		t.Fatal(err)
	}
	if _, err := config.FromEnv(); err == nil || !strings.Contains(err.Error(), config.EnvVar) {
		t.Fatalf("missing env: %v", err)
	}
}

// Marshal output parses back to the same configuration: the stack writes
// JITR_CONFIG with Marshal.
func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := config.Parse(mustRead(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := config.Parse(b)
	if err != nil {
		t.Fatalf("re-parse: %v", err)
	}
	b2, _ := c2.Marshal()
	if string(b) != string(b2) {
		t.Fatalf("round trip changed the document:\n%s\n%s", b, b2)
	}
}

func mustRead(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/valid.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

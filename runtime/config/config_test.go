package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

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
		{"shapes unknown key", func(m map[string]any) { m["shapes"] = map[string]any{"maxCPU": 8} }, "shapes.maxCPU"},
		{"shapes maxCpu too big", func(m map[string]any) { m["shapes"] = map[string]any{"maxCpu": 449} }, "shapes.maxCpu"},
		{"shapes maxCpu negative", func(m map[string]any) { m["shapes"] = map[string]any{"maxCpu": -1} }, "shapes.maxCpu"},
		{"shapes maxRamGiB too big", func(m map[string]any) { m["shapes"] = map[string]any{"maxRamGiB": 24577} }, "shapes.maxRamGiB"},
		{"shapes maxDiskGiB too small", func(m map[string]any) { m["shapes"] = map[string]any{"maxDiskGiB": 7} }, "shapes.maxDiskGiB"},
		{"shapes family with size", func(m map[string]any) { m["shapes"] = map[string]any{"families": []string{"c7i.large"}} }, "shapes.families[0]"},
		{"shapes family upper case", func(m map[string]any) { m["shapes"] = map[string]any{"families": []string{"m7", "C7i"}} }, "shapes.families[1]"},
		{"shapes family twice", func(m map[string]any) { m["shapes"] = map[string]any{"families": []string{"m7", "m7"}} }, "shapes.families[1]"},
		{"shapes gpu not a bool", func(m map[string]any) { m["shapes"] = map[string]any{"gpu": "no"} }, "shapes.gpu"},
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

// withPool sets profiles.<profile>.pool to the JSON document pool (adding
// the profile, with an image, if it is not there).
func withPool(t *testing.T, m map[string]any, profile, pool string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(pool), &v); err != nil {
		t.Fatalf("pool %s: %v", pool, err)
	}
	profiles := m["profiles"].(map[string]any)
	p, ok := profiles[profile].(map[string]any)
	if !ok {
		p = map[string]any{"instanceTypes": []string{"g5.xlarge"}, "imageId": "ami-0fedcba9876543210"}
		profiles[profile] = p
	}
	p["pool"] = v
}

// keyErrors returns every *KeyError inside err (errors.Join nests them).
func keyErrors(err error) []*config.KeyError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*config.KeyError
		for _, e := range j.Unwrap() {
			out = append(out, keyErrors(e)...)
		}
		return out
	}
	var ke *config.KeyError
	if errors.As(err, &ke) {
		return []*config.KeyError{ke}
	}
	return nil
}

func TestPoolParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		pool string
		want config.Pool
	}{
		{"hot only, defaults", `{"hot": {"size": 2}}`,
			config.Pool{Hot: &config.PoolSpec{Size: 2}, MaxAgeMinutes: 1440}},
		{"stopped only", `{"stopped": {"size": 5}, "maxAgeMinutes": 30}`,
			config.Pool{Stopped: &config.PoolSpec{Size: 5}, MaxAgeMinutes: 30}},
		{"size 0 is allowed", `{"hot": {"size": 0}}`,
			config.Pool{Hot: &config.PoolSpec{}, MaxAgeMinutes: 1440}},
		{"schedules get the UTC default", `{"hot": {"size": 4, "schedules": [{"days": "mon-fri", "from": "07:00", "to": "19:00"}]}}`,
			config.Pool{Hot: &config.PoolSpec{Size: 4, TimeZone: "UTC",
				Schedules: []config.PoolSchedule{{Days: "mon-fri", From: "07:00", To: "19:00"}}}, MaxAgeMinutes: 1440}},
		{"both, every key, limits", `{"hot": {"size": 3, "offHoursSize": 1, "timeZone": "Europe/Berlin",
		    "schedules": [{"days": "mon,wed-fri", "from": "07:00", "to": "24:00"}, {"days": "sat-mon", "from": "22:00", "to": "00:00"},
		                  {"days": "daily", "from": "00:00", "to": "24:00"}, {"days": "sun", "from": "23:59", "to": "00:01"}]},
		  "stopped": {"size": 10, "schedules": [{"days": "fri", "from": "22:00", "to": "06:00"}], "timeZone": "America/Argentina/Buenos_Aires"},
		  "maxAgeMinutes": 10080}`,
			config.Pool{
				Hot: &config.PoolSpec{Size: 3, OffHoursSize: 1, TimeZone: "Europe/Berlin", Schedules: []config.PoolSchedule{
					{Days: "mon,wed-fri", From: "07:00", To: "24:00"}, {Days: "sat-mon", From: "22:00", To: "00:00"},
					{Days: "daily", From: "00:00", To: "24:00"}, {Days: "sun", From: "23:59", To: "00:01"}}},
				Stopped: &config.PoolSpec{Size: 10, TimeZone: "America/Argentina/Buenos_Aires",
					Schedules: []config.PoolSchedule{{Days: "fri", From: "22:00", To: "06:00"}}},
				MaxAgeMinutes: 10080}},
		{"pools one under maxRunners", `{"hot": {"size": 60}, "stopped": {"size": 0, "offHoursSize": 39, "schedules": [{"days": "sat,sun", "from": "00:00", "to": "24:00"}]}}`,
			config.Pool{Hot: &config.PoolSpec{Size: 60}, Stopped: &config.PoolSpec{OffHoursSize: 39, TimeZone: "UTC",
				Schedules: []config.PoolSchedule{{Days: "sat,sun", From: "00:00", To: "24:00"}}}, MaxAgeMinutes: 1440}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := valid(t)
			withPool(t, m, "default", tc.pool)
			c, err := config.Parse(encode(t, m))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Profiles["default"].Pool; got == nil || !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("pool = %s; want %s", show(got), show(&tc.want))
			}
			// What the stack writes parses back to the same document.
			b, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			c2, err := config.Parse(b)
			if err != nil {
				t.Fatalf("re-parse: %v", err)
			}
			if !reflect.DeepEqual(c2.Profiles["default"].Pool, c.Profiles["default"].Pool) {
				t.Errorf("round trip: %s; want %s", show(c2.Profiles["default"].Pool), show(c.Profiles["default"].Pool))
			}
		})
	}
}

func show(p *config.Pool) string {
	b, _ := json.Marshal(p)
	return string(b)
}

// Defaults go into a copy: Validate leaves the caller's pool as it was.
func TestPoolDefaultsDoNotAlias(t *testing.T) {
	t.Parallel()
	c, err := config.Parse(mustRead(t))
	if err != nil {
		t.Fatal(err)
	}
	hot := &config.PoolSpec{Size: 1, Schedules: []config.PoolSchedule{{Days: "daily", From: "08:00", To: "18:00"}}}
	pool := &config.Pool{Hot: hot}
	p := c.Profiles["default"]
	p.Pool = pool
	c.Profiles["default"] = p
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if pool.MaxAgeMinutes != 0 || hot.TimeZone != "" {
		t.Errorf("Validate changed the caller's pool: %+v %+v", pool, hot)
	}
	if got := c.Profiles["default"].Pool; got.MaxAgeMinutes != 1440 || got.Hot.TimeZone != "UTC" {
		t.Errorf("defaults missing: %s", show(got))
	}
}

func TestPoolErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const hot = "profiles.default.pool.hot"
	tests := []struct {
		name   string
		pool   string // profiles.default.pool
		mutate func(t *testing.T, m map[string]any)
		key    string
		reason string
	}{
		{"neither hot nor stopped", `{"maxAgeMinutes": 60}`, nil, "profiles.default.pool", "needs hot, stopped or both"},
		{"empty pool", `{}`, nil, "profiles.default.pool", "needs hot, stopped or both"},
		{"size negative", `{"hot": {"size": -1}}`, nil, hot + ".size", "between 0 and 500, got -1"},
		{"size over 500", `{"stopped": {"size": 501}}`, func(_ *testing.T, m map[string]any) { m["maxRunners"] = 1000 },
			"profiles.default.pool.stopped.size", "between 0 and 500, got 501"},
		{"offHoursSize over 500", `{"hot": {"size": 1, "offHoursSize": 501, "schedules": [{"days": "daily", "from": "08:00", "to": "18:00"}]}}`,
			func(_ *testing.T, m map[string]any) { m["maxRunners"] = 1000 }, hot + ".offHoursSize", "between 0 and 500, got 501"},
		{"offHoursSize negative", `{"hot": {"size": 1, "offHoursSize": -2, "schedules": [{"days": "daily", "from": "08:00", "to": "18:00"}]}}`,
			nil, hot + ".offHoursSize", "got -2"},
		{"offHoursSize without schedules", `{"hot": {"size": 1, "offHoursSize": 2}}`, nil, hot + ".offHoursSize", "there are none"},
		{"timeZone without schedules", `{"hot": {"size": 1, "timeZone": "Europe/Berlin"}}`, nil, hot + ".timeZone", "there are none"},
		{"maxAgeMinutes too small", `{"hot": {"size": 1}, "maxAgeMinutes": 29}`, nil, "profiles.default.pool.maxAgeMinutes", "between 30 and 10080 (a week), got 29"},
		{"maxAgeMinutes too large", `{"hot": {"size": 1}, "maxAgeMinutes": 10081}`, nil, "profiles.default.pool.maxAgeMinutes", "got 10081"},
		{"maxAgeMinutes negative", `{"hot": {"size": 1}, "maxAgeMinutes": -5}`, nil, "profiles.default.pool.maxAgeMinutes", "got -5"},
		{"unknown day", `{"hot": {"size": 1, "schedules": [{"days": "mon-fri", "from": "07:00", "to": "19:00"}, {"days": "mon,thur", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[1].days", `unknown day "thur"`},
		{"upper-case day", `{"hot": {"size": 1, "schedules": [{"days": "Mon-Fri", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `unknown day "Mon"`},
		{"empty days", `{"hot": {"size": 1, "schedules": [{"from": "07:00", "to": "19:00"}]}}`, nil, hot + ".schedules[0].days", "is required"},
		{"empty list item", `{"hot": {"size": 1, "schedules": [{"days": "mon,,tue", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `unknown day ""`},
		{"three-part range", `{"hot": {"size": 1, "schedules": [{"days": "mon-wed-fri", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `unknown day "wed-fri"`},
		{"daily in a list", `{"hot": {"size": 1, "schedules": [{"days": "daily,mon", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `unknown day "daily"`},
		{"hostile days stay data", `{"hot": {"size": 1, "schedules": [{"days": "$(reboot)\n", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `unknown day "$(reboot)\n"`},
		{"from without leading zero", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "7:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].from", `HH:MM between 00:00 and 23:59, got "7:00"`},
		{"from 24:00", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "24:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].from", `got "24:00"`},
		{"from minutes 60", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:60", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].from", `got "07:60"`},
		{"from with seconds", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].from", `got "07:00:00"`},
		{"to 24:01", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00", "to": "24:01"}]}}`,
			nil, hot + ".schedules[0].to", `HH:MM between 00:00 and 24:00, got "24:01"`},
		{"to 25:00", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00", "to": "25:00"}]}}`,
			nil, hot + ".schedules[0].to", `got "25:00"`},
		{"to with a sign", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00", "to": "+9:00"}]}}`,
			nil, hot + ".schedules[0].to", `got "+9:00"`},
		{"to missing", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00"}]}}`,
			nil, hot + ".schedules[0].to", `got ""`},
		{"from equals to", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00", "to": "07:00"}]}}`,
			nil, hot + ".schedules[0].to", "an empty window: use 00:00 to 24:00"},
		{"00:00 to 00:00", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "00:00", "to": "00:00"}]}}`,
			nil, hot + ".schedules[0].to", "an empty window"},
		{"unknown time zone", `{"hot": {"size": 1, "timeZone": "Mars/Olympus_Mons", "schedules": [{"days": "daily", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".timeZone", `not a known IANA time zone: "Mars/Olympus_Mons"`},
		{"Local is not a zone", `{"hot": {"size": 1, "timeZone": "Local", "schedules": [{"days": "daily", "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".timeZone", `got "Local"`},
		{"a path is not a zone", `{"stopped": {"size": 1, "timeZone": "../../../etc/passwd", "schedules": [{"days": "daily", "from": "07:00", "to": "19:00"}]}}`,
			nil, "profiles.default.pool.stopped.timeZone", `must be an IANA time zone name`},
		{"an absolute path is not a zone", `{"stopped": {"size": 1, "timeZone": "/etc/localtime", "schedules": [{"days": "daily", "from": "07:00", "to": "19:00"}]}}`,
			nil, "profiles.default.pool.stopped.timeZone", `must be an IANA time zone name`},
		{"unknown pool key", `{"hot": {"size": 1}, "warm": {"size": 1}}`, nil, "profiles.default.pool.warm", "unknown key"},
		{"unknown schedule key", `{"hot": {"size": 1, "schedules": [{"days": "daily", "from": "07:00", "until": "19:00"}]}}`,
			nil, hot + ".schedules[0].until", "unknown key"},
		{"key in the wrong case", `{"hot": {"size": 1, "timezone": "UTC"}}`, nil, hot + ".timezone", `did you mean "timeZone"`},
		{"size wrong type", `{"hot": {"size": "two"}}`, nil, hot + ".size", `expected int, got JSON string`},
		{"size not whole", `{"hot": {"size": 2.5}}`, nil, hot + ".size", `expected int, got JSON number 2.5`},
		{"days wrong type", `{"hot": {"size": 1, "schedules": [{"days": ["mon"], "from": "07:00", "to": "19:00"}]}}`,
			nil, hot + ".schedules[0].days", `expected string, got JSON array`},
		{"over the profile's maxRunners", `{"hot": {"size": 3}, "stopped": {"size": 2}}`,
			func(_ *testing.T, m map[string]any) {
				m["profiles"].(map[string]any)["default"].(map[string]any)["maxRunners"] = 4
			},
			"profiles.default.pool", "holds up to 5 instances, more than the profile's maxRunners (4): pooled instances hold runner slots"},
		{"off hours count against the profile's maxRunners", `{"hot": {"size": 2, "offHoursSize": 5, "schedules": [{"days": "mon-fri", "from": "07:00", "to": "19:00"}]}}`,
			func(_ *testing.T, m map[string]any) {
				m["profiles"].(map[string]any)["default"].(map[string]any)["maxRunners"] = 4
			},
			"profiles.default.pool", "holds up to 5 instances"},
		{"over maxRunners", `{"hot": {"size": 60}, "stopped": {"size": 41}}`, nil,
			"maxRunners", "is 100, not more than the 101 instances the pools hold at most (default 101): pooled instances hold runner slots, and at least one must stay free for other launches"},
		{"every slot pooled", `{"hot": {"size": 60}, "stopped": {"size": 40}}`, nil,
			"maxRunners", "is 100, not more than the 100 instances the pools hold at most (default 100)"},
		{"over maxRunners, all profiles together", `{"hot": {"size": 30, "offHoursSize": 50, "schedules": [{"days": "sat,sun", "from": "00:00", "to": "24:00"}]}}`,
			func(t *testing.T, m map[string]any) { withPool(t, m, "gpu", `{"stopped": {"size": 51}}`) },
			"maxRunners", "(default 50, gpu 51)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := valid(t)
			withPool(t, m, "default", tc.pool)
			if tc.mutate != nil {
				tc.mutate(t, m)
			}
			_, err := config.Parse(encode(t, m))
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			for _, ke := range keyErrors(err) {
				if ke.Key == tc.key && strings.Contains(ke.Reason, tc.reason) {
					return
				}
			}
			// Decoding errors are not KeyErrors; they name the key in text.
			if msg := err.Error(); len(keyErrors(err)) == 0 && strings.Contains(msg, tc.key) && strings.Contains(msg, tc.reason) {
				return
			}
			t.Fatalf("error %q has no %s: ...%s...", err, tc.key, tc.reason)
		})
	}
}

// TestPoolSizeAt checks SizeAt against hand-computed expectations. Each
// instant is written in UTC, its local wall-clock time in the comment;
// daylight saving 2026: Europe/Berlin CET (+1) to CEST (+2) on Sun 03-29 at
// 01:00Z and back on Sun 10-25 at 01:00Z; America/New_York EST (-5) to EDT
// (-4) on Sun 03-08 at 07:00Z and back on Sun 11-01 at 06:00Z. January 2026:
// Mon 5, Fri 9, Sat 10, Sun 11, Mon 12, Tue 13.
func TestPoolSizeAt(t *testing.T) {
	t.Parallel()
	win := func(days, from, to string) config.PoolSchedule {
		return config.PoolSchedule{Days: days, From: from, To: to}
	}
	type sched = []config.PoolSchedule
	weekdays := sched{win("mon-fri", "07:00", "19:00")}
	tests := []struct {
		zone  string
		sched sched
		at    string // UTC
		open  bool
	}{
		// Edges: open exactly at From, closed exactly at To.
		{"UTC", weekdays, "2026-01-05T06:59:00Z", false},
		{"UTC", weekdays, "2026-01-05T07:00:00Z", true},
		{"UTC", weekdays, "2026-01-05T07:01:00Z", true},
		{"UTC", weekdays, "2026-01-05T18:59:00Z", true},
		{"UTC", weekdays, "2026-01-09T18:59:59.999Z", true},
		{"UTC", weekdays, "2026-01-05T19:00:00Z", false},
		{"UTC", weekdays, "2026-01-05T19:01:00Z", false},
		{"UTC", weekdays, "2026-01-09T12:00:00Z", true},  // Fri
		{"UTC", weekdays, "2026-01-10T12:00:00Z", false}, // Sat
		{"UTC", weekdays, "2026-01-11T12:00:00Z", false}, // Sun
		// Over midnight: the window belongs to the day it starts.
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-09T21:59:00Z", false},
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-09T22:00:00Z", true},
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-10T03:00:00Z", true}, // Sat 03:00
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-10T05:59:00Z", true},
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-10T06:00:00Z", false},
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-10T22:00:00Z", false}, // Sat evening
		{"UTC", sched{win("fri", "22:00", "06:00")}, "2026-01-09T03:00:00Z", false}, // Fri morning: Thursday's window
		{"UTC", sched{win("fri", "22:00", "00:00")}, "2026-01-09T23:59:00Z", true},
		{"UTC", sched{win("fri", "22:00", "00:00")}, "2026-01-10T00:00:00Z", false},
		{"UTC", sched{win("sun", "23:59", "00:01")}, "2026-01-11T23:59:00Z", true},
		{"UTC", sched{win("sun", "23:59", "00:01")}, "2026-01-12T00:00:30Z", true},
		{"UTC", sched{win("sun", "23:59", "00:01")}, "2026-01-12T00:01:00Z", false},
		// Day ranges that wrap.
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-09T12:00:00Z", false}, // Fri
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-10T12:00:00Z", true},  // Sat
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-11T12:00:00Z", true},  // Sun
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-12T12:00:00Z", true},  // Mon
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-12T17:00:00Z", false},
		{"UTC", sched{win("sat-mon", "09:00", "17:00")}, "2026-01-13T12:00:00Z", false}, // Tue
		{"UTC", sched{win("sat-mon", "22:00", "02:00")}, "2026-01-13T01:00:00Z", true},  // Tue 01:00: Monday's window
		{"UTC", sched{win("sat-mon", "22:00", "02:00")}, "2026-01-10T01:00:00Z", false}, // Sat 01:00: Friday's
		{"UTC", sched{win("sat-mon", "22:00", "02:00")}, "2026-01-10T22:00:00Z", true},
		// Lists, "24:00", daily, several windows.
		{"UTC", sched{win("mon,wed-fri", "08:00", "10:00")}, "2026-01-05T09:00:00Z", true},  // Mon
		{"UTC", sched{win("mon,wed-fri", "08:00", "10:00")}, "2026-01-06T09:00:00Z", false}, // Tue
		{"UTC", sched{win("mon,wed-fri", "08:00", "10:00")}, "2026-01-07T09:00:00Z", true},  // Wed
		{"UTC", sched{win("mon,wed-fri", "08:00", "10:00")}, "2026-01-09T09:00:00Z", true},  // Fri
		{"UTC", sched{win("mon,wed-fri", "08:00", "10:00")}, "2026-01-10T09:00:00Z", false}, // Sat
		{"UTC", sched{win("mon", "20:00", "24:00")}, "2026-01-05T19:59:00Z", false},
		{"UTC", sched{win("mon", "20:00", "24:00")}, "2026-01-05T20:00:00Z", true},
		{"UTC", sched{win("mon", "20:00", "24:00")}, "2026-01-05T23:59:59Z", true},
		{"UTC", sched{win("mon", "20:00", "24:00")}, "2026-01-06T00:00:00Z", false},
		{"UTC", sched{win("daily", "00:00", "24:00")}, "2026-01-07T00:00:00Z", true},
		{"UTC", sched{win("daily", "00:00", "24:00")}, "2026-01-11T23:59:00Z", true},
		{"UTC", sched{win("daily", "00:00", "24:00")}, "2026-07-15T12:34:00Z", true},
		{"UTC", sched{win("daily", "09:00", "17:00")}, "2026-01-11T08:59:00Z", false},
		{"UTC", sched{win("daily", "09:00", "17:00")}, "2026-01-11T09:00:00Z", true},
		{"UTC", sched{win("mon-fri", "07:00", "12:00"), win("mon-fri", "13:00", "19:00")}, "2026-01-05T11:59:00Z", true},
		{"UTC", sched{win("mon-fri", "07:00", "12:00"), win("mon-fri", "13:00", "19:00")}, "2026-01-05T12:30:00Z", false},
		{"UTC", sched{win("mon-fri", "07:00", "12:00"), win("mon-fri", "13:00", "19:00")}, "2026-01-05T13:00:00Z", true},
		// Zones without daylight saving: the local day, not UTC's, decides.
		{"", weekdays, "2026-01-05T07:00:00Z", true},                                                // "" is UTC
		{"Asia/Tokyo", weekdays, "2026-01-04T21:59:00Z", false},                                     // Mon 06:59 JST
		{"Asia/Tokyo", weekdays, "2026-01-04T22:00:00Z", true},                                      // Mon 07:00 JST, Sun in UTC
		{"Asia/Tokyo", weekdays, "2026-01-09T09:59:00Z", true},                                      // Fri 18:59 JST
		{"Asia/Tokyo", weekdays, "2026-01-09T10:00:00Z", false},                                     // Fri 19:00 JST
		{"Asia/Tokyo", weekdays, "2026-01-09T16:00:00Z", false},                                     // Sat 01:00 JST, Fri in UTC
		{"America/Los_Angeles", sched{win("fri", "09:00", "18:00")}, "2026-01-10T01:00:00Z", true},  // Fri 17:00 PST, Sat in UTC
		{"America/Los_Angeles", sched{win("fri", "09:00", "18:00")}, "2026-01-09T12:00:00Z", false}, // Fri 04:00 PST
		// Europe/Berlin, spring forward (Sun 2026-03-29): 02:00-03:00 does not exist.
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-22T01:29:00Z", false}, // a week before: 02:29 CET
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-22T01:30:00Z", true},  // 02:30 CET
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-22T04:00:00Z", false}, // 05:00 CET
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-29T00:59:00Z", false}, // 01:59 CET
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-29T01:00:00Z", true},  // 03:00 CEST: the jump passed 02:30
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-29T02:59:00Z", true},  // 04:59 CEST
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-03-29T03:00:00Z", false}, // 05:00 CEST
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-04-05T00:29:00Z", false}, // a week after: 02:29 CEST
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-04-05T00:30:00Z", true},  // 02:30 CEST
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-03-28T22:59:00Z", false}, // Sat 23:59 CET
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-03-28T23:00:00Z", true},  // Sun 00:00 CET
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-03-29T00:59:00Z", true},  // 01:59 CET
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-03-29T01:00:00Z", false}, // 03:00 CEST: closed at the jump
		{"Europe/Berlin", sched{win("sat", "22:00", "06:00")}, "2026-03-28T20:59:00Z", false}, // Sat 21:59 CET
		{"Europe/Berlin", sched{win("sat", "22:00", "06:00")}, "2026-03-28T21:00:00Z", true},  // Sat 22:00 CET
		{"Europe/Berlin", sched{win("sat", "22:00", "06:00")}, "2026-03-29T03:59:00Z", true},  // Sun 05:59 CEST
		{"Europe/Berlin", sched{win("sat", "22:00", "06:00")}, "2026-03-29T04:00:00Z", false}, // Sun 06:00 CEST
		{"Europe/Berlin", weekdays, "2026-03-27T05:59:00Z", false},                            // Fri 06:59 CET
		{"Europe/Berlin", weekdays, "2026-03-27T06:00:00Z", true},                             // Fri 07:00 CET
		{"Europe/Berlin", weekdays, "2026-03-27T18:00:00Z", false},                            // Fri 19:00 CET
		{"Europe/Berlin", weekdays, "2026-03-30T04:59:00Z", false},                            // Mon 06:59 CEST
		{"Europe/Berlin", weekdays, "2026-03-30T05:00:00Z", true},                             // Mon 07:00 CEST
		{"Europe/Berlin", weekdays, "2026-03-30T16:59:00Z", true},                             // Mon 18:59 CEST
		{"Europe/Berlin", weekdays, "2026-03-30T17:00:00Z", false},                            // Mon 19:00 CEST
		// Europe/Berlin, fall back (Sun 2026-10-25): 02:00-03:00 happens twice;
		// a window is one interval, from the first reading of From to the
		// first reading of To after it.
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-10-24T21:59:00Z", false}, // Sat 23:59 CEST
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-10-24T22:00:00Z", true},  // Sun 00:00 CEST
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-10-25T00:29:00Z", true},  // 02:29 CEST
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-10-25T00:30:00Z", false}, // 02:30 CEST
		{"Europe/Berlin", sched{win("sun", "00:00", "02:30")}, "2026-10-25T01:15:00Z", false}, // 02:15 CET, the second time
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-10-25T00:29:00Z", false}, // 02:29 CEST
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-10-25T00:30:00Z", true},  // 02:30 CEST
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-10-25T01:15:00Z", true},  // 02:15 CET, the second time
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-10-25T03:59:00Z", true},  // 04:59 CET
		{"Europe/Berlin", sched{win("sun", "02:30", "05:00")}, "2026-10-25T04:00:00Z", false}, // 05:00 CET
		// America/New_York, spring forward (Sun 2026-03-08): 02:00-03:00 does not exist.
		{"America/New_York", sched{win("sun", "02:30", "06:00")}, "2026-03-08T06:59:00Z", false}, // 01:59 EST
		{"America/New_York", sched{win("sun", "02:30", "06:00")}, "2026-03-08T07:00:00Z", true},  // 03:00 EDT
		{"America/New_York", sched{win("sun", "02:30", "06:00")}, "2026-03-08T09:59:00Z", true},  // 05:59 EDT
		{"America/New_York", sched{win("sun", "02:30", "06:00")}, "2026-03-08T10:00:00Z", false}, // 06:00 EDT
		{"America/New_York", sched{win("sat", "22:00", "02:30")}, "2026-03-08T02:59:00Z", false}, // Sat 21:59 EST
		{"America/New_York", sched{win("sat", "22:00", "02:30")}, "2026-03-08T03:00:00Z", true},  // Sat 22:00 EST
		{"America/New_York", sched{win("sat", "22:00", "02:30")}, "2026-03-08T06:59:00Z", true},  // Sun 01:59 EST
		{"America/New_York", sched{win("sat", "22:00", "02:30")}, "2026-03-08T07:00:00Z", false}, // Sun 03:00 EDT
		{"America/New_York", weekdays, "2026-03-06T11:59:00Z", false},                            // Fri 06:59 EST
		{"America/New_York", weekdays, "2026-03-06T12:00:00Z", true},                             // Fri 07:00 EST
		{"America/New_York", weekdays, "2026-03-06T23:59:00Z", true},                             // Fri 18:59 EST
		{"America/New_York", weekdays, "2026-03-07T00:00:00Z", false},                            // Fri 19:00 EST
		{"America/New_York", weekdays, "2026-03-09T10:59:00Z", false},                            // Mon 06:59 EDT
		{"America/New_York", weekdays, "2026-03-09T11:00:00Z", true},                             // Mon 07:00 EDT
		{"America/New_York", weekdays, "2026-03-09T22:59:00Z", true},                             // Mon 18:59 EDT
		{"America/New_York", weekdays, "2026-03-09T23:00:00Z", false},                            // Mon 19:00 EDT
		// America/New_York, fall back (Sun 2026-11-01): 01:00-02:00 happens twice.
		{"America/New_York", sched{win("sun", "01:30", "03:00")}, "2026-11-01T05:29:00Z", false}, // 01:29 EDT
		{"America/New_York", sched{win("sun", "01:30", "03:00")}, "2026-11-01T05:30:00Z", true},  // 01:30 EDT
		{"America/New_York", sched{win("sun", "01:30", "03:00")}, "2026-11-01T06:15:00Z", true},  // 01:15 EST, the second time
		{"America/New_York", sched{win("sun", "01:30", "03:00")}, "2026-11-01T07:59:00Z", true},  // 02:59 EST
		{"America/New_York", sched{win("sun", "01:30", "03:00")}, "2026-11-01T08:00:00Z", false}, // 03:00 EST
	}
	elsewhere := time.FixedZone("UTC+05:45", 5*3600+45*60) // the instant counts, not its zone
	for _, tc := range tests {
		name := fmt.Sprintf("%s %s %v %s", tc.zone, tc.at, tc.sched, map[bool]string{true: "open", false: "closed"}[tc.open])
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			at, err := time.Parse(time.RFC3339Nano, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			want := 1 // offHoursSize
			if tc.open {
				want = 5 // size
			}
			spec := config.PoolSpec{Size: 5, OffHoursSize: 1, TimeZone: tc.zone, Schedules: tc.sched}
			// The same spec as the Lambdas get it: JSON, parsed and validated.
			m := valid(t)
			b, err := json.Marshal(config.Pool{Hot: &spec})
			if err != nil {
				t.Fatal(err)
			}
			withPool(t, m, "default", string(b))
			c, err := config.Parse(encode(t, m))
			if err != nil {
				t.Fatal(err)
			}
			parsed := c.Profiles["default"].Pool.Hot
			for _, inst := range []time.Time{at, at.In(elsewhere)} {
				if got := spec.SizeAt(inst); got != want {
					t.Errorf("SizeAt(%v) = %d; want %d", inst, got, want)
				}
				if got := parsed.SizeAt(inst); got != want {
					t.Errorf("parsed: SizeAt(%v) = %d; want %d", inst, got, want)
				}
			}
		})
	}
}

func TestPoolSizeAtWithoutSchedules(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
	if got := (config.PoolSpec{}).SizeAt(at); got != 0 {
		t.Errorf("zero spec: %d; want 0", got)
	}
	if got := (config.PoolSpec{Size: 7}).SizeAt(at); got != 7 {
		t.Errorf("size 7: %d; want 7", got)
	}
	// Validate rejects these; SizeAt does not guess them open.
	bad := config.PoolSpec{Size: 7, OffHoursSize: 2, TimeZone: "Mars/Olympus_Mons", Schedules: []config.PoolSchedule{
		{Days: "someday", From: "00:00", To: "24:00"}, {Days: "daily", From: "00:00", To: "00:00"}, {Days: "sun", From: "01:00", To: "02:00"}}}
	if got := bad.SizeAt(at); got != 7 { // the third window, read in UTC, is open
		t.Errorf("unchecked spec: %d; want 7", got)
	}
	if got := bad.SizeAt(at.Add(time.Hour)); got != 2 {
		t.Errorf("unchecked spec, an hour later: %d; want 2", got)
	}
}

func TestPoolSizes(t *testing.T) {
	t.Parallel()
	m := valid(t)
	withPool(t, m, "default", `{"hot": {"size": 4, "offHoursSize": 1, "timeZone": "Europe/Berlin", "schedules": [{"days": "mon-fri", "from": "07:00", "to": "19:00"}]},
	                            "stopped": {"size": 6}}`)
	withPool(t, m, "gpu", `{"stopped": {"size": 2}}`)
	m["profiles"].(map[string]any)["arm"] = map[string]any{"instanceTypes": []string{"c7g.large"}, "imageId": "ami-0aaaaaaaaaaaaaaaa", "arch": "arm64"}
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PooledProfiles(); !reflect.DeepEqual(got, []string{"default", "gpu"}) {
		t.Errorf("PooledProfiles() = %v; want [default gpu]", got)
	}
	tests := []struct {
		profile      string
		at           string
		hot, stopped int
	}{
		{"default", "2026-01-05T06:00:00Z", 4, 6}, // Mon 07:00 CET
		{"default", "2026-01-05T05:59:00Z", 1, 6}, // Mon 06:59 CET
		{"default", "2026-01-10T12:00:00Z", 1, 6}, // Sat
		{"gpu", "2026-01-05T06:00:00Z", 0, 2},
		{"arm", "2026-01-05T06:00:00Z", 0, 0},
	}
	for _, tc := range tests {
		at, err := time.Parse(time.RFC3339, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		size := func(kind string) int {
			if s := c.Profiles[tc.profile].PoolSpec(kind); s != nil {
				return s.SizeAt(at)
			}
			return 0
		}
		if hot, stopped := size(config.PoolHot), size(config.PoolStopped); hot != tc.hot || stopped != tc.stopped {
			t.Errorf("%s at %s: pool sizes = %d, %d; want %d, %d", tc.profile, tc.at, hot, stopped, tc.hot, tc.stopped)
		}
	}
	c2, err := config.Parse(mustRead(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.PooledProfiles(); len(got) != 0 {
		t.Errorf("no pools: PooledProfiles() = %v", got)
	}
}

// Shape bounds are off unless set, and round-trip.
func TestShapesBounds(t *testing.T) {
	t.Parallel()
	m := valid(t)
	c, err := config.Parse(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Shapes, config.Shapes{}) || !c.Shapes.GPUAllowed() {
		t.Fatalf("default shapes %+v; want no bound, GPUs allowed", c.Shapes)
	}
	m["shapes"] = map[string]any{"maxCpu": 32, "maxRamGiB": 128, "maxDiskGiB": 500, "families": []string{"c7", "m7i"}, "gpu": false}
	c, err = config.Parse(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Shapes{MaxCPU: 32, MaxRAMGiB: 128, MaxDiskGiB: 500, Families: []string{"c7", "m7i"}, GPU: c.Shapes.GPU}
	if !reflect.DeepEqual(c.Shapes, want) || c.Shapes.GPUAllowed() {
		t.Fatalf("shapes %+v; want %+v with GPUs refused", c.Shapes, want)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := config.Parse(b)
	if err != nil || !reflect.DeepEqual(again.Shapes, c.Shapes) {
		t.Fatalf("round trip: %+v, %v", again.Shapes, err)
	}
}

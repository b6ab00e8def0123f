package runners_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/launchspec"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/stack/runners"
)

func TestQueue(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	spec := queue.ScaleUp
	q := inputs(one(t, m, "aws:sqs/queue:Queue", "ci-queue"))
	dlq := one(t, m, "aws:sqs/queue:Queue", "ci-dlq")
	if q["sqsManagedSseEnabled"] != true || inputs(dlq)["sqsManagedSseEnabled"] != true {
		t.Error("a queue is not encrypted")
	}
	if v := q["visibilityTimeoutSeconds"].(float64); int(v) < 6*spec.ScaleupTimeoutSeconds || int(v) != spec.VisibilityTimeoutSeconds {
		t.Errorf("visibility timeout %v, want %d (>= 6 x %d)", v, spec.VisibilityTimeoutSeconds, spec.ScaleupTimeoutSeconds)
	}
	if q["messageRetentionSeconds"] != float64(spec.MessageRetentionSeconds) || inputs(dlq)["messageRetentionSeconds"] != float64(spec.DeadLetterRetentionSeconds) {
		t.Errorf("retention %v / %v", q["messageRetentionSeconds"], inputs(dlq)["messageRetentionSeconds"])
	}
	if got, want := q["redrivePolicy"], spec.RedrivePolicy(at(t, outputs(dlq), "arn").(string)); got != want {
		t.Errorf("redrive policy %v, want %v", got, want)
	}

	esm := inputs(ofType(m, "aws:lambda/eventSourceMapping:EventSourceMapping")[0])
	if !reflect.DeepEqual(esm["functionResponseTypes"], []any{"ReportBatchItemFailures"}) {
		t.Errorf("function response types %v", esm["functionResponseTypes"])
	}
	if esm["batchSize"] != float64(spec.BatchSize) || at(t, esm, "scalingConfig", "maximumConcurrency") != float64(spec.MaxConcurrency) {
		t.Errorf("batch size %v, concurrency %v", esm["batchSize"], esm["scalingConfig"])
	}
	if esm["eventSourceArn"] != at(t, outputs(one(t, m, "aws:sqs/queue:Queue", "ci-queue")), "arn") {
		t.Errorf("event source %v", esm["eventSourceArn"])
	}
}

func TestTables(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	for name, shape := range map[string]state.Table{"ci-jobs": state.JobsTable, "ci-jit": jitstore.Table} {
		in := inputs(one(t, m, "aws:dynamodb/table:Table", name))
		if in["billingMode"] != "PAY_PER_REQUEST" {
			t.Errorf("%s: billing %v", name, in["billingMode"])
		}
		if at(t, in, "serverSideEncryption", "enabled") != true {
			t.Errorf("%s: not encrypted", name)
		}
		if at(t, in, "ttl", "attributeName") != shape.TTLAttribute || at(t, in, "ttl", "enabled") != true {
			t.Errorf("%s: TTL %v, want %s", name, in["ttl"], shape.TTLAttribute)
		}
		if at(t, in, "pointInTimeRecovery", "enabled") != shape.PointInTimeRecovery {
			t.Errorf("%s: PITR %v, want %v", name, in["pointInTimeRecovery"], shape.PointInTimeRecovery)
		}
		if got := in["deletionProtectionEnabled"] == true; got != shape.DeletionProtection {
			t.Errorf("%s: deletion protection %v, want %v", name, in["deletionProtectionEnabled"], shape.DeletionProtection)
		}
		if in["hashKey"] != shape.Keys[0].Name {
			t.Errorf("%s: hash key %v", name, in["hashKey"])
		}
		attrs := map[string]any{}
		for _, a := range in["attributes"].([]any) {
			attrs[at(t, a, "name").(string)] = at(t, a, "type")
		}
		for n, typ := range shape.Attributes {
			if attrs[n] != typ {
				t.Errorf("%s: attribute %s is %v, want %s", name, n, attrs[n], typ)
			}
		}
		var gsis []string
		for _, g := range asList(in["globalSecondaryIndexes"]) {
			gsis = append(gsis, fmt.Sprintf("%v:%v:%v:%v", at(t, g, "name"), at(t, g, "hashKey"), at(t, g, "rangeKey"), at(t, g, "projectionType")))
		}
		var want []string
		for _, ix := range shape.Indexes {
			want = append(want, fmt.Sprintf("%s:%s:%s:ALL", ix.Name, ix.Keys[0].Name, ix.Keys[1].Name))
		}
		if !reflect.DeepEqual(gsis, want) {
			t.Errorf("%s: indexes %v, want %v", name, gsis, want)
		}
	}
	if !state.JobsTable.PointInTimeRecovery || !state.JobsTable.DeletionProtection {
		t.Error("the jobs table shape lost point-in-time recovery or deletion protection")
	}
}

func TestLaunchTemplate(t *testing.T) {
	t.Parallel()
	args := sampleArgs(t)
	args.Runner.MetadataHopLimit = 1
	args.Runner.IdleTimeoutSeconds = 900
	m := deploy(t, args)
	lt := inputs(one(t, m, "aws:ec2/launchTemplate:LaunchTemplate", "ci-runner"))
	spec := launchspec.Runner
	checks := []struct {
		what string
		got  any
		want any
	}{
		{"IMDSv2", at(t, lt, "metadataOptions", "httpTokens"), "required"},
		{"hop limit", at(t, lt, "metadataOptions", "httpPutResponseHopLimit"), float64(1)},
		{"shutdown", lt["instanceInitiatedShutdownBehavior"], "terminate"},
		// No root mapping in the template: the launcher maps the root
		// volume under the AMI's own root device name.
		{"block device mappings", lt["blockDeviceMappings"], nil},
		{"volume spec", spec.VolumeType + "/" + fmt.Sprint(spec.Encrypted), "gp3/true"},
		{"instance profile", at(t, lt, "iamInstanceProfile", "arn"), at(t, outputs(one(t, m, "aws:iam/instanceProfile:InstanceProfile", "ci-runner")), "arn")},
		{"public IP (new VPC, no NAT)", at(t, lt, "networkInterfaces", 0, "associatePublicIpAddress"), "true"},
		{"security group", at(t, lt, "networkInterfaces", 0, "securityGroups", 0), one(t, m, "aws:ec2/securityGroup:SecurityGroup", "ci-runner").ID},
		{"managed-by tag", at(t, lt, "tags", "jitr:managed-by"), "jitr"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}

	// The user-data is the bootstrap script itself, rendered for this
	// deployment's JIT table.
	script, err := base64.StdEncoding.DecodeString(lt["userData"].(string))
	if err != nil {
		t.Fatal(err)
	}
	want, err := bootstrap.Render(bootstrap.Params{
		RunnerVersion: "2.332.0", NamePrefix: "jitr", IdleTimeoutSeconds: 900,
		JITTable:        at(t, outputs(one(t, m, "aws:dynamodb/table:Table", "ci-jit")), "name").(string),
		RunnerSHA256X64: runners.KnownRunnerChecksums["2.332.0"].X64, RunnerSHA256ARM64: runners.KnownRunnerChecksums["2.332.0"].ARM64,
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(script) != want {
		t.Errorf("user-data is not the rendered bootstrap script:\n%.300s", script)
	}
}

// TestSecurityGroup: no ingress; egress blocks TCP 22 unless allowed.
func TestSecurityGroup(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{false, true} {
		args := sampleArgs(t)
		args.Runner.AllowSSHEgress = allow
		m := deploy(t, args)
		sg := inputs(one(t, m, "aws:ec2/securityGroup:SecurityGroup", "ci-runner"))
		if len(asList(sg["ingress"])) != 0 {
			t.Errorf("ingress rules %v", sg["ingress"])
		}
		reaches := func(proto string, port float64) bool {
			for _, r := range asList(sg["egress"]) {
				p := at(t, r, "protocol")
				from, to := at(t, r, "fromPort").(float64), at(t, r, "toPort").(float64)
				if p == "-1" || (p == proto && from <= port && port <= to) {
					return true
				}
			}
			return false
		}
		if got := reaches("tcp", 22); got != allow {
			t.Errorf("AllowSSHEgress %v: TCP 22 reachable %v", allow, got)
		}
		for _, port := range []float64{21, 23, 443, 80, 9418} {
			if !reaches("tcp", port) {
				t.Errorf("TCP %v blocked", port)
			}
		}
		if !reaches("udp", 53) || !reaches("udp", 123) {
			t.Error("DNS or NTP blocked")
		}
	}
}

func TestFunctions(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	want := map[string]struct{ memory, timeout, reserved any }{
		"ci-webhook":   {float64(128), float64(10), nil},
		"ci-scaleup":   {float64(256), float64(queue.ScaleUp.ScaleupTimeoutSeconds), nil},
		"ci-scaledown": {float64(256), float64(240), float64(1)},
	}
	for name, w := range want {
		f := inputs(one(t, m, "aws:lambda/function:Function", name))
		got := struct{ memory, timeout, reserved any }{f["memorySize"], f["timeout"], f["reservedConcurrentExecutions"]}
		if got != w {
			t.Errorf("%s: memory/timeout/reserved %v, want %v", name, got, w)
		}
		if f["runtime"] != "provided.al2023" || f["handler"] != "bootstrap" || !reflect.DeepEqual(f["architectures"], []any{"arm64"}) {
			t.Errorf("%s: runtime %v handler %v architectures %v", name, f["runtime"], f["handler"], f["architectures"])
		}
		lg := one(t, m, "aws:cloudwatch/logGroup:LogGroup", name)
		if at(t, f, "loggingConfig", "logGroup") != at(t, outputs(lg), "name") || inputs(lg)["retentionInDays"] != float64(30) {
			t.Errorf("%s: logs to %v (retention %v)", name, f["loggingConfig"], inputs(lg)["retentionInDays"])
		}
		if f["sourceCodeHash"] == "" || at(t, f, "code", "archive") == nil {
			t.Errorf("%s: code %v hash %v", name, f["code"], f["sourceCodeHash"])
		}
	}

	api := one(t, m, "aws:apigatewayv2/api:Api", "ci-api")
	route := inputs(one(t, m, "aws:apigatewayv2/route:Route", "ci-webhook"))
	integ := one(t, m, "aws:apigatewayv2/integration:Integration", "ci-webhook")
	stage := inputs(one(t, m, "aws:apigatewayv2/stage:Stage", "ci-default"))
	checks := []struct {
		what      string
		got, want any
	}{
		{"protocol", inputs(api)["protocolType"], "HTTP"},
		{"route", route["routeKey"], "POST /webhook"},
		{"route target", route["target"], "integrations/" + integ.ID},
		{"integration type", inputs(integ)["integrationType"], "AWS_PROXY"},
		{"payload format", inputs(integ)["payloadFormatVersion"], "2.0"},
		{"integration", inputs(integ)["integrationUri"], at(t, outputs(one(t, m, "aws:lambda/function:Function", "ci-webhook")), "arn")},
		{"stage", stage["name"], "$default"},
		{"auto-deploy", stage["autoDeploy"], true},
		{"burst", at(t, stage, "defaultRouteSettings", "throttlingBurstLimit"), float64(runners.DefaultThrottlingBurstLimit)},
		{"rate", at(t, stage, "defaultRouteSettings", "throttlingRateLimit"), float64(runners.DefaultThrottlingRateLimit)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}

	sched := inputs(one(t, m, "aws:scheduler/schedule:Schedule", "ci-scaledown"))
	scaledownARN := at(t, outputs(one(t, m, "aws:lambda/function:Function", "ci-scaledown")), "arn")
	schedulerRole := at(t, outputs(one(t, m, "aws:iam/role:Role", "ci-scheduler")), "arn")
	if sched["scheduleExpression"] != "rate(5 minutes)" || at(t, sched, "target", "arn") != scaledownARN ||
		at(t, sched, "target", "roleArn") != schedulerRole {
		t.Errorf("schedule %v", sched)
	}
	// The recovery of failed deliveries: scaledown every minute, with the
	// event that makes it read the delivery log instead of sweeping.
	redeliver := inputs(one(t, m, "aws:scheduler/schedule:Schedule", "ci-redelivery"))
	if redeliver["scheduleExpression"] != "rate(1 minute)" || at(t, redeliver, "target", "arn") != scaledownARN ||
		at(t, redeliver, "target", "input") != `{"source":"jitr.redelivery"}` || at(t, redeliver, "target", "roleArn") != schedulerRole {
		t.Errorf("redelivery schedule %v", redeliver)
	}
	rule := inputs(one(t, m, "aws:cloudwatch/eventRule:EventRule", "ci-ec2-events"))
	var pattern map[string]any
	if err := json.Unmarshal([]byte(rule["eventPattern"].(string)), &pattern); err != nil {
		t.Fatal(err)
	}
	for _, typ := range runners.EC2EventTypes {
		if !strings.Contains(rule["eventPattern"].(string), typ) {
			t.Errorf("event pattern %v misses %q", pattern, typ)
		}
	}
	if inputs(one(t, m, "aws:cloudwatch/eventTarget:EventTarget", "ci-ec2-events"))["arn"] != scaledownARN {
		t.Error("EC2 events do not reach scaledown")
	}
	perm := inputs(one(t, m, "aws:lambda/permission:Permission", "ci-ec2-events"))
	if perm["principal"] != "events.amazonaws.com" || perm["sourceArn"] != at(t, outputs(one(t, m, "aws:cloudwatch/eventRule:EventRule", "ci-ec2-events")), "arn") {
		t.Errorf("EventBridge permission %v", perm)
	}
	apiPerm := inputs(one(t, m, "aws:lambda/permission:Permission", "ci-webhook-api"))
	if apiPerm["principal"] != "apigateway.amazonaws.com" || !strings.HasSuffix(apiPerm["sourceArn"].(string), "/*/POST/webhook") {
		t.Errorf("API Gateway permission %v", apiPerm)
	}
}

func TestMonitoring(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	dash := inputs(ofType(m, "aws:cloudwatch/dashboard:Dashboard")[0])
	body := dash["dashboardBody"].(string)
	var parsed map[string]any
	if err := json.Unmarshal([]byte(body), &parsed); err != nil {
		t.Fatalf("dashboard body: %v", err)
	}
	for _, want := range []string{"ApproximateAgeOfOldestMessage", "Launches", "CapacityType", "SpotFallbacks", "QueueToLaunchSeconds",
		"QueueToStartSeconds", "LaunchErrors", `"Errors"`, `"Throttles"`, "5xx", "jit-runners",
		"PoolHits", "PoolMisses", "PoolLaunches", "PoolRetired", "PoolInstances"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard misses %s", want)
		}
	}
	alarms := map[string]map[string]any{}
	for _, a := range ofType(m, "aws:cloudwatch/metricAlarm:MetricAlarm") {
		alarms[a.Name] = inputs(a)
	}
	dlqName := at(t, outputs(one(t, m, "aws:sqs/queue:Queue", "ci-dlq")), "name")
	if a := alarms["ci-dlq-not-empty"]; at(t, a, "dimensions", "QueueName") != dlqName || a["threshold"] != float64(0) {
		t.Errorf("DLQ alarm %v", a)
	}
	for _, code := range []string{"4xx", "5xx"} {
		if a := alarms["ci-webhook-"+code]; a["metricName"] != code || at(t, a, "dimensions", "ApiId") != one(t, m, "aws:apigatewayv2/api:Api", "ci-api").ID {
			t.Errorf("%s alarm %v", code, a)
		}
	}
	if a := alarms["ci-launch-errors"]; at(t, a, "metricQueries", 0, "expression") != `SELECT SUM(LaunchErrors) FROM "jit-runners" WHERE Deployment = 'jitr'` {
		t.Errorf("launch error alarm %v: not this deployment's errors only", a)
	}
	// Every one of our metrics on the dashboard is this deployment's.
	for _, w := range parsed["widgets"].([]any) {
		for _, series := range at(t, w, "properties", "metrics").([]any) {
			text, _ := json.Marshal(series)
			if !strings.Contains(string(text), "jit-runners") {
				continue
			}
			if !strings.Contains(string(text), `Deployment`) || !strings.Contains(string(text), `jitr`) {
				t.Errorf("dashboard series %s is not confined to deployment jitr", text)
			}
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

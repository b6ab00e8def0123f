package runners_test

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/runners"
)

func TestInventory(t *testing.T) {
	t.Parallel()
	base := map[string]int{
		runners.ComponentType:                                 1,
		"aws:sqs/queue:Queue":                                 2,
		"aws:dynamodb/table:Table":                            2,
		"aws:secretsmanager/secret:Secret":                    2,
		"aws:secretsmanager/secretVersion:SecretVersion":      2,
		"aws:lambda/function:Function":                        3,
		"aws:cloudwatch/logGroup:LogGroup":                    3,
		"aws:iam/role:Role":                                   5, // runner, three Lambdas, scheduler
		"aws:iam/rolePolicy:RolePolicy":                       5,
		"aws:iam/instanceProfile:InstanceProfile":             1,
		"aws:ec2/launchTemplate:LaunchTemplate":               1,
		"aws:ec2/securityGroup:SecurityGroup":                 1,
		"aws:ec2/vpc:Vpc":                                     1,
		"aws:ec2/internetGateway:InternetGateway":             1,
		"aws:ec2/routeTable:RouteTable":                       1,
		"aws:ec2/subnet:Subnet":                               2,
		"aws:ec2/routeTableAssociation:RouteTableAssociation": 2,
		"aws:apigatewayv2/api:Api":                            1,
		"aws:apigatewayv2/integration:Integration":            1,
		"aws:apigatewayv2/route:Route":                        1,
		"aws:apigatewayv2/stage:Stage":                        1,
		"aws:lambda/permission:Permission":                    2, // API Gateway, EventBridge rule
		"aws:lambda/eventSourceMapping:EventSourceMapping":    1,
		"aws:scheduler/schedule:Schedule":                     2,
		"aws:cloudwatch/eventRule:EventRule":                  1,
		"aws:cloudwatch/eventTarget:EventTarget":              1,
		"aws:cloudwatch/metricAlarm:MetricAlarm":              4,
		"aws:cloudwatch/dashboard:Dashboard":                  1,
	}
	with := func(extra map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range extra {
			out[k] += v
		}
		return out
	}
	tests := []struct {
		name   string
		change func(a *runners.RunnersArgs)
		want   map[string]int
	}{
		{"new VPC without NAT", func(*runners.RunnersArgs) {}, base},
		{"NAT gateway, three AZs", func(a *runners.RunnersArgs) { a.Network.NATGateway = true; a.Network.AZCount = 3 }, with(map[string]int{
			"aws:ec2/subnet:Subnet": 4, "aws:ec2/routeTableAssociation:RouteTableAssociation": 4, "aws:ec2/routeTable:RouteTable": 1,
			"aws:ec2/eip:Eip": 1, "aws:ec2/natGateway:NatGateway": 1,
		})},
		{"alarm e-mail and Session Manager", func(a *runners.RunnersArgs) { a.AlarmEmail = "ops@example.com"; a.Runner.SSMSessionManager = true }, with(map[string]int{
			"aws:sns/topic:Topic": 1, "aws:sns/topicSubscription:TopicSubscription": 1, "aws:iam/rolePolicy:RolePolicy": 1,
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := sampleArgs(t)
			tt.change(args)
			m := deploy(t, args)
			got := map[string]int{}
			var component plan.Resource
			for _, r := range m.Resources() {
				got[r.Type]++
				if r.Type == runners.ComponentType {
					component = r
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("resources by type:\n got %v\nwant %v", got, tt.want)
			}
			for _, r := range m.Resources() {
				if r.Type == runners.ComponentType {
					continue
				}
				if r.Parent != component.URN {
					t.Errorf("%s %s: parent %q, want the component %q", r.Type, r.Name, r.Parent, component.URN)
				}
				if !strings.HasPrefix(r.Name, "ci-") {
					t.Errorf("%s %s: name not prefixed by the component's name", r.Type, r.Name)
				}
			}
			if tt.want["aws:sns/topic:Topic"] > 0 {
				for _, a := range ofType(m, "aws:cloudwatch/metricAlarm:MetricAlarm") {
					if actions, _ := inputs(a)["alarmActions"].([]any); len(actions) != 1 {
						t.Errorf("alarm %s notifies %v, want the topic", a.Name, inputs(a)["alarmActions"])
					}
				}
				sub := ofType(m, "aws:sns/topicSubscription:TopicSubscription")[0]
				if at(t, inputs(sub), "protocol") != "email" || at(t, inputs(sub), "endpoint") != "ops@example.com" {
					t.Errorf("subscription %v", inputs(sub))
				}
			}
		})
	}
}

// TestOutputs checks the component's outputs name what it created.
func TestOutputs(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	got := map[string]any{}
	m := run(t, func(ctx *pulumi.Context) error {
		r, err := runners.NewRunners(ctx, "ci", sampleArgs(t))
		if err != nil {
			return err
		}
		record := func(name string, o pulumi.Output) {
			o.ApplyT(func(v any) any {
				mu.Lock()
				defer mu.Unlock()
				got[name] = v
				return v
			})
		}
		record("webhookUrl", r.WebhookURL)
		record("queueUrl", r.QueueURL)
		record("deadLetterQueueUrl", r.DeadLetterQueueURL)
		record("tableName", r.TableName)
		record("launchTemplateIds", r.LaunchTemplateIDs)
		record("securityGroupId", r.SecurityGroupID)
		record("runnerRoleArn", r.RunnerRoleARN)
		record("dashboardName", r.DashboardName)
		return nil
	})
	api := one(t, m, "aws:apigatewayv2/api:Api", "ci-api")
	want := map[string]any{
		"webhookUrl":         at(t, outputs(api), "apiEndpoint").(string) + "/webhook",
		"queueUrl":           at(t, outputs(one(t, m, "aws:sqs/queue:Queue", "ci-queue")), "url"),
		"deadLetterQueueUrl": at(t, outputs(one(t, m, "aws:sqs/queue:Queue", "ci-dlq")), "url"),
		"tableName":          at(t, outputs(one(t, m, "aws:dynamodb/table:Table", "ci-jobs")), "name"),
		"launchTemplateIds":  []string{one(t, m, "aws:ec2/launchTemplate:LaunchTemplate", "ci-runner").ID},
		"securityGroupId":    one(t, m, "aws:ec2/securityGroup:SecurityGroup", "ci-runner").ID,
		"runnerRoleArn":      at(t, outputs(one(t, m, "aws:iam/role:Role", "ci-runner")), "arn"),
		"dashboardName":      "jitr-ci-eu-west-1",
	}
	mu.Lock()
	defer mu.Unlock()
	for k, w := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(w) {
			t.Errorf("output %s = %v, want %v", k, got[k], w)
		}
	}
}

// TestRuntimeConfig parses every Lambda's JITR_CONFIG like the runtime does
// and checks it names what the stack created.
func TestRuntimeConfig(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	var subnets []string
	for _, s := range ofType(m, "aws:ec2/subnet:Subnet") {
		subnets = append(subnets, s.ID)
	}
	sort.Strings(subnets)
	var docs []string
	for _, fn := range runners.Lambdas {
		f := one(t, m, "aws:lambda/function:Function", "ci-"+fn)
		doc := at(t, inputs(f), "environment", "variables", config.EnvVar).(string)
		docs = append(docs, doc)
		c, err := config.Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%s: JITR_CONFIG does not parse: %v", fn, err)
		}
		got := append([]string(nil), c.Launch.SubnetIDs...)
		sort.Strings(got)
		checks := []struct{ what, got, want string }{
			{"queueUrl", c.QueueURL, at(t, outputs(one(t, m, "aws:sqs/queue:Queue", "ci-queue")), "url").(string)},
			{"tableName", c.TableName, at(t, outputs(one(t, m, "aws:dynamodb/table:Table", "ci-jobs")), "name").(string)},
			{"launch.jitConfigTableName", c.Launch.JITConfigTableName, at(t, outputs(one(t, m, "aws:dynamodb/table:Table", "ci-jit")), "name").(string)},
			{"launch.launchTemplateId", c.Launch.LaunchTemplateID, one(t, m, "aws:ec2/launchTemplate:LaunchTemplate", "ci-runner").ID},
			{"launch.subnetIds", strings.Join(got, ","), strings.Join(subnets, ",")},
			{"github.privateKeySecretArn", c.GitHub.PrivateKeySecretARN, at(t, outputs(one(t, m, "aws:secretsmanager/secret:Secret", "ci-app-key")), "arn").(string)},
			{"github.webhookSecretArn", c.GitHub.WebhookSecretARN, at(t, outputs(one(t, m, "aws:secretsmanager/secret:Secret", "ci-webhook-secret")), "arn").(string)},
			{"profiles.default.imageId", c.Profiles["default"].ImageID, "ami-0123456789abcdef0"},
			{"profiles.arm.arch", c.Profiles["arm"].Arch, "arm64"},
			{"namePrefix", c.NamePrefix, "jitr"},
			{"launch.associatePublicIp", fmt.Sprint(c.Launch.AssociatePublicIP), "true"},
		}
		for _, ch := range checks {
			if ch.got != ch.want {
				t.Errorf("%s: %s = %q, want %q", fn, ch.what, ch.got, ch.want)
			}
		}
	}
	if docs[0] != docs[1] || docs[1] != docs[2] {
		t.Errorf("the Lambdas' JITR_CONFIG differ:\n%s\n%s\n%s", docs[0], docs[1], docs[2])
	}
}

func TestBringYourOwnVPC(t *testing.T) {
	t.Parallel()
	args := sampleArgs(t)
	args.Network = runners.Network{
		VpcID:     pulumi.String("vpc-0123456789abcdef0"),
		SubnetIDs: pulumi.ToStringArray([]string{"subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"}),
	}
	m := deploy(t, args)
	for _, typ := range []string{"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
		"aws:ec2/routeTable:RouteTable", "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip"} {
		if got := ofType(m, typ); len(got) != 0 {
			t.Errorf("created %d %s with an existing VPC", len(got), typ)
		}
	}
	sg := one(t, m, "aws:ec2/securityGroup:SecurityGroup", "ci-runner")
	if got := inputs(sg)["vpcId"]; got != "vpc-0123456789abcdef0" {
		t.Errorf("security group in VPC %v", got)
	}
	f := one(t, m, "aws:lambda/function:Function", "ci-scaleup")
	c, err := config.Parse([]byte(at(t, inputs(f), "environment", "variables", config.EnvVar).(string)))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Launch.SubnetIDs, ","); got != "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb" {
		t.Errorf("subnetIds %s", got)
	}
	if c.Launch.AssociatePublicIP {
		t.Error("associatePublicIp is on for an existing VPC that did not ask for it")
	}
	lt := inputs(one(t, m, "aws:ec2/launchTemplate:LaunchTemplate", "ci-runner"))
	if lt["networkInterfaces"] != nil || lt["vpcSecurityGroupIds"] == nil {
		t.Errorf("launch template network settings: interfaces %v, groups %v", lt["networkInterfaces"], lt["vpcSecurityGroupIds"])
	}
	pol := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-scaleup"), "policy")
	want := []any{
		"arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-0aaaaaaaaaaaaaaaa",
		"arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-0bbbbbbbbbbbbbbbb",
	}
	if got := statement(t, pol, "LaunchNetworkInterfaces").Condition["ArnEquals"]["ec2:Subnet"]; !reflect.DeepEqual(got, want) {
		t.Errorf("network interfaces confined to %v, want %v", got, want)
	}
}

func TestNATGatewayPutsRunnersInPrivateSubnets(t *testing.T) {
	t.Parallel()
	args := sampleArgs(t)
	args.Network.NATGateway = true
	m := deploy(t, args)
	var private []string
	for _, s := range ofType(m, "aws:ec2/subnet:Subnet") {
		in := inputs(s)
		if strings.Contains(s.Name, "-private-") {
			private = append(private, s.ID)
			if !strings.HasPrefix(in["cidrBlock"].(string), "10.0.1") {
				t.Errorf("private subnet %s has %v, want the middle of 10.0.0.0/16", s.Name, in["cidrBlock"])
			}
		}
	}
	sort.Strings(private)
	f := one(t, m, "aws:lambda/function:Function", "ci-scaleup")
	c, err := config.Parse([]byte(at(t, inputs(f), "environment", "variables", config.EnvVar).(string)))
	if err != nil {
		t.Fatal(err)
	}
	got := append([]string(nil), c.Launch.SubnetIDs...)
	sort.Strings(got)
	if !reflect.DeepEqual(got, private) || len(private) != 2 {
		t.Errorf("runners launch into %v, want the private subnets %v", got, private)
	}
	if c.Launch.AssociatePublicIP {
		t.Error("runners behind NAT get public IPs")
	}
	rt := inputs(one(t, m, "aws:ec2/routeTable:RouteTable", "ci-private"))
	if at(t, rt, "routes", 0, "natGatewayId") == nil {
		t.Errorf("private route table %v does not route through the NAT gateway", rt)
	}
}

// TestTwoComponents deploys two components in one program: no URN and no
// explicit physical name may repeat.
func TestTwoComponents(t *testing.T) {
	t.Parallel()
	deployTwo := func(a, b string) *plan.Mocks {
		return run(t, func(ctx *pulumi.Context) error {
			for _, name := range []string{a, b} {
				if _, err := runners.NewRunners(ctx, name, sampleArgs(t)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	duplicates := func(m *plan.Mocks) []string {
		seen := map[string]int{}
		for _, r := range m.Resources() {
			seen[r.URN]++
			if n, ok := r.Inputs["dashboardName"]; ok {
				seen["dashboard "+n.StringValue()]++
			}
			if n, ok := r.Inputs["name"]; ok && n.IsString() && r.Type != "aws:apigatewayv2/stage:Stage" {
				seen[r.Type+" name "+n.StringValue()]++
			}
		}
		var out []string
		for k, n := range seen {
			if n > 1 {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out
	}
	m := deployTwo("blue", "green")
	if d := duplicates(m); len(d) > 0 {
		t.Errorf("two components collide on %v", d)
	}
	if n := len(ofType(m, runners.ComponentType)); n != 2 {
		t.Errorf("%d components", n)
	}
	// The check itself sees a collision when there is one.
	if d := duplicates(deployTwo("blue", "blue")); len(d) == 0 {
		t.Error("two components with one name reported no collision")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(a *runners.RunnersArgs)
		key    string           // the key the error names
		is     func(error) bool // the error's type
	}{
		{"no app id", func(a *runners.RunnersArgs) { a.GitHub.AppID = 0 }, "github.appId", isA[*config.KeyError]},
		{"bad scope", func(a *runners.RunnersArgs) { a.GitHub.Scope = "enterprise" }, "github.scope", isA[*config.KeyError]},
		{"no private key", func(a *runners.RunnersArgs) { a.GitHub.PrivateKey = nil }, "github.privateKeySecretArn", isA[*runners.ArgError]},
		{"both webhook secrets", func(a *runners.RunnersArgs) { a.GitHub.WebhookSecretARN = pulumi.String("arn:aws:secretsmanager:x") }, "github.webhookSecretArn", isA[*runners.ArgError]},
		{"profile without image", func(a *runners.RunnersArgs) {
			a.Profiles["gpu"] = runners.Profile{InstanceTypes: []string{"g5.xlarge"}}
		}, "profiles.gpu.imageId", isA[*config.KeyError]},
		{"bad instance type", func(a *runners.RunnersArgs) {
			a.Profiles["gpu"] = runners.Profile{InstanceTypes: []string{"G5 XL"}, ImageID: pulumi.String("ami-1")}
		}, "profiles.gpu.instanceTypes[0]", isA[*config.KeyError]},
		{"unknown runner version", func(a *runners.RunnersArgs) { a.RunnerVersion = "2.999.0" }, "RunnerSHA256X64", isA[*bootstrap.ParamError]},
		{"existing VPC with a CIDR", func(a *runners.RunnersArgs) {
			a.Network = runners.Network{VpcID: pulumi.String("vpc-1"), SubnetIDs: pulumi.ToStringArray([]string{"subnet-1"}), CIDR: "10.1.0.0/16"}
		}, "Network", isA[*runners.ArgError]},
		{"CIDR too small", func(a *runners.RunnersArgs) { a.Network.CIDR = "10.0.0.0/24" }, "Network.CIDR", isA[*runners.ArgError]},
		{"too many AZs", func(a *runners.RunnersArgs) { a.Network.CIDR = "10.0.0.0/18"; a.Network.AZCount = 3 }, "Network.AZCount", isA[*runners.ArgError]},
		{"log retention", func(a *runners.RunnersArgs) { a.LogRetentionDays = 31 }, "LogRetentionDays", isA[*runners.ArgError]},
		{"managed-by tag", func(a *runners.RunnersArgs) { a.Tags = map[string]string{"jitr:managed-by": "x"} }, "Tags", isA[*runners.ArgError]},
		{"hop limit", func(a *runners.RunnersArgs) { a.Runner.MetadataHopLimit = 65 }, "Runner.MetadataHopLimit", isA[*runners.ArgError]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := sampleArgs(t)
			tt.change(args)
			m := plan.NewMocks()
			err := plan.Run(func(ctx *pulumi.Context) error {
				_, err := runners.NewRunners(ctx, "ci", args)
				return err
			}, m)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error does not name %s: %v", tt.key, err)
			}
			if !tt.is(err) {
				t.Errorf("error is of the wrong type: %v", err)
			}
			if n := len(m.Resources()); n != 0 {
				t.Errorf("%d resources registered before the arguments were checked", n)
			}
		})
	}
}

func isA[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

func TestComponentName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "has space", strings.Repeat("x", 55)} {
		m := plan.NewMocks()
		err := plan.Run(func(ctx *pulumi.Context) error {
			_, err := runners.NewRunners(ctx, name, sampleArgs(t))
			return err
		}, m)
		if !isA[*runners.ArgError](err) || len(m.Resources()) != 0 {
			t.Errorf("name %q: error %v, %d resources", name, err, len(m.Resources()))
		}
	}
}

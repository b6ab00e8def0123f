package policycheck_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/policycheck"
	"github.com/jit-runners/jit-runners/stack/program"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// tools returns cfn-lint and the IAM reference that `make tools` installs.
func tools(t *testing.T) (string, *policycheck.Reference) {
	t.Helper()
	cfnLint, err := exec.LookPath("cfn-lint")
	if err != nil {
		t.Fatal("cfn-lint is not installed (run `make tools`)")
	}
	dir := os.Getenv("JITR_IAM_REFERENCE")
	if dir == "" {
		t.Fatal("JITR_IAM_REFERENCE is not set (run the tests with `make test`, which installs the reference)")
	}
	ref, err := policycheck.LoadReference(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfnLint, ref
}

// check runs both checks and returns every finding.
func check(t *testing.T, docs []policycheck.Document) []policycheck.Finding {
	t.Helper()
	cfnLint, ref := tools(t)
	findings, err := policycheck.Lint(context.Background(), cfnLint, docs)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ref.CheckConditionKeys(docs)
	if err != nil {
		t.Fatal(err)
	}
	return append(findings, keys...)
}

// planDocuments runs the program on the sample stack configuration (the
// one `make plan` uses) and returns the policy documents of its plan.
func planDocuments(t *testing.T) []policycheck.Document {
	t.Helper()
	docs, err := policycheck.Documents(plan.Entries(planResources(t)))
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// planResources runs the program on the sample stack configuration.
func planResources(t *testing.T) []plan.Resource {
	t.Helper()
	dir := t.TempDir()
	o := program.Options{Builder: runners.BuilderFunc(func(_ context.Context, importPath string) (runners.Archive, error) {
		z, err := runners.ZipBootstrap([]byte(importPath))
		if err != nil {
			return runners.Archive{}, err
		}
		return runners.WriteArchive(dir, z)
	})}
	cfg, secret, err := plan.StackConfig("../../Pulumi.yaml", "../testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := plan.NewMocks()
	if err := plan.Run(program.New(o), m, plan.WithConfig(cfg, secret)); err != nil {
		t.Fatal(err)
	}
	return m.Resources()
}

// resourceClasses names the plan's tables, queues and secrets as the
// sandbox's record does (sandbox resources.classes), by ARN.
func resourceClasses(t *testing.T, resources []plan.Resource) func(string) string {
	t.Helper()
	names := map[string]string{
		"aws:dynamodb/table:Table jitr-jobs": "jobs-table", "aws:dynamodb/table:Table jitr-jit": "jit-table",
		"aws:sqs/queue:Queue jitr-queue": "queue", "aws:sqs/queue:Queue jitr-dlq": "dead-letter-queue",
		"aws:secretsmanager/secret:Secret jitr-app-key": "app-key", "aws:secretsmanager/secret:Secret jitr-webhook-secret": "webhook-secret",
	}
	arns := map[string]string{}
	for _, r := range resources {
		if c, ok := names[r.Type+" "+r.Name]; ok {
			arn, _ := plan.Plain(r.Outputs)["arn"].(string)
			arns[arn] = c
		}
	}
	if len(arns) != len(names) {
		t.Fatalf("found %d of the %d classed resources in the plan: %v", len(arns), len(names), arns)
	}
	return func(arn string) string {
		if c, ok := arns[arn]; ok {
			return c
		}
		if table, index, ok := strings.Cut(arn, "/index/"); ok && arns[table] != "" {
			return arns[table] + "/index/" + index
		}
		return ""
	}
}

// TestPlanPolicies: every policy document of the plan passes cfn-lint and
// the condition-key check.
func TestPlanPolicies(t *testing.T) {
	docs := planDocuments(t)
	kinds := map[policycheck.Kind]int{}
	names := map[string]bool{}
	for _, d := range docs {
		kinds[d.Kind]++
		names[d.Name()] = true
	}
	// Five roles (runner, three functions, scheduler) with one trust
	// policy each; their inline policies, and Session Manager's.
	if kinds[policycheck.Trust] != 5 || kinds[policycheck.Identity] != 6 {
		t.Errorf("plan has %v policy documents: %v", kinds, names)
	}
	if !names["jitr-runner-ssm.policy"] {
		t.Errorf("the Session Manager policy is not in the plan: %v", names)
	}
	for _, f := range check(t, docs) {
		if f.Blocking {
			t.Errorf("%s", f)
		} else {
			t.Logf("not blocking: %s", f)
		}
	}
}

func doc(t *testing.T, kind policycheck.Kind, name string, statements ...map[string]any) policycheck.Document {
	t.Helper()
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": statements})
	if err != nil {
		t.Fatal(err)
	}
	return policycheck.Document{Owner: name, Type: "aws:iam/rolePolicy:RolePolicy", Property: "policy", Kind: kind, Policy: b}
}

// TestBrokenPoliciesAreRefused feeds the checks one valid statement and one
// of each defect; each defect must give a blocking finding on its
// statement, and the valid statement none.
func TestBrokenPoliciesAreRefused(t *testing.T) {
	instances := "arn:aws:ec2:eu-west-1:123456789012:instance/*"
	docs := []policycheck.Document{
		doc(t, policycheck.Identity, "broken",
			map[string]any{"Sid": "Valid", "Effect": "Allow", "Action": []string{"ec2:TerminateInstances"}, "Resource": []string{instances},
				"Condition": map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/jitr:managed-by": "jitr"}}},
			map[string]any{"Sid": "BareVariableResource", "Effect": "Allow", "Action": []string{"ec2:TerminateInstances"},
				"Resource": []string{"${ec2:SourceInstanceARN}"}},
			map[string]any{"Sid": "UnknownAction", "Effect": "Allow", "Action": []string{"ec2:TerminateInstance"}, "Resource": []string{instances}},
			map[string]any{"Sid": "UnknownServiceKey", "Effect": "Allow", "Action": []string{"ec2:TerminateInstances"}, "Resource": []string{instances},
				"Condition": map[string]any{"StringEquals": map[string]any{"ec2:ManagedBy": "jitr"}}},
			map[string]any{"Sid": "KeyOfAnotherAction", "Effect": "Allow", "Action": []string{"ec2:TerminateInstances"}, "Resource": []string{instances},
				"Condition": map[string]any{"ForAllValues:StringEquals": map[string]any{"dynamodb:LeadingKeys": []string{"x"}}}},
			map[string]any{"Sid": "UnknownGlobalKey", "Effect": "Allow", "Action": []string{"sqs:SendMessage"},
				"Resource":  []string{"arn:aws:sqs:eu-west-1:123456789012:q"},
				"Condition": map[string]any{"StringEquals": map[string]any{"aws:SourceAcount": "123456789012"}}},
		),
		doc(t, policycheck.Trust, "trust", map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": []string{"lambda.amazonaws.com"}},
			"Action": []string{"sts:AssumeRole"}, "Condition": map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": "123456789012"}}}),
	}
	findings := check(t, docs)
	got := map[string][]string{}
	for _, f := range findings {
		t.Logf("%s", f)
		if f.Blocking {
			got[f.Document+"/"+f.Statement] = append(got[f.Document+"/"+f.Statement], f.Rule)
		}
	}
	want := map[string]string{
		"broken.policy/BareVariableResource": "E3510",
		"broken.policy/UnknownAction":        "W3037",
		"broken.policy/UnknownServiceKey":    policycheck.ConditionKeyRule,
		"broken.policy/KeyOfAnotherAction":   policycheck.ConditionKeyRule,
		"broken.policy/UnknownGlobalKey":     policycheck.ConditionKeyRule,
	}
	for where, rule := range want {
		if !strings.Contains(strings.Join(got[where], " "), rule) {
			t.Errorf("%s: blocking findings %v, want %s", where, got[where], rule)
		}
	}
	for where := range got {
		if _, ok := want[where]; !ok {
			t.Errorf("%s: blocking findings %v on a valid statement", where, got[where])
		}
	}
}

// TestDocumentsRefusesWhatItCannotCheck: a policy that is unknown at plan
// time, or held by an input policycheck does not know, is an error rather
// than a document skipped.
func TestDocumentsRefusesWhatItCannotCheck(t *testing.T) {
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:SendMessage","Resource":"*"}]}`
	for _, e := range []plan.Entry{
		{Type: "aws:iam/rolePolicy:RolePolicy", Name: "p", Inputs: map[string]any{"policy": "[unknown]"}},
		{Type: "aws:iam/rolePolicy:RolePolicy", Name: "p", Inputs: map[string]any{"policy": "{not json"}},
		{Type: "aws:s3/bucketPolicy:BucketPolicy", Name: "b", Inputs: map[string]any{"policy": policy}},
	} {
		if docs, err := policycheck.Documents([]plan.Entry{e}); err == nil {
			t.Errorf("%s %v: no error, documents %v", e.Type, e.Inputs, docs)
		}
	}
	docs, err := policycheck.Documents([]plan.Entry{{Type: "aws:sqs/queuePolicy:QueuePolicy", Name: "q", Inputs: map[string]any{"policy": policy, "queueUrl": "u"}}})
	if err != nil || len(docs) != 1 || docs[0].Kind != policycheck.Resource {
		t.Errorf("queue policy: %v, %v", docs, err)
	}
}

// notInEveryRun are the granted actions that the sandbox's end-to-end run
// need not show, with why; docs/security.md lists the same.
var notInEveryRun = map[string]map[string]string{
	"webhook": {
		"logs:CreateLogStream": "the Lambda runtime writes the function's logs with its role (the sandbox's emulator writes files)",
		"logs:PutLogEvents":    "the Lambda runtime writes the function's logs with its role",
	},
	"scaleup": {
		"logs:CreateLogStream":        "the Lambda runtime writes the function's logs with its role",
		"logs:PutLogEvents":           "the Lambda runtime writes the function's logs with its role",
		"sqs:ReceiveMessage":          "the SQS event source mapping polls the queue with the function's role (the sandbox polls for it)",
		"sqs:DeleteMessage":           "the event source mapping deletes what the function served",
		"sqs:GetQueueAttributes":      "the event source mapping reads the queue's attributes",
		"sqs:ChangeMessageVisibility": "a message deferred for a rate limit or a wait; a run without either defers none",
		"sqs:SendMessage":             "wakes waiting jobs; only a run that fills a profile's slots waits (TestSaturation, make e2e)",
		"ec2:TerminateInstances":      "undoes a launch whose JIT hand-over failed (scaleup's undo tests)",
		"dynamodb:DeleteItem":         "removes the JIT item of an undone launch",
		"ec2:DescribeInstanceTypes": "the instance-type catalogue, read from EC2 only when scaledown's shared copy is missing or stale " +
			"(TestShapes' jobs may all find it fresh; scaleup's shape tests read it)",
		"ec2:DescribeInstanceTypeOfferings": "the offerings, read with the catalogue (see DescribeInstanceTypes)",
	},
	"runner": {}, // its one action, dynamodb:DeleteItem, is the bootstrap's hand-over
	"scaledown": {
		"logs:CreateLogStream":          "the Lambda runtime writes the function's logs with its role",
		"logs:PutLogEvents":             "the Lambda runtime writes the function's logs with its role",
		"ec2:TerminateInstances":        "terminates instances whose runner never came or is gone; healthy runners shut their own down (scaledown's tests)",
		"sqs:SendMessage":               "re-queues the job of an instance that died before serving it (rule 6)",
		"secretsmanager:GetSecretValue": "the App key, read at the first GitHub call of a process; a run whose sweeps never ask GitHub reads none",
	},
}

// callShapes names the statement that authorises each shape of call the
// sandbox's recorder tells apart (sandbox conditions.go): a retag of an
// existing instance (a pooled instance a job takes) is CreateTags without
// a launch, granted by its own statement.
var callShapes = map[string]string{
	"ec2:CreateTags@existing": "RetagTakenPooledInstances",
}

// contextSetByAWS are the actions CreateFleet is also authorised for whose
// conditioned keys no request carries: AWS sets them.
var contextSetByAWS = map[string]string{
	"iam:PassRole":                "iam:PassedToService is ec2.amazonaws.com when EC2 passes the launch template's instance profile",
	"iam:CreateServiceLinkedRole": "iam:AWSServiceName is the service whose role EC2 creates on an account's first spot or fleet launch",
}

// conditionClasses classes the values the plan's conditions name as the
// sandbox's recorder classes those of a request (sandbox conditions.go):
// the deployment's name prefix, launch template and subnets, and the
// caller's own instance.
func conditionClasses(t *testing.T, resources []plan.Resource) func(string) string {
	t.Helper()
	classes := map[string]string{config.DefaultNamePrefix: "name-prefix", runners.SelfInstanceARN: "own-instance"}
	for _, r := range resources {
		arn, _ := plan.Plain(r.Outputs)["arn"].(string)
		switch r.Type {
		case "aws:ec2/launchTemplate:LaunchTemplate":
			classes[arn] = "launch-template"
		case "aws:ec2/subnet:Subnet":
			classes[arn] = "subnet"
		}
	}
	if !slices.Contains(slices.Collect(maps.Values(classes)), "launch-template") || !slices.Contains(slices.Collect(maps.Values(classes)), "subnet") {
		t.Fatalf("the plan has no launch template or no subnet ARN: %v", classes)
	}
	return func(v string) string { return classes[v] }
}

// TestSufficiency: every AWS call each Lambda made in the sandbox's
// end-to-end run (the record make test has it write) is granted by that
// function's policy in the plan, and every granted action is used by some
// call or listed in notInEveryRun with the reason.
func TestSufficiency(t *testing.T) {
	path := os.Getenv("JITR_AWS_CALLS")
	if path == "" {
		t.Skip("no AWS call record: `make test` runs the sandbox end-to-end test, which writes it, before this one")
	}
	// Three runs write records: the end-to-end run, and beside it the warm
	// pools' run and the machine shapes' run (runtime/internal/sandbox
	// names them so); their calls are checked together.
	var record struct {
		Operations policycheck.Calls `json:"operations"`
		Resources  policycheck.Calls `json:"resources"`
		Conditions policycheck.Calls `json:"conditions"`
	}
	var b []byte
	for _, p := range []string{path, strings.TrimSuffix(path, ".json") + "-pools.json", strings.TrimSuffix(path, ".json") + "-shapes.json"} {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("the AWS call record: %v (the sandbox's TestEndToEnd, TestWarmPools and TestShapes write them under make test)", err)
		}
		var r struct {
			Operations policycheck.Calls `json:"operations"`
			Resources  policycheck.Calls `json:"resources"`
			Conditions policycheck.Calls `json:"conditions"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		record.Operations = mergeCalls(record.Operations, r.Operations)
		record.Resources = mergeCalls(record.Resources, r.Resources)
		record.Conditions = mergeCalls(record.Conditions, r.Conditions)
		b = append(b, raw...)
	}
	calls := record.Operations
	for _, fn := range []string{"webhook", "scaleup", "scaledown", "runner"} {
		if len(calls[fn]) == 0 {
			t.Fatalf("the record has no calls of %s: %s", fn, b)
		}
	}
	resources := planResources(t)
	docs, err := policycheck.Documents(plan.Entries(resources))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{"webhook": "jitr-webhook", "scaleup": "jitr-scaleup", "scaledown": "jitr-scaledown", "runner": "jitr-runner"}
	rows, err := policycheck.Sufficiency(docs, roles, calls, notInEveryRun)
	if err != nil {
		t.Fatal(err)
	}
	// The resource side: each call on a table, index, queue or secret is
	// granted on that very resource.
	if len(record.Resources["scaleup"]) == 0 {
		t.Fatalf("the record has no resources: %s", b)
	}
	gaps, err := policycheck.ResourceGaps(docs, roles, record.Resources, resourceClasses(t, resources))
	if err != nil {
		t.Fatal(err)
	}
	for fn, g := range gaps {
		t.Errorf("%s: calls not granted on their resource: %v", fn, g)
	}
	for fn, calls := range record.Resources {
		t.Logf("%s resources: %v", fn, slices.Sorted(maps.Keys(calls)))
	}
	// The condition side: every condition of a statement whose action the
	// recorder saw is met by every recorded call; a statement it never saw
	// is one whose action the run need not show, or whose context AWS
	// alone sets.
	checks, err := policycheck.Conditions(docs, roles, record.Conditions, conditionClasses(t, resources), callShapes)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		t.Logf("%s conditions met: %v", c.Function, c.Met)
		for _, g := range c.Gaps {
			t.Errorf("%s: condition not met: %s", c.Function, g)
		}
		for _, u := range c.Unseen {
			_, action, _ := strings.Cut(u, " ")
			if _, ok := notInEveryRun[c.Function][action]; ok {
				continue
			}
			if _, ok := contextSetByAWS[action]; ok {
				continue
			}
			t.Errorf("%s: conditioned statement %s: the record has no call of that action and no reason is given", c.Function, u)
		}
	}
	for _, fn := range []string{"scaleup", "runner"} {
		if i := slices.IndexFunc(checks, func(c policycheck.ConditionCheck) bool { return c.Function == fn }); i < 0 || len(checks[i].Met) == 0 {
			t.Errorf("no condition of %s was checked against the record: %s", fn, b)
		}
	}
	t.Logf("sufficiency (record %s):\n%s", path, policycheck.Table(rows))
	for _, r := range rows {
		t.Logf("%s needs %v; explained %d", r.Function, r.Needed, len(r.Explained))
		if len(r.Denied) > 0 {
			t.Errorf("%s: calls the policy does not allow: %v", r.Function, r.Denied)
		}
		if len(r.Unused) > 0 {
			t.Errorf("%s: granted, unused and unexplained: %v", r.Function, r.Unused)
		}
	}
}

// TestSufficiencyFindsGaps: a call without a grant and a grant without a
// call are both reported.
func TestSufficiencyFindsGaps(t *testing.T) {
	d := doc(t, policycheck.Identity, "fn-role",
		map[string]any{"Effect": "Allow", "Action": []string{"sqs:SendMessage", "ec2:CreateFleet", "ec2:RunInstances", "ec2:DescribeImages"}, "Resource": "*"})
	rows, err := policycheck.Sufficiency([]policycheck.Document{d}, map[string]string{"fn": "fn-role"},
		policycheck.Calls{"fn": {"sqs.SendMessage": 3, "ec2.CreateFleet": 1, "dynamodb.PutItem": 1, "sts.GetCallerIdentity": 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || strings.Join(rows[0].Denied, ",") != "dynamodb:PutItem" || strings.Join(rows[0].Unused, ",") != "ec2:DescribeImages" {
		t.Errorf("rows %+v: want PutItem denied, DescribeImages unused (RunInstances is implied by CreateFleet)", rows)
	}
	if _, err := policycheck.Sufficiency([]policycheck.Document{d}, map[string]string{"fn": "fn-role"},
		policycheck.Calls{"other": {"sqs.SendMessage": 1}}, nil); err == nil {
		t.Error("calls of a function without a policy were accepted")
	}

	// The resource side: PutItem granted on the JIT table only; a PutItem
	// on the jobs table is a gap, one on the JIT table and a Query on an
	// index granted by ARN are not.
	jobs, jit := "arn:aws:dynamodb:eu-west-1:123456789012:table/jobs", "arn:aws:dynamodb:eu-west-1:123456789012:table/jit"
	r := doc(t, policycheck.Identity, "fn-role",
		map[string]any{"Effect": "Allow", "Action": []string{"dynamodb:PutItem"}, "Resource": []string{jit}},
		map[string]any{"Effect": "Allow", "Action": []string{"dynamodb:Query"}, "Resource": []string{jobs + "/index/wait-index"}})
	classOf := func(arn string) string {
		switch arn {
		case jobs:
			return "jobs-table"
		case jit:
			return "jit-table"
		case jobs + "/index/wait-index":
			return "jobs-table/index/wait-index"
		}
		return ""
	}
	gaps, err := policycheck.ResourceGaps([]policycheck.Document{r}, map[string]string{"fn": "fn-role"},
		policycheck.Calls{"fn": {"dynamodb.PutItem jobs-table": 1, "dynamodb.PutItem jit-table": 1, "dynamodb.Query jobs-table/index/wait-index": 1,
			"dynamodb.Query jobs-table/index/slot-index": 1}}, classOf)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(gaps["fn"], "; "); got != "dynamodb:PutItem on jobs-table; dynamodb:Query on jobs-table/index/slot-index" {
		t.Errorf("resource gaps %q", got)
	}
}

// TestConditionsFindGaps: a call whose value fails a condition, a key the
// record lacks and an operator not evaluated are gaps; a statement whose
// action was never seen is unseen.
func TestConditionsFindGaps(t *testing.T) {
	tmpl := "arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-1"
	d := doc(t, policycheck.Identity, "fn-role",
		map[string]any{"Sid": "Run", "Effect": "Allow", "Action": []string{"ec2:RunInstances"}, "Resource": "*",
			"Condition": map[string]any{"ArnEquals": map[string]any{"ec2:LaunchTemplate": tmpl}, "StringEquals": map[string]any{"aws:RequestTag/jitr:managed-by": "jitr"}}},
		map[string]any{"Sid": "Tag", "Effect": "Allow", "Action": []string{"ec2:CreateTags"}, "Resource": "*",
			"Condition": map[string]any{"StringLike": map[string]any{"ec2:CreateAction": "Create*"}}},
		map[string]any{"Sid": "Stop", "Effect": "Allow", "Action": []string{"ec2:TerminateInstances"}, "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/jitr:managed-by": "jitr"}}})
	classOf := func(v string) string {
		return map[string]string{tmpl: "launch-template", "jitr": "name-prefix"}[v]
	}
	roles := map[string]string{"fn": "fn-role"}
	good := policycheck.Calls{"fn": {"ec2:RunInstances": 2, "ec2:RunInstances ec2:LaunchTemplate=launch-template": 2,
		"ec2:RunInstances aws:RequestTag/jitr:managed-by=name-prefix": 2}}
	checks, err := policycheck.Conditions([]policycheck.Document{d}, roles, good, classOf, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := checks[0]
	if len(c.Gaps) != 0 || len(c.Met) != 2 || strings.Join(c.Unseen, ",") != "Stop ec2:TerminateInstances,Tag ec2:CreateTags" {
		t.Errorf("a met record: %+v", c)
	}

	bad := policycheck.Calls{"fn": {"ec2:RunInstances": 2, "ec2:RunInstances ec2:LaunchTemplate=launch-template": 1,
		"ec2:RunInstances ec2:LaunchTemplate=other:lt-9": 1, "ec2:CreateTags": 1, "ec2:CreateTags ec2:CreateAction=CreateFleet": 1}}
	checks, err = policycheck.Conditions([]policycheck.Document{d}, roles, bad, classOf, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(checks[0].Gaps, "\n")
	for _, want := range []string{
		"Run ec2:RunInstances ec2:LaunchTemplate: 1 calls carried other:lt-9",
		"Run ec2:RunInstances aws:RequestTag/jitr:managed-by: the record has no value",
		"Tag ec2:CreateTags ec2:CreateAction: operator StringLike is not evaluated",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("gaps %q: want %q", got, want)
		}
	}
	if _, err := policycheck.Conditions([]policycheck.Document{d}, roles, policycheck.Calls{"other": {"ec2:RunInstances": 1}}, classOf, nil); err == nil {
		t.Error("facts of a function without a policy were accepted")
	}
}

var updatePolicies = flag.Bool("update", false, "rewrite testdata/policies.json from the plan")

// policiesFile is the plan's Lambda policies as a file: the runtime's test
// of moto's own IAM enforcement (runtime/internal/testenv, which starts
// moto; this module's stack packages cannot) reads it, and a reviewer sees
// every change to a policy as a diff of it.
const policiesFile = "testdata/policies.json"

// policyFile is the content of policiesFile.
type policyFile struct {
	Comment   string                       `json:"comment"`
	Region    string                       `json:"region"`
	Account   string                       `json:"account"`
	Functions map[string][]json.RawMessage `json:"functions"` // function -> its role's identity policies
	Queues    map[string]string            `json:"queues"`    // "queue", "dead-letter-queue" -> physical name
}

// TestPoliciesFile: testdata/policies.json is the plan's, byte for byte
// (go test ./stack/policycheck -run TestPoliciesFile -update rewrites it).
func TestPoliciesFile(t *testing.T) {
	resources := planResources(t)
	docs, err := policycheck.Documents(plan.Entries(resources))
	if err != nil {
		t.Fatal(err)
	}
	f := policyFile{
		Comment: "Generated from the offline plan by stack/policycheck's TestPoliciesFile (-update); " +
			"runtime/internal/testenv's TestMotoEnforcesPlanPolicies reads it.",
		Region: "eu-west-1", Account: "123456789012",
		Functions: map[string][]json.RawMessage{}, Queues: map[string]string{},
	}
	for fn, role := range map[string]string{"webhook": "jitr-webhook", "scaleup": "jitr-scaleup", "scaledown": "jitr-scaledown"} {
		for _, d := range docs {
			if d.Kind == policycheck.Identity && d.Owner == role {
				f.Functions[fn] = append(f.Functions[fn], d.Policy)
			}
		}
		if len(f.Functions[fn]) == 0 {
			t.Fatalf("no identity policy of %s in the plan", role)
		}
	}
	for _, r := range resources {
		if r.Type != "aws:sqs/queue:Queue" {
			continue
		}
		name, _ := plan.Plain(r.Outputs)["name"].(string)
		switch r.Name {
		case "jitr-queue":
			f.Queues["queue"] = name
		case "jitr-dlq":
			f.Queues["dead-letter-queue"] = name
		}
		if arn, _ := plan.Plain(r.Outputs)["arn"].(string); arn != "arn:aws:sqs:"+f.Region+":"+f.Account+":"+name {
			t.Fatalf("queue %s has ARN %s: not in %s/%s", name, arn, f.Region, f.Account)
		}
	}
	if len(f.Queues) != 2 {
		t.Fatalf("queues in the plan: %v", f.Queues)
	}
	want, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *updatePolicies {
		if err := os.WriteFile(policiesFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(policiesFile)
	if err != nil {
		t.Fatalf("%v (go test ./stack/policycheck -run TestPoliciesFile -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not the plan's (go test ./stack/policycheck -run TestPoliciesFile -update rewrites it)", policiesFile)
	}
}

// TestConditionsByCallShape: an action granted for two shapes of call by
// two statements (CreateTags at launch, and on an existing instance) is
// checked shape by shape, each against its own statement; a shape no
// statement is named for is a gap.
func TestConditionsByCallShape(t *testing.T) {
	d := doc(t, policycheck.Identity, "fn-role",
		map[string]any{"Sid": "TagAtLaunch", "Effect": "Allow", "Action": []string{"ec2:CreateTags"}, "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": "CreateFleet"}}},
		map[string]any{"Sid": "Retag", "Effect": "Allow", "Action": []string{"ec2:CreateTags"}, "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/jitr:managed-by": "jitr"}}})
	classOf := func(v string) string { return map[string]string{"jitr": "name-prefix"}[v] }
	roles := map[string]string{"fn": "fn-role"}
	facts := policycheck.Calls{"fn": {
		"ec2:CreateTags": 2, "ec2:CreateTags ec2:CreateAction=CreateFleet": 2,
		"ec2:CreateTags@existing": 1, "ec2:CreateTags@existing aws:ResourceTag/jitr:managed-by=name-prefix": 1,
	}}
	checks, err := policycheck.Conditions([]policycheck.Document{d}, roles, facts, classOf, map[string]string{"ec2:CreateTags@existing": "Retag"})
	if err != nil {
		t.Fatal(err)
	}
	if c := checks[0]; len(c.Gaps) != 0 || len(c.Met) != 2 || len(c.Unseen) != 0 {
		t.Errorf("shapes named: %+v; want both statements met, no gap", c)
	}
	// A retag that carries another deployment's tag fails its statement.
	facts["fn"]["ec2:CreateTags@existing aws:ResourceTag/jitr:managed-by=other:x"] = 1
	checks, _ = policycheck.Conditions([]policycheck.Document{d}, roles, facts, classOf, map[string]string{"ec2:CreateTags@existing": "Retag"})
	if got := strings.Join(checks[0].Gaps, "\n"); !strings.Contains(got, "Retag ec2:CreateTags aws:ResourceTag/jitr:managed-by: 1 calls carried other:x") {
		t.Errorf("gaps %q: want the foreign retag", got)
	}
	delete(facts["fn"], "ec2:CreateTags@existing aws:ResourceTag/jitr:managed-by=other:x")
	// Without the shape named, the retag is an unexplained shape and the
	// retag statement is checked against the launch's calls, which fail it.
	checks, _ = policycheck.Conditions([]policycheck.Document{d}, roles, facts, classOf, nil)
	got := strings.Join(checks[0].Gaps, "\n")
	for _, want := range []string{"ec2:CreateTags@existing: calls of a shape no statement is named for", "Retag ec2:CreateTags aws:ResourceTag/jitr:managed-by: the record has no value"} {
		if !strings.Contains(got, want) {
			t.Errorf("gaps %q: want %q", got, want)
		}
	}
}

// mergeCalls adds b's counts to a's.
func mergeCalls(a, b policycheck.Calls) policycheck.Calls {
	if a == nil {
		a = policycheck.Calls{}
	}
	for fn, ops := range b {
		if a[fn] == nil {
			a[fn] = map[string]int64{}
		}
		for op, n := range ops {
			a[fn][op] += n
		}
	}
	return a
}

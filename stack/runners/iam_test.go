package runners_test

import (
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/stack/runners"
)

const account = "123456789012"

// TestPolicies parses every IAM policy the stack writes and checks the
// rules of docs/security.md: named actions only, resources scoped to this
// deployment, and the conditions that confine launches, terminations, the
// role hand-over and the JIT config.
func TestPolicies(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	arn := func(typ, name, key string) string {
		return at(t, outputs(one(t, m, typ, name)), key).(string)
	}
	jobs := arn("aws:dynamodb/table:Table", "ci-jobs", "arn")
	jit := arn("aws:dynamodb/table:Table", "ci-jit", "arn")
	runnerRole := arn("aws:iam/role:Role", "ci-runner", "arn")

	policies := ofType(m, "aws:iam/rolePolicy:RolePolicy")
	if len(policies) != 5 {
		t.Fatalf("%d role policies", len(policies))
	}
	unresourced := runners.UnresourcedActions()
	for _, p := range policies {
		doc := policyDoc(t, p, "policy")
		if doc.Version != "2012-10-17" {
			t.Errorf("%s: version %q", p.Name, doc.Version)
		}
		for _, s := range doc.Statement {
			where := p.Name + "/" + s.Sid
			if s.Effect != "Allow" || s.Principal != nil || len(s.Action) == 0 || len(s.Resource) == 0 {
				t.Errorf("%s: malformed statement %+v", where, s)
			}
			for _, a := range s.Action {
				if strings.Contains(a, "*") || !strings.Contains(a, ":") {
					t.Errorf("%s: action %q is not one named action", where, a)
				}
			}
			for _, r := range s.Resource {
				switch {
				case r == "*":
					for _, a := range s.Action {
						if !slices.Contains(unresourced, a) {
							t.Errorf("%s: %s granted on every resource", where, a)
						}
					}
				case strings.HasPrefix(r, "arn:aws:ec2:eu-west-1::image/ami-"), r == "arn:aws:ec2:eu-west-1::snapshot/*":
					// AMIs and their snapshots may be owned by another
					// account (Amazon's, for stock AMIs).
				case !strings.HasPrefix(r, "arn:aws:"):
					t.Errorf("%s: resource %q is not an ARN", where, r)
				case !strings.Contains(r, ":"+account+":"):
					t.Errorf("%s: resource %q is not in this account", where, r)
				case strings.Contains(r, "*") && !allowedPattern(r):
					t.Errorf("%s: resource pattern %q", where, r)
				}
			}
		}
	}

	runner := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-runner"), "policy")
	if got := actions(runner); !reflect.DeepEqual(got, []string{"dynamodb:DeleteItem"}) {
		t.Errorf("the runner role may %v", got)
	}
	take := statement(t, runner, "TakeOwnJITConfig")
	if !reflect.DeepEqual(take.Resource, []string{jit}) {
		t.Errorf("JIT hand-over on %v, want the JIT table only", take.Resource)
	}
	if got := take.Condition["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]; !reflect.DeepEqual(got, []any{"${ec2:SourceInstanceARN}"}) {
		t.Errorf("JIT hand-over keys %v, want only the caller's instance ARN", got)
	}
	if len(ofType(m, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")) != 0 {
		t.Error("a managed policy is attached although Session Manager is off")
	}

	scaleup := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-scaleup"), "policy")
	for _, s := range scaleup.Statement {
		creates := slices.Contains(s.Action, "ec2:CreateFleet") || slices.Contains(s.Action, "ec2:RunInstances")
		launchesInstances := slices.ContainsFunc(s.Resource, func(r string) bool {
			return strings.HasSuffix(r, ":instance/*") || strings.HasSuffix(r, ":volume/*")
		})
		if creates && launchesInstances && s.Condition["StringEquals"]["aws:RequestTag/jitr:managed-by"] != "jitr" {
			t.Errorf("%s: launches instances without the managed-by request tag: %v", s.Sid, s.Condition)
		}
		if slices.Contains(s.Action, "ec2:CreateTags") && len(s.Condition) == 0 {
			t.Errorf("%s: CreateTags without a condition", s.Sid)
		}
		if slices.Contains(s.Action, "ec2:TerminateInstances") && s.Condition["StringEquals"]["aws:ResourceTag/jitr:managed-by"] != "jitr" {
			t.Errorf("%s: terminates instances it does not manage", s.Sid)
		}
	}
	// Every RunInstances grant on instances or volumes, the one CreateFleet
	// makes included, requires our launch template.
	lt := arn("aws:ec2/launchTemplate:LaunchTemplate", "ci-runner", "arn")
	runs := 0
	for _, s := range scaleup.Statement {
		if !slices.Contains(s.Action, "ec2:RunInstances") || !slices.ContainsFunc(s.Resource, func(r string) bool {
			return strings.HasSuffix(r, ":instance/*") || strings.HasSuffix(r, ":volume/*")
		}) {
			continue
		}
		runs++
		if got := s.Condition["ArnEquals"]["ec2:LaunchTemplate"]; got != lt {
			t.Errorf("%s: RunInstances with launch template %v, want only %s", s.Sid, got, lt)
		}
	}
	if runs == 0 {
		t.Error("no statement lets scaleup run instances")
	}
	pass := statement(t, scaleup, "PassRunnerRole")
	if !reflect.DeepEqual(pass.Resource, []string{runnerRole}) || pass.Condition["StringEquals"]["iam:PassedToService"] != "ec2.amazonaws.com" {
		t.Errorf("PassRole %+v", pass)
	}
	uses := statement(t, scaleup, "LaunchFromThisDeployment").Resource
	sg := arn("aws:ec2/securityGroup:SecurityGroup", "ci-runner", "arn")
	for _, want := range []string{lt, sg, "arn:aws:ec2:eu-west-1::image/ami-0123456789abcdef0", "arn:aws:ec2:eu-west-1::image/ami-0fedcba9876543210"} {
		if !slices.Contains(uses, want) {
			t.Errorf("launches may not use %s: %v", want, uses)
		}
	}
	for _, s := range ofType(m, "aws:ec2/subnet:Subnet") {
		if !slices.Contains(uses, at(t, outputs(s), "arn").(string)) {
			t.Errorf("launches may not use subnet %s", s.Name)
		}
	}
	if got := statement(t, scaleup, "CountSlots").Resource; !slices.Contains(got, jobs+"/index/slot-index") {
		t.Errorf("slot counting on %v", got)
	}

	scaledown := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-scaledown"), "policy")
	if c := statement(t, scaledown, "TerminateManagedInstances").Condition; c["StringEquals"]["aws:ResourceTag/jitr:managed-by"] != "jitr" {
		t.Errorf("scaledown terminates unmanaged instances: %v", c)
	}
	// Warm pools: a retag, a start and a stop only of this deployment's
	// instances, and a retag keeps them this deployment's (no foreign
	// instance adopted, then terminated).
	for _, c := range []struct {
		doc runners.PolicyDocument
		sid string
		req bool
	}{{scaleup, "RetagTakenPooledInstances", true}, {scaleup, "StartPooledInstances", false}, {scaledown, "StopPreparedPoolInstances", false}} {
		st := statement(t, c.doc, c.sid)
		cond := st.Condition["StringEquals"]
		if cond["aws:ResourceTag/jitr:managed-by"] != "jitr" || (c.req && cond["aws:RequestTag/jitr:managed-by"] != "jitr") ||
			!slices.Equal(st.Resource, []string{"arn:aws:ec2:eu-west-1:123456789012:instance/*"}) {
			t.Errorf("%s: %+v; want instances of this deployment only", c.sid, st)
		}
	}

	// Each role does what its Lambda calls and nothing more.
	want := map[string][]string{
		"ci-webhook": {"dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents",
			"secretsmanager:GetSecretValue", "sqs:SendMessage"},
		"ci-scaleup": {"dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem",
			"ec2:CreateFleet", "ec2:CreateTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
			"ec2:DescribeLaunchTemplates", "ec2:DescribeSubnets", "ec2:RunInstances", "ec2:StartInstances", "ec2:TerminateInstances",
			"iam:CreateServiceLinkedRole", "iam:PassRole", "logs:CreateLogStream", "logs:PutLogEvents", "secretsmanager:GetSecretValue",
			"sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"},
		"ci-scaledown": {"dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query",
			"dynamodb:UpdateItem", "ec2:CreateFleet", "ec2:CreateTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypeOfferings",
			"ec2:DescribeInstanceTypes", "ec2:DescribeInstances", "ec2:DescribeLaunchTemplates", "ec2:DescribeSubnets", "ec2:RunInstances", "ec2:StopInstances", "ec2:TerminateInstances",
			"iam:CreateServiceLinkedRole", "iam:PassRole", "logs:CreateLogStream", "logs:PutLogEvents", "secretsmanager:GetSecretValue",
			"sqs:SendMessage"},
		"ci-scheduler": {"lambda:InvokeFunction"},
	}
	for name, w := range want {
		if got := actions(policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", name), "policy")); !reflect.DeepEqual(got, w) {
			t.Errorf("%s may %v\nwant %v", name, got, w)
		}
	}

	// The secrets: the webhook reads only the webhook secret, the others
	// only the App key.
	appKey := arn("aws:secretsmanager/secret:Secret", "ci-app-key", "arn")
	hook := arn("aws:secretsmanager/secret:Secret", "ci-webhook-secret", "arn")
	for name, secret := range map[string]string{"ci-webhook": hook, "ci-scaleup": appKey, "ci-scaledown": appKey} {
		doc := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", name), "policy")
		for _, s := range doc.Statement {
			if slices.Contains(s.Action, "secretsmanager:GetSecretValue") && !reflect.DeepEqual(s.Resource, []string{secret}) {
				t.Errorf("%s reads secrets %v, want %s", name, s.Resource, secret)
			}
		}
	}
}

func TestTrustPolicies(t *testing.T) {
	t.Parallel()
	m := deploy(t, sampleArgs(t))
	want := map[string]string{
		"ci-runner": "ec2.amazonaws.com", "ci-webhook": "lambda.amazonaws.com", "ci-scaleup": "lambda.amazonaws.com",
		"ci-scaledown": "lambda.amazonaws.com", "ci-scheduler": "scheduler.amazonaws.com",
	}
	for _, r := range ofType(m, "aws:iam/role:Role") {
		doc := policyDoc(t, r, "assumeRolePolicy")
		if len(doc.Statement) != 1 {
			t.Fatalf("%s: %d statements", r.Name, len(doc.Statement))
		}
		s := doc.Statement[0]
		if !reflect.DeepEqual(s.Action, []string{"sts:AssumeRole"}) || !reflect.DeepEqual(s.Principal["Service"], []string{want[r.Name]}) {
			t.Errorf("%s: trust %+v, want %s", r.Name, s, want[r.Name])
		}
		if r.Name == "ci-scheduler" && s.Condition["StringEquals"]["aws:SourceAccount"] != account {
			t.Errorf("the scheduler role may be assumed for any account: %v", s.Condition)
		}
	}
}

// allowedPattern lists the wildcard resources the stack may grant: all
// instances, volumes, interfaces, fleets and spot requests in this account
// and region (further scoped by conditions), and log streams.
func allowedPattern(r string) bool {
	for _, suffix := range []string{":instance/*", ":volume/*", ":network-interface/*", ":fleet/*", ":spot-instances-request/*", ":*"} {
		if strings.HasSuffix(r, suffix) && strings.HasPrefix(r, "arn:aws:") {
			if suffix == ":*" {
				return strings.Contains(r, ":log-group:") || strings.Contains(r, ":function:")
			}
			return strings.HasPrefix(r, "arn:aws:ec2:eu-west-1:"+account+":")
		}
	}
	return false
}

func actions(d runners.PolicyDocument) []string {
	set := map[string]bool{}
	for _, s := range d.Statement {
		for _, a := range s.Action {
			set[a] = true
		}
	}
	var out []string
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// TestSessionManagerPolicy: Session Manager gets the agent's minimal policy,
// never a managed policy that lets job code read SSM parameters.
func TestSessionManagerPolicy(t *testing.T) {
	t.Parallel()
	a := sampleArgs(t)
	a.Runner.SSMSessionManager = true
	m := deploy(t, a)
	if n := len(ofType(m, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")); n != 0 {
		t.Errorf("%d managed policies attached to a role", n)
	}
	doc := policyDoc(t, one(t, m, "aws:iam/rolePolicy:RolePolicy", "ci-runner-ssm"), "policy")
	want := []string{"ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
		"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"}
	if got := actions(doc); !reflect.DeepEqual(got, want) {
		t.Errorf("Session Manager policy may %v\nwant %v", got, want)
	}
	if got := statement(t, doc, "RegisterWithSessionManager").Resource; !reflect.DeepEqual(got, []string{"arn:aws:ec2:eu-west-1:" + account + ":instance/*"}) {
		t.Errorf("instance registration on %v", got)
	}
}

package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// The plan's Lambda policies (stack/policycheck's TestPoliciesFile keeps
// the file equal to the plan).
const planPolicies = "../../../stack/policycheck/testdata/policies.json"

// TestMotoEnforcesPlanPolicies has moto's own IAM engine judge the plan's
// policies where it can: each function's role carries its policies exactly
// as planned, the function's credentials are that role's (AssumeRole), and
// moto enforces IAM (reset-auth to 0) on its own server. moto 5.2.1 passes
// a request's resource for SQS only (EC2, DynamoDB and Secrets Manager are
// judged against "*"), and denies every statement with a condition, so the
// calls judged are the SQS ones on the plan's queue ARNs and the
// unresourced Describe ones; docs/security.md says which statements the
// call recorder covers instead. Each granted action must be allowed on its
// resource, and every SQS and Describe action the role is not granted, and
// every call on the dead-letter queue, denied.
func TestMotoEnforcesPlanPolicies(t *testing.T) {
	b, err := os.ReadFile(planPolicies)
	if err != nil {
		t.Fatal(err)
	}
	var plan struct {
		Region    string                       `json:"region"`
		Account   string                       `json:"account"`
		Functions map[string][]json.RawMessage `json:"functions"`
		Queues    map[string]string            `json:"queues"`
	}
	if err := json.Unmarshal(b, &plan); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := StartMoto(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	cfg := func(id, secret, token string) aws.Config {
		return aws.Config{Region: plan.Region, BaseEndpoint: aws.String(m.URL), RetryMaxAttempts: 1,
			Credentials: credentials.NewStaticCredentialsProvider(id, secret, token)}
	}
	admin := cfg("setup", "setup", "")

	// The plan's queues: same names, region and (moto's default) account,
	// so the same ARNs.
	queues := map[string]string{} // "queue" -> URL
	for class, name := range plan.Queues {
		out, err := sqs.NewFromConfig(admin).CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		queues[class] = aws.ToString(out.QueueUrl)
	}
	id, err := sts.NewFromConfig(admin).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(id.Account) != plan.Account {
		t.Fatalf("moto's account %v (%v); the plan's is %s", aws.ToString(id.Account), err, plan.Account)
	}

	// One role per function with its planned policies, and its credentials.
	creds := map[string]aws.Config{}
	for fn, docs := range plan.Functions {
		role := "jitr-" + fn
		trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + plan.Account + `:root"},"Action":"sts:AssumeRole"}]}`
		r, err := iam.NewFromConfig(admin).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(role), AssumeRolePolicyDocument: aws.String(trust)})
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range docs {
			if _, err := iam.NewFromConfig(admin).PutRolePolicy(ctx, &iam.PutRolePolicyInput{
				RoleName: aws.String(role), PolicyName: aws.String(role + "-" + string(rune('a'+i))), PolicyDocument: aws.String(string(d)),
			}); err != nil {
				t.Fatal(err)
			}
		}
		out, err := sts.NewFromConfig(admin).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: r.Role.Arn, RoleSessionName: aws.String(fn)})
		if err != nil {
			t.Fatal(err)
		}
		c := out.Credentials
		creds[fn] = cfg(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	}
	if len(creds) != 3 {
		t.Fatalf("functions in %s: %v", planPolicies, slices.Sorted(func(yield func(string) bool) {
			for k := range creds {
				if !yield(k) {
					return
				}
			}
		}))
	}

	// From here on moto checks every request's signature and policy.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset-auth", strings.NewReader("0"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("turn on moto's IAM enforcement: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	type call struct {
		action string
		do     func(aws.Config, string) error // on the queue URL given
	}
	calls := []call{
		{"sqs:SendMessage", func(c aws.Config, q string) error {
			_, err := sqs.NewFromConfig(c).SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String("{}")})
			return err
		}},
		{"sqs:ReceiveMessage", func(c aws.Config, q string) error {
			_, err := sqs.NewFromConfig(c).ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q)})
			return err
		}},
		{"sqs:DeleteMessage", func(c aws.Config, q string) error {
			_, err := sqs.NewFromConfig(c).DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: aws.String("none")})
			return err
		}},
		{"sqs:ChangeMessageVisibility", func(c aws.Config, q string) error {
			_, err := sqs.NewFromConfig(c).ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
				QueueUrl: aws.String(q), ReceiptHandle: aws.String("none"), VisibilityTimeout: 1})
			return err
		}},
		{"sqs:GetQueueAttributes", func(c aws.Config, q string) error {
			_, err := sqs.NewFromConfig(c).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q)})
			return err
		}},
		{"ec2:DescribeInstances", func(c aws.Config, _ string) error {
			_, err := ec2.NewFromConfig(c).DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
			return err
		}},
		{"ec2:DescribeSubnets", func(c aws.Config, _ string) error {
			_, err := ec2.NewFromConfig(c).DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
			return err
		}},
		{"ec2:DescribeImages", func(c aws.Config, _ string) error {
			_, err := ec2.NewFromConfig(c).DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
			return err
		}},
	}
	allowed := 0
	for fn, docs := range plan.Functions {
		granted := grantedActions(t, docs)
		before := allowed
		for _, c := range calls {
			queueCall := strings.HasPrefix(c.action, "sqs:")
			err := c.do(creds[fn], queues["queue"])
			switch verdict := judged(err); {
			case verdict == "unauthenticated":
				t.Fatalf("%s: %s: moto did not accept the role's credentials: %v", fn, c.action, err)
			case granted[c.action] && verdict == "denied":
				t.Errorf("%s: %s granted by the plan but denied by moto: %v", fn, c.action, err)
			case !granted[c.action] && verdict != "denied":
				t.Errorf("%s: %s not granted by the plan but moto allowed it (%v)", fn, c.action, err)
			case granted[c.action]:
				allowed++ // nil, or an error past authorisation (a made-up receipt handle)
			}
			if queueCall {
				if err := c.do(creds[fn], queues["dead-letter-queue"]); judged(err) != "denied" {
					t.Errorf("%s: %s on the dead-letter queue allowed (%v)", fn, c.action, err)
				}
			}
		}
		if allowed == before {
			t.Errorf("%s: no call allowed: its credentials, not its policy, may be what moto refuses", fn)
		}
	}
	// webhook: SendMessage; scaleup: five SQS actions and two Describe;
	// scaledown: SendMessage and three Describe (it launches pooled
	// instances too).
	if allowed != 12 {
		t.Errorf("moto allowed %d granted calls; the plan grants 12 of them", allowed)
	}
}

// grantedActions are the actions the documents' Allow statements name.
func grantedActions(t *testing.T, docs []json.RawMessage) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, d := range docs {
		var doc struct {
			Statement []struct {
				Effect string   `json:"Effect"`
				Action []string `json:"Action"`
			} `json:"Statement"`
		}
		if err := json.Unmarshal(d, &doc); err != nil {
			t.Fatal(err)
		}
		for _, s := range doc.Statement {
			for _, a := range s.Action {
				if s.Effect == "Allow" {
					out[a] = true
				}
			}
		}
	}
	return out
}

// judged classes err as moto's IAM engine answers: "denied" (the policy
// refused the action), "unauthenticated" (the credentials or signature),
// or "" (allowed: no error, or one from past authorisation).
func judged(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation":
			return "denied"
		case "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException", "AuthFailure":
			return "unauthenticated"
		}
		return ""
	}
	// moto answers an SQS (JSON protocol) request it refuses in XML, which
	// the SDK cannot decode: only the status is left. A 403 is a refusal of
	// the policy here because the same credentials were accepted for the
	// function's granted calls (the test requires one per function).
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) && respErr.HTTPStatusCode() == http.StatusForbidden {
		return "denied"
	}
	return ""
}

package main_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const secret = "rie-test-webhook-secret"

func event(t testing.TB, body string, sig string) []byte {
	t.Helper()
	req := events.APIGatewayV2HTTPRequest{
		Version:  "2.0",
		RouteKey: "POST /webhook",
		RawPath:  "/webhook",
		Headers: map[string]string{
			"content-type":        "application/json",
			"x-github-event":      "workflow_job",
			"x-github-delivery":   "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"x-hub-signature-256": sig,
		},
		Body: body,
	}
	req.RequestContext.HTTP.Method = "POST"
	req.RequestContext.HTTP.Path = "/webhook"
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func queuedBody(jobID int) string {
	return `{"action":"queued","workflow_job":{"id":` + strconv.Itoa(jobID) + `,"run_id":5,"status":"queued","labels":["self-hosted","linux","x64"]},` +
		`"repository":{"full_name":"octo-org/app","owner":{"login":"octo-org"}},"installation":{"id":42}}`
}

// The compiled bootstrap answers signed API Gateway v2 events under the
// Lambda Runtime Interface Emulator, with its secret from Secrets Manager
// (moto) and its writes going to DynamoDB and SQS (moto).
func TestBootstrapUnderRIE(t *testing.T) {
	d := testenv.NewDeployment(t, secret)
	bin := testenv.BuildLambda(t, "./runtime/cmd/webhook")
	ctx := context.Background()
	r, err := testenv.StartRIE(ctx, bin, d.LambdaEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	invoke := func(body, sig string) events.APIGatewayV2HTTPResponse {
		t.Helper()
		out, err := r.Invoke(ctx, event(t, body, sig))
		if err != nil {
			t.Fatalf("%v\noutput:\n%s", err, r.Output())
		}
		var resp events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("response %s: %v", out, err)
		}
		return resp
	}

	body := queuedBody(9001)
	if resp := invoke(body, webhook.Sign([]byte(secret), []byte(body))); resp.StatusCode != 200 {
		t.Fatalf("signed delivery: status %d body %s\noutput:\n%s", resp.StatusCode, resp.Body, r.Output())
	}
	if resp := invoke(body, webhook.Sign([]byte("forged"), []byte(body))); resp.StatusCode != 401 {
		t.Fatalf("forged delivery: status %d; want 401", resp.StatusCode)
	}
	msgs := d.AWS.ReceiveAll(t, d.Queue, 10)
	if len(msgs) != 1 {
		t.Fatalf("queue holds %d messages; want 1", len(msgs))
	}
	m, err := queue.Decode(msgs[0])
	if err != nil || m.JobID != 9001 || m.InstallationID != 42 {
		t.Fatalf("message %s: %v", msgs[0], err)
	}
	_ = r.Close() // waits for the emulator, so its whole output is in
	if out := r.Output(); strings.Contains(out, secret) {
		t.Fatal("the webhook secret appears in the Lambda's output")
	}
	if !strings.Contains(r.Output(), `"decision":"queued"`) {
		t.Errorf("no structured decision log in the output:\n%s", r.Output())
	}
}

// A configuration error stops the function at init with a message naming the key.
func TestBootstrapRejectsBadConfig(t *testing.T) {
	bin := testenv.BuildLambda(t, "./runtime/cmd/webhook")
	ctx := context.Background()
	r, err := testenv.StartRIE(ctx, bin, append(testenv.MotoForTest(t).Env(), `JITR_CONFIG={"queueUrl":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if _, err := r.Invoke(ctx, event(t, "{}", "sha256=00")); err == nil {
		t.Fatal("invocation succeeded with an invalid configuration")
	}
	// The function's output is copied asynchronously; once the emulator has
	// exited (Close waits for it) all of it is in.
	_ = r.Close()
	if !strings.Contains(r.Output(), "github.appId") {
		t.Fatalf("init error does not name the key:\n%s", r.Output())
	}
}

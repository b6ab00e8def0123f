package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// FuzzHandler: the handler never panics, never answers 5xx to client input,
// and writes nothing unless the signature is valid.
//
// sign chooses between signing the fuzzed body (to reach the parser) and
// sending the fuzzed signature header as is (to attack verification).
// Whether a signature is valid is decided by githubSignature, an oracle that
// shares no code with the package: a Verify that accepted a forgery (or
// refused a real signature) fails the target.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(`{"action":"queued","workflow_job":{"id":1,"labels":["self-hosted"]},"repository":{"full_name":"o/r","owner":{"login":"o"}},"installation":{"id":1}}`), "workflow_job", "", true, false)
	f.Add([]byte(`{"action":"completed","workflow_job":{"id":2,"conclusion":"success","labels":["self-hosted","gpu"]},"repository":{"full_name":"o/r"},"installation":{"id":3}}`), "workflow_job", "", true, false)
	f.Add([]byte(`{"action":"queued","workflow_job":"x"}`), "workflow_job", "", true, true)
	f.Add([]byte("Hello, World!"), "workflow_job", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", false, false)
	f.Add([]byte(`{}`), "ping", "sha1=abc", false, false)
	f.Add(fixture(f), "workflow_job", "", true, false)

	f.Fuzz(func(t *testing.T, body []byte, event, sig string, sign, b64 bool) {
		h, st, q := newMemHandler(t)
		req := events.APIGatewayV2HTTPRequest{Headers: map[string]string{"x-github-event": event, "x-github-delivery": "fuzz"}}
		req.RequestContext.HTTP.Method = "POST"
		want := githubSignature([]byte(testSecret), body)
		if sign {
			sig = want
		}
		// GitHub sends lower-case hex; hex is case-insensitive.
		hexSig, prefixed := strings.CutPrefix(sig, "sha256=")
		valid := prefixed && strings.EqualFold(hexSig, strings.TrimPrefix(want, "sha256="))
		req.Headers["x-hub-signature-256"] = sig
		req.Body = string(body)
		if b64 {
			req.Body, req.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
		resp, err := h.Handle(context.Background(), req)
		if err != nil {
			t.Fatalf("Handle returned an error: %v", err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d for client input", resp.StatusCode)
		}
		if !valid && (st.Writes() != 0 || q.Sent() != 0) {
			t.Fatalf("unsigned input wrote %d records, sent %d messages", st.Writes(), q.Sent())
		}
		if !valid && resp.StatusCode != 401 && len(body) <= webhook.MaxBodyBytes {
			t.Fatalf("unsigned input answered %d; want 401", resp.StatusCode)
		}
		if valid && resp.StatusCode == 401 {
			t.Fatalf("a valid signature answered 401")
		}
		if q.Sent() > 1 {
			t.Fatalf("one delivery sent %d messages", q.Sent())
		}
	})
}

// githubSignature is the X-Hub-Signature-256 GitHub computes for body: the
// test's own oracle, independent of webhook.Sign and webhook.Verify.
func githubSignature(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// The oracle agrees with GitHub's documented test vector (docs.github.com,
// "Validating webhook deliveries": secret "It's a Secret to Everybody",
// payload "Hello, World!").
func TestOracleMatchesGitHubsTestVector(t *testing.T) {
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := githubSignature([]byte("It's a Secret to Everybody"), []byte("Hello, World!")); got != want {
		t.Fatalf("oracle %s; want GitHub's %s", got, want)
	}
}

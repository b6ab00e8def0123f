package sandbox

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/fleet"
)

func TestDeepMerge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		dst, src, want string
	}{
		{"objects merge key by key", `{"a":{"b":1,"c":2},"d":3}`, `{"a":{"c":20,"e":5}}`, `{"a":{"b":1,"c":20,"e":5},"d":3}`},
		{"scalars and arrays replace", `{"a":[1,2],"b":"x"}`, `{"a":[3],"b":"y"}`, `{"a":[3],"b":"y"}`},
		{"an object replaces a scalar", `{"a":1}`, `{"a":{"b":2}}`, `{"a":{"b":2}}`},
		{"null replaces", `{"a":{"b":1}}`, `{"a":null}`, `{"a":null}`},
		{"new keys are added", `{}`, `{"x":{"y":{"z":1}}}`, `{"x":{"y":{"z":1}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst, src, want := decode(t, tc.dst), decode(t, tc.src), decode(t, tc.want)
			if got := DeepMerge(dst, src); !reflect.DeepEqual(got, want) {
				t.Errorf("DeepMerge(%s, %s) = %v; want %v", tc.dst, tc.src, got, want)
			}
		})
	}
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A bad --config is refused before anything starts, naming the problem.
func TestCheckOverlay(t *testing.T) {
	t.Parallel()
	if err := checkOverlay([]byte(`{"maxRunners": 5, "scaleDown": {"bootTimeoutSeconds": 30, "maxRuntimeSeconds": 60}}`)); err != nil {
		t.Errorf("valid overlay refused: %v", err)
	}
	for overlay, want := range map[string]string{
		`{"maxRunners": -1}`:                           "maxRunners",
		`{"scaleDown": {"bogus": 1}}`:                  "bogus",
		`{"profiles": {"default": {"arch": "sparc"}}}`: "arch",
		`[1, 2]`: "JSON object",
	} {
		err := checkOverlay([]byte(overlay))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkOverlay(%s) = %v; want an error mentioning %q", overlay, err, want)
		}
	}
}

func TestGatewayEvent(t *testing.T) {
	t.Parallel()
	body := `{"action":"queued"}`
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/webhook?x=1&x=2", strings.NewReader(body))
	r.Header.Set("X-GitHub-Event", "workflow_job")
	r.Header.Set("X-Hub-Signature-256", "sha256=00")
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	ev := gatewayEvent(r, []byte(body), time.Unix(1700000000, 0))
	if ev.Version != "2.0" || ev.RouteKey != "POST /webhook" || ev.RawPath != "/webhook" || ev.RawQueryString != "x=1&x=2" {
		t.Errorf("event %+v", ev)
	}
	if ev.Body != body || ev.IsBase64Encoded {
		t.Errorf("body %q base64 %v; want the raw body", ev.Body, ev.IsBase64Encoded)
	}
	if ev.Headers["x-github-event"] != "workflow_job" || ev.Headers["x-hub-signature-256"] != "sha256=00" || ev.Headers["x-multi"] != "a,b" {
		t.Errorf("headers %v; want lower-cased names, repeated values joined", ev.Headers)
	}
	if ev.RequestContext.HTTP.Method != http.MethodPost || ev.RequestContext.HTTP.Path != "/webhook" || ev.RequestContext.TimeEpoch != 1700000000000 {
		t.Errorf("request context %+v", ev.RequestContext)
	}
	bin := gatewayEvent(r, []byte{0xff, 0xfe}, time.Now())
	if !bin.IsBase64Encoded || bin.Body != "//4=" {
		t.Errorf("binary body: %q base64 %v; want base64", bin.Body, bin.IsBase64Encoded)
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	p := NewPercentiles(s)
	if p.N != 100 || p.P50 != 0.050 || p.P95 != 0.095 || p.P99 != 0.099 || p.Max != 0.100 {
		t.Errorf("percentiles %+v", p)
	}
	if (NewPercentiles(nil) != Percentiles{}) {
		t.Error("percentiles of nothing are not zero")
	}
}

func TestFindLeaks(t *testing.T) {
	t.Parallel()
	secrets := []string{"s3cr3t-webhook-value"}
	text := strings.Join([]string{
		`{"msg":"fine"}`,
		`ready {"webhookSecret":"s3cr3t-webhook-value"}`,
		`{"token":"ghs_abcdefghijklmnopqrstuvwxyz0123456789"}`,
		`-----BEGIN RSA PRIVATE KEY-----`,
		`Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig`,
		`value s3cr3t-webhook-value here`,
	}, "\n")
	leaks := FindLeaks("log", text, secrets, func(l string) bool { return strings.HasPrefix(l, "ready ") })
	var lines []int
	for _, l := range leaks {
		lines = append(lines, l.Line)
	}
	if !reflect.DeepEqual(lines, []int{3, 4, 5, 6}) {
		t.Errorf("leaks on lines %v; want 3, 4, 5, 6 (the ready line exempt)", lines)
	}
}

// The fault proxy's injected faults are what the SDK expects: 500s it
// retries, never on its last attempt, and spot capacity errors CreateFleet
// decodes per override.
func TestFaultProxy(t *testing.T) {
	t.Parallel()
	var backendCalls atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendCalls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		_, _ = io.WriteString(w, `{}`)
	}))
	defer backend.Close()
	router, err := newAWSRouter(nil, backend.URL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p, err := startFaultProxy(router, 1, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	cfg := aws.Config{
		Region: "us-east-1", BaseEndpoint: aws.String(p.url),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
		RetryMaxAttempts: awsconfig.MaxAttempts,
	}
	ctx := context.Background()

	// Rate 1: every attempt but the last fails with 500; the call succeeds.
	db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.RetryMaxAttempts = 3 })
	start := time.Now()
	if _, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"), Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "x"}}}); err != nil {
		t.Fatalf("GetItem through the proxy: %v", err)
	}
	if got := backendCalls.Load(); got != 1 {
		t.Errorf("backend saw %d requests; want 1 (the last attempt)", got)
	}
	if st := p.stats(); st.Injected500 != 2 {
		t.Errorf("stats %+v; want 2 injected 500s (3 attempts)", st)
	}
	t.Logf("3 attempts took %s", time.Since(start))

	// A spot CreateFleet gets one InsufficientInstanceCapacity per override
	// and no instance.
	api := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	out, err := api.CreateFleet(ctx, &ec2.CreateFleetInput{
		Type: ec2types.FleetTypeInstant,
		TargetCapacitySpecification: &ec2types.TargetCapacitySpecificationRequest{
			TotalTargetCapacity: aws.Int32(1), DefaultTargetCapacityType: ec2types.DefaultTargetCapacityTypeSpot,
		},
		LaunchTemplateConfigs: []ec2types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &ec2types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateId: aws.String("lt-1"), Version: aws.String("$Latest")},
			Overrides: []ec2types.FleetLaunchTemplateOverridesRequest{
				{InstanceType: "t3.large", SubnetId: aws.String("subnet-a"), AvailabilityZone: aws.String("us-east-1a")},
				{InstanceType: "m5.large", SubnetId: aws.String("subnet-b"), AvailabilityZone: aws.String("us-east-1b")},
			},
		}},
	})
	if err != nil {
		t.Fatalf("CreateFleet: %v", err)
	}
	if len(out.Instances) != 0 || len(out.Errors) != 2 {
		t.Fatalf("CreateFleet answered %d instances, %d errors; want 0 and 2", len(out.Instances), len(out.Errors))
	}
	for i, e := range out.Errors {
		o := e.LaunchTemplateAndOverrides.Overrides
		if !fleet.IsCapacityError(aws.ToString(e.ErrorCode)) || e.Lifecycle != ec2types.InstanceLifecycleSpot {
			t.Errorf("error %d: code %s lifecycle %s; want a spot capacity error", i, aws.ToString(e.ErrorCode), e.Lifecycle)
		}
		wantType, wantAZ := []string{"t3.large", "m5.large"}[i], []string{"us-east-1a", "us-east-1b"}[i]
		if string(o.InstanceType) != wantType || aws.ToString(o.AvailabilityZone) != wantAZ {
			t.Errorf("error %d names %s in %s; want %s in %s", i, o.InstanceType, aws.ToString(o.AvailabilityZone), wantType, wantAZ)
		}
	}
	if st := p.stats(); st.InjectedSpot != 1 || st.SpotRequests != 1 {
		t.Errorf("stats %+v; want one spot request, answered with capacity errors", st)
	}
}

// The router sends each request to its service's endpoint, as the SDK's
// per-service endpoints would, and everything else to the fallback.
func TestAWSRouter(t *testing.T) {
	t.Parallel()
	type hit struct{ backend, target string }
	hits := make(chan hit, 4)
	backend := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			hits <- hit{name, r.Header.Get("X-Amz-Target")}
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			_, _ = io.WriteString(w, `{}`)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	db, other := backend("dynamodb"), backend("other")
	router, err := newAWSRouter(map[string]string{"dynamodb": db.URL}, other.URL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(router)
	defer front.Close()
	cfg := aws.Config{
		Region: "us-east-1", BaseEndpoint: aws.String(front.URL),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
	}
	ctx := context.Background()
	if _, err := dynamodb.NewFromConfig(cfg).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "x"}}}); err != nil {
		t.Fatalf("GetItem through the router: %v", err)
	}
	if h := <-hits; h.backend != "dynamodb" || !strings.HasSuffix(h.target, ".GetItem") {
		t.Errorf("GetItem reached %+v; want the dynamodb endpoint", h)
	}
	_, _ = ec2.NewFromConfig(cfg).DescribeRegions(ctx, &ec2.DescribeRegionsInput{}) // the fake's {} is no EC2 answer
	if h := <-hits; h.backend != "other" {
		t.Errorf("an EC2 request reached %q; want the fallback (no EC2 endpoint configured)", h.backend)
	}
	if _, err := newAWSRouter(nil, "not a url", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a fallback that is not a URL was accepted")
	}
}

// A TransactWriteItems is one call, and to IAM its items: a PutItem and an
// UpdateItem on their own tables, which the sufficiency check must find
// granted.
func TestTransactionRecordedAsItsItems(t *testing.T) {
	t.Parallel()
	p := &faultProxy{ops: map[string]int64{}}
	p.setResources(map[string]string{"jobs": "jobs-table", "jit": "jit-table"}, nil)
	body := []byte(`{"TransactItems":[{"Update":{"TableName":"jobs","Key":{}}},{"Put":{"TableName":"jit","Item":{}}}]}`)
	p.count("scaleup", "dynamodb.TransactWriteItems", jsonTarget{}, body, nil)
	st := p.stats()
	if got := st.Calls["scaleup"]; len(got) != 1 || got["dynamodb.TransactWriteItems"] != 1 {
		t.Errorf("calls %v; want one TransactWriteItems", got)
	}
	if got := st.ByFunction["scaleup"]; len(got) != 2 || got["dynamodb.PutItem"] != 1 || got["dynamodb.UpdateItem"] != 1 {
		t.Errorf("IAM operations %v; want PutItem and UpdateItem", got)
	}
	if got := st.ByResource["scaleup"]; got["dynamodb.PutItem jit-table"] != 1 || got["dynamodb.UpdateItem jobs-table"] != 1 {
		t.Errorf("resources %v; want PutItem on the JIT table, UpdateItem on the jobs table", got)
	}
}

package runners_test

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/runners"
)

// fakeBuilder zips the import path instead of a binary: for tests that
// need archives but not real Lambdas.
func fakeBuilder(t *testing.T) runners.Builder {
	dir := t.TempDir()
	return runners.BuilderFunc(func(_ context.Context, importPath string) (runners.Archive, error) {
		z, err := runners.ZipBootstrap([]byte(importPath))
		if err != nil {
			return runners.Archive{}, err
		}
		return runners.WriteArchive(dir, z)
	})
}

// sampleArgs returns valid arguments creating a VPC and both secrets.
func sampleArgs(t *testing.T) *runners.RunnersArgs {
	return &runners.RunnersArgs{
		NamePrefix: "jitr",
		GitHub: runners.GitHubArgs{
			AppID: 42, Scope: "org",
			PrivateKey:    pulumi.ToSecret(pulumi.String("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----")).(pulumi.StringOutput),
			WebhookSecret: pulumi.ToSecret(pulumi.String("hook-secret")).(pulumi.StringOutput),
		},
		MaxRunners: 10,
		Profiles: map[string]runners.Profile{
			"default": {InstanceTypes: []string{"t3.large"}, ImageID: pulumi.String("ami-0123456789abcdef0")},
			"arm":     {InstanceTypes: []string{"c7g.large"}, Arch: "arm64", ImageID: pulumi.String("ami-0fedcba9876543210")},
		},
		Builder: fakeBuilder(t),
	}
}

// run runs program under fresh mocks and fails the test on error.
func run(t *testing.T, program pulumi.RunFunc) *plan.Mocks {
	t.Helper()
	m := plan.NewMocks()
	if err := plan.Run(program, m); err != nil {
		t.Fatalf("program failed: %v", err)
	}
	return m
}

// deploy runs one component with args.
func deploy(t *testing.T, args *runners.RunnersArgs) *plan.Mocks {
	t.Helper()
	return run(t, func(ctx *pulumi.Context) error {
		_, err := runners.NewRunners(ctx, "ci", args)
		return err
	})
}

func ofType(m *plan.Mocks, typ string) []plan.Resource {
	var out []plan.Resource
	for _, r := range m.Resources() {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func one(t *testing.T, m *plan.Mocks, typ, name string) plan.Resource {
	t.Helper()
	for _, r := range ofType(m, typ) {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no %s named %s; have %v", typ, name, names(ofType(m, typ)))
	return plan.Resource{}
}

func names(rs []plan.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

// inputs returns a resource's inputs as plain data (secrets as "[secret]").
func inputs(r plan.Resource) map[string]any {
	return plan.Entries([]plan.Resource{r})[0].Inputs
}

func str(t *testing.T, r plan.Resource, key string) string {
	t.Helper()
	v, ok := r.Inputs[resource.PropertyKey(key)]
	if !ok {
		t.Fatalf("%s %s has no input %q", r.Type, r.Name, key)
	}
	for v.IsOutput() {
		v = v.OutputValue().Element
	}
	if v.IsSecret() {
		v = v.SecretValue().Element
	}
	if !v.IsString() {
		t.Fatalf("%s %s input %q is %v, not a string", r.Type, r.Name, key, v)
	}
	return v.StringValue()
}

// policyDoc parses a policy input.
func policyDoc(t *testing.T, r plan.Resource, key string) runners.PolicyDocument {
	t.Helper()
	var d runners.PolicyDocument
	dec := json.NewDecoder(strings.NewReader(str(t, r, key)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s %s: %s is not a policy document: %v", r.Type, r.Name, key, err)
	}
	return d
}

// statement returns the statement with sid.
func statement(t *testing.T, d runners.PolicyDocument, sid string) runners.Statement {
	t.Helper()
	for _, s := range d.Statement {
		if s.Sid == sid {
			return s
		}
	}
	t.Fatalf("no statement %q", sid)
	return runners.Statement{}
}

// outputs returns a resource's outputs (inputs plus what the mocks computed).
func outputs(r plan.Resource) map[string]any { return plan.Plain(r.Outputs) }

// at walks plain data along keys (strings for objects, ints for lists).
func at(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %T is not an object", path, v)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: %v has no element %d", path, v, k)
			}
			v = l[k]
		}
	}
	return v
}

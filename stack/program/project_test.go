package program_test

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/program"
)

const (
	projectFile = "../../Pulumi.yaml"
	devStack    = "../../Pulumi.dev.yaml"
)

// TestProjectFile: Pulumi.yaml is a valid project that declares exactly the
// keys the program reads, each described and defaulted; secrets carry no
// type (Pulumi would validate their plaintext default against secret: true).
func TestProjectFile(t *testing.T) {
	t.Parallel()
	proj, err := workspace.LoadProject(projectFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := proj.Validate(); err != nil {
		t.Fatal(err)
	}
	if proj.Name != "jit-runners" || proj.Runtime.Name() != "go" || proj.Main != "stack/" {
		t.Errorf("project %s runtime %s main %s", proj.Name, proj.Runtime.Name(), proj.Main)
	}
	var declared, secret []string
	for key, c := range proj.Config {
		declared = append(declared, key)
		if c.Description == "" {
			t.Errorf("%s has no description", key)
		}
		if c.Default == nil {
			t.Errorf("%s has no default", key)
		}
		if c.Secret {
			secret = append(secret, key)
			if c.IsExplicitlyTyped() || c.Default != "" {
				t.Errorf("secret %s must be untyped with an empty default", key)
			}
			continue
		}
		if !c.IsExplicitlyTyped() {
			t.Errorf("%s has no type", key)
		} else if !workspace.ValidateConfigValue(c.TypeName(), c.Items, c.Default) {
			t.Errorf("%s: default %v is not a %s", key, c.Default, c.TypeName())
		}
	}
	// The digests Pulumi.yaml quotes are the ones the stack fills in.
	if v := proj.Config["runnerVersion"].Default; v != config.DefaultRunnerVersion {
		t.Errorf("runnerVersion default %v, want %s", v, config.DefaultRunnerVersion)
	}
	for _, digest := range []string{config.DefaultRunnerSHA256X64, config.DefaultRunnerSHA256ARM64} {
		if !strings.Contains(proj.Config["runnerSha256"].Description, digest) {
			t.Errorf("runnerSha256's description does not quote %s", digest)
		}
	}
	sort.Strings(declared)
	sort.Strings(secret)
	if want := program.Keys(); !reflect.DeepEqual(declared, want) {
		t.Errorf("Pulumi.yaml declares %v\nthe program reads %v", declared, want)
	}
	if want := append([]string(nil), program.SecretKeys...); !reflect.DeepEqual(secret, sorted(want)) {
		t.Errorf("secret keys %v, want %v", secret, want)
	}
}

// TestDefaultsMatchProject: a stack that sets every key to its Pulumi.yaml
// default deploys exactly what a stack that sets nothing deploys, so the
// defaults documented in Pulumi.yaml are the program's.
func TestDefaultsMatchProject(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "Pulumi.empty.yaml")
	if err := os.WriteFile(empty, []byte("config: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defaults, secret, err := plan.StackConfig(projectFile, empty)
	if err != nil {
		t.Fatal(err)
	}
	withDefaults := required()
	for k, v := range defaults {
		if _, ok := withDefaults[k]; !ok {
			withDefaults[k] = v
		}
	}
	if len(withDefaults) != len(program.Keys()) {
		t.Fatalf("%d keys set, %d declared", len(withDefaults), len(program.Keys()))
	}
	a := entries(t, mustRun(t, withDefaults, secret))
	b := entries(t, mustRun(t, required(), secret))
	if a != b {
		t.Error("setting the Pulumi.yaml defaults changes the deployment")
		diffLines(t, a, b)
	}
}

// TestDevStackFile: Pulumi.dev.yaml loads, and its commented example,
// uncommented, is a configuration that deploys.
func TestDevStackFile(t *testing.T) {
	t.Parallel()
	proj, err := workspace.LoadProject(projectFile)
	if err != nil {
		t.Fatal(err)
	}
	sink := diag.DefaultSink(os.Stderr, os.Stderr, diag.FormatOptions{Color: colors.Never})
	st, err := workspace.LoadProjectStack(sink, proj, devStack)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Config) != 0 {
		t.Errorf("Pulumi.dev.yaml sets %d keys; its examples must stay commented out", len(st.Config))
	}
	raw, err := os.ReadFile(devStack)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(l, "  # "); ok {
			l = "  " + rest
		}
		lines = append(lines, l)
	}
	uncommented := filepath.Join(t.TempDir(), "Pulumi.dev.yaml")
	if err := os.WriteFile(uncommented, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, secret, err := plan.StackConfig(projectFile, uncommented)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["aws:region"] == "" || !strings.Contains(cfg["jit-runners:profiles"], "g5.xlarge") || !strings.Contains(cfg["jit-runners:ami"], "prebaked") {
		t.Fatalf("the uncommented example sets %v", cfg)
	}
	cfg["jit-runners:githubPrivateKey"] = testKey
	cfg["jit-runners:githubWebhookSecret"] = "hook"
	mustRun(t, cfg, secret)
}

func entries(t *testing.T, m *plan.Mocks) string {
	t.Helper()
	var b strings.Builder
	if err := plan.Write(&b, m.Resources()); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func diffLines(t *testing.T, a, b string) {
	t.Helper()
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			t.Errorf("first difference at line %d:\n%s\n%s", i+1, al[i], bl[i])
			return
		}
	}
}

func sorted(s []string) []string {
	sort.Strings(s)
	return s
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/program"
	"github.com/jit-runners/jit-runners/stack/runners"
)

func TestPlan(t *testing.T) {
	dir := t.TempDir()
	o := program.Options{Builder: runners.BuilderFunc(func(_ context.Context, importPath string) (runners.Archive, error) {
		z, err := runners.ZipBootstrap([]byte(importPath))
		if err != nil {
			return runners.Archive{}, err
		}
		return runners.WriteArchive(dir, z)
	})}
	first, second := filepath.Join(dir, "a", "plan.json"), filepath.Join(dir, "b", "plan.json")
	for _, out := range []string{first, second} {
		if err := run("../../../Pulumi.yaml", "../../testdata/plan.yaml", out, o); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := os.ReadFile(first)
	b, _ := os.ReadFile(second)
	if !bytes.Equal(a, b) {
		t.Error("two plans of the same program differ")
	}

	// The contract: {"resources": [{"type", "name", "parent", "inputs"}]},
	// camelCase inputs, secrets replaced.
	var doc map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(a, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || len(doc["resources"]) < 50 {
		t.Fatalf("plan has keys %d and %d resources", len(doc), len(doc["resources"]))
	}
	for _, r := range doc["resources"] {
		if len(r) != 4 || r["type"] == nil || r["name"] == nil || r["parent"] == nil || r["inputs"] == nil {
			t.Fatalf("resource entry %s", r)
		}
	}
	text := string(a)
	for _, want := range []string{`"visibilityTimeoutSeconds": 360`, `"secretString": "[secret]"`, `"httpTokens": "required"`,
		`"type": "jit-runners:index:Runners"`, `"functionResponseTypes": [`} {
		if !strings.Contains(text, want) {
			t.Errorf("plan lacks %s", want)
		}
	}
	for _, leak := range []string{"not-a-real-key-only-a-placeholder", "not-a-real-webhook-secret"} {
		if strings.Contains(text, leak) {
			t.Errorf("plan contains the secret %q", leak)
		}
	}
	if !strings.Contains(text, plan.SecretValue) {
		t.Error("no secret was replaced")
	}
}

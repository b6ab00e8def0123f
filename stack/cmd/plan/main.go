// Command plan runs the jit-runners Pulumi program against mocks (no AWS, no
// Pulumi CLI) with a stack configuration file and writes every resource it
// would create, with its inputs, to a JSON file: `make plan`.
//
//	go run ./stack/cmd/plan -config stack/testdata/plan.yaml -out out/plan.json
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jit-runners/jit-runners/stack/plan"
	"github.com/jit-runners/jit-runners/stack/program"
)

func main() {
	project := flag.String("project", "Pulumi.yaml", "the Pulumi project file (config declarations and defaults)")
	stackFile := flag.String("config", "stack/testdata/plan.yaml", "a stack configuration file (plaintext values)")
	out := flag.String("out", "out/plan.json", "where to write the plan")
	flag.Parse()
	if err := run(*project, *stackFile, *out, program.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "plan:", err)
		os.Exit(1)
	}
}

func run(project, stackFile, out string, o program.Options) error {
	cfg, secret, err := plan.StackConfig(project, stackFile)
	if err != nil {
		return err
	}
	m := plan.NewMocks()
	if err := plan.Run(program.New(o), m, plan.WithConfig(cfg, secret)); err != nil {
		return err
	}
	var buf bytes.Buffer
	resources := m.Resources()
	if err := plan.Write(&buf, resources); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("plan: %d resources written to %s\n", len(resources), out)
	return nil
}

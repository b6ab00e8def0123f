// Command stack is the jit-runners Pulumi program (Pulumi.yaml: main: stack/).
// It only wires: package program reads the configuration and creates the
// deployment (package runners).
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/stack/program"
)

func main() { pulumi.Run(program.Run) }

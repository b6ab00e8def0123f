package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// RIEBinary is the Lambda Runtime Interface Emulator command; RIE overrides it.
const RIEBinary = "aws-lambda-rie"

// InvokePath is the emulator's invocation endpoint.
const InvokePath = "/2015-03-31/functions/function/invocations"

// ModuleRoot returns the directory holding go.mod, found upwards from the
// working directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FindRIE locates aws-lambda-rie: $RIE, then PATH, then the module's .tools/bin.
func FindRIE() (string, error) {
	if p := os.Getenv("RIE"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(RIEBinary); err == nil {
		return p, nil
	}
	if root, err := ModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", RIEBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (run `make tools`)", RIEBinary)
}

// BuildFlags are the flags `make build` compiles the Lambdas with.
var BuildFlags = []string{"-trimpath", "-tags", "lambda.norpc", "-ldflags", "-s -w -buildid="}

var builds sync.Map // package path -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// BuildLambda compiles the Lambda main package pkg (e.g.
// "./runtime/cmd/webhook", relative to the module root) for this machine with
// the production flags, once per test binary, and returns the binary's path.
func BuildLambda(tb testing.TB, pkg string) string {
	tb.Helper()
	v, _ := builds.LoadOrStore(pkg, &buildResult{})
	r := v.(*buildResult)
	r.once.Do(func() {
		dir, err := os.MkdirTemp("", "jitr-lambda-")
		if err != nil {
			r.err = err
			return
		}
		r.path, r.err = Build(context.Background(), pkg, dir)
	})
	if r.err != nil {
		tb.Fatal(r.err)
	}
	return r.path
}

// RIE is a Lambda function running under the Runtime Interface Emulator.
type RIE struct {
	// URL is the emulator's base URL; Invoke posts to URL+InvokePath.
	URL string

	cmd    *exec.Cmd
	done   chan struct{}
	output *testkit.Buffer
}

// StartRIE runs bootstrap under the emulator on loopback ports with env added
// to this process's environment, and returns once the emulator listens; its
// output is kept for Output.
func StartRIE(ctx context.Context, bootstrap string, env []string) (*RIE, error) {
	return StartRIEWith(ctx, bootstrap, RIEOptions{Env: append(os.Environ(), env...)})
}

// Invoke sends one event and returns the function's response payload.
func (r *RIE) Invoke(ctx context.Context, event []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+InvokePath, bytes.NewReader(event))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("invoke: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("invoke: status %d: %s", resp.StatusCode, b)
	}
	return b, nil
}

// Output returns everything the emulator and the function printed so far.
func (r *RIE) Output() string { return r.output.String() }

// Close stops the emulator and the function (SIGKILL after 3 s).
func (r *RIE) Close() error {
	r.Stop(3 * time.Second)
	return nil
}

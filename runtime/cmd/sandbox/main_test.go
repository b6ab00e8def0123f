package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// TestCLIContract runs the built command as a user would: --listen
// 127.0.0.1:0 picks a free port, the one ready line carries the endpoints
// and the generated webhook secret, --config is deep-merged over the
// generated configuration, the endpoint answers signed deliveries, and
// SIGTERM stops every process the sandbox started and exits 0 within 4 s.
func TestCLIContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole sandbox")
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sandbox")
	build := exec.Command("go", "build", "-o", bin, "./runtime/cmd/sandbox")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// The contract is a ready line within 120 s on a warm build cache: warm
	// it with the same builds the sandbox makes, so a cold CI cache (and
	// the packages compiling beside this test) cannot eat the budget.
	for _, fn := range []string{"webhook", "scaleup", "scaledown"} {
		testenv.BuildLambda(t, "./runtime/cmd/"+fn)
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, []byte(`{"maxRunners": 7, "scaleDown": {"bootTimeoutSeconds": 33},
		"profiles": {"default": {"volumeGiB": 40}}, "logLevel": "debug"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, "logs")

	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--config", overlay, "--log-dir", logDir,
		"--sweep-interval", "1h", "--events", filepath.Join(dir, "events.jsonl"))
	cmd.Dir = root // the Lambdas are built from the module
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.Buffer // written by exec's copier while the test reads it
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	finished := false
	defer func() {
		if !finished {
			_ = cmd.Process.Kill()
		}
	}()

	// The ready line, within 120 s.
	var readyLine string
	timeout := time.After(120 * time.Second)
	for readyLine == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("sandbox exited before the ready line:\n%s", stderr.String())
			}
			if strings.HasPrefix(l, "ready ") {
				readyLine = l
			}
		case <-timeout:
			t.Fatalf("no ready line within 120 s:\n%s", stderr.String())
		}
	}
	t.Logf("ready after %s", time.Since(start).Round(time.Millisecond))
	var ready map[string]string
	if err := json.Unmarshal([]byte(strings.TrimPrefix(readyLine, "ready ")), &ready); err != nil {
		t.Fatalf("ready line %q: %v", readyLine, err)
	}
	for _, k := range []string{"webhook", "aws", "github", "webhookSecret"} {
		if ready[k] == "" {
			t.Errorf("ready line lacks %q: %s", k, readyLine)
		}
	}
	if len(ready) != 4 {
		t.Errorf("ready line has keys %v; want webhook, aws, github, webhookSecret", ready)
	}
	u, err := url.Parse(ready["webhook"])
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" || u.Port() == "8080" || u.Path != sandbox.WebhookPath {
		t.Errorf("webhook URL %q: want http://127.0.0.1:<free port>%s", ready["webhook"], sandbox.WebhookPath)
	}

	// The endpoint is API Gateway in front of the webhook Lambda.
	secret := []byte(ready["webhookSecret"])
	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	if code, resp := post(t, ready["webhook"], "ping", secret, body); code != http.StatusOK || !strings.Contains(resp, "pong") {
		t.Errorf("signed ping: %d %s; want 200 pong", code, resp)
	}
	if code, _ := post(t, ready["webhook"], "ping", []byte("wrong secret"), body); code != http.StatusUnauthorized {
		t.Errorf("ping with a wrong signature: %d; want 401", code)
	}
	if resp, err := http.Get(strings.TrimSuffix(ready["webhook"], sandbox.WebhookPath) + "/other"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /other: %d; want 404", resp.StatusCode)
		}
	}
	queued := ghfake.WorkflowJobPayload(ghfake.WorkflowJobEvent{Action: "queued",
		Job: ghfake.Job{ID: 777, Owner: sandbox.Owner, Repo: sandbox.Repo, Labels: []string{"self-hosted", "linux", "x64"}}, InstallationID: sandbox.InstallationID})
	if code, resp := post(t, ready["webhook"], "workflow_job", secret, queued); code != http.StatusOK || !strings.Contains(resp, `"queued"`) {
		t.Errorf("signed queued delivery: %d %s; want 200 queued", code, resp)
	}

	// --config was deep-merged over the generated configuration.
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(logDir, sandbox.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	get := func(path string) any {
		var v any = cfg
		for _, k := range strings.Split(path, ".") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		return v
	}
	for path, want := range map[string]any{
		"maxRunners": 7.0, "scaleDown.bootTimeoutSeconds": 33.0, "profiles.default.volumeGiB": 40.0, "logLevel": "debug",
		// kept from the generated configuration:
		"scaleDown.completedGraceSeconds": 120.0, "profiles.default.imageId": sandbox.ImageID, "github.scope": "org",
	} {
		if got := get(path); got != want {
			t.Errorf("effective config %s = %v; want %v", path, got, want)
		}
	}
	for _, path := range []string{"github.appId", "github.privateKeySecretArn", "queueUrl", "launch.launchTemplateId", "launch.jitConfigTableName"} {
		if get(path) == nil || get(path) == "" {
			t.Errorf("effective config lacks %s", path)
		}
	}

	// SIGTERM: every process gone, exit 0, within 4 s.
	children := descendants(cmd.Process.Pid)
	if len(children) < 4 {
		t.Errorf("only %d descendant processes (moto and 3 emulators at least): %v", len(children), children)
	}
	go func() { exited <- cmd.Wait() }()
	// Drain stdout so the sandbox never blocks on a full pipe.
	go func() {
		for range lines {
		}
	}()
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		finished = true
		took := time.Since(sent)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; want status 0\n%s", err, stderr.String())
		}
		if took > 4*time.Second {
			t.Errorf("exit took %s after SIGTERM; want <= 4s", took)
		}
		t.Logf("exited %s after SIGTERM", took.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\n%s", stderr.String())
	}
	for _, pid := range children {
		if alive(pid) {
			t.Errorf("process %d (%s) still alive after the sandbox exited", pid, comm(pid))
		}
	}

	// No secret in any process's output; the ready line is the one place the
	// generated webhook secret may appear.
	files, _ := filepath.Glob(filepath.Join(logDir, "*.log"))
	if len(files) < 4 {
		t.Errorf("log files %v; want moto's and one per function", files)
	}
	for _, f := range append(files, "stderr") {
		text := stderr.String()
		if f != "stderr" {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			text = string(b)
		}
		for _, l := range sandbox.FindLeaks(filepath.Base(f), text, []string{string(secret)}, nil) {
			t.Errorf("secret in %s line %d: %s", l.File, l.Line, l.What)
		}
	}
}

func post(t *testing.T, u, event string, secret, body []byte) (int, string) {
	t.Helper()
	req, err := ghfake.NewWebhookRequest(context.Background(), u, event, secret, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// descendants lists pid's descendant processes.
func descendants(pid int) []int {
	var out []int
	for _, c := range testenv.ChildPIDs(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// alive reports a process that exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

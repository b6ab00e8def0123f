// Package testenv holds the fixtures the tests, benchmarks and the sandbox
// share: a moto server (the AWS APIs), the GitHub API fake (package ghfake)
// and the Lambda Runtime Interface Emulator.
package testenv

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// motoLauncher starts moto's own server with DynamoDB item writes made
// atomic, as they are in AWS (see the script's docstring).
//
//go:embed moto_server.py
var motoLauncher []byte

// Python is the interpreter that has moto installed; MOTO_PYTHON overrides it.
const Python = "python3"

// Moto is a running moto server on a loopback port.
type Moto struct {
	// URL is the endpoint, e.g. http://127.0.0.1:41234.
	URL string

	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	script  string
	images  string
}

// StartMoto starts moto_server on a free 127.0.0.1 port and waits until it
// answers. The server dies with this process (parent-death signal) even if
// Close is never called. Its output goes to logDir/logName (logDir "" =
// discard; logName "" = moto.log).
func StartMoto(ctx context.Context, logDir, logName string) (*Moto, error) {
	if logName == "" {
		logName = "moto.log"
	}
	py := os.Getenv("MOTO_PYTHON")
	if py == "" {
		py = Python
	}
	path, err := exec.LookPath(py)
	if err != nil {
		return nil, fmt.Errorf("%s not found: %w", py, err)
	}
	if out, err := exec.Command(path, "-c", "import moto.server").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("moto is not installed for %s (run `make tools`, which installs moto[server] with pip): %w: %s", path, err, out)
	}
	script, err := writeLauncher()
	if err != nil {
		return nil, err
	}
	images, err := writeImages()
	if err != nil {
		_ = os.Remove(script)
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		m, err := startMotoOn(ctx, path, script, images, port, logDir, logName)
		if err == nil {
			return m, nil
		}
		lastErr = err
	}
	_ = os.Remove(script)
	_ = os.Remove(images)
	return nil, lastErr
}

func writeLauncher() (string, error) {
	f, err := os.CreateTemp("", "jitr-moto-*.py")
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write(motoLauncher); err != nil {
		return "", err
	}
	return f.Name(), nil
}

func startMotoOn(ctx context.Context, python, script, images string, port int, logDir, logName string) (*Moto, error) {
	cmd := exec.Command(python, script, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "MOTO_AMIS_PATH="+images)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	m := &Moto{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{}), script: script, images: images}
	if logDir != "" {
		m.logPath = filepath.Join(logDir, logName)
		f, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto: %w", err)
	}
	go func() { _ = cmd.Wait(); close(m.done) }()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/moto-api/", nil)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode < 500 {
				return m, nil
			}
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("moto exited during start-up (port %d); see %s", port, m.logPath)
		case <-ctx.Done():
			_ = m.Close()
			return nil, fmt.Errorf("moto did not answer on port %d: %w", port, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Close stops the server and waits for it to exit.
func (m *Moto) Close() error {
	if m == nil || m.cmd.Process == nil {
		return nil
	}
	defer func() { _ = os.Remove(m.script); _ = os.Remove(m.images) }()
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
	}
	return nil
}

// Env returns the environment that points the AWS SDK (and awscli) at m with
// dummy credentials.
func (m *Moto) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + m.URL,
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var shared struct {
	once sync.Once
	moto *Moto
	err  error
}

// MotoForTest returns the moto server shared by every test of this test
// binary, starting it on first use, and points the AWS SDK's standard
// environment (AWS_ENDPOINT_URL, credentials, region) at it for the whole
// process. Call Main from TestMain so the server stops when the tests end.
func MotoForTest(tb testing.TB) *Moto {
	tb.Helper()
	shared.once.Do(func() {
		shared.moto, shared.err = StartMoto(context.Background(), os.TempDir(), "")
		if shared.err != nil {
			return
		}
		for _, kv := range shared.moto.Env() {
			k, v, _ := strings.Cut(kv, "=")
			if err := os.Setenv(k, v); err != nil {
				shared.err = err
				return
			}
		}
	})
	if shared.err != nil {
		tb.Fatalf("moto: %v", shared.err)
	}
	return shared.moto
}

// Main runs the tests and then stops the shared servers. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if shared.moto != nil {
		_ = shared.moto.Close()
	}
	return code
}

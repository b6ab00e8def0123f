package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/functions"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

// Function names.
const (
	FuncWebhook   = "webhook"
	FuncScaleup   = "scaleup"
	FuncScaledown = "scaledown"
)

// functionSpec is one Lambda: its main package and the memory and timeout
// the stack gives it (stack/runners/args.go; the timeout of scaleup is
// queue.ScaleUp's).
type functionSpec struct {
	name      string
	pkg       string
	memoryMB  int
	timeoutS  int
	maxActive func(o *Options) int
}

var functionSpecs = []functionSpec{
	{name: FuncWebhook, pkg: "./runtime/cmd/webhook", memoryMB: functions.Webhook.MemoryMB, timeoutS: functions.Webhook.TimeoutSeconds,
		maxActive: func(o *Options) int { return o.WebhookConcurrency }},
	{name: FuncScaleup, pkg: "./runtime/cmd/scaleup", memoryMB: functions.Scaleup.MemoryMB, timeoutS: functions.Scaleup.TimeoutSeconds,
		maxActive: func(o *Options) int { return o.ScaleupConcurrency }},
	// Scaledown has a reserved concurrency of 1 in the stack.
	{name: FuncScaledown, pkg: "./runtime/cmd/scaledown", memoryMB: functions.Scaledown.MemoryMB, timeoutS: functions.Scaledown.TimeoutSeconds,
		maxActive: func(*Options) int { return 1 }},
}

// SpecOf returns the memory (MB) and timeout (s) of a function.
func SpecOf(name string) (memoryMB, timeoutS int) {
	for _, f := range functionSpecs {
		if f.name == name {
			return f.memoryMB, f.timeoutS
		}
	}
	return 0, 0
}

// function runs one Lambda as a pool of emulator processes, each serving one
// invocation at a time like one execution environment. The pool grows on
// demand (a cold start) up to max.
type function struct {
	spec   functionSpec
	bin    string
	env    []string
	logDir string
	log    *slog.Logger
	client *http.Client

	mu       sync.Mutex
	idle     chan *environment
	all      []*environment
	max      int
	started  int
	starting int
	stopped  bool
}

// environment is one emulator process and its log file.
type environment struct {
	rie  *testenv.RIE
	file *os.File
	n    int
}

func (s *Sandbox) startLambdas(ctx context.Context, bins map[string]string) error {
	cfgJSON, err := s.cfg.Marshal()
	if err != nil {
		return err
	}
	id, secret, token := s.awsCredentials()
	for _, spec := range functionSpecs {
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"TZ=UTC",
			// Every AWS call of the Lambdas goes through the fault proxy.
			"AWS_ENDPOINT_URL=" + s.proxy.url,
			"AWS_REGION=" + s.region,
			"AWS_DEFAULT_REGION=" + s.region,
			"AWS_ACCESS_KEY_ID=" + s.functionKey(id, spec.name),
			"AWS_SECRET_ACCESS_KEY=" + secret,
			"AWS_EC2_METADATA_DISABLED=true",
			"AWS_CONFIG_FILE=" + os.DevNull,
			"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
			"AWS_LAMBDA_FUNCTION_NAME=" + s.cfg.NamePrefix + "-" + spec.name,
			"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(spec.memoryMB),
			"AWS_LAMBDA_FUNCTION_TIMEOUT=" + strconv.Itoa(spec.timeoutS),
			config.EnvVar + "=" + string(cfgJSON),
		}
		if token != "" {
			env = append(env, "AWS_SESSION_TOKEN="+token)
		}
		f := &function{
			spec: spec, bin: bins[spec.name], env: env, logDir: s.logDir, max: max(spec.maxActive(&s.opts), 1),
			log:    s.log.With(slog.String("function", spec.name)),
			client: &http.Client{Timeout: time.Duration(spec.timeoutS+5) * time.Second},
		}
		f.idle = make(chan *environment, f.max)
		// One environment each up front, so the emulators are listening
		// when the ready line is printed; the functions start on first use.
		e, err := f.newEnvironment(ctx)
		if err != nil {
			return err
		}
		f.idle <- e
		s.lambdas[spec.name] = f
	}
	return nil
}

func (f *function) newEnvironment(ctx context.Context) (*environment, error) {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return nil, errors.New("function stopped")
	}
	f.started++
	n := f.started
	f.mu.Unlock()
	path := filepath.Join(f.logDir, f.spec.name+"-"+strconv.Itoa(n)+".log")
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	rie, err := testenv.StartRIEWith(ctx, f.bin, testenv.RIEOptions{Env: f.env, Output: file})
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("start %s under the emulator: %w", f.spec.name, err)
	}
	e := &environment{rie: rie, file: file, n: n}
	f.mu.Lock()
	f.all = append(f.all, e)
	f.mu.Unlock()
	f.log.Debug("execution environment started", slog.Int("n", n), slog.Int("pid", rie.PID()))
	return e, nil
}

// acquire takes an idle environment, starts one while the pool is below its
// maximum, or waits for one.
func (f *function) acquire(ctx context.Context) (*environment, error) {
	for {
		select {
		case e := <-f.idle:
			return e, nil
		default:
		}
		f.mu.Lock()
		grow := !f.stopped && f.live()+f.starting < f.max
		if grow {
			f.starting++
		}
		f.mu.Unlock()
		if grow {
			e, err := f.newEnvironment(ctx)
			f.mu.Lock()
			f.starting--
			f.mu.Unlock()
			return e, err
		}
		// An environment discarded meanwhile frees a place: look again soon.
		select {
		case e := <-f.idle:
			return e, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// live counts environments not yet exited. The caller holds f.mu.
func (f *function) live() int {
	n := 0
	for _, e := range f.all {
		select {
		case <-e.rie.Exited():
		default:
			n++
		}
	}
	return n
}

// invoke sends one event and returns the function's response payload. A
// failed environment (transport error, timeout, crash) is discarded, as
// Lambda discards an execution environment after a runtime failure.
func (f *function) invoke(ctx context.Context, event []byte) ([]byte, error) {
	e, err := f.acquire(ctx)
	if err != nil {
		return nil, err
	}
	out, err := f.post(ctx, e, event)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("execution environment discarded after a failed invocation", slog.Int("n", e.n), slog.String("error", err.Error()))
		}
		f.discard(e)
		return out, err
	}
	f.idle <- e
	return out, nil
}

func (f *function) post(ctx context.Context, e *environment, event []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.rie.URL+testenv.InvokePath, bytes.NewReader(event))
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", f.spec.name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", f.spec.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("invoke %s: emulator status %d", f.spec.name, resp.StatusCode)
	}
	if bytes.HasPrefix(b, []byte("Task timed out")) {
		return b, fmt.Errorf("invoke %s: %s", f.spec.name, b)
	}
	return b, nil
}

func (f *function) discard(e *environment) {
	e.rie.Stop(time.Second)
	_ = e.file.Close()
}

// pids returns the process ids of the running function processes (the
// bootstrap binaries, children of the emulators).
func (f *function) pids() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, e := range f.all {
		select {
		case <-e.rie.Exited():
			continue
		default:
		}
		out = append(out, testenv.ChildPIDs(e.rie.PID())...)
	}
	return out
}

// stop stops every environment, giving each grace to exit.
func (f *function) stop(grace time.Duration) {
	f.mu.Lock()
	f.stopped = true
	all := append([]*environment(nil), f.all...)
	f.mu.Unlock()
	grace = max(grace, 100*time.Millisecond)
	var wg sync.WaitGroup
	for _, e := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.rie.Stop(grace)
			_ = e.file.Close()
		}()
	}
	wg.Wait()
}

// Package sandbox runs the whole jit-runners control plane on one machine,
// with no AWS account and no GitHub App: moto plays AWS, the GitHub fake
// (testenv/ghfake) plays GitHub, the three Lambdas run as their compiled
// bootstrap binaries under the Lambda Runtime Interface Emulator, an SQS
// poller stands in for the event source mapping, a ticker for EventBridge
// Scheduler, and a small HTTP server for API Gateway. Simulated runner agents
// do on each launched instance what the real bootstrap and runner do.
//
// runtime/cmd/sandbox is its command line; the end-to-end tests and the
// benchmarks drive the same code in-process.
//
// What is the same as in AWS: the Lambdas' code and flags, their
// configuration document, the table, queue and launch-template definitions
// (state.JobsTable, jitstore.Table, queue.ScaleUp, launchspec.Runner with the
// rendered bootstrap as user-data). What differs: see docs/sandbox.md.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// Defaults of Options.
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultSweepInterval = 5 * time.Minute
	// DefaultRedeliveryInterval is how often the recovery of failed
	// deliveries runs, as the stack's schedule.
	DefaultRedeliveryInterval = time.Minute
	DefaultJobDuration        = 2 * time.Second
	DefaultLoadTimeout        = 10 * time.Minute
	// dispatchDelay is how long the fake GitHub collects idle runners and
	// queued jobs before assigning them (at random among the eligible
	// runners), so that runners coming online together swap jobs.
	dispatchDelay = 200 * time.Millisecond
	// busyLag is how long the fake's runner lists show a runner idle after
	// it took a job, as GitHub's busy flag lags (up to a minute there).
	busyLag = 10 * time.Second
	// WebhookPath is the webhook endpoint's path, as the stack's API
	// Gateway route (POST /webhook).
	WebhookPath = "/webhook"
)

// ExternalGitHub points the sandbox at a GitHub API it does not run: the
// external API plays GitHub (and sends in_progress and completed webhooks
// itself), so there are no simulated runners and no generated load.
type ExternalGitHub struct {
	APIURL        string
	AppID         int64
	PrivateKeyPEM []byte
	WebhookSecret string
}

// Options configure a sandbox. The zero value (plus Stdout) is a sandbox on
// DefaultListen with its own moto and GitHub fake.
type Options struct {
	// Listen is the webhook server's address; "127.0.0.1:0" picks a free port.
	Listen string
	// AWSEndpoint uses an AWS-compatible endpoint instead of starting moto.
	AWSEndpoint string
	// GitHub, when set, replaces the built-in GitHub fake.
	GitHub *ExternalGitHub
	// ConfigOverlay is a JSON object deep-merged over the generated
	// configuration (objects merge key by key; anything else replaces).
	ConfigOverlay []byte
	// SweepInterval is how often scaledown runs (default 5m).
	SweepInterval time.Duration
	// RedeliveryInterval is how often failed webhook deliveries are
	// recovered from the App's delivery log (default 1m; the configuration's
	// redelivery.enabled: false turns it off).
	RedeliveryInterval time.Duration
	// DeliveryFaultRate is the share of queued deliveries the webhook
	// endpoint (API Gateway's stand-in) refuses before the Lambda sees them,
	// half with 429 (throttled) and half with 500. GitHub never retries
	// them: only the recovery from the delivery log brings them back.
	DeliveryFaultRate float64
	// JobDuration is how long a simulated job runs (default 2s).
	JobDuration time.Duration
	// IdleTimeout is how long a runner waits for a job before its instance
	// shuts down (default bootstrap.DefaultIdleTimeout); it is rendered
	// into the launch template's bootstrap too.
	IdleTimeout time.Duration
	// VisibilityTimeout overrides the queue's visibility timeout for the
	// poller's receives (default queue.ScaleUp.VisibilityTimeoutSeconds):
	// a record scaleup reports as failed comes back after it.
	VisibilityTimeout time.Duration
	// FaultRate is the share of AWS calls (HTTP 500), GitHub calls (502
	// and some 403 retry-after) and spot CreateFleet requests (capacity
	// errors) that fail transiently. Built-in fake only for GitHub.
	FaultRate float64
	// Seed seeds every random choice (faults, duplicates); 0 means 1.
	Seed uint64
	// EventsFile, when set, receives one JSON object per job transition.
	EventsFile string
	// LogDir receives every process's output and the effective
	// configuration; empty means a new temporary directory.
	LogDir string
	// WebhookConcurrency and ScaleupConcurrency bound the emulator
	// processes per function (Lambda's concurrent executions); defaults 8
	// and queue.ScaleUp.MaxConcurrency.
	WebhookConcurrency int
	ScaleupConcurrency int
	// Stdout receives the ready line, the progress lines and the summary.
	Stdout io.Writer
	// Progress prints one line per job transition on Stdout.
	Progress bool
	// Logger receives the sandbox's own logs (default: discard).
	Logger *slog.Logger
	// HotPollInterval is how often a simulated hot pooled instance reads
	// its JIT entry (default HotPollInterval; the bootstrap polls every
	// second on AWS).
	HotPollInterval time.Duration
}

func (o *Options) defaults() {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.RedeliveryInterval <= 0 {
		o.RedeliveryInterval = DefaultRedeliveryInterval
	}
	if o.JobDuration <= 0 {
		o.JobDuration = DefaultJobDuration
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = bootstrap.DefaultIdleTimeout
	}
	if o.VisibilityTimeout <= 0 {
		o.VisibilityTimeout = time.Duration(queue.ScaleUp.VisibilityTimeoutSeconds) * time.Second
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.HotPollInterval <= 0 {
		o.HotPollInterval = HotPollInterval
	}
	if o.WebhookConcurrency <= 0 {
		o.WebhookConcurrency = 8
	}
	if o.ScaleupConcurrency <= 0 {
		o.ScaleupConcurrency = queue.ScaleUp.MaxConcurrency
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	o.Stdout = &syncWriter{w: o.Stdout}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Ready is what the ready line reports.
type Ready struct {
	Webhook string `json:"webhook"`
	AWS     string `json:"aws"`
	GitHub  string `json:"github"`
	// WebhookSecret is set only when the sandbox generated it.
	WebhookSecret string `json:"webhookSecret,omitempty"`
}

// Sandbox is a running control plane. Create it with Start and stop it with
// Close.
type Sandbox struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	logDir        string
	region        string
	motos         map[string]*testenv.Moto // by AWS service; none with Options.AWSEndpoint
	router        *awsRouter               // sends each request to its service's endpoint
	routerSrv     *http.Server
	awsURL        string // the router's endpoint
	awsCfg        aws.Config
	instances     *fleet.Launcher // the deployment's instances, read and terminated directly (not through the proxy)
	proxy         *faultProxy
	fake          *ghfake.Server // nil with an external GitHub
	githubURL     string
	webhookSecret []byte
	cfg           *config.Config
	res           *resources
	lambdas       map[string]*function
	listener      net.Listener
	server        *http.Server
	webhookURL    string
	tracker       *tracker
	watcher       *instanceWatcher
	agents        *agents
	poller        *poller
	secrets       *secretSet
	ready         Ready

	faultMu  sync.Mutex
	faultRNG *mrand.Rand // Options.DeliveryFaultRate's choices

	closeOnce sync.Once
	closeErr  error
}

// Start builds and starts everything, prints the ready line on
// Options.Stdout and returns. ctx bounds the start-up only.
func Start(ctx context.Context, opts Options) (s *Sandbox, err error) {
	opts.defaults()
	if opts.GitHub != nil && opts.FaultRate > 0 {
		return nil, errors.New("sandbox: fault injection needs the built-in GitHub fake")
	}
	if err := checkOverlay(opts.ConfigOverlay); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s = &Sandbox{opts: opts, log: opts.Logger, ctx: runCtx, cancel: cancel, lambdas: map[string]*function{}, secrets: newSecretSet(),
		faultRNG: mrand.New(mrand.NewPCG(opts.Seed, opts.Seed^0x2545f4914f6cdd1d))}
	defer func() {
		if err != nil {
			_ = s.Close()
			s = nil
		}
	}()
	// Listen first: a taken address fails before anything is built.
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return s, fmt.Errorf("listen on %s: %w", opts.Listen, err)
	}
	s.listener = ln
	if err := s.prepareLogDir(); err != nil {
		return s, err
	}
	if s.tracker, err = newTracker(opts.EventsFile, opts.Stdout, opts.Progress); err != nil {
		return s, err
	}

	// Moto, the Lambda builds and the GitHub fake's key in parallel.
	bins := map[string]string{}
	var mu sync.Mutex
	errc := make(chan error, len(functionSpecs)+2)
	var wg sync.WaitGroup
	for _, spec := range functionSpecs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bin, err := testenv.Build(ctx, spec.pkg, filepath.Join(s.logDir, "bin", spec.name))
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			bins[spec.name] = bin
			mu.Unlock()
		}()
	}
	wg.Add(2)
	go func() { defer wg.Done(); errc <- s.startAWS(ctx) }()
	go func() { defer wg.Done(); errc <- s.startGitHub() }()
	wg.Wait()
	close(errc)
	for e := range errc {
		if e != nil {
			return s, e
		}
	}
	s.log.Info("lambdas built", slog.String("dir", filepath.Join(s.logDir, "bin")))

	params := s.resourceParams()
	if s.res, err = createResources(ctx, s.awsCfg, params); err != nil {
		return s, err
	}
	if err := s.storeSecrets(ctx); err != nil {
		return s, err
	}
	if s.cfg, err = s.buildConfig(params); err != nil {
		return s, err
	}
	if err := s.writeConfig(); err != nil {
		return s, err
	}
	s.tracker.prefix = s.cfg.NamePrefix
	if s.proxy, err = startFaultProxy(s.router, opts.FaultRate, opts.Seed, s.log); err != nil {
		return s, err
	}
	s.proxy.setResources(s.res.classes(), &conditionContext{
		classes: s.res.conditionClasses(s.cfg.NamePrefix), managedBy: s.managedBy,
	})
	if err := s.startLambdas(ctx, bins); err != nil {
		return s, err
	}
	s.startServer()
	s.startBackground()

	s.ready = Ready{Webhook: s.webhookURL, AWS: s.awsURL, GitHub: s.githubURL}
	if opts.GitHub == nil {
		s.ready.WebhookSecret = string(s.webhookSecret)
	}
	b, _ := json.Marshal(s.ready)
	fmt.Fprintf(opts.Stdout, "ready %s\n", b)
	s.log.Info("sandbox ready", slog.String("webhook", s.webhookURL), slog.String("aws", s.awsURL),
		slog.String("github", s.githubURL), slog.String("log_dir", s.logDir))
	return s, nil
}

// Ready returns what the ready line printed.
func (s *Sandbox) Ready() Ready { return s.ready }

// Config returns the effective configuration the Lambdas run with.
func (s *Sandbox) Config() *config.Config { return s.cfg }

// LogDir is the directory holding every process's output.
func (s *Sandbox) LogDir() string { return s.logDir }

// GitHubFake returns the built-in GitHub fake (nil with an external GitHub).
func (s *Sandbox) GitHubFake() *ghfake.Server { return s.fake }

// AWSConfig returns an AWS configuration for the sandbox's AWS endpoint
// (without fault injection).
func (s *Sandbox) AWSConfig() aws.Config { return s.awsCfg }

// RotateWebhookSecret rotates the webhook secret as an operator would in
// place: a new value in Secrets Manager, and the App (the fake) signing
// with it from now on. The webhook's warm containers still hold the old one.
func (s *Sandbox) RotateWebhookSecret(ctx context.Context) error {
	if s.fake == nil {
		return errors.New("sandbox: rotating the secret needs the built-in GitHub fake")
	}
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	secret := hex.EncodeToString(b)
	s.secrets.add(secret)
	if _, err := secretsmanager.NewFromConfig(s.awsCfg).PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(s.res.webhookSecretARN), SecretString: aws.String(secret),
	}); err != nil {
		return fmt.Errorf("rotate the webhook secret: %w", err)
	}
	s.fake.SetWebhook(s.webhookURL, []byte(secret))
	return nil
}

// DeadLetterQueueURL is the scale-up queue's dead-letter queue.
func (s *Sandbox) DeadLetterQueueURL() string { return s.res.queue.DLQURL }

// AWSCalls counts the AWS requests the Lambdas made so far (through the
// fault proxy), by operation.
func (s *Sandbox) AWSCalls() FaultStats { return s.proxy.stats() }

// FleetRequests returns every CreateFleet request made for a job so far
// (not those into warm pools), as sent on the wire.
func (s *Sandbox) FleetRequests() []FleetRequest { return s.proxy.fleetRequests() }

// Secrets returns every secret value the sandbox knows of (App key, webhook
// secret, JIT configs the simulated runners read), for leak checks.
func (s *Sandbox) Secrets() []string { return s.secrets.list() }

// Done is closed when the sandbox is closing.
func (s *Sandbox) Done() <-chan struct{} { return s.ctx.Done() }

func (s *Sandbox) prepareLogDir() error {
	dir := s.opts.LogDir
	if dir == "" {
		d, err := os.MkdirTemp("", "jitr-sandbox-")
		if err != nil {
			return err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	s.logDir = dir
	return nil
}

func (s *Sandbox) startGitHub() error {
	if ext := s.opts.GitHub; ext != nil {
		s.githubURL = trimSlash(ext.APIURL)
		s.webhookSecret = []byte(ext.WebhookSecret)
		s.secrets.add(ext.WebhookSecret)
		s.secrets.addPEM(ext.PrivateKeyPEM)
		return nil
	}
	s.fake = ghfake.New(ghfake.WithSeed(s.opts.Seed), ghfake.WithBusyLag(busyLag),
		ghfake.WithLogger(s.log.With(slog.String("component", "ghfake"))),
		ghfake.WithInstallation(InstallationID, Owner))
	s.githubURL = trimSlash(s.fake.URL())
	secret := make([]byte, 20)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	s.webhookSecret = []byte(hex.EncodeToString(secret))
	s.secrets.add(string(s.webhookSecret))
	s.secrets.addPEM(s.fake.PrivateKeyPEM())
	return nil
}

// startServer serves the webhook endpoint on the listener taken at start.
func (s *Sandbox) startServer() {
	ln := s.listener
	s.webhookURL = "http://" + ln.Addr().String() + WebhookPath
	s.server = &http.Server{Handler: s.webhookHandler(), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("webhook server stopped", slog.String("error", err.Error()))
		}
	}()
}

// startBackground starts the poller, the scheduler, the instance watcher and
// (with the built-in fake) the simulated runners.
func (s *Sandbox) startBackground() {
	s.watcher = newInstanceWatcher(s)
	s.watcher.onGone = s.stateChange
	if s.fake != nil {
		s.agents = newAgents(s)
		s.watcher.onNew = s.agents.start
		s.watcher.onGone = func(id string) {
			s.agents.gone(id)
			s.stateChange(id)
		}
		if s.opts.FaultRate > 0 {
			s.fake.SetFaultRate(s.opts.FaultRate, 502)
		}
		// GitHub's side: deliveries to our endpoint (never retried), and
		// every queued job to any idle runner whose labels match.
		s.fake.SetWebhook(s.webhookURL, s.webhookSecret)
		s.fake.StartDispatch(dispatchDelay)
	}
	s.poller = newPoller(s)
	s.goBackground(s.poller.run)
	s.goBackground(s.watcher.run)
	s.goBackground(s.runScheduler)
	if s.cfg.Redelivery.On() {
		s.goBackground(s.runRedelivery)
	}
}

func (s *Sandbox) goBackground(fn func(context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.ctx)
	}()
}

// Close stops everything the sandbox started (emulators, moto, servers) and
// waits for it, within about three seconds.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		deadline := time.Now().Add(2500 * time.Millisecond)
		if s.server != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			if err := s.server.Shutdown(ctx); err != nil {
				_ = s.server.Close()
			}
			cancel()
		} else if s.listener != nil {
			_ = s.listener.Close()
		}
		var wg sync.WaitGroup
		for _, f := range s.lambdas {
			wg.Add(1)
			go func() { defer wg.Done(); f.stop(time.Until(deadline) - 500*time.Millisecond) }()
		}
		for _, m := range s.motos {
			wg.Add(1)
			go func() { defer wg.Done(); m.Stop(time.Until(deadline) - 500*time.Millisecond) }()
		}
		wg.Wait()
		if s.fake != nil {
			s.fake.Close()
		}
		if s.proxy != nil {
			s.proxy.close()
		}
		if s.routerSrv != nil {
			_ = s.routerSrv.Close()
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			s.log.Warn("background work did not stop in time")
		}
		if s.tracker != nil {
			s.closeErr = s.tracker.close()
		}
	})
	return s.closeErr
}

func trimSlash(u string) string {
	for len(u) > 0 && u[len(u)-1] == '/' {
		u = u[:len(u)-1]
	}
	return u
}

// syncWriter serialises writes from the tracker, the summary and the ready line.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

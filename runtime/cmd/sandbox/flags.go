package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
)

// settings are the parsed command line.
type settings struct {
	opts     sandbox.Options
	load     sandbox.Load
	logLevel slog.Level
}

const usage = `Usage: sandbox [flags]

Runs the jit-runners control plane on this machine: moto, the GitHub fake,
the three Lambdas under the Lambda Runtime Interface Emulator, an SQS poller,
a scheduler and the webhook endpoint. Prints one line "ready {json}" when
everything is up; SIGINT or SIGTERM stops everything. See docs/sandbox.md.

With --jobs N it generates load, waits until every job completed and its
instance terminated, prints a summary and exits (1 if a job was lost or
anything leaked).

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*settings, error) {
	st := &settings{}
	o := &st.opts
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Listen, "listen", sandbox.DefaultListen, "webhook server `address` (127.0.0.1:0 picks a free port); the path is "+sandbox.WebhookPath)
	fs.StringVar(&o.AWSEndpoint, "aws-endpoint", "", "use this AWS-compatible endpoint `URL` instead of starting moto")
	ghURL := fs.String("github-api-url", "", "GitHub API base `URL` to use instead of the built-in fake (needs the next three flags)")
	ghApp := fs.Int64("github-app-id", 0, "GitHub App `id` (with --github-api-url)")
	ghKey := fs.String("github-app-key", "", "GitHub App private key PEM `file` (with --github-api-url)")
	secret := fs.String("webhook-secret", "", "webhook `secret` (with --github-api-url)")
	cfgFile := fs.String("config", "", "JSON `file` deep-merged over the generated configuration")
	fs.DurationVar(&o.SweepInterval, "sweep-interval", sandbox.DefaultSweepInterval, "how often scaledown runs")
	fs.DurationVar(&o.RedeliveryInterval, "redelivery-interval", sandbox.DefaultRedeliveryInterval, "how often failed webhook deliveries are recovered from the App's delivery log")
	fs.Float64Var(&o.DeliveryFaultRate, "delivery-fault-rate", 0, "share of queued deliveries the webhook endpoint refuses with 429 or 500 (0..1); GitHub never retries them")
	fs.DurationVar(&o.JobDuration, "job-duration", sandbox.DefaultJobDuration, "how long a simulated job runs")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", bootstrap.DefaultIdleTimeout, "how long a runner without a job waits before its instance shuts down (also rendered into the bootstrap)")
	fs.DurationVar(&o.VisibilityTimeout, "visibility-timeout", 0, "visibility timeout of received scale-up records (default: the queue's, 6 min)")
	fs.IntVar(&st.load.Jobs, "jobs", 0, "generate `N` jobs, wait for them, print a summary and exit (built-in fake only)")
	fs.Float64Var(&st.load.Rate, "rate", 10, "jobs per second with --jobs")
	fs.Float64Var(&st.load.DupRate, "dup-rate", 0, "share of jobs delivered twice (0..1)")
	fs.Func("labels", "runs-on `labels` of the generated jobs, comma-separated (self-hosted,cpu=4,ram=16); repeat it for jobs of several kinds, used in turn (default self-hosted,linux,x64)",
		func(v string) error {
			var labels []string
			for _, l := range strings.Split(v, ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels = append(labels, l)
				}
			}
			if len(labels) == 0 {
				return errors.New("no labels")
			}
			st.load.Labels = append(st.load.Labels, labels)
			return nil
		})
	fs.Float64Var(&o.FaultRate, "fault-rate", 0, "share of AWS and GitHub calls failing transiently, and of spot requests without capacity (0..1)")
	fs.DurationVar(&st.load.Timeout, "timeout", sandbox.DefaultLoadTimeout, "longest wait for the generated jobs")
	fs.StringVar(&o.EventsFile, "events", "", "append one JSON object per job transition to this `file`")
	fs.StringVar(&o.LogDir, "log-dir", "", "`directory` for every process's output (default: a new temporary directory)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the fault and duplicate choices")
	fs.IntVar(&o.WebhookConcurrency, "webhook-concurrency", 8, "most concurrent webhook executions")
	fs.IntVar(&o.ScaleupConcurrency, "scaleup-concurrency", 10, "most concurrent scaleup executions (the event source mapping's maximum concurrency)")
	quiet := fs.Bool("quiet", false, "no progress line per job transition")
	level := fs.String("log-level", "info", "the sandbox's own log level on stderr: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.Progress = !*quiet
	if err := st.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	if *cfgFile != "" {
		b, err := os.ReadFile(*cfgFile)
		if err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		o.ConfigOverlay = b
	}
	for name, v := range map[string]float64{"--dup-rate": st.load.DupRate, "--fault-rate": o.FaultRate} {
		if v < 0 || v > 1 {
			return nil, fmt.Errorf("%s must be between 0 and 1", name)
		}
	}
	if st.load.Jobs < 0 || st.load.Rate <= 0 {
		return nil, errors.New("--jobs must not be negative and --rate must be positive")
	}
	external := *ghURL != "" || *ghApp != 0 || *ghKey != "" || *secret != ""
	if !external {
		return st, nil
	}
	if *ghURL == "" || *ghApp <= 0 || *ghKey == "" || *secret == "" {
		return nil, errors.New("--github-api-url, --github-app-id, --github-app-key and --webhook-secret go together")
	}
	if st.load.Jobs > 0 || o.FaultRate > 0 || st.load.DupRate > 0 || len(st.load.Labels) > 0 {
		return nil, errors.New("--jobs, --labels, --dup-rate and --fault-rate need the built-in GitHub fake")
	}
	key, err := os.ReadFile(*ghKey)
	if err != nil {
		return nil, fmt.Errorf("--github-app-key: %w", err)
	}
	o.GitHub = &sandbox.ExternalGitHub{APIURL: *ghURL, AppID: *ghApp, PrivateKeyPEM: key, WebhookSecret: *secret}
	return st, nil
}

// Package bootstrap renders the EC2 user-data that turns a fresh instance into
// one single-use GitHub Actions just-in-time (JIT) runner and then terminates
// it. The script is bash (bootstrap.sh, embedded); Render fills in the
// deployment-wide values and nothing else, so no job data and no secret is
// ever in user-data.
//
// # Flow
//
//  0. start: take the per-boot lock and, on the first boot, install the
//     script for later boots (see Every boot).
//  1. imds: IMDSv2 only (PUT /latest/api/token, then GETs carrying the token
//     header; the token reaches curl on stdin, not in argv): instance id,
//     region and account from the instance identity document, partition from
//     meta-data/services/partition, architecture from uname -m.
//  2. install: skipped when /opt/jit-runner-prebaked holds exactly the
//     configured runner version (pre-baked AMI, or an earlier boot of this
//     instance: the runner is already in /home/runner/actions-runner). Without
//     the marker (stock Amazon Linux 2023 or Ubuntu, told apart by
//     /etc/os-release) the runner's libraries, git, jq and the AWS CLI are
//     installed and user runner is created.
//  3. download: unless the installed runner matches, the runner tarball for
//     the architecture is downloaded, checked with sha256sum -c against the
//     pinned digest and unpacked as user runner; then the version is written
//     to /opt/jit-runner-prebaked, so later boots skip steps 2 and 3.
//  4. jit-fetch: scaleup stores the encoded JIT config in DynamoDB table
//     Params.JITTable under key instanceArn =
//     arn:<partition>:ec2:<region>:<account>:instance/<id>, attribute
//     jitConfig. The instance role may call only dynamodb:DeleteItem, and only
//     on its own key (condition dynamodb:LeadingKeys = ${ec2:SourceInstanceARN}),
//     so the script reads and deletes the item in one call
//     (delete-item --return-values ALL_OLD), retrying while it is absent for
//     up to Params.JITWaitSeconds. No other instance can read it, and it can
//     be read once. The same call reads a pooled instance's marker (see Warm
//     pools).
//  5. runner: run.sh runs once as user runner; the JIT config reaches it only
//     as ACTIONS_RUNNER_INPUT_JITCONFIG (the runner's environment input for
//     --jitconfig), exported in a subshell that execs runuser, so it is never
//     in an argv (unlike `env VAR=...` or --jitconfig), a file (it goes from
//     the aws output into a shell variable by command substitution), a log
//     line or a shell trace (the script never enables xtrace). Like any
//     runner credential it stays readable by the runner user's own processes,
//     which is why a runner serves one job on one instance. A watchdog stops
//     the runner when no job has started (no _diag/Worker_*.log) within
//     Params.IdleTimeoutSeconds.
//
// # Warm pools
//
// The control plane also launches pooled instances ahead of jobs and, right
// after the launch, writes the instance's item without jitConfig but with
// attribute pool (jitstore.AttrPool). The fetch reads both attributes in its
// one DeleteItem; consuming the marker, after install and download, is the
// instance's sign to the control plane that it is prepared. A JIT config in
// the item always wins. The marker's value:
//
//   - hot (jitstore.PoolHot): the instance drops the JITWaitSeconds deadline
//     and polls once a second (backing off up to 30 s while DeleteItem fails)
//     until a job's config arrives, then runs it as above.
//   - stopped (jitstore.PoolStopped): the instance sleeps, without polling,
//     until the control plane stops it (StopInstances; when a job claims it,
//     the control plane writes the config and starts it again, see Every
//     boot). No stop within Params.StopWaitSeconds terminates it like any
//     other failure.
//   - anything else is data, never evaluated: logged (defanged) as unknown,
//     and polling goes on (under the deadline unless hot was seen).
//
// Hot polling costs at most one DeleteItem per second per hot instance.
// Counting one write request unit (WRU) per DeleteItem (the items are under
// 1 KB; assumed billed alike when there is nothing to delete), that is 3,600
// WRU per instance-hour, about 2.6 million per instance-month (730 h).
// Assuming on-demand capacity at $0.625 per million WRU (us-east-1; other
// regions and provisioned capacity are priced differently), that is about
// $1.64 per hot instance-month. Each poll also starts the AWS CLI on the
// instance.
//
// # Every boot
//
// cloud-init runs user-data on an instance's first boot only, but a stopped
// pooled instance boots again for its job. So the first run copies the script
// to /usr/local/sbin/jit-runner-bootstrap (mode 0700, owned by root, which
// runs it) and writes /etc/systemd/system/jit-runner.service (after
// network-online.target, output to the journal and the console), enabled by
// the symlink in multi-user.target.wants that systemctl enable makes: it
// takes effect at the next boot and starts nothing now. Every run first takes
// a per-boot lock, mkdir /run/jit-runner (atomic; /run is a tmpfs cleared at
// boot). A second copy in the same boot logs "already running this boot" and
// exits 0 at once, before touching anything, leaving the instance to the
// first copy.
//
// # Exit paths
//
// A trap on EXIT (ERR, INT, TERM and HUP lead to it) terminates the instance
// on every path: the runner finished or failed, the idle timeout, no JIT
// config in time, no stop in time, an install, download, checksum or IMDS
// failure, a signal. It runs shutdown -h now, which terminates the instance
// because the launch template sets InstanceInitiatedShutdownBehavior=terminate;
// the runner role grants no ec2:TerminateInstances (job code runs with its
// credentials, and IAM cannot confine the action to the caller's own
// instance). Each phase logs a timestamped "jit-runner: <phase> ..." line with
// its duration to stdout and the serial console, and the exit line names the
// reason.
//
// The one exit that does not shut down is a SIGTERM while waiting in the
// stopped pool ("stopped for the stopped pool", status 0). That TERM is
// systemd stopping services because the control plane is stopping the
// instance (on the first boot it comes from the final kill of leftover
// processes, since cloud-final.service has KillMode=process), which must stay
// stopped, with its disk, for its next boot: a shutdown then would terminate
// it and empty the pool. Anywhere else, including while hot, a TERM is a
// failure and terminates. (A second copy in one boot also leaves without
// shutdown, but it owns nothing: the first copy decides.)
package bootstrap

import (
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
)

//go:embed bootstrap.sh
var script string

const (
	// DefaultIdleTimeout is how long a runner waits for a job when
	// Params.IdleTimeoutSeconds is zero.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultJITWait is how long the instance waits for its JIT config when
	// Params.JITWaitSeconds is zero.
	DefaultJITWait = 3 * time.Minute
	// DefaultStopWait is how long an instance prepared for the stopped pool
	// waits to be stopped when Params.StopWaitSeconds is zero.
	DefaultStopWait = 10 * time.Minute
	// DefaultDownloadBaseURL is where runner releases are downloaded from
	// when Params.DownloadBaseURL is empty.
	DefaultDownloadBaseURL = "https://github.com/actions/runner/releases/download"
	// MaxUserDataBytes is EC2's limit on user-data (before base64).
	MaxUserDataBytes = 16 * 1024

	maxIdleTimeoutSeconds = 24 * 60 * 60
	maxJITWaitSeconds     = 60 * 60
	maxStopWaitSeconds    = 60 * 60
)

// Params are the deployment-wide values rendered into the script. Zero values
// of the optional fields select the defaults. Validate checks every field;
// Render calls it.
type Params struct {
	// RunnerVersion is the actions/runner release, e.g. "2.332.0". Required.
	RunnerVersion string
	// NamePrefix is the deployment's name prefix (runner names are
	// <prefix>-j<job-id>-<attempt>): 1-20 of a-z, 0-9 and '-', starting with a
	// letter. Required.
	NamePrefix string
	// JITTable is the DynamoDB table holding the JIT configs (key
	// instanceArn). Required.
	JITTable string
	// IdleTimeoutSeconds is how long the runner may wait for a job before the
	// instance shuts down; 0 means DefaultIdleTimeout, at most 24 h.
	IdleTimeoutSeconds int
	// JITWaitSeconds is how long the instance waits for its JIT config to
	// appear; 0 means DefaultJITWait, at most 1 h.
	JITWaitSeconds int
	// StopWaitSeconds is how long an instance prepared for the stopped pool
	// waits for the control plane to stop it before it terminates itself; 0
	// means DefaultStopWait, at most 1 h.
	StopWaitSeconds int
	// RunnerSHA256X64 and RunnerSHA256ARM64 are the hex SHA-256 digests of
	// actions-runner-linux-{x64,arm64}-<RunnerVersion>.tar.gz. Required.
	RunnerSHA256X64   string
	RunnerSHA256ARM64 string
	// DownloadBaseURL is the https base URL of runner releases (a mirror of
	// <base>/v<version>/actions-runner-linux-<arch>-<version>.tar.gz); empty
	// means DefaultDownloadBaseURL.
	DownloadBaseURL string
	// Region is the region of the JIT table's DynamoDB endpoint; empty means
	// the instance's own region from IMDS. The instance ARN and
	// terminate-instances always use the instance's own region.
	Region string
}

// ParamError reports a problem with one Params field.
type ParamError struct {
	Field  string
	Reason string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("bootstrap: Params.%s: %s", e.Field, e.Reason)
}

var (
	tableNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)
	sha256RE    = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	regionRE    = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
)

// Validate fills the defaults of the optional fields and checks every field.
// It returns every problem at once, joined, each a *ParamError.
func (p *Params) Validate() error {
	if p.IdleTimeoutSeconds == 0 {
		p.IdleTimeoutSeconds = int(DefaultIdleTimeout / time.Second)
	}
	if p.JITWaitSeconds == 0 {
		p.JITWaitSeconds = int(DefaultJITWait / time.Second)
	}
	if p.StopWaitSeconds == 0 {
		p.StopWaitSeconds = int(DefaultStopWait / time.Second)
	}
	if p.DownloadBaseURL == "" {
		p.DownloadBaseURL = DefaultDownloadBaseURL
	}
	p.RunnerSHA256X64 = strings.ToLower(p.RunnerSHA256X64)
	p.RunnerSHA256ARM64 = strings.ToLower(p.RunnerSHA256ARM64)

	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &ParamError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if !config.IsRunnerVersion(p.RunnerVersion) {
		add("RunnerVersion", "must look like 2.332.0, got %q", p.RunnerVersion)
	}
	if !config.IsNamePrefix(p.NamePrefix) {
		add("NamePrefix", "must be 1-20 characters of a-z, 0-9 and '-', starting with a letter; got %q", p.NamePrefix)
	}
	if !tableNameRE.MatchString(p.JITTable) {
		add("JITTable", "must be a DynamoDB table name (3-255 of A-Z, a-z, 0-9, '_', '-', '.'); got %q", p.JITTable)
	}
	if p.IdleTimeoutSeconds < 1 || p.IdleTimeoutSeconds > maxIdleTimeoutSeconds {
		add("IdleTimeoutSeconds", "must be 1-%d (0 for the default), got %d", maxIdleTimeoutSeconds, p.IdleTimeoutSeconds)
	}
	if p.JITWaitSeconds < 1 || p.JITWaitSeconds > maxJITWaitSeconds {
		add("JITWaitSeconds", "must be 1-%d (0 for the default), got %d", maxJITWaitSeconds, p.JITWaitSeconds)
	}
	if p.StopWaitSeconds < 1 || p.StopWaitSeconds > maxStopWaitSeconds {
		add("StopWaitSeconds", "must be 1-%d (0 for the default), got %d", maxStopWaitSeconds, p.StopWaitSeconds)
	}
	if !sha256RE.MatchString(p.RunnerSHA256X64) {
		add("RunnerSHA256X64", "must be 64 hex digits, got %q", p.RunnerSHA256X64)
	}
	if !sha256RE.MatchString(p.RunnerSHA256ARM64) {
		add("RunnerSHA256ARM64", "must be 64 hex digits, got %q", p.RunnerSHA256ARM64)
	}
	if reason := checkBaseURL(p.DownloadBaseURL); reason != "" {
		add("DownloadBaseURL", "%s, got %q", reason, p.DownloadBaseURL)
	} else {
		p.DownloadBaseURL = strings.TrimRight(p.DownloadBaseURL, "/")
	}
	if p.Region != "" && !regionRE.MatchString(p.Region) {
		add("Region", "must be an AWS region such as eu-west-1 (or empty), got %q", p.Region)
	}
	return errors.Join(errs...)
}

func checkBaseURL(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return "must not contain spaces or control characters"
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "must be a URL"
	case u.Scheme != "https" || u.Host == "":
		return "must be an https URL"
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return "must not have credentials, a query or a fragment"
	}
	return ""
}

// Render returns the bootstrap script for p, to be used as the launch
// template's user-data. It fails on invalid Params (see Validate) and when the
// result would exceed MaxUserDataBytes.
func Render(p Params) (string, error) {
	return render(p, testHooks{})
}

// testHooks redirect what the production script hardcodes, so the package's
// tests can run it in a temporary root against a fake IMDS. Render never sets
// them.
type testHooks struct {
	imdsURL        string // replaces http://169.254.169.254
	root           string // prefix of every path the script reads or writes (/opt, /home, /etc, /usr/local/sbin, /run)
	console        string // replaces /dev/console
	watchdogPoll   string // seconds between watchdog checks, e.g. "0.05"
	jitRetryDelays string // space-separated seconds between JIT fetch attempts
	poolPoll       string // seconds between fetch attempts of a hot pooled instance
	poolBackoff    string // space-separated seconds after consecutive failed attempts of a hot pooled instance
}

func render(p Params, h testHooks) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, v := range []struct{ name, value string }{
		{"RUNNER_VERSION", p.RunnerVersion},
		{"NAME_PREFIX", p.NamePrefix},
		{"JIT_TABLE", p.JITTable},
		// The JIT table's attributes, as jitstore writes them.
		{"JIT_KEY_ATTRIBUTE", jitstore.AttrInstanceARN},
		{"JIT_CONFIG_ATTRIBUTE", jitstore.AttrJITConfig},
		{"POOL_ATTRIBUTE", jitstore.AttrPool},
		{"POOL_HOT", jitstore.PoolHot},
		{"POOL_STOPPED", jitstore.PoolStopped},
		{"IDLE_TIMEOUT_SECONDS", strconv.Itoa(p.IdleTimeoutSeconds)},
		{"JIT_WAIT_SECONDS", strconv.Itoa(p.JITWaitSeconds)},
		{"STOP_WAIT_SECONDS", strconv.Itoa(p.StopWaitSeconds)},
		{"RUNNER_SHA256_X64", p.RunnerSHA256X64},
		{"RUNNER_SHA256_ARM64", p.RunnerSHA256ARM64},
		{"DOWNLOAD_BASE_URL", p.DownloadBaseURL},
		{"REGION_OVERRIDE", p.Region},
	} {
		fmt.Fprintf(&b, "readonly %s=%s\n", v.name, shellQuote(v.value))
	}
	const marker = "#@PARAMS@\n"
	if strings.Count(script, marker) != 1 {
		return "", errors.New("bootstrap: script template has no parameter marker")
	}
	out := strings.Replace(script, marker, b.String(), 1)

	for _, o := range []struct{ name, value string }{
		{"IMDS_URL", h.imdsURL},
		{"ROOT", h.root},
		{"CONSOLE", h.console},
		{"WATCHDOG_POLL_SECONDS", h.watchdogPoll},
		{"JIT_RETRY_DELAYS", h.jitRetryDelays},
		{"POOL_POLL_SECONDS", h.poolPoll},
		{"POOL_BACKOFF_DELAYS", h.poolBackoff},
	} {
		if o.value == "" {
			continue
		}
		var err error
		if out, err = replaceAssignment(out, o.name, o.value); err != nil {
			return "", err
		}
	}
	if len(out) > MaxUserDataBytes {
		return "", fmt.Errorf("bootstrap: rendered script is %d bytes, over the %d-byte user-data limit", len(out), MaxUserDataBytes)
	}
	return out, nil
}

// replaceAssignment replaces the script's one `readonly NAME=...` line.
func replaceAssignment(s, name, value string) (string, error) {
	prefix := "readonly " + name + "="
	lines := strings.SplitAfter(s, "\n")
	found := 0
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = prefix + shellQuote(value) + "\n"
			found++
		}
	}
	if found != 1 {
		return "", fmt.Errorf("bootstrap: script has %d assignments of %s, want 1", found, name)
	}
	return strings.Join(lines, ""), nil
}

// shellQuote returns s as one single-quoted shell word. Inside single quotes
// nothing is special; each single quote in s closes the quoting, is written
// backslash-escaped and reopens it.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

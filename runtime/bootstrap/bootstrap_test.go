package bootstrap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/jitstore"
)

const (
	testVersion    = "2.332.0"
	testInstanceID = "i-0123456789abcdef0"
	testRegion     = "eu-west-1"
	testAccount    = "123456789012"
	testTable      = "jitr-jit-configs"
	testARN        = "arn:aws:ec2:" + testRegion + ":" + testAccount + ":instance/" + testInstanceID
	// testJIT stands in for an encoded JIT config: base64 characters and a
	// marker that cannot occur by accident.
	testJIT = "eyJydW5uZXIiOiJqaXRyIn0+SECRET/JIT/CONFIG+c2VjcmV0=="
	// otherSHA is a well-formed digest that matches nothing.
	otherSHA = "0000000000000000000000000000000000000000000000000000000000000000"
)

// fakeRunnerScript is the runner's run.sh in the fake tarball and in the
// pre-baked fake root: it records its argv, its JIT environment input, every
// process's argv and its start time, then either runs a job (writes a Worker
// log, exits with STUB_RUNNER_EXIT) or idles until killed.
const fakeRunnerScript = `#!/bin/bash
line=${0##*/}; for a in "$@"; do line+=" $a"; done
printf '%s\n' "$line" >>"$STUB_LOG"
started=$EPOCHREALTIME
printf '%s' "${ACTIONS_RUNNER_INPUT_JITCONFIG-}" >"$STUB_STATE/runner-env"
cat /proc/[0-9]*/cmdline >"$STUB_STATE/process-list" 2>/dev/null
printf '%s\n' "$started" >"$STUB_STATE/runner-started" # last: tests wait for it
case ${STUB_RUNNER_MODE:-job} in
idle) while :; do sleep 0.05; done ;;
*)
	mkdir -p "${0%/*}/_diag"
	: >"${0%/*}/_diag/Worker_20250101-000000-utc.log"
	exit "${STUB_RUNNER_EXIT:-0}"
	;;
esac
`

// stubPrelude makes every stub append its name and argv, one line per call,
// to $STUB_LOG.
const stubPrelude = `#!/bin/bash
line=${0##*/}; for a in "$@"; do line+=" $a"; done
printf '%s\n' "$line" >>"$STUB_LOG"
`

// stubs are the commands the script may call that touch the system or the
// network. Tests run as any user, possibly root, so everything with a side
// effect outside the temp root is stubbed (including commands the script
// must not call at all).
var stubs = map[string]string{
	// IMDS goes to the real curl (the fake IMDS on 127.0.0.1); a download
	// copies the fixture tarball to -o.
	"curl": `case ${*: -1} in
http://127.0.0.1:*) exec "$REAL_CURL" "$@" ;;
esac
[[ -z ${STUB_DOWNLOAD_FAIL:-} ]] || exit 22
out='' prev=''
for a in "$@"; do
	if [[ $prev == -o ]]; then out=$a; fi
	prev=$a
done
cp "$STUB_TARBALL" "$out"
`,
	// delete-item prints what the CLI prints for --query "[cfg, pool]"
	// --output text: two tab-separated fields, None for an absent one. A
	// scripted reply for call n (reply-n in $STUB_STATE) wins; the config is
	// withheld while $STUB_STATE/jit-hold exists.
	"aws": `case "$1 $2" in
"dynamodb delete-item")
	n=$(($(cat "$STUB_STATE/aws-calls" 2>/dev/null || echo 0) + 1))
	echo "$n" >"$STUB_STATE/aws-calls"
	if [[ -f $STUB_STATE/reply-$n ]]; then
		reply=$(<"$STUB_STATE/reply-$n")
		if [[ $reply == FAIL ]]; then
			echo "An error occurred (ThrottlingException) when calling the DeleteItem operation" >&2
			exit 254
		fi
		printf '%s\n' "$reply"
	elif [[ -n ${STUB_JIT_FILE:-} && ! -e $STUB_STATE/jit-hold ]] && ((n > ${STUB_JIT_AFTER:-0})); then
		printf '%s\tNone\n' "$(<"$STUB_JIT_FILE")"
	else
		printf 'None\tNone\n'
	fi
	;;
*) echo "aws stub: unexpected $*" >&2; exit 2 ;;
esac
`,
	"dnf":       `[[ -z ${STUB_PKG_FAIL:-} ]]` + "\n",
	"apt-get":   `[[ -z ${STUB_PKG_FAIL:-} ]]` + "\n",
	"apt-cache": `printf '%s\n' libicu-dev libicu70 libicu74 libssl-dev libssl3` + "\n",
	"snap":      "exit 1\n",
	"useradd":   `mkdir -p "$STUB_ROOT/home/${*: -1}"` + "\n",
	"id":        `[[ -n ${STUB_USER_EXISTS:-} ]]` + "\n",
	"runuser": `[[ $1 == -u && $2 == runner && $3 == -- ]] || { echo "runuser stub: unexpected $*" >&2; exit 64; }
shift 3
exec "$@"
`,
	"tar":       `exec "$REAL_TAR" "$@"` + "\n",
	"env":       `exec "$REAL_ENV" "$@"` + "\n",
	"sha256sum": `exec "$REAL_SHA256SUM" "$@"` + "\n",
	"shutdown":  "exit 0\n",
	"uname": `if [[ $1 == -m ]]; then echo "${STUB_ARCH:-x86_64}"; else exec "$REAL_UNAME" "$@"; fi
`,
	// Must never be called (see forbidden).
	"su":        "exit 99\n",
	"sudo":      "exit 99\n",
	"poweroff":  "exit 99\n",
	"reboot":    "exit 99\n",
	"halt":      "exit 99\n",
	"systemctl": "exit 99\n",
}

// forbidden are the stubs the script must never call: privilege changes,
// other ways down than shutdown -h now, and systemctl (enabling the unit is a
// symlink; starting it during the first boot would run a second copy).
var forbidden = []string{"su", "sudo", "poweroff", "reboot", "halt", "systemctl"}

var pkgManagers = []string{"dnf", "apt-get", "apt-cache", "snap"}

// fixture is the fake runner tarball and its sha256.
var fixture = sync.OnceValues(func() ([]byte, string) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, body string) {
		h := &tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg,
			Uid: os.Getuid(), Gid: os.Getgid(), ModTime: time.Unix(1700000000, 0)}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			panic(err)
		}
	}
	add("./run.sh", 0o755, fakeRunnerScript)
	add("./bin/Runner.Listener", 0o755, "#!/bin/false\n")
	if err := tw.Close(); err != nil {
		panic(err)
	}
	if err := gz.Close(); err != nil {
		panic(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])
})

func validParams() Params {
	_, sum := fixture()
	return Params{
		RunnerVersion:     testVersion,
		NamePrefix:        "jitr",
		JITTable:          testTable,
		RunnerSHA256X64:   sum,
		RunnerSHA256ARM64: sum,
	}
}

// fakeIMDS is an IMDSv2-only metadata service: a session token from PUT
// /latest/api/token is required on every GET; GETs without it are recorded
// and refused.
type fakeIMDS struct {
	*httptest.Server
	token      string
	noDocument bool // 404 for the identity document

	mu        sync.Mutex
	requests  []string
	tokenless []string
}

func newFakeIMDS(t testing.TB) *fakeIMDS {
	f := &fakeIMDS{token: "imds-" + randHex(t)}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "bad ttl", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, f.token)
	case r.Method == http.MethodGet:
		if r.Header.Get("X-aws-ec2-metadata-token") != f.token {
			f.tokenless = append(f.tokenless, r.URL.Path)
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/latest/dynamic/instance-identity/document":
			if f.noDocument {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, "{\n  \"accountId\" : %q,\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : \"eu-west-1a\",\n"+
				"  \"imageId\" : \"ami-0123456789abcdef0\",\n  \"instanceId\" : %q,\n  \"instanceType\" : \"t3.large\",\n"+
				"  \"privateIp\" : \"10.0.0.1\",\n  \"region\" : %q,\n  \"version\" : \"2017-09-30\"\n}",
				testAccount, testInstanceID, testRegion)
		case "/latest/meta-data/services/partition":
			fmt.Fprint(w, "aws")
		default:
			http.NotFound(w, r)
		}
	default:
		http.Error(w, "", http.StatusMethodNotAllowed)
	}
}

func (f *fakeIMDS) snapshot() (requests, tokenless []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...), append([]string(nil), f.tokenless...)
}

// scenario is one boot of the rendered script in a temporary root.
type scenario struct {
	prebaked  string // content of /opt/jit-runner-prebaked; "" = stock AMI
	osID      string // ID in /etc/os-release; default amzn
	osVersion string // VERSION_ID; default 2023
	arch      string // uname -m; default x86_64
	noJIT     bool   // the JIT config never arrives
	jitAfter  int    // delete-item returns None this many times first
	holdJIT   bool   // the JIT config is withheld until proc.releaseJIT
	// replies replaces the output of delete-item call n (counted over every
	// run in the rig, from 1); replyFail makes that call fail.
	replies    map[int]string
	runnerIdle bool // run.sh idles (never starts a job)
	runnerExit int
	userExists bool
	pkgFail    bool
	noIMDSDoc  bool           // IMDS has no identity document
	signal     syscall.Signal // sent to the script once the runner runs
	params     func(*Params)
}

// replyFail as a scenario reply makes that delete-item call fail like a
// throttled or unreachable DynamoDB.
const replyFail = "FAIL"

// boot is what one run left behind.
type boot struct {
	exitCode      int
	calls         []string // stub argv lines of this run, in order
	output        string   // stdout + stderr of the script
	console       string   // the console since the rig's last reboot
	runnerEnv     string   // the runner's ACTIONS_RUNNER_INPUT_JITCONFIG
	processList   string   // every argv on the machine when the runner started
	runnerStarted bool
	startLatency  time.Duration // script start to runner start
	imdsRequests  []string
	tokenless     []string
	imdsToken     string
	root          string
	dir           string
}

// rig is one fake instance: a temporary root, stubs, a fake IMDS and the
// rendered script, which may run several times (reboots) or concurrently.
type rig struct {
	t          testing.TB
	dir        string
	root       string
	state      string
	console    string
	script     string // the rendered script
	scriptPath string // where cloud-init would have put it
	installed  string // where the script installs itself
	env        []string
	bash       string
	imds       *fakeIMDS
	runs       int
}

func newRig(t testing.TB, sc scenario) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dir: dir, root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		console: filepath.Join(dir, "console")}
	root, state := r.root, r.state
	r.installed = filepath.Join(root, "usr/local/sbin/jit-runner-bootstrap")
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{"opt", "home", "etc", "run"} {
		mustMkdir(t, filepath.Join(root, d))
	}
	mustMkdir(t, state)
	mustMkdir(t, bin)

	osID, osVersion := sc.osID, sc.osVersion
	if osID == "" {
		osID, osVersion = "amzn", "2023"
	}
	mustWrite(t, filepath.Join(root, "etc/os-release"),
		fmt.Sprintf("NAME=\"Test\"\nID=%q\nVERSION_ID=%q\nID_LIKE=\"test\"\n", osID, osVersion), 0o644)
	if sc.prebaked != "" {
		mustWrite(t, filepath.Join(root, "opt/jit-runner-prebaked"), sc.prebaked+"\n", 0o644)
		mustMkdir(t, filepath.Join(root, "home/runner/actions-runner"))
		mustWrite(t, filepath.Join(root, "home/runner/actions-runner/run.sh"), fakeRunnerScript, 0o755)
	}
	tarball, _ := fixture()
	mustWrite(t, filepath.Join(dir, "runner.tar.gz"), string(tarball), 0o644)
	jitFile := filepath.Join(dir, "jit")
	mustWrite(t, jitFile, testJIT, 0o600)
	for n, reply := range sc.replies {
		mustWrite(t, filepath.Join(state, "reply-"+strconv.Itoa(n)), reply, 0o644)
	}
	if sc.holdJIT {
		mustWrite(t, filepath.Join(state, "jit-hold"), "", 0o644)
	}

	realBins := map[string]string{}
	for _, name := range []string{"curl", "tar", "sha256sum", "uname", "env", "bash"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("%s not installed: %v", name, err)
		}
		realBins[name] = p
	}
	r.bash = realBins["bash"]
	for name, body := range stubs {
		mustWrite(t, filepath.Join(bin, name), stubPrelude+body, 0o755)
	}

	r.imds = newFakeIMDS(t)
	r.imds.noDocument = sc.noIMDSDoc
	p := validParams()
	if sc.params != nil {
		sc.params(&p)
	}
	var err error
	r.script, err = render(p, testHooks{
		imdsURL:        r.imds.URL,
		root:           root,
		console:        r.console,
		watchdogPoll:   "0.05",
		jitRetryDelays: "0.05 0.1",
		poolPoll:       "0.05",
		poolBackoff:    "0.06 0.07 0.08",
	})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	r.scriptPath = filepath.Join(dir, "user-data.sh")
	mustWrite(t, r.scriptPath, r.script, 0o700)

	r.env = []string{
		"PATH=" + bin + ":" + os.Getenv("PATH"),
		"HOME=" + dir,
		"LANG=C",
		"STUB_STATE=" + state,
		"STUB_ROOT=" + root,
		"STUB_TARBALL=" + filepath.Join(dir, "runner.tar.gz"),
		"STUB_ARCH=" + sc.arch,
		"STUB_RUNNER_EXIT=" + strconv.Itoa(sc.runnerExit),
		"STUB_JIT_AFTER=" + strconv.Itoa(sc.jitAfter),
		"REAL_CURL=" + realBins["curl"],
		"REAL_TAR=" + realBins["tar"],
		"REAL_SHA256SUM=" + realBins["sha256sum"],
		"REAL_UNAME=" + realBins["uname"],
		"REAL_ENV=" + realBins["env"],
	}
	if !sc.noJIT {
		r.env = append(r.env, "STUB_JIT_FILE="+jitFile)
	}
	if sc.runnerIdle {
		r.env = append(r.env, "STUB_RUNNER_MODE=idle")
	}
	if sc.userExists {
		r.env = append(r.env, "STUB_USER_EXISTS=1")
	}
	if sc.pkgFail {
		r.env = append(r.env, "STUB_PKG_FAIL=1")
	}
	return r
}

// reboot clears what a reboot clears: /run (a tmpfs) and the console view.
// The runner's own state files go too, so the next boot's are its own.
func (r *rig) reboot() {
	r.t.Helper()
	if err := os.RemoveAll(filepath.Join(r.root, "run")); err != nil {
		r.t.Fatal(err)
	}
	mustMkdir(r.t, filepath.Join(r.root, "run"))
	mustWrite(r.t, r.console, "", 0o644)
	for _, f := range []string{"runner-started", "runner-env", "process-list"} {
		if err := os.Remove(filepath.Join(r.state, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.t.Fatal(err)
		}
	}
}

// proc is one running copy of the script.
type proc struct {
	r       *rig
	cmd     *exec.Cmd
	ctx     context.Context
	cancel  context.CancelFunc
	out     *os.File
	calls   string // this run's stub log
	output  string
	started time.Time
}

// start runs the script at path (the user-data copy or the installed one)
// with its own stub log and output.
func (r *rig) start(path string) *proc {
	r.t.Helper()
	r.runs++
	n := strconv.Itoa(r.runs)
	p := &proc{r: r, calls: filepath.Join(r.dir, "calls-"+n+".log"), output: filepath.Join(r.dir, "output-"+n)}
	var err error
	if p.out, err = os.Create(p.output); err != nil {
		r.t.Fatal(err)
	}
	p.ctx, p.cancel = context.WithTimeout(context.Background(), 20*time.Second)
	p.cmd = exec.CommandContext(p.ctx, r.bash, path)
	p.cmd.Env = append(append([]string(nil), r.env...), "STUB_LOG="+p.calls)
	p.cmd.Dir = r.dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Own process group, so a timeout or leftover stub process is killed
	// with everything it started.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Cancel = func() error { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) })
	return p
}

// waitConsole waits until the console shows want.
func (p *proc) waitConsole(want string) {
	p.r.t.Helper()
	waitForMsg(p.r.t, 10*time.Second, func() bool { return strings.Contains(readFile(p.r.t, p.r.console), want) },
		func() string { return fmt.Sprintf("console never showed %q:\n%s", want, readFile(p.r.t, p.r.console)) })
}

// deleteCalls is how many delete-item calls every run of the rig made so far.
func (p *proc) deleteCalls() int {
	n, _ := strconv.Atoi(strings.TrimSpace(readFile(p.r.t, filepath.Join(p.r.state, "aws-calls"))))
	return n
}

// releaseJIT lets delete-item return the JIT config from now on.
func (p *proc) releaseJIT() {
	p.r.t.Helper()
	if err := os.Remove(filepath.Join(p.r.state, "jit-hold")); err != nil {
		p.r.t.Fatal(err)
	}
}

// signalGroup sends sig to the script's process group, as systemd sends
// SIGTERM to every process of a unit it stops.
func (p *proc) signalGroup(sig syscall.Signal) {
	p.r.t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		p.r.t.Fatal(err)
	}
}

// wait waits for the script to exit and collects what it left behind.
func (p *proc) wait() boot {
	t, r := p.r.t, p.r
	t.Helper()
	defer p.cancel()
	err := p.cmd.Wait()
	_ = p.out.Close()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if p.ctx.Err() != nil {
		t.Fatalf("script did not finish within 20s; output:\n%s", readFile(t, p.output))
	}
	b := boot{exitCode: p.cmd.ProcessState.ExitCode(), root: r.root, dir: r.dir, imdsToken: r.imds.token}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run script: %v", err)
	}
	if calls := readFile(t, p.calls); calls != "" {
		b.calls = strings.Split(strings.TrimSuffix(calls, "\n"), "\n")
	}
	b.output = readFile(t, p.output)
	b.console = readFile(t, r.console)
	if started := readFile(t, filepath.Join(r.state, "runner-started")); started != "" {
		b.runnerStarted = true
		b.runnerEnv = readFile(t, filepath.Join(r.state, "runner-env"))
		b.processList = readFile(t, filepath.Join(r.state, "process-list"))
		sec, err := strconv.ParseFloat(strings.TrimSpace(started), 64)
		if err != nil {
			t.Fatalf("runner-started %q: %v", started, err)
		}
		b.startLatency = time.UnixMicro(int64(sec * 1e6)).Sub(p.started)
	}
	b.imdsRequests, b.tokenless = r.imds.snapshot()
	return b
}

// runBoot boots a fresh rig once from its user-data, running during (if
// any) while the script runs.
func runBoot(t testing.TB, sc scenario, during ...func(*proc)) boot {
	t.Helper()
	r := newRig(t, sc)
	p := r.start(r.scriptPath)
	if sc.signal != 0 {
		waitFor(t, 10*time.Second, func() bool { return readFile(t, filepath.Join(r.state, "runner-started")) != "" })
		if err := p.cmd.Process.Signal(sc.signal); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range during {
		f(p)
	}
	return p.wait()
}

// callsTo returns the argv lines of the stub name.
func (b boot) callsTo(name string) []string {
	var out []string
	for _, c := range b.calls {
		if c == name || strings.HasPrefix(c, name+" ") {
			out = append(out, c)
		}
	}
	return out
}

func (b boot) pkgManagerCalls() int {
	n := 0
	for _, m := range pkgManagers {
		n += len(b.callsTo(m))
	}
	return n
}

// downloads are the curl calls that are not IMDS calls.
func (b boot) downloads() []string {
	var out []string
	for _, c := range b.callsTo("curl") {
		if !strings.Contains(c, "http://127.0.0.1:") {
			out = append(out, c)
		}
	}
	return out
}

func (b boot) dump() string {
	return fmt.Sprintf("exit %d\ncalls:\n  %s\noutput:\n%s", b.exitCode, strings.Join(b.calls, "\n  "), b.output)
}

// checkForbidden: no forbidden stub was called.
func checkForbidden(t *testing.T, b boot) {
	t.Helper()
	for _, name := range forbidden {
		if c := b.callsTo(name); len(c) != 0 {
			t.Errorf("forbidden calls %q\n%s", c, b.dump())
		}
	}
}

// checkNotTerminated: the run left the instance alone: no shutdown.
func checkNotTerminated(t *testing.T, b boot) {
	t.Helper()
	checkForbidden(t, b)
	if c := b.callsTo("shutdown"); len(c) != 0 {
		t.Errorf("shutdown calls %q; want none\n%s", c, b.dump())
	}
}

// checkTerminated: every path ends with exactly one shutdown -h now (the
// launch template makes it a termination) and no EC2 call: the role has none.
func checkTerminated(t *testing.T, b boot) {
	t.Helper()
	checkForbidden(t, b)
	nShut := 0
	for i, c := range b.calls {
		if strings.HasPrefix(c, "aws ec2") {
			t.Errorf("call %d: %q: the runner role grants no EC2 action", i, c)
		}
		if strings.HasPrefix(c, "shutdown") {
			nShut++
			if c != "shutdown -h now" {
				t.Errorf("shutdown call %q; want %q", c, "shutdown -h now")
			}
			if i != len(b.calls)-1 {
				t.Errorf("shutdown at call %d of %d: something ran after it\n%s", i, len(b.calls), b.dump())
			}
		}
	}
	if nShut != 1 {
		t.Errorf("%d shutdowns, want one shutdown -h now\n%s", nShut, b.dump())
	}
	if !strings.Contains(b.console, "jit-runner: exit: status") {
		t.Errorf("console has no exit line:\n%s", b.console)
	}
}

// checkNoLeaks: the JIT config reaches the runner's environment and nowhere
// else; IMDS is only used with a session token, which is never in an argv.
func checkNoLeaks(t *testing.T, b boot) {
	t.Helper()
	for _, c := range b.calls {
		if strings.Contains(c, testJIT) {
			t.Errorf("JIT config in an argv: %q", c)
		}
		if strings.Contains(c, b.imdsToken) {
			t.Errorf("IMDS token in an argv: %q", c)
		}
	}
	if strings.Contains(b.processList, testJIT) {
		t.Errorf("JIT config in the process list while the runner runs")
	}
	if b.runnerStarted && !strings.Contains(b.processList, "run.sh") {
		t.Errorf("process list snapshot lacks the runner; snapshot broken?")
	}
	if strings.Contains(b.output, testJIT) {
		t.Errorf("JIT config in the script's output:\n%s", b.output)
	}
	if strings.Contains(b.console, testJIT) {
		t.Errorf("JIT config on the console:\n%s", b.console)
	}
	err := filepath.WalkDir(b.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if strings.Contains(readFile(t, path), testJIT) {
			t.Errorf("JIT config in file %s", path)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if len(b.tokenless) > 0 {
		t.Errorf("IMDS GETs without a session token: %v", b.tokenless)
	}
	if len(b.imdsRequests) == 0 || b.imdsRequests[0] != "PUT /latest/api/token" {
		t.Errorf("IMDS requests %v; want the token PUT first", b.imdsRequests)
	}
	if b.runnerStarted && b.runnerEnv != testJIT {
		t.Errorf("runner's ACTIONS_RUNNER_INPUT_JITCONFIG = %q; want the JIT config", b.runnerEnv)
	}
}

func TestBoot(t *testing.T) {
	t.Parallel()
	x64URL := DefaultDownloadBaseURL + "/v" + testVersion + "/actions-runner-linux-x64-" + testVersion + ".tar.gz"
	arm64URL := DefaultDownloadBaseURL + "/v" + testVersion + "/actions-runner-linux-arm64-" + testVersion + ".tar.gz"

	tests := []struct {
		name        string
		sc          scenario
		wantExit    int
		wantRunner  bool
		wantConsole []string
		check       func(t *testing.T, b boot)
	}{
		{
			name:        "prebaked match",
			sc:          scenario{prebaked: testVersion},
			wantRunner:  true,
			wantConsole: []string{"imds: done in", "install: skipped, runner " + testVersion + " already installed", "jit-fetch: done in", "runner: done in", "runner exited with status 0"},
			check: func(t *testing.T, b boot) {
				if n := b.pkgManagerCalls(); n != 0 {
					t.Errorf("%d package manager calls; want 0\n%s", n, b.dump())
				}
				for _, name := range []string{"useradd", "tar", "sha256sum"} {
					if c := b.callsTo(name); len(c) != 0 {
						t.Errorf("%s called: %q", name, c)
					}
				}
				if d := b.downloads(); len(d) != 0 {
					t.Errorf("downloads %q; want none", d)
				}
				wantDelete := "aws dynamodb delete-item --region " + testRegion + " --table-name " + testTable +
					` --key {"` + jitstore.AttrInstanceARN + `":{"S":"` + testARN + `"}} --return-values ALL_OLD` +
					" --query [Attributes." + jitstore.AttrJITConfig + ".S, Attributes." + jitstore.AttrPool + ".S] --output text"
				if c := b.callsTo("aws dynamodb"); len(c) != 1 || c[0] != wantDelete {
					t.Errorf("dynamodb calls %q; want [%q]", c, wantDelete)
				}
				if c := b.callsTo("runuser"); len(c) != 1 || c[0] != "runuser -u runner -- ./run.sh" {
					t.Errorf("runuser calls %q; want one `runuser -u runner -- ./run.sh`", c)
				}
			},
		},
		{
			name:        "prebaked other version",
			sc:          scenario{prebaked: "2.300.0", userExists: true},
			wantRunner:  true,
			wantConsole: []string{"pre-baked runner 2.300.0 is not " + testVersion, "download: done in"},
			check: func(t *testing.T, b boot) {
				if n := b.pkgManagerCalls(); n != 0 {
					t.Errorf("%d package manager calls; want 0\n%s", n, b.dump())
				}
				if c := b.callsTo("useradd"); len(c) != 0 {
					t.Errorf("useradd called: %q", c)
				}
				if d := b.downloads(); len(d) != 1 || !strings.HasSuffix(d[0], " "+x64URL) {
					t.Errorf("downloads %q; want one of %s", d, x64URL)
				}
				if c := b.callsTo("sha256sum"); len(c) != 1 {
					t.Errorf("sha256sum calls %q; want 1", c)
				}
			},
		},
		{
			name:        "stock al2023",
			sc:          scenario{},
			wantRunner:  true,
			wantConsole: []string{"install: amzn 2023", "install: done in", "download: done in"},
			check: func(t *testing.T, b boot) {
				dnf := b.callsTo("dnf")
				if len(dnf) != 1 || !strings.HasPrefix(dnf[0], "dnf install -y") ||
					!containsAll(dnf[0], "libicu", "krb5-libs", "zlib", "openssl-libs", "lttng-ust", "tar", "gzip", "git", "jq") {
					t.Errorf("dnf calls %q; want one install of the runner's dependencies", dnf)
				}
				if c := b.callsTo("apt-get"); len(c) != 0 {
					t.Errorf("apt-get called: %q", c)
				}
				if c := b.callsTo("useradd"); len(c) != 1 || c[0] != "useradd -m -s /bin/bash runner" {
					t.Errorf("useradd calls %q; want one `useradd -m -s /bin/bash runner`", c)
				}
				if d := b.downloads(); len(d) != 1 || !strings.HasSuffix(d[0], " "+x64URL) {
					t.Errorf("downloads %q; want one of %s", d, x64URL)
				}
				if c := b.callsTo("sha256sum"); len(c) != 1 || c[0] != "sha256sum -c --status -" {
					t.Errorf("sha256sum calls %q; want one `sha256sum -c --status -`", c)
				}
				if c := b.callsTo("runuser -u runner -- tar"); len(c) != 1 {
					t.Errorf("unpack calls %q; want one tar as runner", c)
				}
			},
		},
		{
			name:        "stock ubuntu",
			sc:          scenario{osID: "ubuntu", osVersion: "24.04"},
			wantRunner:  true,
			wantConsole: []string{"install: ubuntu 24.04", "install: done in"},
			check: func(t *testing.T, b boot) {
				if c := b.callsTo("dnf"); len(c) != 0 {
					t.Errorf("dnf called: %q", c)
				}
				apt := b.callsTo("apt-get")
				if len(apt) != 2 || !strings.HasSuffix(apt[0], " update") ||
					!containsAll(apt[1], " install -y", " libicu74 ", " libssl3 ", " libkrb5-3 ", " zlib1g ", " git ", " jq") {
					t.Errorf("apt-get calls %q; want update, then install with libicu74 and libssl3", apt)
				}
				if c := b.callsTo("useradd"); len(c) != 1 {
					t.Errorf("useradd calls %q; want 1", c)
				}
			},
		},
		{
			name: "arm64",
			sc: scenario{arch: "aarch64", userExists: true, params: func(p *Params) {
				p.RunnerSHA256X64 = otherSHA // only the arm64 digest matches
			}},
			wantRunner: true,
			check: func(t *testing.T, b boot) {
				if d := b.downloads(); len(d) != 1 || !strings.HasSuffix(d[0], " "+arm64URL) {
					t.Errorf("downloads %q; want one of %s", d, arm64URL)
				}
				if c := b.callsTo("useradd"); len(c) != 0 {
					t.Errorf("useradd called for an existing user: %q", c)
				}
			},
		},
		{
			name:        "runner fails",
			sc:          scenario{prebaked: testVersion, runnerExit: 3},
			wantExit:    3,
			wantRunner:  true,
			wantConsole: []string{"runner exited with status 3"},
		},
		{
			name:        "jit arrives late",
			sc:          scenario{prebaked: testVersion, jitAfter: 2},
			wantRunner:  true,
			wantConsole: []string{"got the JIT config after 3 attempt(s)"},
		},
		{
			name:        "jit never arrives",
			sc:          scenario{prebaked: testVersion, noJIT: true, params: func(p *Params) { p.JITWaitSeconds = 1 }},
			wantExit:    1,
			wantConsole: []string{"jit-fetch: FAILED: no JIT config for " + testARN + " in " + testTable + " after 1s"},
			check: func(t *testing.T, b boot) {
				if n := len(b.callsTo("aws dynamodb delete-item")); n < 2 {
					t.Errorf("%d delete-item calls; want retries", n)
				}
			},
		},
		{
			name:        "idle timeout",
			sc:          scenario{prebaked: testVersion, runnerIdle: true, params: func(p *Params) { p.IdleTimeoutSeconds = 1 }},
			wantRunner:  true,
			wantConsole: []string{"watchdog: no job within 1s; stopping the runner", "idle timeout: no job within 1s"},
		},
		{
			name:        "checksum mismatch",
			sc:          scenario{params: func(p *Params) { p.RunnerSHA256X64 = otherSHA }},
			wantExit:    1,
			wantConsole: []string{"download: FAILED: checksum mismatch"},
			check: func(t *testing.T, b boot) {
				if c := b.callsTo("runuser"); len(c) != 0 {
					t.Errorf("runuser called after a checksum mismatch: %q", c)
				}
				if c := b.callsTo("aws dynamodb"); len(c) != 0 {
					t.Errorf("JIT config fetched after a checksum mismatch: %q", c)
				}
			},
		},
		{
			name:        "install failure",
			sc:          scenario{pkgFail: true},
			wantExit:    1,
			wantConsole: []string{"install: FAILED: dnf install failed"},
			check: func(t *testing.T, b boot) {
				if d := b.downloads(); len(d) != 0 {
					t.Errorf("downloads after a failed install: %q", d)
				}
			},
		},
		{
			name:        "unsupported os",
			sc:          scenario{osID: "alpine", osVersion: "3.20"},
			wantExit:    1,
			wantConsole: []string{"install: FAILED: unsupported OS 'alpine'"},
		},
		{
			name:        "sigterm",
			sc:          scenario{prebaked: testVersion, runnerIdle: true, signal: syscall.SIGTERM},
			wantExit:    143,
			wantRunner:  true,
			wantConsole: []string{"exit: status 143: signal TERM"},
		},
		{
			name:        "imds failure",
			sc:          scenario{prebaked: testVersion, noIMDSDoc: true},
			wantExit:    1,
			wantConsole: []string{"imds: FAILED: no instance identity document"},
			check: func(t *testing.T, b boot) {
				if c := b.callsTo("aws"); len(c) != 0 {
					t.Errorf("aws called without an instance identity: %q", c)
				}
			},
		},
		{
			name:       "region override",
			sc:         scenario{prebaked: testVersion, params: func(p *Params) { p.Region = "us-east-2" }},
			wantRunner: true,
			check: func(t *testing.T, b boot) {
				c := b.callsTo("aws dynamodb")
				if len(c) != 1 || !containsAll(c[0], "--region us-east-2 ", testARN) {
					t.Errorf("dynamodb calls %q; want --region us-east-2 and the instance's own ARN", c)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := runBoot(t, tt.sc)
			if b.exitCode != tt.wantExit {
				t.Errorf("exit code %d; want %d\n%s", b.exitCode, tt.wantExit, b.dump())
			}
			if b.runnerStarted != tt.wantRunner {
				t.Errorf("runner started = %v; want %v\n%s", b.runnerStarted, tt.wantRunner, b.dump())
			}
			checkTerminated(t, b)
			checkNoLeaks(t, b)
			for _, w := range tt.wantConsole {
				if !strings.Contains(b.console, w) {
					t.Errorf("console lacks %q:\n%s", w, b.console)
				}
			}
			if !strings.Contains(b.output, "jit-runner: imds: start") {
				t.Errorf("stdout lacks the progress lines:\n%s", b.output)
			}
			if tt.check != nil {
				tt.check(t, b)
			}
		})
	}
}

// TestBootHostileDownloadURL renders a base URL that passes validation but
// is full of shell syntax: it must reach curl verbatim and execute nothing.
func TestBootHostileDownloadURL(t *testing.T) {
	t.Parallel()
	pwned := filepath.Join(t.TempDir(), "pwned")
	base := "https://example.com/$(touch${IFS}" + pwned + ")/`touch${IFS}" + pwned + "`/x'y\"z;$HOME"
	b := runBoot(t, scenario{userExists: true, params: func(p *Params) { p.DownloadBaseURL = base }})
	if _, err := os.Stat(pwned); err == nil {
		t.Fatalf("hostile URL executed a command\n%s", b.dump())
	}
	want := base + "/v" + testVersion + "/actions-runner-linux-x64-" + testVersion + ".tar.gz"
	if d := b.downloads(); len(d) != 1 || !strings.HasSuffix(d[0], " "+want) {
		t.Errorf("downloads %q; want the URL verbatim: %s", d, want)
	}
	checkTerminated(t, b)
}

// TestBootPoolHot: a hot pooled instance consumes its marker, then waits for
// a job's config past JIT_WAIT_SECONDS (it has no deadline) and runs it.
func TestBootPoolHot(t *testing.T) {
	t.Parallel()
	const jitWait = time.Second
	b := runBoot(t, scenario{
		prebaked: testVersion,
		holdJIT:  true,
		replies:  map[int]string{1: "None\t" + jitstore.PoolHot},
		params:   func(p *Params) { p.JITWaitSeconds = int(jitWait / time.Second) },
	}, func(p *proc) {
		p.waitConsole("jit-fetch: pooled (hot): waiting for a job without a deadline")
		// The deadline would count from the fetch's start, before the marker:
		// let it pass (that is the point), then see the script still polling.
		time.Sleep(jitWait + 100*time.Millisecond)
		n := p.deleteCalls()
		waitFor(t, 10*time.Second, func() bool { return p.deleteCalls() >= n+2 })
		p.releaseJIT()
	})
	if b.exitCode != 0 || !b.runnerStarted {
		t.Errorf("exit %d, runner started %v; want 0, true\n%s", b.exitCode, b.runnerStarted, b.dump())
	}
	if strings.Contains(b.console, "FAILED") {
		t.Errorf("a hot instance failed:\n%s", b.console)
	}
	if !strings.Contains(b.console, "jit-fetch: got the JIT config after") {
		t.Errorf("console lacks the fetch:\n%s", b.console)
	}
	checkTerminated(t, b)
	checkNoLeaks(t, b)
}

// TestBootPoolHotTerm: a TERM while hot is an ordinary signal: terminate.
// Only the stopped pool's stop leaves the instance alone.
func TestBootPoolHotTerm(t *testing.T) {
	t.Parallel()
	b := runBoot(t, scenario{prebaked: testVersion, holdJIT: true, replies: map[int]string{1: "None\t" + jitstore.PoolHot}},
		func(p *proc) {
			p.waitConsole("pooled (hot)")
			p.signalGroup(syscall.SIGTERM)
		})
	if b.exitCode != 143 || !strings.Contains(b.console, "exit: status 143: signal TERM; terminating") {
		t.Errorf("exit %d; want 143 for signal TERM\n%s", b.exitCode, b.console)
	}
	checkTerminated(t, b)
}

// TestBootPoolBackoff: a hot instance polls every POOL_POLL_SECONDS and backs
// off along POOL_BACKOFF_DELAYS while delete-item fails, from the start
// again after a success; before the marker, failures follow JIT_RETRY_DELAYS.
func TestBootPoolBackoff(t *testing.T) {
	t.Parallel()
	b := runBoot(t, scenario{prebaked: testVersion, jitAfter: 8, replies: map[int]string{
		1: replyFail, 2: "None\t" + jitstore.PoolHot, 3: replyFail, 4: replyFail, 5: replyFail, 6: replyFail,
		7: "None\tNone", 8: replyFail,
	}})
	if b.exitCode != 0 || !b.runnerStarted {
		t.Errorf("exit %d, runner started %v; want 0, true\n%s", b.exitCode, b.runnerStarted, b.dump())
	}
	// The test hooks: JIT_RETRY_DELAYS "0.05 0.1", POOL_BACKOFF_DELAYS "0.06 0.07 0.08".
	at := 0
	for _, want := range []string{
		"status 254 (attempt 1); next in 0.05s",
		"pooled (hot)",
		"(attempt 3); next in 0.06s",
		"(attempt 4); next in 0.07s",
		"(attempt 5); next in 0.08s",
		"(attempt 6); next in 0.08s",
		"(attempt 8); next in 0.06s",
		"got the JIT config after 9 attempt(s)",
	} {
		i := strings.Index(b.console[at:], want)
		if i < 0 {
			t.Fatalf("console lacks %q after offset %d:\n%s", want, at, b.console)
		}
		at += i + len(want)
	}
	checkTerminated(t, b)
}

// TestBootPoolStopped: an instance prepared for the stopped pool sleeps until
// the control plane stops it. systemd's TERM (to the unit's processes or to
// the script alone) ends it with status 0 and no shutdown; no stop in
// STOP_WAIT_SECONDS, or another signal, terminates it.
func TestBootPoolStopped(t *testing.T) {
	t.Parallel()
	const prepared = "jit-fetch: pooled (stopped): prepared; waiting up to "
	stopped := map[int]string{1: "None\t" + jitstore.PoolStopped}
	signal := func(group bool, sig syscall.Signal) func(*proc) {
		return func(p *proc) {
			p.waitConsole(prepared)
			if group {
				p.signalGroup(sig)
			} else if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Later delete-items would find a config (the default): a script that
	// polled instead of sleeping would run the runner.
	wait15 := func(p *Params) { p.StopWaitSeconds = 15 }
	for _, tt := range []struct {
		name        string
		params      func(*Params)
		during      []func(*proc)
		wantExit    int
		wantConsole string
		terminated  bool
	}{
		{"term to the unit", wait15, []func(*proc){signal(true, syscall.SIGTERM)},
			0, "exit: status 0: stopped for the stopped pool; not terminating", false},
		{"term to the script", wait15, []func(*proc){signal(false, syscall.SIGTERM)},
			0, "exit: status 0: stopped for the stopped pool; not terminating", false},
		{"int is no stop", wait15, []func(*proc){signal(false, syscall.SIGINT)},
			130, "exit: status 130: signal INT; terminating", true},
		{"not stopped", func(p *Params) { p.StopWaitSeconds = 1 }, nil,
			1, "jit-fetch: FAILED: not stopped within 1s", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := runBoot(t, scenario{prebaked: testVersion, replies: stopped, params: tt.params}, tt.during...)
			if b.exitCode != tt.wantExit {
				t.Errorf("exit %d; want %d\n%s", b.exitCode, tt.wantExit, b.dump())
			}
			for _, want := range []string{prepared, tt.wantConsole} {
				if !strings.Contains(b.console, want) {
					t.Errorf("console lacks %q:\n%s", want, b.console)
				}
			}
			if n := len(b.callsTo("aws dynamodb delete-item")); n != 1 || b.runnerStarted {
				t.Errorf("%d delete-items, runner started %v; want 1, false: the stop is awaited, not polled for\n%s",
					n, b.runnerStarted, b.dump())
			}
			if tt.terminated {
				checkTerminated(t, b)
			} else {
				checkNotTerminated(t, b)
			}
			checkNoLeaks(t, b)
		})
	}
}

// TestBootPoolHostileMarker: a pool marker that is neither hot nor stopped is
// data: logged (defanged) as unknown, never evaluated, and the JIT deadline
// still applies. Each delete-item returns the next value.
func TestBootPoolHostileMarker(t *testing.T) {
	t.Parallel()
	pwned := filepath.Join(t.TempDir(), "pwned")
	markers := []struct{ value, logged string }{
		{"hot; reboot", "hot? reboot"},
		{"$(reboot)", "??reboot?"},
		{"`touch " + pwned + "`", "?touch "},
		{"$(touch " + pwned + ")", "??touch "},
		{jitstore.PoolHot + "\n" + jitstore.PoolStopped, "hot?stopped"},
		{jitstore.PoolStopped + "\t" + jitstore.PoolHot, "stopped?hot"},
		{strings.ToUpper(jitstore.PoolHot), "HOT"},
		{" " + jitstore.PoolStopped, " stopped"},
	}
	replies := map[int]string{}
	for i, m := range markers {
		replies[i+1] = "None\t" + m.value
	}
	b := runBoot(t, scenario{prebaked: testVersion, noJIT: true, replies: replies,
		params: func(p *Params) { p.JITWaitSeconds = 2 }})
	if _, err := os.Stat(pwned); err == nil {
		t.Fatalf("a pool marker was executed\n%s", b.dump())
	}
	if b.exitCode != 1 || !strings.Contains(b.console, "jit-fetch: FAILED: no JIT config for "+testARN+" in "+testTable+" after 2s") {
		t.Errorf("exit %d; want the JIT deadline's failure\n%s", b.exitCode, b.console)
	}
	if n := len(b.callsTo("aws dynamodb delete-item")); n <= len(markers) {
		t.Errorf("%d delete-items; want polling to go on after every unknown marker", n)
	}
	for _, m := range markers {
		if !strings.Contains(b.console, "jit-fetch: unknown pool marker '"+m.logged) {
			t.Errorf("console lacks the unknown marker %q:\n%s", m.logged, b.console)
		}
		if strings.ContainsAny(m.value, "$`;\n\t") && strings.Contains(b.console, m.value) {
			t.Errorf("console has the raw marker %q:\n%s", m.value, b.console)
		}
	}
	if strings.Contains(b.console, "pooled (") {
		t.Errorf("an unknown marker acted as a pool:\n%s", b.console)
	}
	checkTerminated(t, b)
}

// TestBootSecondBoot: a stopped-pool instance's first boot (cloud-init,
// stock AMI) installs and downloads, installs the script as a unit for later
// boots and leaves on the stop; its second boot (systemd runs the installed
// copy) goes straight to the JIT config and the runner.
func TestBootSecondBoot(t *testing.T) {
	t.Parallel()
	r := newRig(t, scenario{
		replies: map[int]string{1: "None\t" + jitstore.PoolStopped},
		params:  func(p *Params) { p.StopWaitSeconds = 15 },
	})
	p := r.start(r.scriptPath)
	p.waitConsole("pooled (stopped): prepared")
	p.signalGroup(syscall.SIGTERM)
	b := p.wait()
	if b.exitCode != 0 || b.runnerStarted {
		t.Fatalf("first boot: exit %d, runner started %v; want 0, false\n%s", b.exitCode, b.runnerStarted, b.dump())
	}
	checkNotTerminated(t, b)
	if len(b.callsTo("dnf")) == 0 || len(b.downloads()) != 1 {
		t.Errorf("first boot on a stock AMI: want an install and a download\n%s", b.dump())
	}

	unit := filepath.Join(r.root, "etc/systemd/system/jit-runner.service")
	wantUnit := "[Unit]\nDescription=jit-runners bootstrap\nWants=network-online.target\nAfter=network-online.target\n\n" +
		"[Service]\nType=simple\nExecStart=" + r.installed + "\nStandardOutput=journal+console\nStandardError=journal+console\nTimeoutStartSec=0\n\n" +
		"[Install]\nWantedBy=multi-user.target\n"
	checkFile(t, unit, wantUnit, 0o644)
	checkFile(t, r.installed, r.script, 0o700)
	checkFile(t, filepath.Join(r.root, "opt/jit-runner-prebaked"), testVersion+"\n", 0o644)
	link := filepath.Join(r.root, "etc/systemd/system/multi-user.target.wants/jit-runner.service")
	if dest, err := os.Readlink(link); err != nil || dest != unit {
		t.Errorf("enable symlink %s -> %q (%v); want -> %s", link, dest, err, unit)
	}
	if fi, err := os.Stat(filepath.Join(r.root, "run/jit-runner")); err != nil || !fi.IsDir() {
		t.Errorf("no per-boot lock directory: %v", err)
	}
	unitInfo, err := os.Stat(unit)
	if err != nil {
		t.Fatal(err)
	}

	r.reboot()
	p = r.start(r.installed)
	b = p.wait()
	if b.exitCode != 0 || !b.runnerStarted {
		t.Errorf("second boot: exit %d, runner started %v; want 0, true\n%s", b.exitCode, b.runnerStarted, b.dump())
	}
	checkTerminated(t, b)
	checkNoLeaks(t, b)
	if n := b.pkgManagerCalls(); n != 0 || len(b.downloads()) != 0 || len(b.callsTo("useradd")) != 0 || len(b.callsTo("runuser -u runner -- tar")) != 0 {
		t.Errorf("second boot installed or downloaded again\n%s", b.dump())
	}
	if !strings.Contains(b.console, "install: skipped, runner "+testVersion+" already installed") {
		t.Errorf("second boot's console lacks the skipped install:\n%s", b.console)
	}
	if c := b.callsTo("aws dynamodb delete-item"); len(c) != 1 {
		t.Errorf("second boot's delete-items %q; want 1", c)
	}
	checkFile(t, r.installed, r.script, 0o700)
	if fi, err := os.Stat(unit); err != nil || !fi.ModTime().Equal(unitInfo.ModTime()) {
		t.Errorf("the installed copy rewrote the unit: %v", err)
	}
}

// TestBootLock: while one copy runs, another in the same boot (the unit's,
// started alongside cloud-init's) exits 0 at once, touching nothing.
func TestBootLock(t *testing.T) {
	t.Parallel()
	r := newRig(t, scenario{prebaked: testVersion, holdJIT: true})
	first := r.start(r.scriptPath)
	first.waitConsole("jit-fetch: start") // holds the lock, installed its copy, polls

	b := r.start(r.installed).wait()
	if b.exitCode != 0 || len(b.calls) != 0 || !strings.Contains(b.output, "jit-runner: start: already running this boot") {
		t.Errorf("second copy: exit %d, calls %q; want 0 and none, and the log line\n%s", b.exitCode, b.calls, b.output)
	}
	checkNotTerminated(t, b)
	if strings.Contains(b.output, "exit: status") {
		t.Errorf("second copy ran the exit handler:\n%s", b.output)
	}

	first.releaseJIT()
	b = first.wait()
	if b.exitCode != 0 || !b.runnerStarted {
		t.Errorf("first copy: exit %d, runner started %v; want 0, true\n%s", b.exitCode, b.runnerStarted, b.dump())
	}
	checkTerminated(t, b)
	checkNoLeaks(t, b)
}

// checkFile checks a file's content, permissions and owner (the script runs
// as root; in tests, as the test's user).
func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if got := readFile(t, path); got != want {
		t.Errorf("%s is\n%s\nwant\n%s", path, got, want)
	}
	if fi.Mode() != mode {
		t.Errorf("%s mode %v; want %v", path, fi.Mode(), mode)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		t.Errorf("%s owned by %d; want %d", path, st.Uid, os.Getuid())
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		field string
		mod   func(*Params)
	}{
		{"RunnerVersion", func(p *Params) { p.RunnerVersion = "" }},
		{"RunnerVersion", func(p *Params) { p.RunnerVersion = "v2.332.0" }},
		{"RunnerVersion", func(p *Params) { p.RunnerVersion = "2.332.0\nid" }},
		{"NamePrefix", func(p *Params) { p.NamePrefix = "" }},
		{"NamePrefix", func(p *Params) { p.NamePrefix = "x'; touch /tmp/pwned; '" }},
		{"NamePrefix", func(p *Params) { p.NamePrefix = "a$(id)" }},
		{"NamePrefix", func(p *Params) { p.NamePrefix = "a`id`" }},
		{"NamePrefix", func(p *Params) { p.NamePrefix = "a\nb" }},
		{"JITTable", func(p *Params) { p.JITTable = "" }},
		{"JITTable", func(p *Params) { p.JITTable = "t'; reboot; '" }},
		{"IdleTimeoutSeconds", func(p *Params) { p.IdleTimeoutSeconds = -1 }},
		{"IdleTimeoutSeconds", func(p *Params) { p.IdleTimeoutSeconds = 90000 }},
		{"JITWaitSeconds", func(p *Params) { p.JITWaitSeconds = -5 }},
		{"JITWaitSeconds", func(p *Params) { p.JITWaitSeconds = 3601 }},
		{"StopWaitSeconds", func(p *Params) { p.StopWaitSeconds = -1 }},
		{"StopWaitSeconds", func(p *Params) { p.StopWaitSeconds = 3601 }},
		{"RunnerSHA256X64", func(p *Params) { p.RunnerSHA256X64 = "" }},
		{"RunnerSHA256X64", func(p *Params) { p.RunnerSHA256X64 = otherSHA[:63] + "g" }},
		{"RunnerSHA256ARM64", func(p *Params) { p.RunnerSHA256ARM64 = "abc" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "http://example.com/runner" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "https://example.com/a b" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "https://example.com/a\n$(id)" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "https://user:pw@example.com/" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "https://example.com/?x=1" }},
		{"DownloadBaseURL", func(p *Params) { p.DownloadBaseURL = "ftp://example.com/" }},
		{"Region", func(p *Params) { p.Region = "eu-west-1'; id; '" }},
		{"Region", func(p *Params) { p.Region = "EU-WEST-1" }},
	}
	for _, tt := range tests {
		p := validParams()
		tt.mod(&p)
		_, err := Render(p)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Field != tt.field || !strings.Contains(err.Error(), "Params."+tt.field) {
			t.Errorf("Render(%+v) error = %v; want a ParamError naming %s", p, err, tt.field)
		}
	}

	// Every required field is named at once.
	err := (&Params{}).Validate()
	for _, f := range []string{"RunnerVersion", "NamePrefix", "JITTable", "RunnerSHA256X64", "RunnerSHA256ARM64"} {
		if err == nil || !strings.Contains(err.Error(), "Params."+f+":") {
			t.Errorf("Validate(Params{}) = %v; want it to name %s", err, f)
		}
	}

	// Defaults.
	p := validParams()
	p.RunnerSHA256X64 = strings.ToUpper(p.RunnerSHA256X64)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.IdleTimeoutSeconds != 600 || p.JITWaitSeconds != 180 || p.StopWaitSeconds != 600 || p.DownloadBaseURL != DefaultDownloadBaseURL {
		t.Errorf("defaults: idle %d, jit wait %d, stop wait %d, url %q; want 600, 180, 600, %q",
			p.IdleTimeoutSeconds, p.JITWaitSeconds, p.StopWaitSeconds, p.DownloadBaseURL, DefaultDownloadBaseURL)
	}
	if p.RunnerSHA256X64 != strings.ToLower(p.RunnerSHA256X64) {
		t.Errorf("RunnerSHA256X64 %q not lower-cased", p.RunnerSHA256X64)
	}
	p = validParams()
	p.DownloadBaseURL = "https://mirror.example.com/runner/"
	if err := p.Validate(); err != nil || p.DownloadBaseURL != "https://mirror.example.com/runner" {
		t.Errorf("Validate trailing slash: %v, %q", err, p.DownloadBaseURL)
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	p := validParams()
	p.Region = "us-east-2"
	s, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rendered script: %d bytes (limit %d)", len(s), MaxUserDataBytes)
	if len(s) > MaxUserDataBytes {
		t.Errorf("rendered script is %d bytes; user-data allows %d", len(s), MaxUserDataBytes)
	}
	if !strings.HasPrefix(s, "#!/bin/bash\n") {
		t.Errorf("script does not start with #!/bin/bash")
	}
	for _, want := range []string{
		"readonly RUNNER_VERSION='" + testVersion + "'\n",
		"readonly NAME_PREFIX='jitr'\n",
		"readonly JIT_TABLE='" + testTable + "'\n",
		"readonly IDLE_TIMEOUT_SECONDS='600'\n",
		"readonly JIT_WAIT_SECONDS='180'\n",
		"readonly STOP_WAIT_SECONDS='600'\n",
		"readonly JIT_KEY_ATTRIBUTE='" + jitstore.AttrInstanceARN + "'\n",
		"readonly JIT_CONFIG_ATTRIBUTE='" + jitstore.AttrJITConfig + "'\n",
		"readonly POOL_ATTRIBUTE='" + jitstore.AttrPool + "'\n",
		"readonly POOL_HOT='" + jitstore.PoolHot + "'\n",
		"readonly POOL_STOPPED='" + jitstore.PoolStopped + "'\n",
		"readonly RUNNER_SHA256_X64='" + p.RunnerSHA256X64 + "'\n",
		"readonly DOWNLOAD_BASE_URL='" + DefaultDownloadBaseURL + "'\n",
		"readonly REGION_OVERRIDE='us-east-2'\n",
		// What only the tests may change stays hardcoded in production.
		"readonly IMDS_URL='http://169.254.169.254'\n",
		"readonly ROOT=''\n",
		"readonly CONSOLE='/dev/console'\n",
		"readonly POOL_POLL_SECONDS='1'\n",
		"readonly POOL_BACKOFF_DELAYS='2 4 8 16 30'\n",
		"set -Eeuo pipefail\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered script lacks %q", want)
		}
	}
	if strings.Contains(s, "#@PARAMS@") || strings.Contains(s, "127.0.0.1") {
		t.Errorf("rendered script has a template marker or a test endpoint")
	}
	for i, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "set" && strings.Contains(l, "-x") && !strings.Contains(l, "+x") {
			t.Errorf("line %d enables xtrace: %q", i+1, l)
		}
	}
	// The parameter block comes before any command.
	if i, j := strings.Index(s, "readonly RUNNER_VERSION="), strings.Index(s, "\nset "); i < 0 || j < i {
		t.Errorf("parameter block is not at the top")
	}
	out, err := exec.Command("bash", "-n", "-c", s).CombinedOutput()
	if err != nil {
		t.Errorf("bash -n: %v\n%s", err, out)
	}

	// Worst-case sizes still fit.
	p = validParams()
	p.JITTable = strings.Repeat("t", 255)
	p.DownloadBaseURL = "https://" + strings.Repeat("m", 200) + ".example.com/" + strings.Repeat("p", 500)
	if s, err := Render(p); err != nil || len(s) > MaxUserDataBytes {
		t.Errorf("worst-case render: %d bytes, %v", len(s), err)
	}
}

// TestShellQuote evaluates quoted hostile values with bash: each must come
// back verbatim and run nothing.
func TestShellQuote(t *testing.T) {
	t.Parallel()
	pwned := filepath.Join(t.TempDir(), "pwned")
	values := []string{
		"",
		"plain",
		"x'; touch " + pwned + "; '",
		"$(touch " + pwned + ")",
		"`touch " + pwned + "`",
		"a\nb\ntouch " + pwned,
		`'"'"'\'` + "\\",
		"${IFS}$HOME!$$ *?[a]",
	}
	for _, v := range values {
		script := "readonly V=" + shellQuote(v) + "\nprintf '%s' \"$V\"\n"
		out, err := exec.Command("bash", "-c", script).Output()
		if err != nil {
			t.Errorf("bash on %q: %v", v, err)
			continue
		}
		if string(out) != v {
			t.Errorf("round trip of %q gave %q", v, out)
		}
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Errorf("a quoted value executed a command")
	}
}

// TestRenderHooks: the test hooks replace exactly the hardcoded values.
func TestRenderHooks(t *testing.T) {
	t.Parallel()
	s, err := render(validParams(), testHooks{imdsURL: "http://127.0.0.1:1", root: "/tmp/r o'ot"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"readonly IMDS_URL='http://127.0.0.1:1'\n", `readonly ROOT='/tmp/r o'\''ot'` + "\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("hooked script lacks %q", want)
		}
	}
	if strings.Contains(s, "169.254.169.254") {
		t.Errorf("hooked script still has the real IMDS address")
	}
}

func TestShellcheck(t *testing.T) {
	t.Parallel()
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("shellcheck not installed")
		}
		t.Fatalf("shellcheck not installed under CI: %v", err)
	}
	prod, err := Render(validParams())
	if err != nil {
		t.Fatal(err)
	}
	hooked, err := render(validParams(), testHooks{imdsURL: "http://127.0.0.1:1", root: "/tmp/x", console: "/tmp/c",
		watchdogPoll: "0.05", jitRetryDelays: "0.05 0.1", poolPoll: "0.05", poolBackoff: "0.06 0.07 0.08"})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"production": prod, "test hooks": hooked} {
		cmd := exec.Command(sc, "--shell=bash", "--severity=style", "-")
		cmd.Stdin = strings.NewReader(s)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("shellcheck (%s): %v\n%s", name, err, out)
		}
	}
}

// BenchmarkPrebakedBoot boots the pre-baked path with stubs and reports the
// time from script start to runner start and the package manager calls.
func BenchmarkPrebakedBoot(b *testing.B) {
	var total time.Duration
	calls := 0
	for b.Loop() {
		r := runBoot(b, scenario{prebaked: testVersion})
		if !r.runnerStarted {
			b.Fatalf("runner not started\n%s", r.dump())
		}
		total += r.startLatency
		calls += r.pkgManagerCalls()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/boot")
	b.ReportMetric(float64(calls)/float64(b.N), "pkg-manager-calls")
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	waitForMsg(t, timeout, cond, func() string { return "condition not met" })
}

// waitForMsg is waitFor with msg describing the failure.
func waitForMsg(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("within %v: %s", timeout, msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func randHex(t testing.TB) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func mustMkdir(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the file's content, or "" when it does not exist.
func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

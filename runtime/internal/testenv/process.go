package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

// RIEOptions configure StartRIEWith.
type RIEOptions struct {
	// Env is the emulator's whole environment (it forwards it to the
	// function); unlike StartRIE nothing of this process's is added.
	Env []string
	// Output receives everything the emulator and the function print.
	// Nil keeps it in memory for Output.
	Output io.Writer
}

// StartRIEWith runs bootstrap under the emulator on loopback ports like
// StartRIE, with exactly o.Env and its output going to o.Output.
func StartRIEWith(ctx context.Context, bootstrap string, o RIEOptions) (*RIE, error) {
	bin, err := FindRIE()
	if err != nil {
		return nil, err
	}
	p1, err := FreePort()
	if err != nil {
		return nil, err
	}
	p2, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(p1)
	cmd := exec.Command(bin,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", "127.0.0.1:"+strconv.Itoa(p2),
		bootstrap)
	cmd.Env = o.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	buf := &testkit.Buffer{}
	if o.Output != nil {
		cmd.Stdout, cmd.Stderr = o.Output, o.Output
	} else {
		cmd.Stdout, cmd.Stderr = buf, buf
	}
	r := &RIE{URL: "http://" + addr, cmd: cmd, done: make(chan struct{}), output: buf}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("emulator exited during start-up:\n%s", buf.String())
		case <-ctx.Done():
			r.Stop(time.Second)
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Stop(time.Second)
			return nil, errors.New("emulator did not listen within 30s")
		}
	}
}

// PID returns the emulator's process id; the function's bootstrap runs as
// its child.
func (r *RIE) PID() int { return r.cmd.Process.Pid }

// Exited is closed when the emulator has exited.
func (r *RIE) Exited() <-chan struct{} { return r.done }

// Stop stops the emulator and the function: SIGTERM to its process group,
// SIGKILL after grace. It returns once the emulator has exited.
func (r *RIE) Stop(grace time.Duration) {
	stopGroup(r.cmd, r.done, grace)
}

// Stop stops the server like Close, but waits at most grace before it kills
// the server.
func (m *Moto) Stop(grace time.Duration) {
	if m == nil || m.cmd.Process == nil {
		return
	}
	defer func() { _ = os.Remove(m.script); _ = os.Remove(m.images) }()
	stopGroup(m.cmd, m.done, grace)
}

// PID returns the moto server's process id.
func (m *Moto) PID() int { return m.cmd.Process.Pid }

func stopGroup(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	select {
	case <-done:
		return
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// ChildPIDs returns the ids of pid's child processes (Linux).
func ChildPIDs(pid int) []int {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// CPUTime returns the processor time process pid has used, user and
// system, its waited-for children's included (Linux: /proc/<pid>/stat, in
// USER_HZ ticks, which Linux fixes at 100 per second for user space).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it are
	// counted from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, field := range f[11:15] { // utime, stime, cutime, cstime: fields 14-17
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// PeakRSS returns the peak resident set size (VmHWM) of process pid in
// bytes (Linux).
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

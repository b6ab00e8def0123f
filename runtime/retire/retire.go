// Package retire ends a runner instance's life without ever killing a busy
// runner. It is the one way the control plane terminates an instance that
// may carry a registered runner: scaledown's rules, its orphan and event
// handling, and scaleup's undo of a launch all go through Retirer.Retire.
//
// GitHub gives a queued job to any idle runner whose labels match, so the job
// an instance was launched for says nothing about what the instance runs
// now. Only its own runner (tags.RunnerName, fixed at launch)
// does, and GitHub is the authority on it: the runner is deleted first, and
// a 422 ("still running a job") keeps the instance. GitHub's busy flag in
// runner lists lags a job's start; the delete does not.
package retire

import (
	"context"
	"errors"
	"fmt"

	"github.com/jit-runners/jit-runners/runtime/githubapp"
)

// GitHub is what Retire needs from the GitHub App client.
type GitHub interface {
	// DeleteRunner: a runner already gone is no error; a busy one is
	// githubapp.ErrRunnerBusy.
	DeleteRunner(ctx context.Context, inst githubapp.Installation, runnerID int64) error
	FindRunner(ctx context.Context, inst githubapp.Installation, name string) (githubapp.Runner, bool, error)
}

// Terminator terminates one instance; an instance that no longer exists is
// no error. *fleet.Launcher implements it.
type Terminator interface {
	Terminate(ctx context.Context, instanceID string) error
}

// TerminatorFunc adapts a function to Terminator.
type TerminatorFunc func(ctx context.Context, instanceID string) error

// Terminate calls f.
func (f TerminatorFunc) Terminate(ctx context.Context, instanceID string) error {
	return f(ctx, instanceID)
}

// Target is an instance to retire and its own runner.
type Target struct {
	InstanceID string
	// Installation is where the instance's runner registers (the owner and
	// repository of the job it was launched for).
	Installation githubapp.Installation
	// RunnerName is the runner the instance was launched with; RunnerID its
	// id when known (0: looked up by name). Both empty: the instance never
	// had a runner (its JIT config was never generated).
	RunnerName string
	RunnerID   int64
}

// Outcome is what Retire did.
type Outcome int

const (
	// Terminated: the runner is gone and the instance terminating.
	Terminated Outcome = iota
	// KeptBusy: GitHub says the runner is running a job; nothing was done.
	KeptBusy
)

func (o Outcome) String() string {
	if o == KeptBusy {
		return "kept-busy"
	}
	return "terminated"
}

// ErrNoInstallation means the runner could not be checked because no App
// installation is known for it; the instance is kept.
var ErrNoInstallation = errors.New("retire: no GitHub App installation known for the instance's runner; instance kept")

// Retirer deletes an instance's runner, then terminates the instance.
type Retirer struct {
	gh  GitHub
	ec2 Terminator
}

// New returns a Retirer.
func New(gh GitHub, ec2 Terminator) *Retirer { return &Retirer{gh: gh, ec2: ec2} }

// Retire deletes t's runner and then terminates t's instance. A runner that
// GitHub lists as busy, or whose deletion GitHub refuses with 422, keeps the
// instance (KeptBusy, no error). Any other failure keeps it too and is
// returned: a caller tries again later, and nothing busy is ever lost to an
// error. A runner that does not exist (any more) lets the termination go on.
func (r *Retirer) Retire(ctx context.Context, t Target) (Outcome, error) {
	id := t.RunnerID
	if id == 0 && t.RunnerName != "" {
		if t.Installation.ID == 0 {
			return 0, fmt.Errorf("retire %s (runner %s): %w", t.InstanceID, t.RunnerName, ErrNoInstallation)
		}
		rn, found, err := r.gh.FindRunner(ctx, t.Installation, t.RunnerName)
		if err != nil {
			return 0, fmt.Errorf("retire %s: find runner %s: %w", t.InstanceID, t.RunnerName, err)
		}
		if found && rn.Busy {
			return KeptBusy, nil
		}
		id = rn.ID
	}
	if id != 0 {
		if t.Installation.ID == 0 {
			return 0, fmt.Errorf("retire %s (runner %d): %w", t.InstanceID, id, ErrNoInstallation)
		}
		err := r.gh.DeleteRunner(ctx, t.Installation, id)
		switch {
		case errors.Is(err, githubapp.ErrRunnerBusy):
			return KeptBusy, nil
		case err != nil:
			return 0, fmt.Errorf("retire %s: delete runner %d: %w", t.InstanceID, id, err)
		}
	}
	if err := r.ec2.Terminate(ctx, t.InstanceID); err != nil {
		return 0, fmt.Errorf("retire %s: %w", t.InstanceID, err)
	}
	return Terminated, nil
}

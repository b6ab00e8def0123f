package ghfake

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrNoAssignment is WaitAssignment's error when its context ends first.
var ErrNoAssignment = errors.New("ghfake: no job assigned")

// StartDispatch makes the fake assign queued jobs to runners as GitHub does:
// each queued job (oldest first) goes to an idle online runner of its
// repository's scope whose labels include all of the job's labels, chosen at
// random among the eligible ones: not the runner created for the job. An
// ephemeral runner gets at most one job. The job becomes in_progress on that
// runner, the runner busy, and an in_progress webhook is delivered (see
// SetWebhook). delay is how long the fake waits after a change (a job
// queued, a runner online) before assigning, so that runners coming online
// together compete for the jobs as they do on GitHub. Without StartDispatch
// jobs move only through StartJob. Dispatch stops with Close.
func (s *Server) StartDispatch(delay time.Duration) {
	s.mu.Lock()
	if s.dispatching {
		s.mu.Unlock()
		return
	}
	s.dispatching = true
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for {
			select {
			case <-s.done:
				return
			case <-s.wake:
			}
			if delay > 0 {
				select {
				case <-s.done:
					return
				case <-time.After(delay):
				}
			}
			s.dispatchOnce()
		}
	}()
}

// wakeDispatch asks the dispatcher to look at the queue again.
func (s *Server) wakeDispatch() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// WaitAssignment blocks until the dispatcher gives runner runnerID a job
// (see StartDispatch), as the runner's long poll does, and returns it. It
// returns ErrNoAssignment when ctx ends first and ErrRunnerNotFound for a
// runner that is not online.
func (s *Server) WaitAssignment(ctx context.Context, runnerID int64) (Job, error) {
	s.mu.Lock()
	ch := s.assigned[runnerID]
	s.mu.Unlock()
	if ch == nil {
		return Job{}, fmt.Errorf("%w: id %d is not online", ErrRunnerNotFound, runnerID)
	}
	select {
	case j := <-ch:
		return j, nil
	case <-ctx.Done():
		return Job{}, fmt.Errorf("%w: %w", ErrNoAssignment, ctx.Err())
	case <-s.done:
		return Job{}, ErrNoAssignment
	}
}

// assignment is one job given to one runner.
type assignment struct {
	job    Job
	runner int64
}

// dispatchOnce assigns every queued job it can and delivers their
// in_progress webhooks.
func (s *Server) dispatchOnce() {
	now := s.now().UTC().Truncate(time.Second)
	var done []assignment
	s.mu.Lock()
	queued := make([]*Job, 0, len(s.jobs))
	for _, j := range s.jobs {
		if j.Status == JobQueued {
			queued = append(queued, j)
		}
	}
	slices.SortFunc(queued, func(a, b *Job) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	idle := make([]*Runner, 0, len(s.runners))
	for _, rn := range s.runners {
		if rn.Status == RunnerStatusOnline && !rn.Busy && !rn.used && s.assigned[rn.ID] != nil {
			idle = append(idle, rn)
		}
	}
	// Map order is random; sort, then let the seeded generator choose.
	slices.SortFunc(idle, func(a, b *Runner) int { return cmp.Compare(a.ID, b.ID) })
	for _, j := range queued {
		var eligible []int
		for i, rn := range idle {
			if rn != nil && runnerServes(rn, j) {
				eligible = append(eligible, i)
			}
		}
		if len(eligible) == 0 {
			continue
		}
		i := eligible[s.rng.IntN(len(eligible))]
		rn := idle[i]
		idle[i] = nil
		s.startLocked(j, rn, now)
		s.assignLog = append(s.assignLog, j.ID)
		done = append(done, assignment{job: j.clone(), runner: rn.ID})
	}
	s.mu.Unlock()
	// The in_progress deliveries are queued before the runners learn of
	// their jobs, so a job's completion is always delivered after them.
	for _, a := range done {
		s.deliverAsync(a.job.ID, JobInProgress)
	}
	s.mu.Lock()
	for _, a := range done {
		if ch := s.assigned[a.runner]; ch != nil {
			select {
			case ch <- a.job: // buffered: one job per runner
			default:
			}
		}
	}
	s.mu.Unlock()
}

// runnerServes reports whether rn may run j: same scope (the job's
// organization, or its repository) and every job label among the runner's
// (case-insensitively).
func runnerServes(rn *Runner, j *Job) bool {
	scope := scopeKey(rn.Owner)
	if scope != scopeKey(j.Owner) && scope != scopeKey(j.Owner+"/"+j.Repo) {
		return false
	}
	for _, want := range j.Labels {
		if !slices.ContainsFunc(rn.Labels, func(have string) bool { return strings.EqualFold(have, want) }) {
			return false
		}
	}
	return true
}

// RunnerLost is what GitHub sees when a runner's machine goes away (its
// instance terminated, crashed or was interrupted): the runner goes
// offline, and a job it was running fails. Such a job counts in
// BusyRunnersLost: for this control plane, a busy runner killed. A
// completed webhook is delivered for the failed job; an ephemeral runner is
// removed.
func (s *Server) RunnerLost(runnerID int64) {
	now := s.now().UTC().Truncate(time.Second)
	s.mu.Lock()
	rn := s.runners[runnerID]
	if rn == nil {
		s.mu.Unlock()
		return
	}
	rn.Status = RunnerStatusOffline
	delete(s.assigned, runnerID)
	var failed int64
	if j := s.jobs[rn.JobID]; rn.Busy && j != nil && j.Status == JobInProgress {
		j.Status, j.Conclusion, j.CompletedAt = JobCompleted, "failure", now
		failed = j.ID
		s.busyLost++
		s.lostJobs = append(s.lostJobs, j.ID)
	}
	rn.Busy, rn.JobID = false, 0
	if rn.Ephemeral && failed != 0 {
		delete(s.runners, rn.ID)
	}
	s.mu.Unlock()
	if failed != 0 {
		s.deliverAsync(failed, JobCompleted)
	}
}

// BusyRunnersLost counts the runners that went away while running a job
// (RunnerLost), and BusyLostJobs lists those jobs.
func (s *Server) BusyRunnersLost() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busyLost
}

// BusyLostJobs lists the jobs whose runner went away under them.
func (s *Server) BusyLostJobs() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lostJobs)
}

// Assignments lists the jobs the dispatcher started, in the order it
// started them.
func (s *Server) Assignments() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.assignLog)
}

// BusyDeleteRefusals counts the deletions of busy runners the fake refused
// with 422, as GitHub does.
func (s *Server) BusyDeleteRefusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busyRefusals
}

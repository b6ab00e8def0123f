package scaledown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Report sums up one sweep.
type Report struct {
	LiveJobs        int `json:"liveJobs"`
	LivePages       int `json:"livePages"`
	Instances       int `json:"instances"`
	InstancePages   int `json:"instancePages"`
	Owners          int `json:"owners"`
	Runners         int `json:"runners"`
	Terminated      int `json:"terminated"`
	KeptBusy        int `json:"keptBusy"`
	RunnersDeleted  int `json:"runnersDeleted"`
	Requeued        int `json:"requeued"`
	Finished        int `json:"finished"`
	Lost            int `json:"lost"`
	RerunsRequested int `json:"rerunsRequested"`
	Errors          int `json:"errors"`
	// Examined counts the records read whole because a rule might apply.
	Examined int `json:"examined"`
	// Durations of the sweep's phases, in milliseconds.
	ReadJobsMs      int64 `json:"readJobsMs"`
	ReadInstancesMs int64 `json:"readInstancesMs"`
	ReadRunnersMs   int64 `json:"readRunnersMs"`
	DecideMs        int64 `json:"decideMs"`
}

// instance is what a sweep knows of one managed instance.
type instance struct {
	id, state, instanceType, az string
	launched                    time.Time
	jobID                       int64
}

func (i *instance) alive() bool {
	switch i.state {
	case "pending", "running", "stopping", "stopped":
		return true
	}
	return false
}

// ownerRunners are the runners of one owner (org, or owner/repo).
type ownerRunners struct {
	inst   githubapp.Installation
	ok     bool // listed successfully
	byName map[string]githubapp.Runner
}

type sweep struct {
	r         *Reconciler
	now       time.Time
	rep       Report
	instances map[string]*instance
	owners    map[string]*ownerRunners
	claimed   map[string]bool // instance ids a live record owns
}

// Sweep reconciles everything once. Errors in one decision are logged and
// counted; the sweep goes on, and the next sweep converges.
func (r *Reconciler) Sweep(ctx context.Context) (*Report, error) {
	start := time.Now()
	s := &sweep{r: r, now: r.now(), instances: map[string]*instance{}, owners: map[string]*ownerRunners{}, claimed: map[string]bool{}}
	lap := func(d *int64) func() {
		t := time.Now()
		return func() { *d = time.Since(t).Milliseconds() }
	}
	// The three reads are independent: the records and the instances are
	// read concurrently, and the runner lists as soon as the records name
	// their owners.
	var (
		jobs             []*state.Job
		jobsErr, instErr error
		wg               sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer lap(&s.rep.ReadInstancesMs)()
		instErr = s.describe(ctx)
	}()
	done := lap(&s.rep.ReadJobsMs)
	jobs, s.rep.LivePages, jobsErr = r.d.Live(ctx)
	done()
	if jobsErr == nil {
		s.rep.LiveJobs = len(jobs)
		for _, j := range jobs {
			if j.InstanceID != "" {
				s.claimed[j.InstanceID] = true
			}
			s.owner(j)
		}
		done = lap(&s.rep.ReadRunnersMs)
		s.listRunners(ctx)
		done()
	}
	wg.Wait()
	if err := errors.Join(jobsErr, instErr); err != nil {
		return nil, err
	}
	done = lap(&s.rep.DecideMs)

	for _, j := range jobs {
		s.job(ctx, j)
	}
	s.orphans(ctx)
	s.ghosts(ctx, jobs)
	done()

	r.log.Info("sweep done", slog.Any("report", s.rep), slog.Duration("took", time.Since(start)))
	return &s.rep, nil
}

// describe reads every managed instance that is not terminated yet.
func (s *sweep) describe(ctx context.Context) error {
	p := ec2.NewDescribeInstancesPaginator(s.r.d.EC2, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{
			{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{s.r.cfg.NamePrefix}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}},
		},
		MaxResults: aws.Int32(1000),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("describe instances: %w", err)
		}
		s.rep.InstancePages++
		for _, res := range page.Reservations {
			for _, in := range res.Instances {
				i := toInstance(in)
				s.instances[i.id] = i
			}
		}
	}
	s.rep.Instances = len(s.instances)
	return nil
}

func toInstance(in types.Instance) *instance {
	i := &instance{id: aws.ToString(in.InstanceId), instanceType: string(in.InstanceType), launched: aws.ToTime(in.LaunchTime)}
	if in.State != nil {
		i.state = string(in.State.Name)
	}
	if in.Placement != nil {
		i.az = aws.ToString(in.Placement.AvailabilityZone)
	}
	for _, t := range in.Tags {
		if aws.ToString(t.Key) == tags.JobID {
			i.jobID, _ = strconv.ParseInt(aws.ToString(t.Value), 10, 64)
		}
	}
	return i
}

// ownerKey is where a job's runner registers: its org, or its repository.
func (s *sweep) ownerKey(j *state.Job) string {
	if s.r.cfg.GitHub.Scope == config.ScopeRepo {
		return strings.ToLower(j.Repository)
	}
	return strings.ToLower(j.Owner)
}

func (s *sweep) owner(j *state.Job) *ownerRunners {
	if j.InstallationID == 0 || j.Owner == "" {
		return nil
	}
	k := s.ownerKey(j)
	o, ok := s.owners[k]
	if !ok {
		o = &ownerRunners{inst: githubapp.Installation{ID: j.InstallationID, Owner: j.Owner, Repository: j.Repository}}
		s.owners[k] = o
	}
	return o
}

// listRunners makes one paginated list per owner.
func (s *sweep) listRunners(ctx context.Context) {
	s.rep.Owners = len(s.owners)
	for k, o := range s.owners {
		runners, err := s.r.d.GitHub.ListRunners(ctx, o.inst, s.r.cfg.NamePrefix+"-")
		if err != nil {
			s.rep.Errors++
			s.r.log.Error("list runners failed; their owner's runners are left alone this sweep",
				slog.String("owner", k), slog.String("error", err.Error()))
			continue
		}
		o.ok = true
		o.byName = make(map[string]githubapp.Runner, len(runners))
		for _, rn := range runners {
			o.byName[rn.Name] = rn
		}
		s.rep.Runners += len(runners)
	}
}

// runnerOf returns the job's runner as listed, and whether the list is known.
func (s *sweep) runnerOf(j *state.Job) (githubapp.Runner, bool, bool) {
	o := s.owner(j)
	if o == nil || !o.ok {
		return githubapp.Runner{}, false, false
	}
	rn, found := o.byName[j.RunnerName]
	return rn, found, true
}

// quiet reports whether a record (as the live index projects it) needs
// nothing this sweep: launched, instance alive, and neither finished nor
// past a timeout. Most records are quiet; the rest are read again whole.
func (s *sweep) quiet(j *state.Job) bool {
	if j.InstanceID == "" || !j.InterruptedAt.IsZero() || j.Phase == state.PhaseLost {
		return false
	}
	inst := s.instances[j.InstanceID]
	if inst == nil || !inst.alive() {
		return false
	}
	age := s.now.Sub(j.LaunchedAt)
	switch j.Status {
	case state.StatusInProgress:
		return age < secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds)
	case state.StatusCompleted:
		return false
	default:
		return age < secs(s.r.cfg.ScaleDown.BootTimeoutSeconds)
	}
}

func (s *sweep) job(ctx context.Context, thin *state.Job) {
	if s.quiet(thin) {
		return
	}
	// Decide on the record itself, read consistently: the index may lag a
	// webhook that just recorded the job's start.
	j, ok, err := s.r.d.Jobs.Get(ctx, thin.JobID)
	if err != nil {
		s.fail(s.r.log.With(slog.Int64("job_id", thin.JobID)), "read", err)
		return
	}
	if !ok || !j.Live {
		return // expired or settled meanwhile
	}
	s.rep.Examined++
	log := s.r.log.With(slog.Int64("job_id", j.JobID), slog.String("repository", j.Repository))
	if j.InstanceID != "" {
		log = log.With(slog.String("instance_id", j.InstanceID))
	}
	s.maybeRerun(ctx, log, j)
	if j.InstanceID == "" {
		s.notLaunched(ctx, log, j)
		return
	}
	inst, ok := s.instance(ctx, log, j.InstanceID)
	if !ok {
		return // could not tell; the next sweep will
	}
	alive := inst != nil && inst.alive()
	switch j.Status {
	case state.StatusCompleted:
		if alive {
			if s.now.Sub(completedAt(j)) >= secs(s.r.cfg.ScaleDown.CompletedGraceSeconds) {
				s.retire(ctx, log, "1-completed", j, inst)
			}
			return
		}
		s.settle(ctx, log, j, "job completed, instance gone")
	case state.StatusInProgress:
		// Busy by the webhook record: never terminated, whatever its age.
		switch {
		case !alive && j.Phase != state.PhaseLost:
			s.lost(ctx, log, j, false)
		case !alive && s.now.Sub(j.InstanceGoneAt) >= secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds):
			// The completed webhook never came; the runner is gone anyway.
			s.settle(ctx, log, j, "instance lost; no completion seen within maxRuntimeSeconds")
		case alive && s.now.Sub(j.LaunchedAt) >= secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds):
			s.rep.KeptBusy++
			s.decision(log, "3-max-runtime", "kept-busy")
		}
	default: // queued or waiting: launched, job not started
		switch {
		case !alive:
			s.lost(ctx, log, j, true)
		case s.now.Sub(j.LaunchedAt) >= secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds):
			s.retire(ctx, log, "3-max-runtime", j, inst)
		case s.now.Sub(j.LaunchedAt) >= secs(s.r.cfg.ScaleDown.BootTimeoutSeconds):
			rn, found, known := s.runnerOf(j)
			if !known || (found && (rn.Status == githubapp.RunnerOnline || rn.Busy)) {
				return // online (or unknown this sweep): it may get its job yet
			}
			if s.retire(ctx, log, "2-boot-timeout", j, inst) {
				s.requeueIfQueued(ctx, log, j, j.InstanceID, "2-boot-timeout", 1)
			}
		}
	}
}

// notLaunched handles a job of ours that has no instance.
func (s *sweep) notLaunched(ctx context.Context, log *slog.Logger, j *state.Job) {
	switch {
	case j.StatusRank >= 2:
		s.finish(ctx, log, j, "job started or finished without a runner of ours")
	case j.Phase == state.PhaseSkipped:
		s.finish(ctx, log, j, "skipped")
	case j.Phase == state.PhaseClaimed && j.ClaimExpiresAt.After(s.now):
		// A launch is under way.
	case !j.EnqueuedAt.IsZero() && s.now.Sub(j.EnqueuedAt) >= secs(s.r.cfg.ScaleDown.QueuedTimeoutSeconds):
		s.requeueIfQueued(ctx, log, j, "", "7-never-launched", MaxRequeues)
	}
}

// lost handles a launched job whose instance is gone before the job ended
// (rule 6). requeue says whether the job may still be waiting for a runner.
func (s *sweep) lost(ctx context.Context, log *slog.Logger, j *state.Job, requeue bool) {
	if err := s.r.d.Jobs.MarkLost(ctx, j.JobID, j.InstanceID, "instance gone before the job finished"); err != nil {
		s.fail(log, "6-instance-gone", err)
		return
	}
	s.rep.Lost++
	s.decision(log, "6-instance-gone", "marked-lost")
	s.deleteGhost(ctx, log, j)
	if requeue {
		s.requeueIfQueued(ctx, log, j, j.InstanceID, "6-instance-gone", MaxRequeues)
	}
}

// requeueIfQueued re-queues the job when GitHub still shows it queued and
// it has been re-queued fewer than max times; when GitHub shows it started
// or finished, the record is settled.
func (s *sweep) requeueIfQueued(ctx context.Context, log *slog.Logger, j *state.Job, seenInstance, rule string, max int64) {
	inst := githubapp.Installation{ID: j.InstallationID, Owner: j.Owner, Repository: j.Repository}
	gj, err := s.r.d.GitHub.GetJob(ctx, inst, j.JobID)
	switch {
	case errors.Is(err, githubapp.ErrNotFound):
		s.finish(ctx, log, j, "job not found on GitHub")
		return
	case err != nil:
		s.fail(log, rule, err)
		return
	case gj.Status != state.StatusQueued:
		if seenInstance == "" {
			s.finish(ctx, log, j, "job no longer queued on GitHub ("+gj.Status+")")
		}
		s.decision(log, rule, "not-requeued", slog.String("github_status", gj.Status))
		return
	case j.Requeues >= max:
		s.decision(log, rule, "gave-up", slog.Int64("requeues", j.Requeues))
		s.finish(ctx, log, j, fmt.Sprintf("gave up after %d re-queues", j.Requeues))
		return
	}
	ok, err := s.r.d.Jobs.Requeue(ctx, j.JobID, seenInstance, rule)
	if err != nil {
		s.fail(log, rule, err)
		return
	}
	if !ok {
		return // launched or started meanwhile
	}
	_, err = s.r.d.Queue.Send(ctx, &queue.Message{
		JobID: j.JobID, RunID: j.RunID, Repository: j.Repository, Owner: j.Owner, InstallationID: j.InstallationID,
		Labels: j.Labels, Profile: j.Profile, ReceivedAt: j.UpdatedAt.UnixMilli(), Attempt: int(j.Requeues) + 1,
	})
	if err != nil {
		// The record says re-queued; the next sweep finds it not launched
		// after queuedTimeoutSeconds and tries again.
		s.fail(log, rule, err)
		return
	}
	s.rep.Requeued++
	s.decision(log, rule, "requeued")
}

// retire deletes the job's runner (if any) and terminates the instance,
// unless the runner is busy. It reports whether the instance was terminated.
func (s *sweep) retire(ctx context.Context, log *slog.Logger, rule string, j *state.Job, inst *instance) bool {
	if rn, found, _ := s.runnerOf(j); found && rn.Busy {
		s.rep.KeptBusy++
		s.decision(log, rule, "kept-busy")
		return false
	}
	if j.RunnerID != 0 {
		inst := githubapp.Installation{ID: j.InstallationID, Owner: j.Owner, Repository: j.Repository}
		err := s.r.d.GitHub.DeleteRunner(ctx, inst, j.RunnerID)
		switch {
		case errors.Is(err, githubapp.ErrRunnerBusy):
			s.rep.KeptBusy++
			s.decision(log, rule, "kept-busy", slog.String("reason", "GitHub: runner still running a job"))
			return false
		case err != nil:
			s.fail(log, rule, err)
			return false
		}
		s.rep.RunnersDeleted++
	}
	if err := s.terminate(ctx, inst.id); err != nil {
		s.fail(log, rule, err)
		return false
	}
	s.decision(log, rule, "terminated")
	return true
}

func (s *sweep) terminate(ctx context.Context, id string) error {
	if _, err := s.r.d.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		return fmt.Errorf("terminate %s: %w", id, err)
	}
	s.rep.Terminated++
	if i := s.instances[id]; i != nil {
		i.state = "shutting-down"
	}
	return nil
}

// settle finishes a job whose instance is gone: its runner, if still
// registered and offline, is deleted first.
func (s *sweep) settle(ctx context.Context, log *slog.Logger, j *state.Job, reason string) {
	if err := s.r.d.Jobs.MarkInstanceGone(ctx, j.JobID, j.InstanceID); err != nil {
		s.fail(log, "settle", err)
		return
	}
	if !s.deleteGhost(ctx, log, j) {
		return
	}
	s.finish(ctx, log, j, reason)
}

// deleteGhost deletes the job's runner if it is still listed and not busy.
// It reports whether the runner is known to be gone.
func (s *sweep) deleteGhost(ctx context.Context, log *slog.Logger, j *state.Job) bool {
	rn, found, known := s.runnerOf(j)
	if !known {
		return false
	}
	if !found {
		return true
	}
	if rn.Busy {
		return false
	}
	if err := s.r.d.GitHub.DeleteRunner(ctx, s.owner(j).inst, rn.ID); err != nil {
		if !errors.Is(err, githubapp.ErrRunnerBusy) {
			s.fail(log, "5-ghost-runner", err)
		}
		return false
	}
	delete(s.owner(j).byName, rn.Name)
	s.rep.RunnersDeleted++
	s.decision(log, "5-ghost-runner", "deleted", slog.String("runner_name", rn.Name))
	return true
}

func (s *sweep) finish(ctx context.Context, log *slog.Logger, j *state.Job, reason string) {
	if err := s.r.d.Jobs.Finish(ctx, j.JobID, reason); err != nil {
		s.fail(log, "finish", err)
		return
	}
	s.rep.Finished++
	log.Debug("record settled", slog.String("reason", reason))
}

// orphans terminates instances with our tag that no live record owns, once
// they are older than the orphan grace (rule 4).
func (s *sweep) orphans(ctx context.Context) {
	for id, inst := range s.instances {
		if s.claimed[id] || !inst.alive() || s.now.Sub(inst.launched) < secs(s.r.cfg.ScaleDown.OrphanGraceSeconds) {
			continue
		}
		log := s.r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.jobID))
		j, ok, err := s.r.d.Jobs.FindByInstance(ctx, inst.jobID, id)
		if err != nil {
			s.fail(log, "4-orphan", err)
			continue
		}
		if ok && j.Status == state.StatusInProgress {
			s.rep.KeptBusy++
			s.decision(log, "4-orphan", "kept-busy")
			continue
		}
		if !ok {
			j = &state.Job{JobID: inst.jobID}
		}
		s.retire(ctx, log, "4-orphan", j, inst)
	}
}

// instance returns what EC2 says of id now. The sweep's snapshot was taken
// before the records were read again, so an instance missing from it may
// have been launched since: it is looked up by id before anyone concludes
// it is gone. ok is false when EC2 could not be asked.
func (s *sweep) instance(ctx context.Context, log *slog.Logger, id string) (*instance, bool) {
	if inst, found := s.instances[id]; found {
		return inst, true
	}
	found, err := s.lookup(ctx, []string{id})
	if err != nil {
		s.fail(log, "describe", err)
		return nil, false
	}
	return found[id], true
}

// lookup describes the given instances (those that exist) and adds them to
// the snapshot. A filter on instance-id, unlike InstanceIds, does not fail
// the whole call for an id that no longer exists.
func (s *sweep) lookup(ctx context.Context, ids []string) (map[string]*instance, error) {
	out := map[string]*instance{}
	for len(ids) > 0 {
		n := min(len(ids), 200) // the API's limit on filter values
		p := ec2.NewDescribeInstancesPaginator(s.r.d.EC2, &ec2.DescribeInstancesInput{
			Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids[:n]}},
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe instances by id: %w", err)
			}
			for _, res := range page.Reservations {
				for _, in := range res.Instances {
					i := toInstance(in)
					out[i.id] = i
					s.instances[i.id] = i
				}
			}
		}
		ids = ids[n:]
	}
	return out, nil
}

// ghosts deletes runners with our prefix whose instance is gone (rule 5).
func (s *sweep) ghosts(ctx context.Context, jobs []*state.Job) {
	fresh := map[string]bool{}
	for _, j := range jobs {
		if j.RunnerName != "" && s.now.Sub(j.LaunchedAt) < freshLaunch {
			fresh[j.RunnerName] = true
		}
	}
	prefix := s.r.cfg.NamePrefix + "-"
	type ghost struct {
		o  *ownerRunners
		rn githubapp.Runner
	}
	var candidates []ghost
	var unseen []string
	for _, o := range s.owners {
		if !o.ok {
			continue
		}
		for name, rn := range o.byName {
			id := strings.TrimPrefix(name, prefix)
			i, seen := s.instances[id]
			if (i != nil && i.alive()) || fresh[name] || rn.Busy || rn.Status == githubapp.RunnerOnline {
				continue
			}
			candidates = append(candidates, ghost{o, rn})
			if !seen {
				unseen = append(unseen, id)
			}
		}
	}
	// A runner registered after the snapshot belongs to an instance the
	// snapshot cannot show: ask EC2 about those before deleting anything.
	if len(unseen) > 0 {
		if _, err := s.lookup(ctx, unseen); err != nil {
			s.fail(s.r.log, "5-ghost-runner", err)
			return
		}
	}
	for _, g := range candidates {
		o, rn, name := g.o, g.rn, g.rn.Name
		if i := s.instances[strings.TrimPrefix(name, prefix)]; i != nil && i.alive() {
			continue
		}
		log := s.r.log.With(slog.String("runner_name", name))
		if err := s.r.d.GitHub.DeleteRunner(ctx, o.inst, rn.ID); err != nil {
			if !errors.Is(err, githubapp.ErrRunnerBusy) {
				s.fail(log, "5-ghost-runner", err)
			}
			continue
		}
		delete(o.byName, name)
		s.rep.RunnersDeleted++
		s.decision(log, "5-ghost-runner", "deleted")
	}
}

// maybeRerun re-runs, once, a job that failed after a spot interruption.
func (s *sweep) maybeRerun(ctx context.Context, log *slog.Logger, j *state.Job) {
	if !s.r.rerun || j.InterruptedAt.IsZero() || j.Status != state.StatusCompleted || !j.RerunRequestedAt.IsZero() {
		return
	}
	if j.Conclusion != "failure" && j.Conclusion != "cancelled" {
		return
	}
	ok, err := s.r.d.Jobs.ClaimRerun(ctx, j.JobID)
	if err != nil || !ok {
		if err != nil {
			s.fail(log, "spot-rerun", err)
		}
		return
	}
	inst := githubapp.Installation{ID: j.InstallationID, Owner: j.Owner, Repository: j.Repository}
	if err := s.r.d.GitHub.RerunJob(ctx, inst, j.JobID); err != nil {
		// Claimed once, never twice: a failed request is logged, not retried.
		s.fail(log, "spot-rerun", err)
		return
	}
	s.rep.RerunsRequested++
	s.decision(log, "spot-rerun", "rerun-requested")
}

func (s *sweep) decision(log *slog.Logger, rule, action string, attrs ...any) {
	s.r.decide(log, rule, action, attrs...)
}

func (s *sweep) fail(log *slog.Logger, rule string, err error) {
	s.rep.Errors++
	s.r.metrics.Inc(metrics.ScaleDownDecisions, map[string]string{"Rule": rule, "Action": "error"})
	log.Error("scaledown step failed; the next sweep retries", slog.String("rule", rule), slog.String("error", err.Error()))
}

// completedAt is when the job completed: GitHub's completed_at, else the
// record's last update.
func completedAt(j *state.Job) time.Time {
	if t, err := time.Parse(time.RFC3339, j.CompletedAt); err == nil {
		return t
	}
	return j.UpdatedAt
}

func secs(n int) time.Duration { return time.Duration(n) * time.Second }

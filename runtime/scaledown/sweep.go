package scaledown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/retire"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Report sums up one sweep.
type Report struct {
	// CatalogueRefreshed: the sweep walked EC2's instance-type catalogue
	// and stored it for scaleup (fleet.Launcher.RefreshCatalogue).
	CatalogueRefreshed bool `json:"catalogueRefreshed,omitempty"`
	LiveJobs           int  `json:"liveJobs"`
	LivePages          int  `json:"livePages"`
	Instances          int  `json:"instances"`
	InstancePages      int  `json:"instancePages"`
	Owners             int  `json:"owners"`
	Runners            int  `json:"runners"`
	Terminated         int  `json:"terminated"`
	KeptBusy           int  `json:"keptBusy"`
	RunnersDeleted     int  `json:"runnersDeleted"`
	Requeued           int  `json:"requeued"`
	Finished           int  `json:"finished"`
	Lost               int  `json:"lost"`
	RerunsRequested    int  `json:"rerunsRequested"`
	// Pooled counts the warm pools' instances (not taken by a job);
	// PoolLaunched those this sweep launched to refill them.
	Pooled       int `json:"pooled"`
	PoolLaunched int `json:"poolLaunched"`
	// Waiting counts the jobs waiting in the table for a launch (-1: unknown).
	Waiting int `json:"waiting"`
	Errors  int `json:"errors"`
	// Examined counts the records read whole because a rule might apply.
	Examined int `json:"examined"`
	// Durations of the sweep's phases, in milliseconds.
	ReadJobsMs      int64 `json:"readJobsMs"`
	ReadInstancesMs int64 `json:"readInstancesMs"`
	ReadRunnersMs   int64 `json:"readRunnersMs"`
	DecideMs        int64 `json:"decideMs"`
}

// instance is what a sweep knows of one managed instance.
type instance = fleet.Instance

// ownerRunners are the runners of one owner (org, or owner/repo).
type ownerRunners struct {
	inst   githubapp.Installation
	ok     bool // listed successfully
	byName map[string]githubapp.Runner
}

// sweep is one reconciliation. It is instance-centred: the record that
// launched an instance (launchOf) decides the instance's fate, but what
// keeps the instance busy is the job its own runner runs (ranOn), which
// GitHub chooses and which is often another job than the one it was
// launched for.
type sweep struct {
	r         *Reconciler
	now       time.Time
	rep       Report
	instances map[string]*instance // nil: looked up, EC2 does not know it
	owners    map[string]*ownerRunners
	listedAt  time.Time // before the runner lists were read
	repoInst  map[string]githubapp.Installation
	// launchOf maps an instance id, and launchByRunner its runner's name,
	// to the live record that launched it; ranOn maps a runner name to the
	// live record of the job that runner ran (the later status wins); all
	// as the live index projects them.
	launchOf       map[string]*state.Job
	launchByRunner map[string]*state.Job
	ranOn          map[string]*state.Job
	// pooled are the warm pools' items by instance id; poolUnknown says a
	// pool could not be read (its instances are then no orphans).
	pooled      map[string]*state.PoolInstance
	poolUnknown bool
}

// Sweep reconciles everything once. Errors in one decision are logged and
// counted; the sweep goes on, and the next sweep converges.
func (r *Reconciler) Sweep(ctx context.Context) (*Report, error) {
	start := time.Now()
	s := &sweep{r: r, now: r.now(), instances: map[string]*instance{}, owners: map[string]*ownerRunners{},
		launchOf: map[string]*state.Job{}, launchByRunner: map[string]*state.Job{}, ranOn: map[string]*state.Job{},
		repoInst: map[string]githubapp.Installation{}, pooled: map[string]*state.PoolInstance{}}
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
	jobs, s.rep.LivePages, jobsErr = r.d.Jobs.LiveJobs(ctx)
	done()
	if jobsErr == nil {
		s.rep.LiveJobs = len(jobs)
		for _, j := range jobs {
			if j.InstanceID != "" {
				s.launchOf[j.InstanceID] = j
				if j.InstanceRunnerName != "" {
					s.launchByRunner[j.InstanceRunnerName] = j
				}
			}
			if j.RunnerJob != 0 && j.RunnerName != "" {
				if prev := s.ranOn[j.RunnerName]; prev == nil || j.StatusRank > prev.StatusRank {
					s.ranOn[j.RunnerName] = j
				}
			}
			s.owner(j)
		}
		done = lap(&s.rep.ReadRunnersMs)
		s.listedAt = r.now()
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
	s.pools(ctx)
	s.orphans(ctx)
	s.ghosts(ctx)
	// Slots freed by this sweep (and any wake that failed before) go to the
	// oldest waiting jobs.
	s.rep.Waiting = r.wakeWaiting(ctx, r.log, "scaledown sweep")
	done()
	s.rep.CatalogueRefreshed = r.refreshCatalogue(ctx)

	r.log.Info("sweep done", slog.Any("report", s.rep), slog.Duration("took", time.Since(start)))
	return &s.rep, nil
}

// catalogueRefresher is implemented by instance providers that share EC2's
// instance-type catalogue between containers (*fleet.Launcher with a
// CatalogueStore).
type catalogueRefresher interface {
	RefreshCatalogue(ctx context.Context, subnetIDs []string) (bool, error)
}

// refreshCatalogue keeps the shared instance-type catalogue fresh, so that
// scaleup's containers read it instead of each walking EC2 on its first
// shape job. A failure is logged only: scaleup then walks EC2 itself.
func (r *Reconciler) refreshCatalogue(ctx context.Context) bool {
	c, ok := r.d.Instances.(catalogueRefresher)
	if !ok {
		return false
	}
	refreshed, err := c.RefreshCatalogue(ctx, r.cfg.Launch.SubnetIDs)
	if err != nil {
		r.log.Warn("could not refresh the shared instance-type catalogue", slog.String("error", err.Error()))
	}
	return refreshed
}

// describe reads every managed instance that is not terminated yet.
func (s *sweep) describe(ctx context.Context) error {
	list, pages, err := s.r.d.Instances.List(ctx, s.r.cfg.NamePrefix)
	s.rep.InstancePages += pages
	if err != nil {
		return err
	}
	for _, in := range list {
		s.instances[in.ID] = &in
	}
	s.rep.Instances = len(s.instances)
	return nil
}

// ownerKey is where a job's runner registers: its org, or its repository.
func (s *sweep) ownerKey(owner, repository string) string {
	if s.r.cfg.GitHub.Scope == config.ScopeRepo {
		return strings.ToLower(repository)
	}
	return strings.ToLower(owner)
}

func (s *sweep) owner(j *state.Job) *ownerRunners {
	if j.InstallationID == 0 || j.Owner == "" {
		return nil
	}
	k := s.ownerKey(j.Owner, j.Repository)
	o, ok := s.owners[k]
	if !ok {
		o = &ownerRunners{inst: installationOf(j)}
		s.owners[k] = o
	}
	return o
}

func installationOf(j *state.Job) githubapp.Installation {
	return githubapp.Installation{ID: j.InstallationID, Owner: j.Owner, Repository: j.Repository}
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

// ownRunnerName is the runner the instance launched for j was registered
// with (before the launch: tags.RunnerName).
func (s *sweep) ownRunnerName(j *state.Job) string { return j.InstanceRunnerName }

// ownRunner returns the runner of j's instance as listed, and whether the
// list is known.
func (s *sweep) ownRunner(j *state.Job) (rn githubapp.Runner, found, known bool) {
	o := s.owner(j)
	if o == nil || !o.ok {
		return githubapp.Runner{}, false, false
	}
	rn, found = o.byName[s.ownRunnerName(j)]
	return rn, found, true
}

// quiet reports whether a record (as the live index projects it) needs
// nothing this sweep: its instance is alive and busy within the maximum
// runtime, or younger than the boot timeout with no finished job on it.
// Most records are quiet; the rest are read again whole.
func (s *sweep) quiet(j *state.Job) bool {
	if j.Waiting && j.InstanceID == "" && j.StatusRank < 2 && s.now.Sub(j.WaitSince) < gitHubQueueLimit {
		// Waiting in the table: a wake launches it; reading it every sweep
		// would cost a read per waiting job.
		return true
	}
	if j.InstanceID == "" || j.Phase == state.PhaseLost || !j.InterruptedAt.IsZero() {
		return false
	}
	if !j.InstanceInterruptedAt.IsZero() {
		if run := s.ranOn[j.InstanceRunnerName]; run != nil && run.InterruptedAt.IsZero() {
			return false // the job on it must learn of the interruption
		}
	}
	inst := s.instances[j.InstanceID]
	if inst == nil || !inst.Alive() {
		return false
	}
	age := s.now.Sub(j.LaunchedAt)
	if age >= secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds) {
		return false
	}
	run := s.ranOn[j.InstanceRunnerName]
	switch {
	case run == nil:
		return age < secs(s.r.cfg.ScaleDown.BootTimeoutSeconds)
	case run.Status == state.StatusCompleted:
		return s.now.Sub(completedAt(run)) < secs(s.r.cfg.ScaleDown.CompletedGraceSeconds)
	default:
		return true // busy within the maximum runtime
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
	if j.RunnerName != "" && j.RunnerName != j.InstanceRunnerName {
		log = log.With(slog.String("ran_on_runner", j.RunnerName))
	}
	s.interruption(ctx, log, j)
	if j.InstanceID == "" {
		s.notLaunched(ctx, log, j)
		return
	}
	inst, ok := s.instance(ctx, log, j.InstanceID)
	if !ok {
		return // could not tell; the next sweep will
	}
	if inst != nil && inst.Alive() {
		s.liveInstance(ctx, log, j, inst)
		return
	}
	s.goneInstance(ctx, log, j)
}

// runOf returns the record of the job that ran on l's instance (read
// consistently), or nil when no job is known to have run there.
func (s *sweep) runOf(ctx context.Context, log *slog.Logger, l *state.Job) (*state.Job, bool) {
	thin := s.ranOn[l.InstanceRunnerName]
	switch {
	case l.RunnerName != "" && l.RunnerName == l.InstanceRunnerName:
		return l, true
	case thin == nil:
		return nil, true
	}
	run, ok, err := s.r.d.Jobs.Get(ctx, thin.JobID)
	if err != nil {
		s.fail(log, "read", err)
		return nil, false
	}
	if !ok || run.RunnerName != l.InstanceRunnerName {
		return nil, true
	}
	return run, true
}

// liveInstance decides the fate of l's instance while it runs: retired once
// the job its runner ran is over (rule 1), when its runner never came online
// (rule 2), or past the maximum runtime unless GitHub says its job still runs
// (rule 3). Every termination goes through retire, which deletes the
// instance's own runner first and keeps the instance when GitHub says busy.
func (s *sweep) liveInstance(ctx context.Context, log *slog.Logger, l *state.Job, inst *instance) {
	run, ok := s.runOf(ctx, log, l)
	if !ok {
		return
	}
	cfg := s.r.cfg.ScaleDown
	age := s.now.Sub(l.LaunchedAt)
	switch {
	case run != nil && run.Status == state.StatusCompleted:
		if s.now.Sub(completedAt(run)) >= secs(cfg.CompletedGraceSeconds) {
			s.retire(ctx, log.With(slog.Int64("ran_job_id", run.JobID)), "1-completed", l, inst)
		}
	case run != nil:
		// Busy with run, whichever job that is; past the maximum runtime
		// GitHub is asked whether it really still runs.
		if age >= secs(cfg.MaxRuntimeSeconds) {
			s.overdue(ctx, log.With(slog.Int64("ran_job_id", run.JobID)), l, run, inst)
		}
	case age >= secs(cfg.MaxRuntimeSeconds):
		s.retire(ctx, log, "3-max-runtime", l, inst)
	case age < secs(cfg.BootTimeoutSeconds):
		// Too young for any rule: booting, or waiting for its job.
	case l.Status == state.StatusCompleted && s.now.Sub(completedAt(l)) >= secs(cfg.CompletedGraceSeconds):
		// The job it was launched for ran on another runner and is over;
		// this runner got no job since: a spare.
		s.retire(ctx, log, "1-completed", l, inst)
	default:
		rn, found, known := s.ownRunner(l)
		if !known || (found && (rn.Status == githubapp.RunnerOnline || rn.Busy)) {
			// Online (or unknown this sweep): it may get a job yet; the
			// bootstrap's idle timeout ends it otherwise.
			return
		}
		if s.retire(ctx, log, "2-boot-timeout", l, inst) && l.StatusRank < 2 {
			s.requeueIfQueued(ctx, log, l, l.InstanceID, "2-boot-timeout", 1)
		}
	}
}

// overdue handles an instance past maxRuntimeSeconds whose record says its
// job (run) is in progress: the completed webhook may have been lost, and the
// job may even have sudo'ed the shutdown away. GitHub decides: a job over (or
// gone), or a runner offline or gone, retires the instance (still through
// retire's delete-first check); a job GitHub shows running is kept.
func (s *sweep) overdue(ctx context.Context, log *slog.Logger, l, run *state.Job, inst *instance) {
	const rule = "3-max-runtime"
	gj, err := s.r.d.GitHub.GetJob(ctx, installationOf(run), run.JobID)
	var reason string
	switch {
	case errors.Is(err, githubapp.ErrNotFound):
		reason = "job not found on GitHub"
	case err != nil:
		s.fail(log, rule, err)
		return
	case gj.Status == state.StatusCompleted:
		reason = "GitHub shows the job completed (" + gj.Conclusion + "); its completed webhook never arrived"
		s.recordCompletion(ctx, log, run, gj)
	default:
		rn, found, known := s.ownRunner(l)
		switch {
		case known && !found:
			reason = "the instance's runner is gone on GitHub"
		case known && rn.Status != githubapp.RunnerOnline:
			reason = "the instance's runner is offline on GitHub"
		}
	}
	if reason == "" {
		s.rep.KeptBusy++
		s.decision(log, rule, "kept-busy", slog.String("reason", "GitHub shows the job still running"))
		return
	}
	s.retire(ctx, log.With(slog.String("reason", reason)), rule, l, inst)
}

// recordCompletion writes GitHub's view of a completed job whose completed
// webhook never arrived, so the record moves on too.
func (s *sweep) recordCompletion(ctx context.Context, log *slog.Logger, run *state.Job, gj githubapp.Job) {
	ev := &state.JobEvent{JobID: run.JobID, Action: state.StatusCompleted, Conclusion: gj.Conclusion, Ours: run.Ours,
		RunnerName: gj.RunnerName, RunnerID: gj.RunnerID, RunnerJob: run.RunnerJob, CompletedAt: s.now.UTC().Format(time.RFC3339)}
	if _, err := s.r.d.Jobs.RecordEvent(ctx, ev); err != nil {
		s.fail(log, "record-completion", err)
	}
}

// goneInstance handles a record whose own instance is gone.
func (s *sweep) goneInstance(ctx context.Context, log *slog.Logger, l *state.Job) {
	switch {
	case l.StatusRank < 2:
		s.notStartedGone(ctx, log, l)
	case l.Status == state.StatusInProgress && l.RunnerName == l.InstanceRunnerName && l.Phase != state.PhaseLost:
		// It ran on its own instance, which vanished under it.
		s.lost(ctx, log, l, false)
	case l.Status == state.StatusInProgress && l.RunnerName != l.InstanceRunnerName && s.ranOnAlive(ctx, log, l):
		// It runs on another of our instances: this record tells that
		// instance's fate, so it stays; its own instance and runner are
		// cleaned up.
		s.instanceGone(ctx, log, l)
	case l.Status == state.StatusInProgress && l.InstanceGoneAt.IsZero():
		// Running on a runner that is not ours, or lost with its instance:
		// the completed webhook settles it.
		s.instanceGone(ctx, log, l)
	case l.Status == state.StatusInProgress:
		if s.now.Sub(l.InstanceGoneAt) >= secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds) {
			s.settle(ctx, log, l, "instance gone; no completion seen within maxRuntimeSeconds")
		}
	case l.RunnerName != l.InstanceRunnerName && s.ranOnAlive(ctx, log, l):
		// Completed on another instance that is still alive: keep telling it.
		s.instanceGone(ctx, log, l)
	default:
		s.settle(ctx, log, l, "job completed, instance gone")
	}
}

// notStartedGone handles a job still waiting for a runner whose own instance
// is gone (rule 6). An instance that died without serving a job (it never
// came online, crashed, was reclaimed) left the pool one runner short: the
// job is re-queued at once. An instance whose runner served another job
// left the counts even (that job's own runner serves this one): the job
// waits for the pool, and is re-queued only if GitHub still shows it queued
// bootTimeoutSeconds after its instance went.
func (s *sweep) notStartedGone(ctx context.Context, log *slog.Logger, l *state.Job) {
	run, ok := s.runOf(ctx, log, l)
	switch {
	case !ok:
		return
	case run == nil:
		s.lost(ctx, log, l, true)
	case l.InstanceGoneAt.IsZero():
		s.instanceGone(ctx, log.With(slog.Int64("ran_job_id", run.JobID)), l)
		s.decision(log, "6-instance-gone", "waiting-for-pool", slog.Int64("ran_job_id", run.JobID))
	case s.now.Sub(l.InstanceGoneAt) >= secs(s.r.cfg.ScaleDown.BootTimeoutSeconds):
		s.requeueIfQueued(ctx, log, l, l.InstanceID, "6-instance-gone", MaxRequeues)
	}
}

// aliveInstance reports whether id is a live instance; "" is not. An
// instance missing from the snapshot is looked up (it may be newer than it).
func (s *sweep) aliveInstance(ctx context.Context, log *slog.Logger, id string) bool {
	if id == "" {
		return false
	}
	inst, ok := s.instance(ctx, log, id)
	if !ok {
		return true // could not tell: assume alive, which only delays a settle
	}
	return inst != nil && inst.Alive()
}

// ranOnAlive reports whether the instance of the runner j ran on is one of
// ours and alive. Its launch record comes from the live index, or is read
// when the index lags (or could not tell: then it counts as alive, which
// only delays a settle).
func (s *sweep) ranOnAlive(ctx context.Context, log *slog.Logger, j *state.Job) bool {
	if j.RunnerJob == 0 || j.RunnerName == "" {
		return false
	}
	l := s.launchByRunner[j.RunnerName]
	if l == nil {
		rec, ok, err := s.r.d.Jobs.Get(ctx, j.RunnerJob)
		switch {
		case err != nil:
			s.fail(log, "read", err)
			return true
		case !ok || rec.InstanceRunnerName != j.RunnerName || rec.InstanceID == "":
			return false
		}
		l = rec
	}
	return s.aliveInstance(ctx, log, l.InstanceID)
}

// instanceGone records that l's own instance is gone and deletes its runner
// if it is still registered and idle.
func (s *sweep) instanceGone(ctx context.Context, log *slog.Logger, l *state.Job) {
	if l.InstanceGoneAt.IsZero() {
		if err := s.r.d.Jobs.MarkInstanceGone(ctx, l.JobID, l.InstanceID); err != nil {
			s.fail(log, "instance-gone", err)
			return
		}
	}
	s.deleteGhost(ctx, log, l)
}

// notLaunched handles a job of ours that has no instance.
func (s *sweep) notLaunched(ctx context.Context, log *slog.Logger, j *state.Job) {
	switch {
	case j.StatusRank >= 2 && s.ranOnAlive(ctx, log, j):
		// It runs (or ran) on one of our instances, launched for another
		// job: this record tells that instance's fate. Its own launch, which
		// replaces the runner it took, may still be under way.
	case j.Status == state.StatusInProgress && j.RunnerJob != 0 &&
		s.now.Sub(j.UpdatedAt) < secs(s.r.cfg.ScaleDown.MaxRuntimeSeconds):
		// Its runner's instance vanished under it; the completion settles it.
	case j.Waiting && j.RunnerJob != 0 && s.now.Sub(j.WaitSince) < gitHubQueueLimit:
		// It ran on a runner launched for another job while it waited for
		// its own launch, which replaces that runner for the other job:
		// it keeps its place in the wait, and a wake launches it (GitHub
		// shows it started on a runner of ours, so scaleup launches). To
		// finish it here would leave the other job without a runner until
		// its instance is gone and rule 6 re-queues it.
	case j.StatusRank >= 2:
		s.finish(ctx, log, j, "job started or finished without a runner of ours to reconcile")
	case j.Phase == state.PhaseSkipped:
		s.finish(ctx, log, j, "skipped")
	case j.Phase == state.PhaseClaimed && j.ClaimExpiresAt.After(s.now):
		// A launch is under way.
	case j.Waiting && s.now.Sub(j.WaitSince) >= gitHubQueueLimit:
		// GitHub cancels a job queued for 24 hours; its completed webhook
		// was lost.
		s.finish(ctx, log, j, "waited longer than GitHub keeps a job queued")
	case j.Waiting:
		// Waiting in the table for a runner slot or GitHub: a wake
		// launches it. Nothing to do here.
	case !j.EnqueuedAt.IsZero() && s.now.Sub(j.EnqueuedAt) >= secs(s.r.cfg.ScaleDown.QueuedTimeoutSeconds) &&
		s.now.Sub(j.UpdatedAt) >= secs(s.r.cfg.ScaleDown.QueuedTimeoutSeconds):
		// Enqueued long ago and untouched since: scaleup touches the record
		// at every attempt (a message in flight comes back within 5
		// minutes), so no message is in flight; one is sent again as long as
		// GitHub holds the job queued, however often.
		s.requeueIfQueued(ctx, log, j, "", "7-never-launched", math.MaxInt64)
	}
}

// gitHubQueueLimit is how long GitHub keeps a job queued before cancelling
// it (24 hours), plus an hour's margin.
const gitHubQueueLimit = 25 * time.Hour

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
	gj, err := s.r.d.GitHub.GetJob(ctx, installationOf(j), j.JobID)
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

// retire retires l's instance through the guarded operation: its own runner
// is deleted first, and a busy runner (listed busy, or GitHub's 422) keeps
// the instance. It reports whether the instance was terminated.
func (s *sweep) retire(ctx context.Context, log *slog.Logger, rule string, l *state.Job, inst *instance) bool {
	t := retire.Target{InstanceID: inst.ID, Installation: installationOf(l), RunnerName: s.ownRunnerName(l), RunnerID: l.InstanceRunnerID}
	if rn, found, known := s.ownRunner(l); known {
		switch {
		case found && rn.Busy:
			s.rep.KeptBusy++
			s.decision(log, rule, "kept-busy", slog.String("reason", "GitHub lists the runner busy"))
			return false
		case !found && l.LaunchedAt.Before(s.listedAt):
			// Registered before the launch was recorded, so a list read after
			// that would show it: it is gone, and there is nothing to delete.
			t.RunnerName, t.RunnerID = "", 0
		}
	}
	return s.retireTarget(ctx, log, rule, t)
}

// retireTarget runs the guarded retirement of t and accounts for it.
func (s *sweep) retireTarget(ctx context.Context, log *slog.Logger, rule string, t retire.Target) bool {
	out, err := s.r.retirer.Retire(ctx, t)
	switch {
	case err != nil:
		s.fail(log, rule, err)
		return false
	case out == retire.KeptBusy:
		s.rep.KeptBusy++
		s.decision(log, rule, "kept-busy", slog.String("reason", "GitHub: the instance's runner is running a job"))
		return false
	}
	if t.RunnerID != 0 || t.RunnerName != "" {
		s.rep.RunnersDeleted++
		if o := s.owners[s.ownerKey(t.Installation.Owner, t.Installation.Repository)]; o != nil && o.ok {
			delete(o.byName, t.RunnerName)
		}
	}
	s.rep.Terminated++
	if i := s.instances[t.InstanceID]; i != nil {
		i.State = "shutting-down"
	}
	s.decision(log, rule, "terminated")
	return true
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

// deleteGhost deletes the runner of j's (gone) instance if it is still
// listed and not busy. It reports whether the runner is known to be gone.
func (s *sweep) deleteGhost(ctx context.Context, log *slog.Logger, j *state.Job) bool {
	rn, found, known := s.ownRunner(j)
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

// orphans retires instances with our tag that no live record launched, once
// they are older than the orphan grace (rule 4): scaleup died between the
// launch and recording it. Such an instance's runner may have been handed
// its JIT config and be running a job, so it goes through the same guarded
// retirement as every other instance.
func (s *sweep) orphans(ctx context.Context) {
	const rule = "4-orphan"
	for id, inst := range s.instances {
		if s.launchOf[id] != nil || s.pooled[id] != nil || !inst.Alive() || s.now.Sub(inst.Launched) < secs(s.r.cfg.ScaleDown.OrphanGraceSeconds) {
			continue
		}
		log := s.r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.JobID))
		if inst.Pool != "" && inst.JobID == 0 {
			// A pooled instance that no pool item the sweep read owns. Its
			// item, read consistently, says which: taken by a job since the
			// instance was described (a tombstone: the job's record owns
			// it), recorded after the pool was read, or of a pool no
			// longer configured (retired, its item dropped). Without an
			// item its refill died before recording it, or its item was
			// dropped and the termination failed. Untaken, it never had a
			// runner.
			if s.poolUnknown {
				continue
			}
			p, ok, err := s.r.d.Jobs.GetPooled(ctx, id)
			switch {
			case err != nil:
				s.fail(log, rule, err)
				continue
			case ok && (p.State == state.PoolTaken || s.poolConfigured(p)):
				continue
			case ok:
				if err := s.r.d.Jobs.RemovePooled(ctx, id); err != nil {
					if !errors.Is(err, state.ErrPoolClaimed) && !errors.Is(err, state.ErrNotPooled) {
						s.fail(log, rule, err)
					}
					continue
				}
				s.r.metrics.Inc(metrics.PoolRetired, map[string]string{"Profile": p.Profile, "Pool": p.Kind, "Reason": "unconfigured"})
				log = log.With(slog.String("reason", "its pool is no longer configured"))
			}
			s.retireTarget(ctx, log, rule, retire.Target{InstanceID: id})
			continue
		}
		if run := s.ranOn[inst.Runner]; inst.Runner != "" && run != nil && run.Status == state.StatusInProgress {
			s.rep.KeptBusy++
			s.decision(log, rule, "kept-busy", slog.Int64("ran_job_id", run.JobID), slog.String("reason", "its runner runs a job"))
			continue
		}
		j, ok, err := s.r.d.Jobs.Get(ctx, inst.JobID)
		if err != nil {
			s.fail(log, rule, err)
			continue
		}
		if ok && j.InstanceID == id && j.Live {
			continue // recorded after the index was read: its record decides next sweep
		}
		t := retire.Target{InstanceID: id, RunnerName: inst.Runner}
		switch o := s.ownerOfRepository(inst.Repository); {
		case ok:
			// The job it was launched for: its runner registered there.
			t.Installation = installationOf(j)
		case o != nil:
			t.Installation = o.inst
		default:
			// The record expired: ask GitHub which installation covers the
			// repository the instance was launched for.
			in, err := s.repositoryInstallation(ctx, inst.Repository)
			if err != nil {
				s.fail(log, rule, fmt.Errorf("find the installation of %q for the orphan's runner: %w", inst.Repository, err))
				continue
			}
			t.Installation = in
		}
		if o := s.owners[s.ownerKey(t.Installation.Owner, t.Installation.Repository)]; o != nil && o.ok && t.Installation.ID != 0 {
			rn, found := o.byName[t.RunnerName]
			switch {
			case found && rn.Busy:
				s.rep.KeptBusy++
				s.decision(log, rule, "kept-busy", slog.String("reason", "GitHub lists the runner busy"))
				continue
			case found:
				t.RunnerID = rn.ID
			}
		}
		s.retireTarget(ctx, log, rule, t)
	}
}

// repositoryInstallation looks the App installation of repository up once
// per sweep.
func (s *sweep) repositoryInstallation(ctx context.Context, repository string) (githubapp.Installation, error) {
	if in, ok := s.repoInst[repository]; ok {
		return in, nil
	}
	in, err := s.r.d.GitHub.RepositoryInstallation(ctx, repository)
	if err != nil {
		return githubapp.Installation{}, err
	}
	s.repoInst[repository] = in
	return in, nil
}

// ownerOfRepository finds a listed owner for an instance whose record is
// gone, from its jitr:repository tag.
func (s *sweep) ownerOfRepository(repository string) *ownerRunners {
	owner, _, _ := strings.Cut(repository, "/")
	if owner == "" {
		return nil
	}
	return s.owners[s.ownerKey(owner, repository)]
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
// the snapshot; an id EC2 does not know is remembered as gone.
func (s *sweep) lookup(ctx context.Context, ids []string) (map[string]*instance, error) {
	found, err := s.r.d.Instances.Get(ctx, ids...)
	if err != nil {
		return nil, err
	}
	out := map[string]*instance{}
	for _, id := range ids {
		in, ok := found[id]
		if !ok {
			s.instances[id] = nil
			continue
		}
		out[id] = &in
		s.instances[id] = &in
	}
	return out, nil
}

// ghosts deletes runners of this deployment that no instance will ever use
// (rule 5): offline, idle, and their instance gone or never launched (the
// JIT config comes before the launch, so a failed launch leaves one). The
// record of the job a runner was launched for (its name says which) tells;
// when the live index does not show it, it is read.
func (s *sweep) ghosts(ctx context.Context) {
	const rule = "5-ghost-runner"
	type ghost struct {
		o     *ownerRunners
		rn    githubapp.Runner
		jobID int64
	}
	var candidates []ghost
	var unseen []string
	for _, o := range s.owners {
		if !o.ok {
			continue
		}
		for name, rn := range o.byName {
			jobID, ours := tags.RunnerJob(s.r.cfg.NamePrefix, name)
			if !ours || rn.Busy || rn.Status == githubapp.RunnerOnline {
				continue
			}
			if l := s.launchByRunner[name]; l != nil {
				i, seen := s.instances[l.InstanceID]
				if (i != nil && i.Alive()) || s.now.Sub(l.LaunchedAt) < freshLaunch {
					continue
				}
				if !seen {
					unseen = append(unseen, l.InstanceID)
				}
			}
			candidates = append(candidates, ghost{o, rn, jobID})
		}
	}
	// An instance launched after the snapshot cannot be in it: ask EC2 about
	// those before deleting anything.
	if len(unseen) > 0 {
		if _, err := s.lookup(ctx, unseen); err != nil {
			s.fail(s.r.log, rule, err)
			return
		}
	}
	for _, g := range candidates {
		log := s.r.log.With(slog.String("runner_name", g.rn.Name), slog.Int64("job_id", g.jobID))
		if s.runnerInUse(ctx, log, g.rn.Name, g.jobID) {
			continue
		}
		if err := s.r.d.GitHub.DeleteRunner(ctx, g.o.inst, g.rn.ID); err != nil {
			if !errors.Is(err, githubapp.ErrRunnerBusy) {
				s.fail(log, rule, err)
			}
			continue
		}
		delete(g.o.byName, g.rn.Name)
		s.rep.RunnersDeleted++
		s.decision(log, rule, "deleted")
	}
}

// runnerInUse reports whether runner name (launched for jobID) still
// belongs to a launch: its instance is alive, or the launch is under way
// (a live claim that has not recorded an instance yet). Read consistently;
// an error counts as in use.
func (s *sweep) runnerInUse(ctx context.Context, log *slog.Logger, name string, jobID int64) bool {
	l, ok, err := s.r.d.Jobs.Get(ctx, jobID)
	switch {
	case err != nil:
		s.fail(log, "5-ghost-runner", err)
		return true
	case !ok:
		return false
	case l.InstanceRunnerName == name && l.InstanceID != "":
		return s.aliveInstance(ctx, log, l.InstanceID) || s.now.Sub(l.LaunchedAt) < freshLaunch
	case l.InstanceID == "" && l.Phase == state.PhaseClaimed && l.ClaimExpiresAt.After(s.now):
		return true // JIT config generated, instance being launched
	}
	return false
}

// interruption carries a spot interruption of j's own instance over to the
// job that ran there (the interruption event may have come before that
// job's in_progress webhook), and re-runs j once if it ran on an
// interrupted instance and then failed.
func (s *sweep) interruption(ctx context.Context, log *slog.Logger, j *state.Job) {
	if !j.InstanceInterruptedAt.IsZero() && j.InstanceID != "" {
		if run := s.ranOn[j.InstanceRunnerName]; run != nil && run.InterruptedAt.IsZero() {
			if _, err := s.r.d.Jobs.MarkJobInterrupted(ctx, run.JobID, j.InstanceRunnerName); err != nil {
				s.fail(log, "spot-interruption", err)
			} else {
				run.InterruptedAt = s.now
				if run.JobID == j.JobID {
					j.InterruptedAt = s.now
				}
				s.decision(log, "spot-interruption", "job-marked", slog.Int64("ran_job_id", run.JobID))
			}
		}
	}
	s.maybeRerun(ctx, log, j)
}

// maybeRerun re-runs, once, a job that failed after the instance it ran on
// got a spot interruption warning.
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
	if err := s.r.d.GitHub.RerunJob(ctx, installationOf(j), j.JobID); err != nil {
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

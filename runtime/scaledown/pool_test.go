package scaledown_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// withPool gives the default profile a pool.
func withPool(pool config.Pool, maxRunners int) testenv.DeploymentOption {
	return func(c *config.Config) {
		p := c.Profiles["default"]
		p.Pool = &pool
		c.Profiles["default"] = p
		c.MaxRunners = maxRunners
	}
}

func (h *harness) pooled() []*state.PoolInstance {
	h.t.Helper()
	items, err := h.p.Store.Pooled(context.Background(), "default")
	if err != nil {
		h.t.Fatal(err)
	}
	slices.SortFunc(items, func(a, b *state.PoolInstance) int { return a.LaunchedAt.Compare(b.LaunchedAt) })
	return items
}

func (h *harness) slots() int {
	h.t.Helper()
	n, err := h.p.Store.CountSlots(context.Background(), "")
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) instanceARN(id string) string { return h.p.Identity().InstanceARN(id) }

// boot lets every pooled instance's bootstrap come up: it consumes its
// pool marker (a hot one then waits for a config).
func (h *harness) boot() {
	h.t.Helper()
	for _, p := range h.pooled() {
		if err := h.p.JIT.Delete(context.Background(), h.instanceARN(p.InstanceID)); err != nil {
			h.t.Fatal(err)
		}
	}
}

// A refill stays within maxRunners, pooled instances counting; jobs that
// wait for a slot come before the pool.
func TestPoolRefillUnderCaps(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 4}}, 5))
	h.launched()
	h.launched() // two runners hold two of the five slots
	rep := h.sweep()
	if rep.PoolLaunched != 3 || len(h.pooled()) != 3 {
		t.Fatalf("refill with 3 free slots launched %d (pool %d); want 3", rep.PoolLaunched, len(h.pooled()))
	}
	if n := h.slots(); n != 5 {
		t.Fatalf("slots after the refill = %d; want 5 (every one taken)", n)
	}
	for _, p := range h.pooled() {
		if p.State != state.PoolReady || p.Kind != jitstore.PoolHot || p.TemplateVersion < 1 {
			t.Fatalf("hot pooled instance %+v: want ready, with its template version", p)
		}
		if !h.alive(p.InstanceID) {
			t.Fatalf("pooled instance %s not running", p.InstanceID)
		}
		// The instance finds its pool marker, not a job's config.
		if enc, err := h.p.JIT.Take(context.Background(), h.instanceARN(p.InstanceID)); err == nil {
			t.Fatalf("pooled instance %s found a JIT config %q before any job took it", p.InstanceID, enc)
		}
	}
	if rep := h.sweep(); rep.PoolLaunched != 0 {
		t.Fatalf("a second sweep launched %d with no free slot", rep.PoolLaunched)
	}
}

func TestPoolRefillWaitsForWaitingJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 5))
	id := h.queued()
	if _, err := h.p.Store.Claim(context.Background(), id, "c", "default", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Store.Wait(context.Background(), id, "c", "default", "every slot taken", h.p.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if rep := h.sweep(); rep.PoolLaunched != 0 || len(h.pooled()) != 0 {
		t.Fatalf("refilled %d while a job waits for a slot", rep.PoolLaunched)
	}
}

// A job of a pooled profile takes a hot instance: no CreateFleet, the
// instance is retagged as the job's launch and handed the job's JIT
// config, and the job's record owns it from then on.
func TestPoolHitLaunchesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 10))
	h.sweep()
	pool := h.pooled()
	id, j := h.launched()
	if n := h.jobLaunches(); n != 0 {
		t.Fatalf("a pool hit made %d CreateFleet calls for the job; want 0", n)
	}
	// The hit's invocation launched one replacement into the pool.
	if pooled := len(h.p.Faults.FleetInputs()); pooled != 3 {
		t.Fatalf("CreateFleet calls = %d; want 3 (the pool's 2, one replacement)", pooled)
	}
	if j.FromPool != jitstore.PoolHot || j.Phase != state.PhaseLaunched || !slices.ContainsFunc(pool, func(p *state.PoolInstance) bool {
		return p.InstanceID == j.InstanceID
	}) {
		t.Fatalf("job record after a pool hit: %+v; want one of the pool's instances %v", j, pool)
	}
	if left := h.pooled(); len(left) != 2 || slices.ContainsFunc(left, func(p *state.PoolInstance) bool { return p.InstanceID == j.InstanceID }) {
		t.Fatalf("pool after the hit holds %d instances (taken one included: %v); want 2 without it", len(left),
			slices.ContainsFunc(left, func(p *state.PoolInstance) bool { return p.InstanceID == j.InstanceID }))
	}
	inst := h.describe(j.InstanceID)
	if inst.Runner != j.InstanceRunnerName || inst.JobID != id || inst.Repository != h.p.Repository() {
		t.Fatalf("taken instance's tags: %+v; want the job's launch tags (runner %s)", inst, j.InstanceRunnerName)
	}
	h.online(j) // the instance's bootstrap reads the job's config
	// The sweep refills the pool, and never mistakes the taken instance
	// (a job's now) or the pooled ones for orphans.
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute)
	h.boot()
	rep := h.sweep()
	if rep.Terminated != 0 || rep.PoolLaunched != 0 || len(h.pooled()) != 2 {
		t.Fatalf("sweep after the hit: %+v, pool %d; want the pool full (2), nothing launched or terminated", rep, len(h.pooled()))
	}
}

// Two jobs reach for the one pooled instance at once: one takes it, the
// other launches; each instance serves one job.
func TestPoolClaimRaceBetweenJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	a, b := h.queued(), h.queued()
	up2 := h.p.ScaleUp(h.p.ScaleUpDeps()) // a second container: its own claim lock
	var wg sync.WaitGroup
	for i, id := range []int64{a, b} {
		handler := h.up
		if i == 1 {
			handler = up2
		}
		wg.Go(func() {
			if err := h.scaleUp(handler, id); err != nil {
				t.Errorf("job %d: %v", id, err)
			}
		})
	}
	wg.Wait()
	ja, jb := h.job(a), h.job(b)
	if ja.InstanceID == "" || jb.InstanceID == "" || ja.InstanceID == jb.InstanceID {
		t.Fatalf("jobs %d and %d on instances %q and %q; want two different instances", a, b, ja.InstanceID, jb.InstanceID)
	}
	if hits := btoi(ja.FromPool != "") + btoi(jb.FromPool != ""); hits != 1 {
		t.Fatalf("%d jobs took the one pooled instance; want 1", hits)
	}
}

// jobLaunches counts the CreateFleet calls that launched for a job (not
// into a pool).
func (h *harness) jobLaunches() int {
	n := 0
	for _, in := range h.p.Faults.FleetInputs() {
		pooled := false
		for _, spec := range in.TagSpecifications {
			for _, tg := range spec.Tags {
				pooled = pooled || aws.ToString(tg.Key) == tags.Pool
			}
		}
		if !pooled {
			n++
		}
	}
	return n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A stopped-pool instance: launched, prepared (its bootstrap consumed the
// marker), stopped by the sweep, then ready; a job starts it, and its
// second boot finds the job's config.
func TestStoppedPoolSecondBoot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Stopped: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	pool := h.pooled()
	if len(pool) != 1 || pool[0].State != state.PoolPreparing {
		t.Fatalf("stopped pool after the first sweep: %+v; want one preparing", pool)
	}
	id := pool[0].InstanceID
	if in := h.describe(id); in.Spot {
		t.Fatal("a stopped-pool instance was launched on spot (AWS cannot stop one-time spot instances)")
	}
	h.sweep()
	if p := h.pooled()[0]; p.State != state.PoolPreparing || h.state(id) != types.InstanceStateNameRunning {
		t.Fatalf("stopped before its bootstrap was ready: %+v, %s", p, h.state(id))
	}
	// First boot: the bootstrap prepares and consumes its marker, later
	// than the boot timeout after the launch (a slow first boot): it is
	// prepared, so it is stopped, not retired.
	if _, err := h.p.JIT.Take(context.Background(), h.instanceARN(id)); err == nil {
		t.Fatal("the marker read as a JIT config")
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Second)
	h.sweep()
	if p := h.pooled()[0]; p.State != state.PoolStopping {
		t.Fatalf("prepared instance not being stopped: %+v", p)
	}
	if s := h.state(id); s != types.InstanceStateNameStopped && s != types.InstanceStateNameStopping {
		t.Fatalf("prepared instance is %s; want stopping or stopped", s)
	}
	h.sweep()
	if p := h.pooled()[0]; p.State != state.PoolReady {
		t.Fatalf("stopped instance not ready: %+v", p)
	}
	jobID, j := h.launched()
	if j.InstanceID != id || j.FromPool != jitstore.PoolStopped || h.jobLaunches() != 0 {
		t.Fatalf("job %d: %+v; want it on stopped instance %s without a launch", jobID, j, id)
	}
	if s := h.state(id); s != types.InstanceStateNameRunning && s != types.InstanceStateNamePending {
		t.Fatalf("taken stopped instance is %s; want started", s)
	}
	// Second boot: the config is there.
	h.online(j)
}

// Pooled instances past the pool's maximum age, or of another image, are
// retired and replaced.
func TestPoolAgeOutAndNewImage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}, MaxAgeMinutes: 60}, 10))
	h.sweep()
	h.boot()
	old := h.pooled()
	h.p.Clock.Advance(59 * time.Minute)
	if rep := h.sweep(); rep.Terminated != 0 {
		t.Fatalf("retired %d before the maximum age", rep.Terminated)
	}
	h.p.Clock.Advance(2 * time.Minute)
	rep := h.sweep()
	if rep.Terminated != 2 || rep.PoolLaunched != 2 {
		t.Fatalf("age-out sweep: %+v; want 2 retired, 2 launched", rep)
	}
	for _, p := range old {
		if h.alive(p.InstanceID) {
			t.Fatalf("aged-out instance %s still running", p.InstanceID)
		}
	}
	// A new image (a new pre-baked AMI): the pool is replaced.
	prof := h.p.Config.Profiles["default"]
	prof.ImageID = "ami-0fedcba9876543210"
	h.p.Config.Profiles["default"] = prof
	h.rebuild()
	rep = h.sweep()
	if rep.Terminated != 2 || rep.PoolLaunched != 2 {
		t.Fatalf("new-image sweep: %+v; want 2 retired, 2 launched", rep)
	}
	for _, p := range h.pooled() {
		if p.ImageID != "ami-0fedcba9876543210" {
			t.Fatalf("refilled from image %s", p.ImageID)
		}
	}
}

// With a schedule the pool follows it: full inside the window, the
// off-hours size outside, edges included.
func TestPoolScheduleEdges(t *testing.T) {
	t.Parallel()
	spec := &config.PoolSpec{Size: 2, OffHoursSize: 0, TimeZone: "Europe/Berlin",
		Schedules: []config.PoolSchedule{{Days: "mon-fri", From: "07:00", To: "19:00"}}}
	h := newHarness(t, withPool(config.Pool{Hot: spec}, 10))
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// The next Monday in Berlin: the clock only moves forward.
	now := h.p.Clock.Now().In(berlin)
	monday := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, berlin)
	for monday.Weekday() != time.Monday {
		monday = monday.AddDate(0, 0, 1)
	}
	at := func(day int, hhmm string) {
		t.Helper()
		hm, err := time.Parse("15:04", hhmm)
		if err != nil {
			t.Fatal(err)
		}
		ts := time.Date(monday.Year(), monday.Month(), monday.Day()+day, hm.Hour(), hm.Minute(), 0, 0, berlin)
		d := ts.Sub(h.p.Clock.Now())
		if d < 0 {
			t.Fatalf("clock would go back to %s", ts)
		}
		h.p.Clock.Advance(d)
	}
	at(0, "06:59") // Monday, a minute before the window
	if rep := h.sweep(); rep.PoolLaunched != 0 {
		t.Fatalf("launched %d before the window opened", rep.PoolLaunched)
	}
	at(0, "07:00")
	if rep := h.sweep(); rep.PoolLaunched != 2 {
		t.Fatalf("launched %d at the window's opening; want 2", rep.PoolLaunched)
	}
	h.boot()
	at(0, "18:59")
	if rep := h.sweep(); rep.Terminated != 0 || rep.PoolLaunched != 0 {
		t.Fatalf("sweep inside the window: %+v", rep)
	}
	at(0, "19:00")
	if rep := h.sweep(); rep.Terminated != 2 || len(h.pooled()) != 0 {
		t.Fatalf("sweep at the window's close: %+v, pool %d; want it emptied", rep, len(h.pooled()))
	}
	at(5, "10:00") // Saturday
	if rep := h.sweep(); rep.PoolLaunched != 0 {
		t.Fatalf("launched %d on a Saturday", rep.PoolLaunched)
	}
}

// A spot interruption of a pooled instance: it leaves the pool at once and
// is terminated (no job ever ran on it), its spot pool is avoided, and the
// next sweep replaces it.
func TestPooledSpotInterruption(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	p := h.pooled()[0]
	in := h.describe(p.InstanceID)
	ev := `{"detail-type":"` + scaledown.SpotInterruption + `","source":"aws.ec2","detail":{"instance-id":"` + p.InstanceID + `","instance-action":"terminate"}}`
	if _, err := h.rc.Handle(context.Background(), []byte(ev)); err != nil {
		t.Fatal(err)
	}
	if len(h.pooled()) != 0 || h.alive(p.InstanceID) {
		t.Fatalf("interrupted pooled instance still pooled (%d) or alive (%v)", len(h.pooled()), h.alive(p.InstanceID))
	}
	offs, err := h.p.Store.UnavailableOfferings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := offs["spot:"+in.InstanceType+":"+in.Zone]; !ok {
		t.Fatalf("interrupted spot pool not shared: %v", offs)
	}
	if rep := h.sweep(); rep.PoolLaunched != 1 {
		t.Fatalf("no replacement after the interruption: %+v", rep)
	}
}

// A pool instance that no item owns (its refill died before recording it)
// is retired as an orphan once the grace has passed; one recorded is not.
func TestUnrecordedPoolInstanceIsAnOrphan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	kept := h.pooled()[0].InstanceID
	out, err := h.p.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String(h.p.Network.SubnetIDs[0]),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance,
			Tags: ec2TagList(tags.ForPool(h.p.Config.NamePrefix, "default", jitstore.PoolHot))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stray := aws.ToString(out.Instances[0].InstanceId)
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute)
	h.sweep()
	if h.alive(stray) || !h.alive(kept) {
		t.Fatalf("stray pool instance alive=%v (want retired), recorded one alive=%v (want kept)", h.alive(stray), h.alive(kept))
	}
}

func ec2TagList(m map[string]string) []types.Tag {
	var out []types.Tag
	for k, v := range m {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out
}

func (h *harness) describe(id string) fleet.Instance {
	h.t.Helper()
	found, err := fleet.New(h.p.EC2).Get(context.Background(), id)
	if err != nil || found[id].ID == "" {
		h.t.Fatalf("describe %s: %v", id, err)
	}
	return found[id]
}

// A hot instance whose bootstrap never comes up (its marker unconsumed
// past the boot timeout) is replaced; one that came up is kept.
func TestHotInstanceThatNeverBootsIsReplaced(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 10))
	h.sweep()
	pool := h.pooled()
	if err := h.p.JIT.Delete(context.Background(), h.instanceARN(pool[0].InstanceID)); err != nil {
		t.Fatal(err)
	}
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.BootTimeoutSeconds) + time.Second)
	rep := h.sweep()
	if rep.Terminated != 1 || rep.PoolLaunched != 1 || !h.alive(pool[0].InstanceID) || h.alive(pool[1].InstanceID) {
		t.Fatalf("sweep: %+v; want the never-booted %s replaced and the booted %s kept", rep, pool[1].InstanceID, pool[0].InstanceID)
	}
}

// A job that takes a pooled instance replaces it only within the limits:
// with maxRunners 3 and a pool of 2, the first job's replacement takes the
// free slot, and the second job's finds none.
func TestPoolReplacementRespectsMaxRunners(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 3))
	h.sweep()
	for i := range 2 {
		if _, j := h.launched(); j.FromPool == "" {
			t.Fatalf("job %d did not take a pooled instance: %+v", i, j)
		}
	}
	if n := len(h.p.Faults.FleetInputs()); n != 3 {
		t.Fatalf("CreateFleet calls = %d; want 3 (the pool's 2, one replacement; none over maxRunners 3)", n)
	}
	if n := h.slots(); n != 3 {
		t.Fatalf("slots = %d; want 3", n)
	}
}

// takingJobs takes a pooled instance for a job right after the sweep has
// read the pool: the sweep's view of that instance is stale.
type takingJobs struct {
	scaledown.Jobs
	take func()
	once sync.Once
}

func (j *takingJobs) Pooled(ctx context.Context, profile string) ([]*state.PoolInstance, error) {
	items, err := j.Jobs.Pooled(ctx, profile)
	j.once.Do(j.take)
	return items, err
}

// A sweep that retires pooled instances (here: the pool shrank to 0)
// never terminates one a job took after the sweep read the pool: the
// pool item is gone, and the job's record owns the instance.
func TestShrinkNeverKillsAnInstanceAJobJustTook(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	h.boot()
	prof := h.p.Config.Profiles["default"]
	prof.Pool = &config.Pool{Hot: &config.PoolSpec{Size: 0}, MaxAgeMinutes: prof.Pool.MaxAgeMinutes}
	h.p.Config.Profiles["default"] = prof
	var taken *state.Job
	d := h.p.ScaleDownDeps()
	d.Jobs = &takingJobs{Jobs: h.p.Store, take: func() {
		// The config has no pool now, so scaleup would launch: take the
		// instance the way scaleup does, with the pool's size restored
		// for that one handler.
		cfg := *h.p.Config
		cfg.Profiles = map[string]config.Profile{"default": prof}
		p := prof
		p.Pool = &config.Pool{Hot: &config.PoolSpec{Size: 1}, MaxAgeMinutes: prof.Pool.MaxAgeMinutes}
		cfg.Profiles["default"] = p
		up := scaleup.New(&cfg, h.p.ScaleUpDeps(), scaleup.WithClock(h.p.Clock.Now))
		id := h.queued()
		if err := h.scaleUp(up, id); err != nil {
			t.Errorf("take: %v", err)
		}
		taken = h.job(id)
	}}
	h.rc = h.p.ScaleDown(d)
	h.sweep()
	if taken == nil || taken.FromPool == "" {
		t.Fatalf("the job did not take the pooled instance: %+v", taken)
	}
	if !h.alive(taken.InstanceID) {
		t.Fatalf("instance %s, taken by job %d during the sweep, was terminated as a pooled one", taken.InstanceID, taken.JobID)
	}
}

// Jobs of another profile waiting for a slot come before a pool's refill.
func TestPoolRefillWaitsForOtherProfilesJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 5), func(c *config.Config) {
		other := c.Profiles["default"]
		other.Pool = nil
		c.Profiles["other"] = other
	})
	id := h.queued()
	if _, err := h.p.Store.Claim(context.Background(), id, "c", "other", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Store.Wait(context.Background(), id, "c", "other", "every slot taken", h.p.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if rep := h.sweep(); rep.PoolLaunched != 0 {
		t.Fatalf("refilled %d while a job of another profile waits for a slot", rep.PoolLaunched)
	}
}

// raceJobs and raceInstances let a job take a pooled instance after the
// sweep has described the instances (pool tags, no job) and read the live
// records (no launch on it yet), and before it reads the pools (the
// instance is no longer in them): the instance looks like a pooled
// instance no item owns.
type raceInstances struct {
	scaledown.Instances
	listed chan struct{}
	once   sync.Once
}

func (r *raceInstances) List(ctx context.Context, managedBy string) ([]fleet.Instance, int, error) {
	l, n, err := r.Instances.List(ctx, managedBy)
	r.once.Do(func() { close(r.listed) })
	return l, n, err
}

type raceJobs struct {
	scaledown.Jobs
	listed chan struct{}
	take   func()
	once   sync.Once
}

func (r *raceJobs) LiveJobs(ctx context.Context) ([]*state.Job, int, error) {
	jobs, n, err := r.Jobs.LiveJobs(ctx)
	r.once.Do(func() {
		<-r.listed
		r.take()
	})
	return jobs, n, err
}

// The orphan rule never terminates a pooled instance a job took after the
// sweep described it: the taken instance's item (a tombstone) says so.
func TestOrphanRuleKeepsAnInstanceAJobJustTook(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 1}}, 10))
	h.sweep()
	h.boot()
	h.p.Clock.Advance(secs(h.p.Config.ScaleDown.OrphanGraceSeconds) + time.Minute)
	listed := make(chan struct{})
	var taken *state.Job
	d := h.p.ScaleDownDeps()
	d.Instances = &raceInstances{Instances: d.Instances, listed: listed}
	d.Jobs = &raceJobs{Jobs: h.p.Store, listed: listed, take: func() { _, taken = h.launched() }}
	h.rc = h.p.ScaleDown(d)
	h.sweep()
	if taken == nil || taken.FromPool == "" {
		t.Fatalf("the job did not take the pooled instance: %+v", taken)
	}
	if !h.alive(taken.InstanceID) {
		t.Fatalf("instance %s, taken by job %d during the sweep, was retired as an orphan", taken.InstanceID, taken.JobID)
	}
}

// A job with shape labels never takes a pooled instance (the pool's are the
// profile's types, volume and market): it launches over the catalogue's
// types and the pool stays whole.
func TestShapeJobSkipsThePool(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withPool(config.Pool{Hot: &config.PoolSpec{Size: 2}}, 10))
	h.sweep()
	id := h.queued("self-hosted", "cpu=2", "ram=8")
	if err := h.scaleUp(h.up, id); err != nil {
		t.Fatalf("scaleup: %v\n%s", err, h.p.Logs.String())
	}
	j := h.job(id)
	if j.Phase != state.PhaseLaunched || j.FromPool != "" || len(j.CandidateTypes) < 6 {
		t.Fatalf("shape job %+v; want launched for itself over at least 6 types, not from the pool", j)
	}
	if n := h.jobLaunches(); n != 1 {
		t.Fatalf("%d CreateFleet calls for the job; want 1", n)
	}
	ready := 0
	for _, p := range h.pooled() {
		if p.State == state.PoolReady {
			ready++
		}
	}
	if ready != 2 {
		t.Fatalf("%d pooled instances ready after the shape job; want the pool's 2 untouched", ready)
	}
}

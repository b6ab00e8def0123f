package sandbox

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// aliveStates are the instance states of an instance that still runs.
var aliveStates = []string{"pending", "running", "stopping", "stopped", "shutting-down"}

// instanceInfo is one managed instance as DescribeInstances shows it.
type instanceInfo struct {
	id      string
	ownerID string // the account, from the reservation
	jobID   int64
	name    string // the Name tag: the runner name
	profile string // the jitr:profile tag
	managed string // the jitr:managed-by tag
	spot    bool
}

// instanceWatcher polls EC2 for the deployment's instances (by the
// jitr:managed-by tag) and DynamoDB for the launches of queued jobs: new
// instances start simulated runners, vanished ones are terminated, and job
// records show launches.
type instanceWatcher struct {
	s     *Sandbox
	ec2   *ec2.Client
	db    *dynamodb.Client
	store *state.Store
	alive map[string]instanceInfo
	known map[string]instanceInfo // every instance seen, alive or not
	onNew func(ctx context.Context, in instanceInfo)
	// onGone is called for every instance that terminated.
	onGone func(id string)
}

func newInstanceWatcher(s *Sandbox) *instanceWatcher {
	db := dynamodb.NewFromConfig(s.awsCfg)
	return &instanceWatcher{
		s: s, ec2: ec2.NewFromConfig(s.awsCfg), db: db,
		store: state.NewStore(db, s.cfg.TableName, time.Duration(s.cfg.RecordRetentionSeconds)*time.Second, nil),
		alive: map[string]instanceInfo{}, known: map[string]instanceInfo{},
	}
}

func (w *instanceWatcher) run(ctx context.Context) {
	for {
		active := w.tick(ctx)
		d := 500 * time.Millisecond
		if active {
			d = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// tick polls once and reports whether anything is in flight.
func (w *instanceWatcher) tick(ctx context.Context) bool {
	w.instances(ctx)
	pending := w.s.tracker.awaitingLaunch()
	if len(pending) > 0 {
		w.launches(ctx, pending)
	}
	return len(pending) > 0 || len(w.alive) > 0
}

// describeAlive lists the deployment's instances that are not terminated.
func describeAlive(ctx context.Context, api *ec2.Client, prefix string) ([]instanceInfo, error) {
	return describeInstances(ctx, api,
		types.Filter{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{prefix}},
		types.Filter{Name: aws.String("instance-state-name"), Values: aliveStates})
}

// describeInstances lists the instances that pass the filters.
func describeInstances(ctx context.Context, api *ec2.Client, filters ...types.Filter) ([]instanceInfo, error) {
	p := ec2.NewDescribeInstancesPaginator(api, &ec2.DescribeInstancesInput{
		Filters: filters,
		// One page: moto's page token is a reservation id, and a page after
		// a reservation left the filtered set fails.
		MaxResults: aws.Int32(1000),
	})
	var out []instanceInfo
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				out = append(out, toInfo(r, in))
			}
		}
	}
	return out, nil
}

// describe looks one instance up, whatever its state.
func (w *instanceWatcher) describe(ctx context.Context, id string) (instanceInfo, bool) {
	out, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return instanceInfo{}, false
	}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			info := toInfo(r, in)
			w.known[id] = info
			return info, true
		}
	}
	return instanceInfo{}, false
}

func (w *instanceWatcher) instances(ctx context.Context) {
	list, err := describeAlive(ctx, w.ec2, w.s.cfg.NamePrefix)
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Warn("describe instances failed", slog.String("error", err.Error()))
		}
		return
	}
	seen := make(map[string]bool, len(list))
	for _, in := range list {
		seen[in.id] = true
		if _, ok := w.alive[in.id]; ok {
			continue
		}
		w.alive[in.id] = in
		w.known[in.id] = in
		w.s.tracker.onInstance(in.jobID, in.id)
		if w.onNew != nil {
			w.onNew(ctx, in)
		}
	}
	for id, in := range w.alive {
		if seen[id] {
			continue
		}
		delete(w.alive, id)
		w.s.tracker.onInstanceGone(in.jobID, id)
		if w.onGone != nil {
			w.onGone(id)
		}
	}
}

// launches reads the job records of jobs awaiting a launch: one Query of the
// live index, and a GetItem for each launch found (capacity type) and for
// each job that left the index (skipped).
func (w *instanceWatcher) launches(ctx context.Context, pending []int64) {
	live, _, err := state.LiveJobs(ctx, w.db, w.s.cfg.TableName)
	if err != nil {
		if ctx.Err() == nil {
			w.s.log.Warn("query live jobs failed", slog.String("error", err.Error()))
		}
		return
	}
	byID := make(map[int64]*state.Job, len(live))
	for _, j := range live {
		byID[j.JobID] = j
	}
	for _, id := range pending {
		j, ok := byID[id]
		switch {
		case ok && j.InstanceID != "" && !j.LaunchedAt.IsZero():
			w.launched(ctx, j)
			continue
		case ok:
			continue // not launched yet
		}
		// Not in the index: skipped, or settled already.
		full, found, err := w.store.Get(ctx, id)
		if err != nil || !found {
			continue
		}
		switch {
		case full.InstanceID != "" && !full.LaunchedAt.IsZero():
			w.launched(ctx, full)
		case full.Phase == state.PhaseSkipped:
			w.s.tracker.onSkipped(id, full.SkipReason)
		}
	}
}

// launched reports a launch the record shows. The index's projection has no
// capacity type: the instance tells (spot instances carry
// InstanceLifecycle=spot, and every instance its jitr:profile tag), and an
// on-demand instance of a spot profile is a fallback.
func (w *instanceWatcher) launched(ctx context.Context, j *state.Job) {
	capacity, name := fleet.CapacityTypeOnDemand, j.Profile
	in, ok := w.known[j.InstanceID]
	if !ok {
		// Launched after this tick's DescribeInstances: look it up.
		in, ok = w.describe(ctx, j.InstanceID)
	}
	if ok {
		if in.spot {
			capacity = fleet.CapacityTypeSpot
		}
		name = in.profile
	}
	if name == "" {
		name = w.s.cfg.DefaultProfile
	}
	profile, ok := w.s.cfg.Profiles[name]
	fallback := capacity == fleet.CapacityTypeOnDemand && ok && profile.UseSpot()
	w.s.tracker.onLaunched(j.JobID, j.InstanceID, j.InstanceRunnerName, capacity, fallback, j.LaunchedAt)
}

func toInfo(r types.Reservation, in types.Instance) instanceInfo {
	info := instanceInfo{id: aws.ToString(in.InstanceId), ownerID: aws.ToString(r.OwnerId),
		spot: in.InstanceLifecycle == types.InstanceLifecycleTypeSpot}
	for _, t := range in.Tags {
		switch aws.ToString(t.Key) {
		case tags.JobID:
			info.jobID, _ = strconv.ParseInt(aws.ToString(t.Value), 10, 64)
		case tags.Name:
			info.name = aws.ToString(t.Value)
		case tags.Profile:
			info.profile = aws.ToString(t.Value)
		case tags.ManagedBy:
			info.managed = aws.ToString(t.Value)
		}
	}
	return info
}

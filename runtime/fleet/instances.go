package fleet

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Instance is one EC2 instance as the control plane sees it: its state and
// placement as EC2 reports them, and what our tags say (tags.go names
// them). Every reader of instances gets this one type, parsed here.
type Instance struct {
	ID           string
	State        string // EC2's state name: pending, running, ...
	InstanceType string
	Zone         string
	Launched     time.Time
	Spot         bool
	Account      string // the owner of the reservation

	ManagedBy  string // jitr:managed-by: the deployment's namePrefix
	JobID      int64  // jitr:job-id: the job it was launched for
	Repository string // jitr:repository
	Profile    string // jitr:profile
	Runner     string // Name: its own runner's name
	Pool       string // jitr:pool: the warm pool it was launched into, if any
}

// notTerminated are the states of an instance that is not terminated yet,
// the filter of List.
var notTerminated = []string{"pending", "running", "stopping", "stopped", "shutting-down"}

// Alive reports whether the instance can still run (or come back to run) a
// runner: pending, running, stopping or stopped. One shutting down or
// terminated cannot; nil (gone) is not alive.
func (i *Instance) Alive() bool {
	if i == nil {
		return false
	}
	switch i.State {
	case "pending", "running", "stopping", "stopped":
		return true
	}
	return false
}

func instanceOf(r types.Reservation, in types.Instance) Instance {
	i := Instance{
		ID: aws.ToString(in.InstanceId), InstanceType: string(in.InstanceType), Launched: aws.ToTime(in.LaunchTime),
		Spot: in.InstanceLifecycle == types.InstanceLifecycleTypeSpot, Account: aws.ToString(r.OwnerId),
	}
	if in.State != nil {
		i.State = string(in.State.Name)
	}
	if in.Placement != nil {
		i.Zone = aws.ToString(in.Placement.AvailabilityZone)
	}
	for _, t := range in.Tags {
		v := aws.ToString(t.Value)
		switch aws.ToString(t.Key) {
		case tags.ManagedBy:
			i.ManagedBy = v
		case tags.JobID:
			i.JobID, _ = strconv.ParseInt(v, 10, 64)
		case tags.Repository:
			i.Repository = v
		case tags.Profile:
			i.Profile = v
		case tags.Name:
			i.Runner = v
		case tags.Pool:
			i.Pool = v
		}
	}
	return i
}

// List returns the deployment's instances (jitr:managed-by = managedBy)
// that are not terminated, and how many pages that took.
func (l *Launcher) List(ctx context.Context, managedBy string) ([]Instance, int, error) {
	var out []Instance
	pages, err := l.describe(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{
			{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{managedBy}},
			{Name: aws.String("instance-state-name"), Values: notTerminated},
		},
		MaxResults: aws.Int32(1000),
	}, func(i Instance) { out = append(out, i) })
	if err != nil {
		return nil, pages, fmt.Errorf("describe instances: %w", err)
	}
	return out, pages, nil
}

// maxFilterValues is DescribeInstances' limit on the values of one filter.
const maxFilterValues = 200

// Get describes the given instances, whatever their state and owner tag;
// an id EC2 does not know is absent from the result. It filters on
// instance-id rather than passing InstanceIds, which fails the whole call
// when one id does not exist (any more).
func (l *Launcher) Get(ctx context.Context, ids ...string) (map[string]Instance, error) {
	out := map[string]Instance{}
	for len(ids) > 0 {
		n := min(len(ids), maxFilterValues)
		if _, err := l.describe(ctx, &ec2.DescribeInstancesInput{
			Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids[:n]}},
		}, func(i Instance) { out[i.ID] = i }); err != nil {
			return nil, fmt.Errorf("describe instances by id: %w", err)
		}
		ids = ids[n:]
	}
	return out, nil
}

// describe pages through DescribeInstances, handing each instance to add.
func (l *Launcher) describe(ctx context.Context, in *ec2.DescribeInstancesInput, add func(Instance)) (int, error) {
	p := ec2.NewDescribeInstancesPaginator(l.api, in)
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return pages, err
		}
		pages++
		for _, r := range page.Reservations {
			for _, inst := range r.Instances {
				add(instanceOf(r, inst))
			}
		}
	}
	return pages, nil
}

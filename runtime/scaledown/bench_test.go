package scaledown_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// countingDynamo counts the DynamoDB calls a sweep makes.
type countingDynamo struct {
	*dynamodb.Client
	n atomic.Int64
}

func (c *countingDynamo) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	c.n.Add(1)
	return c.Client.Query(ctx, in, o...)
}

func (c *countingDynamo) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.n.Add(1)
	return c.Client.UpdateItem(ctx, in, o...)
}

func (c *countingDynamo) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.n.Add(1)
	return c.Client.GetItem(ctx, in, o...)
}

// BenchmarkSweep2000 measures one sweep over 2,000 live records whose 2,000
// instances run in moto and whose 2,000 runners are busy at the GitHub fake
// (so the sweep decides to keep everything), plus 20 runners that finished
// and must be terminated. Targets: <= 10 s wall time; GitHub calls =
// ceil(runners/100) list calls per owner plus the deletions needed.
func BenchmarkSweep2000(b *testing.B) {
	const n = 2000
	const done = 20
	p := testenv.NewPlane(b, config.ScopeOrg)
	ctx := context.Background()
	prefix := p.Config.NamePrefix
	ids := make([]string, 0, n)
	for len(ids) < n {
		out, err := p.EC2.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: types.InstanceTypeT3Large,
			MinCount: aws.Int32(250), MaxCount: aws.Int32(250), SubnetId: aws.String(p.Network.SubnetIDs[0]),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{
				{Key: aws.String(tags.ManagedBy), Value: aws.String(prefix)}, {Key: aws.String(tags.JobID), Value: aws.String("0")},
			}}},
		})
		if err != nil {
			b.Fatal(err)
		}
		for _, in := range out.Instances {
			ids = append(ids, aws.ToString(in.InstanceId))
		}
	}
	names := make([]string, 0, n)
	for i, id := range ids {
		jobID := int64(i + 1)
		name := tags.RunnerName(prefix, jobID, 1)
		names = append(names, name)
		if _, err := p.Store.RecordEvent(ctx, &state.JobEvent{JobID: jobID, Action: state.StatusQueued, Repository: p.Repository(),
			Owner: p.Owner, InstallationID: p.InstID, Labels: []string{"self-hosted"}, Ours: true, Profile: "default"}); err != nil {
			b.Fatal(err)
		}
		if _, err := p.Store.Claim(ctx, jobID, "bench", "default", time.Hour); err != nil {
			b.Fatal(err)
		}
		rn, err := p.GitHub.AddRunner(p.Owner, ghfake.Runner{Name: name, Status: ghfake.RunnerStatusOnline, Busy: i >= done, Ephemeral: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Store.RecordLaunch(ctx, jobID, "bench", state.Launch{InstanceID: id, InstanceType: "t3.large", CapacityType: "spot", RunnerName: name, RunnerID: rn.ID}); err != nil {
			b.Fatal(err)
		}
		ev := &state.JobEvent{JobID: jobID, Action: state.StatusInProgress, RunnerName: name, RunnerID: rn.ID, RunnerJob: jobID}
		if i < done {
			ev.Action, ev.Conclusion, ev.CompletedAt = state.StatusCompleted, "success", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		}
		if _, err := p.Store.RecordEvent(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < done; i++ {
		if err := p.GitHub.SetRunnerBusy(mustRunner(b, p, names[i]), false); err != nil {
			b.Fatal(err)
		}
	}

	db := &countingDynamo{Client: p.AWS.Dynamo}
	store := state.NewStore(db, p.Config.TableName, time.Hour, nil)
	d := p.ScaleDownDeps()
	d.Jobs = store                   // counts its DynamoDB calls
	rc := scaledown.New(p.Config, d) // the real clock, no log: a production sweep
	// A warm container: its installation token is cached from earlier sweeps.
	if _, err := p.GHClient.ListRunners(ctx, p.Installation(), prefix+"-"); err != nil {
		b.Fatal(err)
	}
	var rep *scaledown.Report
	var took time.Duration
	for b.Loop() {
		db.n.Store(0)
		p.GitHub.ResetCalls()
		start := time.Now()
		var err error
		rep, err = rc.Sweep(ctx)
		took = time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(took.Seconds(), "s/sweep")
	b.ReportMetric(float64(db.n.Load()), "dynamodb-calls")
	b.ReportMetric(float64(p.GitHub.TotalCalls()), "github-calls")
	b.ReportMetric(float64(p.GitHub.Calls(ghfake.RouteListOrgRunners)), "github-list-calls")
	b.ReportMetric(float64(rep.Terminated), "terminated")
	b.ReportMetric(0, "ns/op")
	if rep.LiveJobs != n || rep.Instances < n {
		b.Fatalf("report %+v", rep)
	}
	fmt.Printf("sweep report: %+v\n", *rep)
}

func mustRunner(b *testing.B, p *testenv.Plane, name string) int64 {
	rn, ok := p.GitHub.RunnerByName(p.Owner, name)
	if !ok {
		b.Fatalf("no runner %s", name)
	}
	return rn.ID
}

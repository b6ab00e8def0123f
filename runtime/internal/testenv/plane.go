package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// Plane is one deployment's control-plane resources for integration tests:
// the jobs and JIT tables, the queue, a network with the runner launch
// template on moto, a GitHub fake with an App installation, and a GitHub App
// client for it, all sharing one controllable clock.
type Plane struct {
	*Deployment
	Network  *Network
	JITTable string
	GitHub   *ghfake.Server
	GHClient *githubapp.Client
	Store    *state.Store
	JIT      *jitstore.Store
	EC2      *ec2.Client // moto itself: what tests set up and read back
	// Faults wraps EC2 for the handlers the plane builds: CreateFleet
	// errors a test queues, and a record of the launches.
	Faults *FaultyEC2
	Clock  *testkit.Clock
	Logs   *testkit.Buffer
	Owner  string
	InstID int64

	jobSeq atomic.Int64
}

// NewPlane builds a Plane with the given scope; opts adjust the config.
func NewPlane(tb testing.TB, scope string, opts ...DeploymentOption) *Plane {
	tb.Helper()
	prefix := fmt.Sprintf("p%d", time.Now().UnixNano()%1e9)
	d := NewDeployment(tb, "unused-webhook-secret", append([]DeploymentOption{func(c *config.Config) {
		c.NamePrefix = prefix
		c.GitHub.Scope = scope
	}}, opts...)...)
	p := &Plane{Deployment: d, Clock: testkit.NewClock(time.Now()), Logs: &testkit.Buffer{}, Owner: "octo-org", InstID: 4242}
	p.JITTable = UniqueName(tb)
	if err := jitstore.Table.Create(context.Background(), d.AWS.Dynamo, p.JITTable); err != nil {
		tb.Fatal(err)
	}
	p.Network = d.AWS.Network(tb, p.JITTable)
	c := d.Config
	c.Launch.LaunchTemplateID, c.Launch.SubnetIDs, c.Launch.JITConfigTableName = p.Network.LaunchTemplateID, p.Network.SubnetIDs, p.JITTable

	// The fake keeps real time: the App client's tokens and JWTs do too.
	p.GitHub = ghfake.NewForTest(tb)
	p.GitHub.AddInstallation(p.InstID, p.Owner)
	c.GitHub.APIURL = p.GitHub.URL()
	c.GitHub.AppID = p.GitHub.AppID()
	c.GitHub.PrivateKeySecretARN = d.AWS.Secret(tb, string(p.GitHub.PrivateKeyPEM()))
	if err := c.Validate(); err != nil {
		tb.Fatal(err)
	}
	gh, err := githubapp.New(githubapp.Config{
		APIURL: p.GitHub.URL(), AppID: p.GitHub.AppID(), PrivateKey: p.GitHub.PrivateKeyPEM(),
		Scope: scope, RunnerGroup: c.GitHub.RunnerGroup, Logger: p.Logger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	p.GHClient = gh
	p.Store = state.NewStore(d.AWS.Dynamo, c.TableName, time.Duration(c.RecordRetentionSeconds)*time.Second, p.Clock.Now)
	p.JIT = jitstore.New(d.AWS.Dynamo, p.JITTable, p.Clock.Now)
	p.EC2 = ec2.NewFromConfig(d.AWS.Config)
	p.Faults = NewFaultyEC2(p.EC2)
	return p
}

// Identity is the account and region the plane's instances launch in
// (moto's).
func (p *Plane) Identity() scaleup.Identity {
	return scaleup.Identity{Partition: "aws", Region: "us-east-1", Account: "123456789012"}
}

// ScaleUpDeps are scaleup's collaborators on the plane: the App client, a
// launcher through Faults, the store, the JIT table and the queue for
// wakes. Tests replace what they fake, then call ScaleUp.
func (p *Plane) ScaleUpDeps() scaleup.Deps {
	return scaleup.Deps{
		GitHub: p.GHClient, Launcher: fleet.New(p.Faults), Jobs: p.Store, JIT: p.JIT, Identity: p.Identity(),
		Offerings: p.Store, Waker: queue.NewSender(p.AWS.SQS, p.Queue, 0),
	}
}

// ScaleUp builds a scaleup handler on d with the plane's config, clock and
// logger; opts come after those.
func (p *Plane) ScaleUp(d scaleup.Deps, opts ...scaleup.Option) *scaleup.Handler {
	return scaleup.New(p.Config, d, append([]scaleup.Option{scaleup.WithClock(p.Clock.Now), scaleup.WithLogger(p.Logger())}, opts...)...)
}

// ScaleDownDeps are scaledown's collaborators on the plane: instances
// through Faults, the App client, the store, the queue and the JIT table
// (pool markers).
func (p *Plane) ScaleDownDeps() scaledown.Deps {
	return scaledown.Deps{
		Instances: fleet.New(p.Faults), GitHub: p.GHClient, Jobs: p.Store, Queue: queue.NewSender(p.AWS.SQS, p.Queue, 0),
		JIT: p.JIT, Identity: p.Identity(),
	}
}

// ScaleDown builds a reconciler on d with the plane's config, clock and
// logger; opts come after those.
func (p *Plane) ScaleDown(d scaledown.Deps, opts ...scaledown.Option) *scaledown.Reconciler {
	return scaledown.New(p.Config, d, append([]scaledown.Option{scaledown.WithClock(p.Clock.Now), scaledown.WithLogger(p.Logger())}, opts...)...)
}

// Logger returns a JSON logger writing into p.Logs.
func (p *Plane) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(p.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Repository is the repository the plane's jobs run in.
func (p *Plane) Repository() string { return p.Owner + "/app" }

// RunnerOwner is where the plane's runners register (org or repository).
func (p *Plane) RunnerOwner() string {
	if p.Config.GitHub.Scope == config.ScopeRepo {
		return p.Repository()
	}
	return p.Owner
}

// Installation is the plane's App installation.
func (p *Plane) Installation() githubapp.Installation {
	return githubapp.Installation{ID: p.InstID, Owner: p.Owner, Repository: p.Repository()}
}

// NextJobID returns a job id unique in the plane.
func (p *Plane) NextJobID() int64 { return 1000 + p.jobSeq.Add(1) }

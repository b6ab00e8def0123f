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
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
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
	EC2      *ec2.Client
	Clock    *testkit.Clock
	Logs     *testkit.Buffer
	Owner    string
	InstID   int64

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
	return p
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

package scaleup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const installationID = 4242

var identity = scaleup.Identity{Partition: "aws", Region: "us-east-1", Account: "123456789012"}

// faultyEC2 is the real moto client with CreateFleet faults injected: EC2
// capacity errors are what moto cannot produce.
type faultyEC2 struct {
	*ec2.Client
	mu        sync.Mutex
	spotCode  string // per-override error code for the next spotFails spot requests
	spotFails int
	anyCode   string // per-override error code for the next anyFails requests
	anyFails  int
	calls     []*ec2.CreateFleetInput
}

func (f *faultyEC2) CreateFleet(ctx context.Context, in *ec2.CreateFleetInput, opts ...func(*ec2.Options)) (*ec2.CreateFleetOutput, error) {
	f.mu.Lock()
	f.calls = append(f.calls, in)
	code := ""
	switch {
	case f.anyFails > 0:
		f.anyFails--
		code = f.anyCode
	case f.spotFails > 0 && in.TargetCapacitySpecification.DefaultTargetCapacityType == types.DefaultTargetCapacityTypeSpot:
		f.spotFails--
		code = f.spotCode
	}
	f.mu.Unlock()
	if code == "" {
		return f.Client.CreateFleet(ctx, in, opts...)
	}
	out := &ec2.CreateFleetOutput{FleetId: aws.String("fleet-injected")}
	for _, c := range in.LaunchTemplateConfigs {
		for _, o := range c.Overrides {
			out.Errors = append(out.Errors, types.CreateFleetError{
				ErrorCode: aws.String(code), ErrorMessage: aws.String("injected " + code),
				Lifecycle: types.InstanceLifecycle(in.TargetCapacitySpecification.DefaultTargetCapacityType),
				LaunchTemplateAndOverrides: &types.LaunchTemplateAndOverridesResponse{
					Overrides: &types.FleetLaunchTemplateOverrides{InstanceType: o.InstanceType, SubnetId: o.SubnetId},
				},
			})
		}
	}
	return out, nil
}

func (f *faultyEC2) fleetCalls() []*ec2.CreateFleetInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*ec2.CreateFleetInput(nil), f.calls...)
}

// retryRecorder records the retries the handler schedules.
type retryRecorder struct {
	n    atomic.Int32
	mu   sync.Mutex
	last time.Duration
}

func (r *retryRecorder) Retry(_ context.Context, _ string, after time.Duration) error {
	r.n.Add(1)
	r.mu.Lock()
	r.last = after
	r.mu.Unlock()
	return nil
}

func (r *retryRecorder) lastDelay() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

type harness struct {
	t       testing.TB
	cfg     *config.Config
	aws     *testenv.AWS
	gh      *ghfake.Server
	ghc     *githubapp.Client
	ec2     *faultyEC2
	store   *state.Store
	jit     *jitstore.Store
	handler *scaleup.Handler
	clock   *testkit.Clock
	retries *retryRecorder
	logs    *testkit.Buffer
	owner   string
	queue   queue.Created // where wakes go
	nextMsg atomic.Int64
}

type harnessOption func(*config.Config)

func newHarness(t testing.TB, scope string, opts ...harnessOption) *harness {
	t.Helper()
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano()%1e9)
	d := testenv.NewDeployment(t, "unused", func(c *config.Config) {
		c.NamePrefix = prefix
		c.GitHub.Scope = scope
		c.Profiles["gpu"] = config.Profile{InstanceTypes: []string{"g5.xlarge"}, ImageID: testenv.ImageUbuntu.ID, Arch: "x64", VolumeGiB: 100}
		for _, o := range opts {
			o(c)
		}
	})
	a := d.AWS
	jitTable := testenv.UniqueName(t)
	if err := jitstore.Table.Create(context.Background(), a.Dynamo, jitTable); err != nil {
		t.Fatal(err)
	}
	n := a.Network(t, jitTable)
	cfg := d.Config
	cfg.Launch.LaunchTemplateID, cfg.Launch.SubnetIDs, cfg.Launch.JITConfigTableName = n.LaunchTemplateID, n.SubnetIDs, jitTable
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	gh := ghfake.NewForTest(t)
	owner := "octo-org"
	gh.AddInstallation(installationID, owner)
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ghc, err := githubapp.New(githubapp.Config{
		APIURL: gh.URL(), AppID: gh.AppID(), PrivateKey: gh.PrivateKeyPEM(), Scope: scope, RunnerGroup: "Default", Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, aws: a, gh: gh, ghc: ghc, owner: owner, logs: logs,
		ec2:     &faultyEC2{Client: ec2.NewFromConfig(a.Config)},
		clock:   testkit.NewClock(time.Now()),
		retries: &retryRecorder{},
	}
	h.store = state.NewStore(a.Dynamo, cfg.TableName, time.Hour, h.clock.Now)
	h.jit = jitstore.New(a.Dynamo, jitTable, nil)
	h.queue = a.Queue(t)
	h.handler = h.newHandler(h.ghc, nil)
	return h
}

// newHandler builds a handler on the harness's resources; launcher wraps the
// launcher when non-nil.
func (h *harness) newHandler(gh scaleup.GitHub, wrap func(scaleup.Launcher) scaleup.Launcher) *scaleup.Handler {
	var l scaleup.Launcher = fleet.New(h.ec2)
	if wrap != nil {
		l = wrap(l)
	}
	return h.handlerWith(gh, l, h.store)
}

// handlerWith builds a handler on the harness's resources with the given
// GitHub client, launcher and job store.
func (h *harness) handlerWith(gh scaleup.GitHub, l scaleup.Launcher, jobs scaleup.Jobs) *scaleup.Handler {
	return scaleup.New(h.cfg, scaleup.Deps{
		GitHub: gh, Launcher: l, Jobs: jobs, JIT: h.jit, Identity: identity, Offerings: h.store,
		Waker: queue.NewSender(h.aws.SQS, h.queue.URL, 0),
	}, scaleup.WithClock(h.clock.Now), scaleup.WithVisibility(h.retries),
		scaleup.WithLogger(slog.New(slog.NewJSONHandler(h.logs, nil))))
}

// enqueue records a queued job as the webhook does and returns its message.
func (h *harness) enqueue(jobID int64, labels ...string) queue.Message {
	h.t.Helper()
	if len(labels) == 0 {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	repo := h.owner + "/app"
	out, err := h.store.RecordEvent(context.Background(), &state.JobEvent{
		JobID: jobID, Action: state.StatusQueued, Repository: repo, Owner: h.owner, InstallationID: installationID,
		Labels: labels, Ours: true, Profile: "default",
	})
	if err != nil || (out != state.Enqueue && out != state.Duplicate) {
		h.t.Fatalf("enqueue %d: %v %v", jobID, out, err)
	}
	h.gh.AddJob(ghfake.Job{ID: jobID, Owner: h.owner, Repo: "app", Status: "queued", Labels: labels})
	return queue.Message{JobID: jobID, RunID: 1, Repository: repo, Owner: h.owner, InstallationID: installationID,
		Labels: labels, Profile: "default", ReceivedAt: h.clock.Now().UnixMilli()}
}

// batch builds an SQS event of the messages.
func (h *harness) batch(msgs ...queue.Message) events.SQSEvent {
	h.t.Helper()
	var ev events.SQSEvent
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			h.t.Fatal(err)
		}
		id := h.nextMsg.Add(1)
		ev.Records = append(ev.Records, events.SQSMessage{
			MessageId: "msg-" + strconv.FormatInt(id, 10), ReceiptHandle: "rh-" + strconv.FormatInt(id, 10), Body: string(b),
		})
	}
	return ev
}

// run handles the batch and returns the failed message ids.
func (h *harness) run(ev events.SQSEvent) []string {
	h.t.Helper()
	resp, err := h.handler.Handle(context.Background(), ev)
	if err != nil {
		h.t.Fatalf("Handle: %v", err)
	}
	var ids []string
	for _, f := range resp.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return ids
}

func (h *harness) job(id int64) *state.Job {
	h.t.Helper()
	j, ok, err := h.store.Get(context.Background(), id)
	if err != nil || !ok {
		h.t.Fatalf("job %d: ok=%v err=%v", id, ok, err)
	}
	return j
}

// instances returns the harness deployment's instances in the given states.
func (h *harness) instances(states ...string) []types.Instance {
	return h.aws.Instances(h.t, h.cfg.NamePrefix, states...)
}

func (h *harness) runnerOwner() string {
	if h.cfg.GitHub.Scope == config.ScopeRepo {
		return h.owner + "/app"
	}
	return h.owner
}

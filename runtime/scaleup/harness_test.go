package scaleup_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
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

// harness is a testenv.Plane with a gpu profile (an Ubuntu-like AMI) and a
// scaleup handler on it; the fields name the plane's parts as the tests use
// them.
type harness struct {
	t       testing.TB
	p       *testenv.Plane
	cfg     *config.Config
	aws     *testenv.AWS
	gh      *ghfake.Server
	ghc     *githubapp.Client
	ec2     *testenv.FaultyEC2
	store   *state.Store
	jit     *jitstore.Store
	handler *scaleup.Handler
	clock   *testkit.Clock
	retries *retryRecorder
	logs    *testkit.Buffer
	owner   string
	inst    int64
	nextMsg atomic.Int64
}

type harnessOption = testenv.DeploymentOption

func newHarness(t testing.TB, scope string, opts ...harnessOption) *harness {
	t.Helper()
	p := testenv.NewPlane(t, scope, append([]testenv.DeploymentOption{func(c *config.Config) {
		c.Profiles["gpu"] = config.Profile{InstanceTypes: []string{"g5.xlarge"}, ImageID: testenv.ImageUbuntu.ID, Arch: "x64", VolumeGiB: 100}
	}}, opts...)...)
	h := &harness{t: t, p: p, cfg: p.Config, aws: p.AWS, gh: p.GitHub, ghc: p.GHClient, ec2: p.Faults, store: p.Store, jit: p.JIT,
		clock: p.Clock, retries: &retryRecorder{}, logs: p.Logs, owner: p.Owner, inst: p.InstID}
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
	d := h.p.ScaleUpDeps()
	d.GitHub, d.Launcher, d.Jobs = gh, l, jobs
	return h.p.ScaleUp(d, scaleup.WithVisibility(h.retries))
}

// enqueue records a queued job as the webhook does and returns its message.
func (h *harness) enqueue(jobID int64, labels ...string) queue.Message {
	h.t.Helper()
	if len(labels) == 0 {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	repo := h.owner + "/app"
	out, err := h.store.RecordEvent(context.Background(), &state.JobEvent{
		JobID: jobID, Action: state.StatusQueued, Repository: repo, Owner: h.owner, InstallationID: h.inst,
		Labels: labels, Ours: true, Profile: "default",
	})
	if err != nil || (out != state.Enqueue && out != state.Duplicate) {
		h.t.Fatalf("enqueue %d: %v %v", jobID, out, err)
	}
	h.gh.AddJob(ghfake.Job{ID: jobID, Owner: h.owner, Repo: "app", Status: "queued", Labels: labels})
	return queue.Message{JobID: jobID, RunID: 1, Repository: repo, Owner: h.owner, InstallationID: h.inst,
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

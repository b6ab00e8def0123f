package scaledown_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type harness struct {
	t   testing.TB
	p   *testenv.Plane
	up  *scaleup.Handler
	rc  *scaledown.Reconciler
	gh  scaledown.GitHub
	ec2 fleet.EC2API
}

func newHarness(t testing.TB, opts ...testenv.DeploymentOption) *harness {
	t.Helper()
	p := testenv.NewPlane(t, config.ScopeOrg, opts...)
	h := &harness{t: t, p: p, gh: p.GHClient, ec2: p.Faults}
	h.up = p.ScaleUp(p.ScaleUpDeps())
	h.rebuild()
	return h
}

// rebuild makes the reconciler with the harness's GitHub client and EC2
// (tests swap them).
func (h *harness) rebuild() {
	d := h.p.ScaleDownDeps()
	d.Instances, d.GitHub = fleet.New(h.ec2), h.gh
	h.rc = h.p.ScaleDown(d)
}

// queued records a queued job as the webhook does and adds it to the fake.
func (h *harness) queued(labels ...string) int64 {
	h.t.Helper()
	if len(labels) == 0 {
		labels = []string{"self-hosted", "linux", "x64"}
	}
	id := h.p.NextJobID()
	out, err := h.p.Store.RecordEvent(context.Background(), &state.JobEvent{
		JobID: id, Action: state.StatusQueued, Repository: h.p.Repository(), Owner: h.p.Owner, InstallationID: h.p.InstID,
		Labels: labels, Ours: true, Profile: "default",
	})
	if err != nil || out != state.Enqueue {
		h.t.Fatalf("queue job %d: %v %v", id, out, err)
	}
	h.p.GitHub.AddJob(ghfake.Job{ID: id, Owner: h.p.Owner, Repo: "app", Status: "queued", Labels: labels})
	return id
}

// launched queues a job and launches its runner with the real scaleup handler.
func (h *harness) launched() (int64, *state.Job) {
	h.t.Helper()
	return h.relaunch(h.queued())
}

// relaunch runs scaleup for a queued (or re-queued) job.
func (h *harness) relaunch(id int64) (int64, *state.Job) {
	h.t.Helper()
	if err := h.scaleUp(h.up, id); err != nil {
		h.t.Fatalf("launch job %d: %v\n%s", id, err, h.p.Logs.String())
	}
	return id, h.job(id)
}

// scaleUp hands job id's scale-up message to up, as the queue does; an
// error or a batch item failure is returned.
func (h *harness) scaleUp(up *scaleup.Handler, id int64) error {
	// The message carries the labels the job was queued with, as the
	// webhook's does.
	j, ok, err := h.p.Store.Get(context.Background(), id)
	if err != nil {
		return fmt.Errorf("job %d: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("job %d: no record", id)
	}
	body, err := json.Marshal(queue.Message{JobID: id, Repository: h.p.Repository(), Owner: h.p.Owner,
		InstallationID: h.p.InstID, Labels: j.Labels, Profile: "default"})
	if err != nil {
		return err
	}
	resp, err := up.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{{MessageId: "m" + itoa(id), Body: string(body)}}})
	if err == nil && len(resp.BatchItemFailures) != 0 {
		err = fmt.Errorf("batch item failures %v", resp.BatchItemFailures)
	}
	return err
}

// pair launches two jobs with the same labels and brings both runners
// online: GitHub may give either job to either runner.
func (h *harness) pair() (a, b *state.Job) {
	h.t.Helper()
	_, a = h.launched()
	_, b = h.launched()
	h.online(a)
	h.online(b)
	return a, b
}

// online brings a launched job's runner online, as the bootstrap would.
func (h *harness) online(j *state.Job) {
	h.t.Helper()
	enc, err := h.p.JIT.Take(context.Background(), jitstore.InstanceARN("aws", "us-east-1", "123456789012", j.InstanceID))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.p.GitHub.RunnerOnline(enc); err != nil {
		h.t.Fatal(err)
	}
}

// start runs j on its own instance's runner: GitHub's view, then the
// in_progress webhook's.
func (h *harness) start(j *state.Job) { h.t.Helper(); h.startOn(j, j) }

// startOn runs job j on the runner of host's instance, as GitHub does when it
// hands a queued job to any idle runner with matching labels.
func (h *harness) startOn(j, host *state.Job) {
	h.t.Helper()
	if err := h.p.GitHub.StartJob(j.JobID, host.InstanceRunnerID); err != nil {
		h.t.Fatal(err)
	}
	h.event(j.JobID, state.StatusInProgress, "")
}

// complete completes job j where it runs, then delivers the webhook.
func (h *harness) complete(j *state.Job, conclusion string) {
	h.t.Helper()
	if err := h.p.GitHub.CompleteJob(j.JobID, conclusion); err != nil {
		h.t.Fatal(err)
	}
	h.event(j.JobID, state.StatusCompleted, conclusion)
}

// event records the webhook's view of job id as GitHub shows it now: the
// runner it runs on, and that runner's instance when it is ours.
func (h *harness) event(id int64, action, conclusion string) {
	h.t.Helper()
	ev := &state.JobEvent{JobID: id, Action: action, Conclusion: conclusion, Ours: true}
	if gj, ok := h.p.GitHub.Job(id); ok {
		ev.RunnerName, ev.RunnerID = gj.RunnerName, gj.RunnerID
		ev.RunnerJob, _ = tags.RunnerJob(h.p.Config.NamePrefix, gj.RunnerName)
	}
	if action == state.StatusCompleted {
		ev.CompletedAt = h.p.Clock.Now().UTC().Format(time.RFC3339)
	}
	if _, err := h.p.Store.RecordEvent(context.Background(), ev); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) sweep() *scaledown.Report {
	h.t.Helper()
	rep, err := h.rc.Sweep(context.Background())
	if err != nil {
		h.t.Fatalf("sweep: %v", err)
	}
	return rep
}

func (h *harness) job(id int64) *state.Job {
	h.t.Helper()
	j, ok, err := h.p.Store.Get(context.Background(), id)
	if err != nil || !ok {
		h.t.Fatalf("job %d: %v %v", id, ok, err)
	}
	return j
}

func (h *harness) state(id string) types.InstanceStateName {
	h.t.Helper()
	out, err := h.p.EC2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 {
		h.t.Fatalf("describe %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0].State.Name
}

func (h *harness) alive(id string) bool {
	s := h.state(id)
	return s == types.InstanceStateNameRunning || s == types.InstanceStateNamePending
}

func (h *harness) kill(id string) {
	h.t.Helper()
	if _, err := h.p.EC2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) runnerExists(name string) bool {
	_, ok := h.p.GitHub.RunnerByName(h.p.RunnerOwner(), name)
	return ok
}

// messages drains the scale-up queue.
func (h *harness) messages() []*queue.Message {
	h.t.Helper()
	var out []*queue.Message
	for _, b := range h.p.AWS.ReceiveAll(h.t, h.p.Queue, 100) {
		m, err := queue.Decode(b)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// orphan launches an instance with our tags that no record owns.
func (h *harness) orphan() string {
	h.t.Helper()
	res, err := fleet.New(h.p.EC2).Launch(context.Background(), fleet.Request{
		JobID: 99999, InstanceTypes: []string{"t3.large"}, ImageID: "ami-0123456789abcdef0", SubnetIDs: h.p.Network.SubnetIDs,
		LaunchTemplateID: h.p.Network.LaunchTemplateID, Spot: false,
		Tags: tags.ForLaunch(h.p.Config.NamePrefix, 99999, h.p.Repository(), "default", orphanRunner(h)),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return res.InstanceID
}

// orphanOnline launches an orphan whose runner registered and came online
// (scaleup died after handing over its JIT config).
func (h *harness) orphanOnline() (instanceID string, runnerID int64) {
	h.t.Helper()
	id := h.orphan()
	rn, err := h.p.GitHub.AddRunner(h.p.RunnerOwner(), ghfake.Runner{
		Name: orphanRunner(h), Status: ghfake.RunnerStatusOnline, Ephemeral: true,
		Labels: []string{"self-hosted", "linux", "x64"},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return id, rn.ID
}

// orphanRunner is the name of the runner an orphan was launched with.
func orphanRunner(h *harness) string { return tags.RunnerName(h.p.Config.NamePrefix, 99999, 1) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func secs(n int) time.Duration { return time.Duration(n) * time.Second }

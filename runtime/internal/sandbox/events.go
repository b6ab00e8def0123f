package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jit-runners/jit-runners/runtime/tags"
)

// Event names, one per transition of a job.
const (
	EvReceived   = "received"    // a queued delivery reached the webhook endpoint
	EvQueued     = "queued"      // the webhook sent the job's scale-up message
	EvDuplicate  = "duplicate"   // the webhook recognised a repeated delivery
	EvSkipped    = "skipped"     // not ours, or scaleup skipped the job
	EvLaunched   = "launched"    // scaleup recorded an instance for the job
	EvRegistered = "registered"  // the runner came online with its JIT config
	EvInProgress = "in_progress" // the in_progress webhook was accepted
	EvCompleted  = "completed"   // the completed webhook was accepted
	EvTerminated = "terminated"  // the job's instance is gone
	EvFailed     = "failed"      // something failed; reason says what
	EvRetried    = "retried"     // a batch item failure, an SQS redelivery or a webhook redelivery
)

// Event is one line of the events file.
type Event struct {
	At         time.Time `json:"at"`
	JobID      int64     `json:"job_id"`
	Event      string    `json:"event"`
	InstanceID string    `json:"instance_id,omitempty"`
	RunnerName string    `json:"runner_name,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// jobTrack is what the sandbox observed of one job. GitHub gives a queued
// job to any idle runner whose labels match, so the instance launched for a
// job (instanceID) and the instance whose runner ran it (ranOn) often
// differ.
type jobTrack struct {
	id         int64
	received   time.Time // first queued delivery
	queued     time.Time
	launched   time.Time // the job record's launchedAt
	registered time.Time
	inProgress time.Time
	completed  time.Time
	terminated time.Time

	instanceID   string // the instance the job record names (launched for it)
	runnerName   string // that instance's own runner
	capacityType string
	spotFallback bool
	instances    map[string]bool   // every instance launched for the job: id -> alive
	runners      map[string]string // instance id -> runner name, as registered
	ranOn        string            // the instance whose runner ran the job ("" if not ours)
	ranOnAlive   bool
	ranOnRunners map[string]bool // every runner an in_progress webhook named
	deliveries   int
	queuedFailed time.Time // when a queued delivery first failed at our endpoint
	duplicates   int
	retries      int
	skipped      bool
	failures     []string
	fromPool     string // the warm pool its instance came from, if any
}

// tracker follows every job through its transitions, writes the events
// file and prints progress lines.
type tracker struct {
	mu       sync.Mutex
	prefix   string // the deployment's runner name prefix
	jobs     map[int64]*jobTrack
	alive    map[string]bool   // every instance seen: id -> alive
	runnerOf map[string]string // runner name -> the instance it was launched on
	// pooled are the instances launched into a warm pool (id -> kind);
	// instanceJob maps an instance to the job whose record owns it.
	pooled      map[string]string
	instanceJob map[string]int64
	file        *os.File
	w           *bufio.Writer
	out         io.Writer
	progress    bool
}

func newTracker(eventsFile string, out io.Writer, progress bool) (*tracker, error) {
	t := &tracker{jobs: map[int64]*jobTrack{}, alive: map[string]bool{}, runnerOf: map[string]string{}, out: out, progress: progress,
		pooled: map[string]string{}, instanceJob: map[string]int64{}}
	if eventsFile != "" {
		f, err := os.OpenFile(eventsFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("events file: %w", err)
		}
		t.file, t.w = f, bufio.NewWriter(f)
	}
	return t, nil
}

func (t *tracker) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file == nil {
		return nil
	}
	err := t.w.Flush()
	if cerr := t.file.Close(); err == nil {
		err = cerr
	}
	t.file = nil
	return err
}

// job returns the job's track, creating it. The caller holds t.mu.
func (t *tracker) job(id int64) *jobTrack {
	j := t.jobs[id]
	if j == nil {
		j = &jobTrack{id: id, instances: map[string]bool{}, runners: map[string]string{}, ranOnRunners: map[string]bool{}}
		t.jobs[id] = j
	}
	return j
}

// emit records ev. The caller holds t.mu.
func (t *tracker) emit(ev Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if t.w != nil {
		b, _ := json.Marshal(ev)
		_, _ = t.w.Write(append(b, '\n'))
		// Readers tail the file while the sandbox runs.
		_ = t.w.Flush()
	}
	if t.progress {
		fmt.Fprintln(t.out, t.progressLine(ev))
	}
}

// progressLine is the human-readable form of ev: time, job, event, details
// and the time since the job's first delivery.
func (t *tracker) progressLine(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s job %-12d %-11s", ev.At.Format("15:04:05.000"), ev.JobID, ev.Event)
	if ev.InstanceID != "" {
		b.WriteString(" " + ev.InstanceID)
	}
	if ev.RunnerName != "" {
		b.WriteString(" runner=" + ev.RunnerName)
	}
	if ev.Reason != "" {
		b.WriteString(" (" + ev.Reason + ")")
	}
	if j := t.jobs[ev.JobID]; j != nil && !j.received.IsZero() && ev.Event != EvReceived {
		fmt.Fprintf(&b, " +%.3fs", ev.At.Sub(j.received).Seconds())
	}
	return b.String()
}

// delivery is a workflow_job delivery seen at the webhook endpoint.
type delivery struct {
	action     string
	jobID      int64
	runnerName string
	at         time.Time
}

// parseDelivery reads the few fields the tracker needs; nil when the body
// is not a workflow_job delivery with a job id.
func (t *tracker) parseDelivery(event string, body []byte, at time.Time) *delivery {
	if event != "workflow_job" {
		return nil
	}
	var p struct {
		Action      string `json:"action"`
		WorkflowJob struct {
			ID         int64  `json:"id"`
			RunnerName string `json:"runner_name"`
		} `json:"workflow_job"`
	}
	if json.Unmarshal(body, &p) != nil || p.WorkflowJob.ID <= 0 {
		return nil
	}
	return &delivery{action: p.Action, jobID: p.WorkflowJob.ID, runnerName: p.WorkflowJob.RunnerName, at: at}
}

// onDelivery notes a delivery before the webhook Lambda sees it.
func (t *tracker) onDelivery(d *delivery) {
	if d.action != "queued" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.job(d.jobID)
	j.deliveries++
	if j.received.IsZero() {
		j.received = d.at
	}
	t.emit(Event{At: d.at, JobID: d.jobID, Event: EvReceived})
}

// onWebhookAnswer notes the webhook Lambda's answer to a delivery.
func (t *tracker) onWebhookAnswer(d *delivery, status int, body []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.job(d.jobID)
	if status < 200 || status > 299 {
		reason := "webhook answered " + strconv.Itoa(status) + " to " + d.action
		if d.action == "queued" && j.queuedFailed.IsZero() && j.queued.IsZero() {
			j.queuedFailed = d.at
		}
		j.failures = append(j.failures, reason)
		t.emit(Event{JobID: d.jobID, Event: EvFailed, Reason: reason})
		return
	}
	var r struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(body, &r)
	if r.Status == "queued" {
		// The job's one scale-up message was sent: by its queued delivery,
		// or by its in_progress one when the job took one of our runners
		// before its queued delivery was processed.
		if j.queued.IsZero() {
			j.queued = time.Now()
		}
		t.emit(Event{JobID: d.jobID, Event: EvQueued, Reason: "by the " + d.action + " delivery"})
	}
	switch d.action {
	case "queued":
		switch r.Status {
		case "duplicate":
			j.duplicates++
			t.emit(Event{JobID: d.jobID, Event: EvDuplicate})
		case "skipped":
			j.skipped = true
			t.emit(Event{JobID: d.jobID, Event: EvSkipped, Reason: "not a job of this deployment"})
		}
	case "in_progress":
		if j.inProgress.IsZero() {
			j.inProgress = time.Now()
		}
		t.ranOn(j, d.runnerName)
		t.emit(Event{JobID: d.jobID, Event: EvInProgress, InstanceID: j.ranOn, RunnerName: d.runnerName})
	case "completed":
		if j.completed.IsZero() {
			j.completed = time.Now()
		}
		t.ranOn(j, d.runnerName)
		t.emit(Event{JobID: d.jobID, Event: EvCompleted, InstanceID: j.ranOn, RunnerName: d.runnerName})
	}
}

// onLaunched notes the launch a job record shows.
func (t *tracker) onLaunched(jobID int64, instanceID, runnerName, capacityType string, fallback bool, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.job(jobID)
	if j.instanceID == instanceID {
		return
	}
	j.instanceID, j.runnerName, j.capacityType, j.spotFallback, j.launched = instanceID, runnerName, capacityType, fallback, at
	j.fromPool = t.pooled[instanceID]
	t.instanceJob[instanceID] = jobID
	t.runnerOf[runnerName] = instanceID
	if _, ok := j.instances[instanceID]; !ok {
		j.instances[instanceID] = true
	}
	reason := capacityType
	if fallback {
		reason += ", spot fallback"
	}
	t.emit(Event{At: at, JobID: jobID, Event: EvLaunched, InstanceID: instanceID, RunnerName: runnerName, Reason: reason})
}

// onSkipped notes a job scaleup skipped.
func (t *tracker) onSkipped(jobID int64, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.job(jobID)
	if j.skipped {
		return
	}
	j.skipped = true
	t.emit(Event{JobID: jobID, Event: EvSkipped, Reason: reason})
}

// onInstance notes an instance launched for a job (it may not be recorded
// yet), or into a warm pool (jobID 0, pool its kind).
func (t *tracker) onInstance(jobID int64, instanceID, pool string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.alive[instanceID] = true
	if pool != "" {
		t.pooled[instanceID] = pool
	}
	if jobID == 0 {
		return // pooled: the job that takes it records it (onLaunched)
	}
	t.instanceJob[instanceID] = jobID
	j := t.job(jobID)
	if _, ok := j.instances[instanceID]; !ok {
		j.instances[instanceID] = true
	}
}

func (t *tracker) onRegistered(jobID int64, instanceID, runnerName string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if jobID == 0 {
		jobID = t.instanceJob[instanceID]
	}
	j := t.job(jobID)
	if j.registered.IsZero() {
		j.registered = time.Now()
	}
	j.runners[instanceID] = runnerName
	t.runnerOf[runnerName] = instanceID
	t.emit(Event{JobID: jobID, Event: EvRegistered, InstanceID: instanceID, RunnerName: runnerName})
}

// onInstanceGone notes that an instance launched for jobID terminated.
func (t *tracker) onInstanceGone(jobID int64, instanceID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.alive[instanceID] = false
	if jobID == 0 {
		if jobID = t.instanceJob[instanceID]; jobID == 0 {
			return // a pooled instance no job took (aged out, interrupted, shrunk)
		}
	}
	j := t.job(jobID)
	j.instances[instanceID] = false
	if instanceID == j.instanceID || j.instanceID == "" {
		j.terminated = time.Now()
	}
	for _, other := range t.jobs {
		if other.ranOn == instanceID {
			other.ranOnAlive = false
		}
	}
	t.emit(Event{JobID: jobID, Event: EvTerminated, InstanceID: instanceID, RunnerName: j.runnerNameOf(instanceID)})
}

// ranOn notes the runner a webhook says job j runs on. The caller holds t.mu.
func (t *tracker) ranOn(j *jobTrack, runnerName string) {
	if runnerName == "" {
		return
	}
	j.ranOnRunners[runnerName] = true
	id := t.runnerOf[runnerName]
	if _, ours := tags.RunnerJob(t.prefix, runnerName); !ours || id == "" || j.ranOn == id {
		return
	}
	j.ranOn = id
	alive, seen := t.alive[id]
	j.ranOnAlive = alive || !seen
}

func (j *jobTrack) runnerNameOf(instanceID string) string {
	if name, ok := j.runners[instanceID]; ok {
		return name
	}
	if instanceID == j.instanceID {
		return j.runnerName
	}
	return ""
}

func (t *tracker) onFailed(jobID int64, instanceID, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.job(jobID)
	j.failures = append(j.failures, reason)
	t.emit(Event{JobID: jobID, Event: EvFailed, InstanceID: instanceID, Reason: reason})
}

func (t *tracker) onRetried(jobID int64, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.job(jobID).retries++
	t.emit(Event{JobID: jobID, Event: EvRetried, Reason: reason})
}

// awaitingLaunch lists the jobs delivered as queued and not launched yet
// (whatever the webhook answered: scaledown re-queues a job whose message
// was never sent).
func (t *tracker) awaitingLaunch() []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []int64
	for id, j := range t.jobs {
		if j.deliveries > 0 && j.instanceID == "" && !j.skipped {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// snapshot copies the tracks of ids.
func (t *tracker) snapshot(ids []int64) []jobTrack {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]jobTrack, 0, len(ids))
	for _, id := range ids {
		j := t.jobs[id]
		if j == nil {
			out = append(out, jobTrack{id: id})
			continue
		}
		c := *j
		c.instances = make(map[string]bool, len(j.instances))
		for k, v := range j.instances {
			c.instances[k] = v
		}
		c.failures = slices.Clone(j.failures)
		c.runners = maps.Clone(j.runners)
		c.ranOnRunners = maps.Clone(j.ranOnRunners)
		out = append(out, c)
	}
	return out
}

// done reports whether the job completed, every instance launched for it
// is gone, and so is the instance it ran on.
func (j *jobTrack) done() bool {
	if j.completed.IsZero() || len(j.instances) == 0 || j.ranOnAlive {
		return false
	}
	for _, alive := range j.instances {
		if alive {
			return false
		}
	}
	return true
}

// PoolStats is what the sandbox saw of the warm pools.
type PoolStats struct {
	// Launched counts the instances launched into pools; Taken those a
	// job took; RetiredUnused those gone without a job.
	Launched      int `json:"launched"`
	Taken         int `json:"taken"`
	RetiredUnused int `json:"retiredUnused"`
	Idle          int `json:"idle"` // alive, no job
}

func (t *tracker) poolStats() PoolStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st PoolStats
	for id := range t.pooled {
		st.Launched++
		switch {
		case t.instanceJob[id] != 0:
			st.Taken++
		case t.alive[id]:
			st.Idle++
		default:
			st.RetiredUnused++
		}
	}
	return st
}

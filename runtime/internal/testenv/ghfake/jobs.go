package ghfake

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workflow job statuses and the conclusion the helpers default to.
const (
	JobQueued     = "queued"
	JobWaiting    = "waiting"
	JobInProgress = "in_progress"
	JobCompleted  = "completed"

	ConclusionSuccess = "success"
)

// Job is a workflow job as the fake stores it. Zero-valued fields are
// omitted or null in the API's JSON where GitHub has them null.
type Job struct {
	ID    int64
	RunID int64
	// Owner and Repo name the repository; GET and rerun find the job only
	// under it (case-insensitively).
	Owner, Repo     string
	Name            string
	WorkflowName    string
	HeadBranch      string
	HeadSHA         string
	Status          string // JobQueued, JobWaiting, JobInProgress or JobCompleted
	Conclusion      string // set when completed: success, failure, cancelled, ...
	Labels          []string
	RunnerID        int64
	RunnerName      string
	RunnerGroupID   int64
	RunnerGroupName string
	RunAttempt      int64
	CreatedAt       time.Time
	StartedAt       time.Time
	CompletedAt     time.Time
}

func (j Job) clone() Job {
	j.Labels = slices.Clone(j.Labels)
	return j
}

// withDefaults fills zero fields: ID and RunID from next, Name "build",
// WorkflowName "CI", HeadBranch "main", a HeadSHA derived from the id, Status
// queued, RunAttempt 1, CreatedAt now, StartedAt CreatedAt (GitHub sets
// started_at on queued jobs too), CompletedAt now when completed.
func (j Job) withDefaults(now time.Time, nextID int64) Job {
	j = j.clone()
	if j.ID == 0 {
		j.ID = nextID
	}
	if j.RunID == 0 {
		j.RunID = j.ID + 1_000_000
	}
	if j.Name == "" {
		j.Name = "build"
	}
	if j.WorkflowName == "" {
		j.WorkflowName = "CI"
	}
	if j.HeadBranch == "" {
		j.HeadBranch = "main"
	}
	if j.HeadSHA == "" {
		sum := sha1.Sum([]byte(strconv.FormatInt(j.ID, 10)))
		j.HeadSHA = hex.EncodeToString(sum[:])
	}
	if j.Status == "" {
		j.Status = JobQueued
	}
	if j.RunAttempt == 0 {
		j.RunAttempt = 1
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now.UTC().Truncate(time.Second)
	}
	if j.StartedAt.IsZero() {
		j.StartedAt = j.CreatedAt
	}
	if j.Status == JobCompleted && j.CompletedAt.IsZero() {
		j.CompletedAt = now.UTC().Truncate(time.Second)
	}
	return j
}

// jobJSON is GitHub's workflow job object.
type jobJSON struct {
	ID              int64     `json:"id"`
	RunID           int64     `json:"run_id"`
	WorkflowName    string    `json:"workflow_name"`
	HeadBranch      string    `json:"head_branch"`
	RunURL          string    `json:"run_url"`
	RunAttempt      int64     `json:"run_attempt"`
	NodeID          string    `json:"node_id"`
	HeadSHA         string    `json:"head_sha"`
	URL             string    `json:"url"`
	HTMLURL         string    `json:"html_url"`
	Status          string    `json:"status"`
	Conclusion      *string   `json:"conclusion"`
	CreatedAt       string    `json:"created_at"`
	StartedAt       string    `json:"started_at"`
	CompletedAt     *string   `json:"completed_at"`
	Name            string    `json:"name"`
	Steps           []jobStep `json:"steps"`
	CheckRunURL     string    `json:"check_run_url"`
	Labels          []string  `json:"labels"`
	RunnerID        *int64    `json:"runner_id"`
	RunnerName      *string   `json:"runner_name"`
	RunnerGroupID   *int64    `json:"runner_group_id"`
	RunnerGroupName *string   `json:"runner_group_name"`
}

type jobStep struct {
	Name        string  `json:"name"`
	Status      string  `json:"status"`
	Conclusion  *string `json:"conclusion"`
	Number      int     `json:"number"`
	StartedAt   *string `json:"started_at"`
	CompletedAt *string `json:"completed_at"`
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func optString(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

func optInt(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return optString(ts(t))
}

// render builds the API object; apiBase is e.g. https://api.github.com.
func (j Job) render(apiBase string) jobJSON {
	repoAPI := fmt.Sprintf("%s/repos/%s/%s", apiBase, j.Owner, j.Repo)
	labels := j.Labels
	if labels == nil {
		labels = []string{}
	}
	out := jobJSON{
		ID:              j.ID,
		RunID:           j.RunID,
		WorkflowName:    j.WorkflowName,
		HeadBranch:      j.HeadBranch,
		RunURL:          fmt.Sprintf("%s/actions/runs/%d", repoAPI, j.RunID),
		RunAttempt:      j.RunAttempt,
		NodeID:          "CR_" + base64.RawURLEncoding.EncodeToString([]byte("kwDO"+strconv.FormatInt(j.ID, 36))),
		HeadSHA:         j.HeadSHA,
		URL:             fmt.Sprintf("%s/actions/jobs/%d", repoAPI, j.ID),
		HTMLURL:         fmt.Sprintf("https://github.com/%s/%s/actions/runs/%d/job/%d", j.Owner, j.Repo, j.RunID, j.ID),
		Status:          j.Status,
		Conclusion:      optString(j.Conclusion),
		CreatedAt:       ts(j.CreatedAt),
		StartedAt:       ts(j.StartedAt),
		CompletedAt:     optTime(j.CompletedAt),
		Name:            j.Name,
		Steps:           []jobStep{},
		CheckRunURL:     fmt.Sprintf("%s/check-runs/%d", repoAPI, j.ID),
		Labels:          labels,
		RunnerID:        optInt(j.RunnerID),
		RunnerName:      optString(j.RunnerName),
		RunnerGroupID:   optInt(j.RunnerGroupID),
		RunnerGroupName: optString(j.RunnerGroupName),
	}
	if j.Status == JobInProgress || j.Status == JobCompleted {
		step := jobStep{Name: "Set up job", Status: JobCompleted, Conclusion: optString(ConclusionSuccess), Number: 1, StartedAt: optTime(j.StartedAt), CompletedAt: optTime(j.StartedAt)}
		out.Steps = append(out.Steps, step)
	}
	return out
}

// AddJob stores a workflow job (replacing one with the same id) and returns
// it with defaults filled in: see Job. Owner and Repo should be set, since
// the API finds the job only under its repository.
func (s *Server) AddJob(j Job) Job {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	j = j.withDefaults(now, s.nextJobID)
	s.nextJobID = max(s.nextJobID, j.ID+1)
	stored := j.clone()
	s.jobs[j.ID] = &stored
	if j.Status == JobQueued {
		s.wakeDispatch()
	}
	return j
}

// Job returns a snapshot of job id.
func (s *Server) Job(id int64) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return Job{}, false
	}
	return j.clone(), true
}

// UpdateJob changes job id with fn, under the server's lock (fn must not
// call the Server).
func (s *Server) UpdateJob(id int64, fn func(*Job)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("%w: id %d", ErrJobNotFound, id)
	}
	fn(j)
	return nil
}

// SetJobStatus sets job id's status and conclusion; in_progress also sets
// StartedAt, and completed CompletedAt, to now.
func (s *Server) SetJobStatus(id int64, status, conclusion string) error {
	switch status {
	case JobQueued, JobWaiting, JobInProgress, JobCompleted:
	default:
		return fmt.Errorf("%w: job status %q", ErrInvalidStatus, status)
	}
	now := s.now().UTC().Truncate(time.Second)
	defer s.wakeDispatch()
	return s.UpdateJob(id, func(j *Job) {
		j.Status, j.Conclusion = status, conclusion
		switch status {
		case JobInProgress:
			j.StartedAt = now
		case JobCompleted:
			j.CompletedAt = now
		}
	})
}

// StartJob assigns job jobID to runner runnerID as GitHub does when the
// runner picks it up: the job becomes in_progress with the runner's id, name
// and group, and the runner becomes online and busy. A runner waiting in
// WaitAssignment gets the job. No webhook is delivered (the dispatcher's
// assignments deliver one; see StartDispatch).
func (s *Server) StartJob(jobID, runnerID int64) error {
	now := s.now().UTC().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[jobID]
	if j == nil {
		return fmt.Errorf("%w: id %d", ErrJobNotFound, jobID)
	}
	rn := s.runners[runnerID]
	if rn == nil {
		return fmt.Errorf("%w: id %d", ErrRunnerNotFound, runnerID)
	}
	s.startLocked(j, rn, now)
	if ch := s.assigned[runnerID]; ch != nil {
		select {
		case ch <- j.clone():
		default:
		}
	}
	return nil
}

// startLocked puts j on rn. The caller holds s.mu.
func (s *Server) startLocked(j *Job, rn *Runner, now time.Time) {
	rn.Status, rn.Busy, rn.JobID, rn.BusySince, rn.used = RunnerStatusOnline, true, j.ID, s.now(), true
	if rn.OS == "unknown" {
		rn.OS = osOf(rn.Labels)
	}
	j.Status, j.Conclusion, j.StartedAt = JobInProgress, "", now
	j.RunnerID, j.RunnerName, j.RunnerGroupID = rn.ID, rn.Name, rn.RunnerGroupID
	j.RunnerGroupName = "Default"
	org, _, _ := strings.Cut(rn.Owner, "/")
	for _, g := range s.orgGroups(org) {
		if g.id == rn.RunnerGroupID {
			j.RunnerGroupName = g.name
		}
	}
}

// CompleteJob completes job id with conclusion (default "success"). If the
// job ran on an ephemeral runner, that runner is removed, as GitHub removes a
// JIT runner after its job; a non-ephemeral runner becomes idle. With a
// webhook set, the completed webhook is delivered.
func (s *Server) CompleteJob(id int64, conclusion string) error {
	if conclusion == "" {
		conclusion = ConclusionSuccess
	}
	now := s.now().UTC().Truncate(time.Second)
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: id %d", ErrJobNotFound, id)
	}
	j.Status, j.Conclusion, j.CompletedAt = JobCompleted, conclusion, now
	if rn := s.runners[j.RunnerID]; rn != nil {
		if rn.Ephemeral {
			delete(s.runners, rn.ID)
			delete(s.assigned, rn.ID)
		} else {
			rn.Busy, rn.JobID = false, 0
			s.wakeDispatch()
		}
	}
	s.mu.Unlock()
	s.deliverAsync(id, JobCompleted)
	return nil
}

// SetRerunAllowed turns the rerun permission on or off (see WithRerunDenied).
func (s *Server) SetRerunAllowed(allowed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rerunAllowed = allowed
}

// Reruns returns how many reruns of job id were accepted.
func (s *Server) Reruns(jobID int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reruns[jobID]
}

// jobInRepo finds the path's job under the path's repository. The caller
// holds s.mu.
func (s *Server) jobInRepo(p params) *Job {
	id, err := strconv.ParseInt(p["job_id"], 10, 64)
	if err != nil {
		return nil
	}
	j := s.jobs[id]
	if j == nil || !strings.EqualFold(j.Owner, p["owner"]) || !strings.EqualFold(j.Repo, p["repo"]) {
		return nil
	}
	return j
}

// handleGetJob serves GET /repos/{owner}/{repo}/actions/jobs/{job_id}.
func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request, p params) {
	s.mu.Lock()
	j := s.jobInRepo(p)
	var snap Job
	if j != nil {
		snap = j.clone()
	}
	s.mu.Unlock()
	if j == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, snap.render(apiBase(r)))
}

// handleRerunJob serves POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun:
// 201 for a completed job, 403 while it is not completed or when reruns are
// denied. The job itself is left as it is; Reruns counts the request.
func (s *Server) handleRerunJob(w http.ResponseWriter, _ *http.Request, p params) {
	s.mu.Lock()
	j := s.jobInRepo(p)
	switch {
	case j == nil:
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found")
	case !s.rerunAllowed || j.Status != JobCompleted:
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "Resource not accessible by integration")
	default:
		s.reruns[j.ID]++
		s.mu.Unlock()
		writeJSON(w, http.StatusCreated, struct{}{})
	}
}

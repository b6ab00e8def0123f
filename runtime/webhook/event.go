package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-github/v60/github"
)

// payload holds the fields of a workflow_job delivery that jit-runners uses.
type payload struct {
	Action       string
	WorkflowJob  *workflowJob
	Repository   repository
	Installation struct {
		ID int64
	}
}

type workflowJob struct {
	ID           int64
	RunID        int64
	Status       string
	Conclusion   string
	Labels       []string
	RunnerID     int64
	RunnerName   string
	CreatedAt    string // RFC 3339, "" when absent
	StartedAt    string
	CompletedAt  string
	Name         string
	WorkflowName string
}

type repository struct {
	FullName string
	Owner    struct {
		Login string
	}
}

// errBadPayload marks a payload that is not valid JSON or not a usable
// workflow_job delivery; the handler answers 400.
var errBadPayload = errors.New("bad workflow_job payload")

// workflowJobEvent is GitHub's workflow_job event as the handler reads it:
// go-github's types for the event's own parts, and for the repository and
// installation (tens of fields each in go-github, hundreds of allocations
// per delivery) only the fields used.
type workflowJobEvent struct {
	Action      string       `json:"action"`
	WorkflowJob *workflowRun `json:"workflow_job"`
	Repo        *struct {
		FullName string `json:"full_name"`
		Owner    *struct {
			Login string `json:"login"`
		} `json:"owner"`
	} `json:"repository"`
	Installation *struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

// workflowRun is go-github's WorkflowJob without its steps, which the
// handler never reads and which make most of a large delivery (a 20 KB one
// holds about a hundred): the shallower Steps field takes them, and skips
// them.
type workflowRun struct {
	github.WorkflowJob
	Steps skipped `json:"steps"`
}

// skipped accepts any JSON value and keeps nothing (encoding/json has
// already checked that the value is valid).
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// decodeWorkflowJob parses body as GitHub's workflow_job event with
// encoding/json (strict JSON; a field of the wrong type is an error; keys
// match case-insensitively) and keeps the fields the handler uses. A
// delivery without a job id or an action is not usable.
func decodeWorkflowJob(body []byte) (*payload, error) {
	var ev workflowJobEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadPayload, err)
	}
	if ev.WorkflowJob == nil {
		return nil, fmt.Errorf("%w: workflow_job is missing or not an object", errBadPayload)
	}
	j := &ev.WorkflowJob.WorkflowJob
	switch {
	case j.GetID() <= 0:
		return nil, fmt.Errorf("%w: workflow_job.id is missing", errBadPayload)
	case ev.Action == "":
		return nil, fmt.Errorf("%w: action is missing", errBadPayload)
	}
	p := &payload{
		Action: ev.Action,
		WorkflowJob: &workflowJob{
			ID: j.GetID(), RunID: j.GetRunID(), Status: j.GetStatus(), Conclusion: j.GetConclusion(), Labels: j.Labels,
			RunnerID: j.GetRunnerID(), RunnerName: j.GetRunnerName(),
			CreatedAt: timestamp(j.CreatedAt), StartedAt: timestamp(j.StartedAt), CompletedAt: timestamp(j.CompletedAt),
			Name: j.GetName(), WorkflowName: j.GetWorkflowName(),
		},
	}
	if ev.Repo != nil {
		p.Repository.FullName = ev.Repo.FullName
		if ev.Repo.Owner != nil {
			p.Repository.Owner.Login = ev.Repo.Owner.Login
		}
	}
	if p.Repository.Owner.Login == "" {
		if owner, _, ok := strings.Cut(p.Repository.FullName, "/"); ok {
			p.Repository.Owner.Login = owner
		}
	}
	if ev.Installation != nil {
		p.Installation.ID = ev.Installation.ID
	}
	return p, nil
}

func timestamp(t *github.Timestamp) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

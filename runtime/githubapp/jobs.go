package githubapp

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Job is a workflow job as GitHub reports it. Optional fields are zero when
// GitHub has them null (Conclusion until completed, the runner until one
// picked the job up).
type Job struct {
	ID         int64
	RunID      int64
	Status     string // queued, waiting, in_progress or completed
	Conclusion string
	RunnerName string
	RunnerID   int64
	CreatedAt  time.Time
	StartedAt  time.Time
	Labels     []string
}

// GetJob returns workflow job jobID of inst.Repository. A job GitHub does not
// know is ErrNotFound.
func (c *Client) GetJob(ctx context.Context, inst Installation, jobID int64) (Job, error) {
	gh, err := c.installation(inst.ID)
	if err != nil {
		return Job{}, err
	}
	tg, err := repoTarget(inst)
	if err != nil {
		return Job{}, err
	}
	wj, _, err := gh.Actions.GetWorkflowJobByID(withRoute(ctx, routeGetJob), tg.owner, tg.repo, jobID)
	if err != nil {
		return Job{}, newAPIError("get job", http.MethodGet, c.path(fmt.Sprintf("%s/actions/jobs/%d", tg.rel, jobID)), err)
	}
	return Job{
		ID:         wj.GetID(),
		RunID:      wj.GetRunID(),
		Status:     wj.GetStatus(),
		Conclusion: wj.GetConclusion(),
		RunnerName: wj.GetRunnerName(),
		RunnerID:   wj.GetRunnerID(),
		CreatedAt:  wj.GetCreatedAt().Time,
		StartedAt:  wj.GetStartedAt().Time,
		Labels:     wj.Labels,
	}, nil
}

// RerunJob re-runs workflow job jobID of inst.Repository. GitHub accepts it
// only for a completed job (403 otherwise, which is not retried).
func (c *Client) RerunJob(ctx context.Context, inst Installation, jobID int64) error {
	gh, err := c.installation(inst.ID)
	if err != nil {
		return err
	}
	tg, err := repoTarget(inst)
	if err != nil {
		return err
	}
	if _, err := gh.Actions.RerunJobByID(withRoute(ctx, routeRerunJob), tg.owner, tg.repo, jobID); err != nil {
		return newAPIError("rerun job", http.MethodPost, c.path(fmt.Sprintf("%s/actions/jobs/%d/rerun", tg.rel, jobID)), err)
	}
	return nil
}

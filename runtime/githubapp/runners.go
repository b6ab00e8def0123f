package githubapp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-github/v60/github"
)

// Runner statuses as GitHub reports them.
const (
	RunnerOnline  = "online"
	RunnerOffline = "offline"
)

// perPage is the page size of list calls, GitHub's maximum.
const perPage = 100

// Runner is a self-hosted runner as GitHub lists it.
type Runner struct {
	ID     int64
	Name   string
	Status string // RunnerOnline or RunnerOffline
	Busy   bool
	Labels []string
}

func runnerOf(r *github.Runner) Runner {
	labels := make([]string, 0, len(r.Labels))
	for _, l := range r.Labels {
		labels = append(labels, l.GetName())
	}
	return Runner{ID: r.GetID(), Name: r.GetName(), Status: r.GetStatus(), Busy: r.GetBusy(), Labels: labels}
}

// ListRunners returns the runners of inst's scope (its organization or its
// repository) whose name starts with namePrefix (case-sensitively; "" means
// all). It reads every page of 100 runners, so its calls grow with the pages,
// not the runners.
func (c *Client) ListRunners(ctx context.Context, inst Installation, namePrefix string) ([]Runner, error) {
	const op = "list runners"
	gh, err := c.installation(inst.ID)
	if err != nil {
		return nil, err
	}
	tg, err := c.runnerTarget(inst)
	if err != nil {
		return nil, err
	}
	var out []Runner
	opts := &github.ListOptions{PerPage: perPage}
	for {
		var (
			page *github.Runners
			resp *github.Response
		)
		if tg.org {
			page, resp, err = gh.Actions.ListOrganizationRunners(withRoute(ctx, routeListOrgRunners), tg.owner, opts)
		} else {
			page, resp, err = gh.Actions.ListRunners(withRoute(ctx, routeListRepoRunners), tg.owner, tg.repo, opts)
		}
		if err != nil {
			return nil, newAPIError(op, http.MethodGet, c.path(tg.rel+"/actions/runners"), err)
		}
		for _, r := range page.Runners {
			if strings.HasPrefix(r.GetName(), namePrefix) {
				out = append(out, runnerOf(r))
			}
		}
		if resp.NextPage <= opts.Page {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// FindRunner looks the runner called name up in inst's scope (its
// organization or repository); found is false when there is none.
func (c *Client) FindRunner(ctx context.Context, inst Installation, name string) (rn Runner, found bool, err error) {
	gh, err := c.installation(inst.ID)
	if err != nil {
		return Runner{}, false, err
	}
	tg, err := c.runnerTarget(inst)
	if err != nil {
		return Runner{}, false, err
	}
	return c.findRunner(ctx, gh, tg, name)
}

// findRunner looks a runner up by its exact name (the list call's name
// filter, which go-github v60 does not offer).
func (c *Client) findRunner(ctx context.Context, gh *github.Client, tg target, name string) (Runner, bool, error) {
	const op = "find runner by name"
	route := routeListRepoRunners
	if tg.org {
		route = routeListOrgRunners
	}
	rel := tg.rel + "/actions/runners"
	req, err := gh.NewRequest(http.MethodGet, fmt.Sprintf("%s?name=%s&per_page=%d", rel, url.QueryEscape(name), perPage), nil)
	if err != nil {
		return Runner{}, false, newAPIError(op, http.MethodGet, c.path(rel), err)
	}
	var page github.Runners
	if _, err := gh.Do(withRoute(ctx, route), req, &page); err != nil {
		return Runner{}, false, newAPIError(op, http.MethodGet, c.path(rel), err)
	}
	for _, r := range page.Runners {
		if strings.EqualFold(r.GetName(), name) {
			return runnerOf(r), true, nil
		}
	}
	return Runner{}, false, nil
}

// DeleteRunner removes runner runnerID from inst's scope. A runner that is
// already gone (404) is no error; a runner running a job (422) is
// ErrRunnerBusy.
func (c *Client) DeleteRunner(ctx context.Context, inst Installation, runnerID int64) error {
	gh, err := c.installation(inst.ID)
	if err != nil {
		return err
	}
	tg, err := c.runnerTarget(inst)
	if err != nil {
		return err
	}
	return c.deleteRunner(ctx, gh, tg, runnerID)
}

func (c *Client) deleteRunner(ctx context.Context, gh *github.Client, tg target, runnerID int64) error {
	const op = "delete runner"
	var err error
	if tg.org {
		_, err = gh.Actions.RemoveOrganizationRunner(withRoute(ctx, routeDeleteOrgRunner), tg.owner, runnerID)
	} else {
		_, err = gh.Actions.RemoveRunner(withRoute(ctx, routeDeleteRepoRunner), tg.owner, tg.repo, runnerID)
	}
	switch {
	case err == nil, hasStatus(err, http.StatusNotFound):
		return nil
	}
	e := newAPIError(op, http.MethodDelete, c.path(fmt.Sprintf("%s/actions/runners/%d", tg.rel, runnerID)), err)
	if hasStatus(err, http.StatusUnprocessableEntity) {
		e.kind = ErrRunnerBusy
	}
	return e
}

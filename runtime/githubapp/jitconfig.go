package githubapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/google/go-github/v60/github"
)

// defaultRunnerGroupID is the id of every organization's "Default" group and
// the group repository runners register in.
const defaultRunnerGroupID int64 = 1

// workFolder is the runner's work directory, relative to its install dir.
const workFolder = "_work"

const redacted = "[REDACTED]"

// JITConfig is a just-in-time runner configuration: the runner GitHub
// registered and the opaque config the runner starts with (run.sh
// --jitconfig). Encoded is a credential: hand it to the runner's instance
// only. String, GoString, LogValue and MarshalJSON redact it, so printing or
// logging a JITConfig never leaks it.
type JITConfig struct {
	RunnerID int64
	Encoded  string
}

// String implements fmt.Stringer with Encoded redacted.
func (j JITConfig) String() string {
	return fmt.Sprintf("JITConfig{RunnerID: %d, Encoded: %s}", j.RunnerID, redact(j.Encoded))
}

// GoString implements fmt.GoStringer with Encoded redacted.
func (j JITConfig) GoString() string {
	return fmt.Sprintf("githubapp.JITConfig{RunnerID:%d, Encoded:%q}", j.RunnerID, redact(j.Encoded))
}

// LogValue implements slog.LogValuer with Encoded redacted.
func (j JITConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("runner_id", j.RunnerID), slog.String("encoded", redact(j.Encoded)))
}

// MarshalJSON implements json.Marshaler with Encoded redacted; send
// j.Encoded itself where the config must go.
func (j JITConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		RunnerID int64  `json:"runnerId"`
		Encoded  string `json:"encoded"`
	}{j.RunnerID, redact(j.Encoded)})
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// GenerateJITConfig registers an ephemeral runner called name with labels
// and returns its JIT configuration. In repo scope the runner is registered
// on inst.Repository (runner group 1); in org scope on inst.Owner, in the
// runner group named Config.RunnerGroup (resolved once per organization and
// cached; ErrRunnerGroupNotFound when there is none). Its work folder is
// "_work".
//
// If a runner called name exists already (GitHub answers 409, e.g. when an
// earlier attempt succeeded but its answer was lost), that runner is deleted
// and the configuration generated once more, unless it is busy: then the
// error is ErrRunnerBusy.
func (c *Client) GenerateJITConfig(ctx context.Context, inst Installation, name string, labels []string) (JITConfig, error) {
	const op = "generate JIT config"
	if strings.TrimSpace(name) == "" {
		return JITConfig{}, errors.New("githubapp: generate JIT config: empty runner name")
	}
	gh, err := c.installation(inst.ID)
	if err != nil {
		return JITConfig{}, err
	}
	tg, err := c.runnerTarget(inst)
	if err != nil {
		return JITConfig{}, err
	}
	groupID := defaultRunnerGroupID
	if tg.org {
		if groupID, err = c.runnerGroupID(ctx, gh, tg.owner); err != nil {
			return JITConfig{}, err
		}
	}
	req := &github.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: groupID, Labels: labels, WorkFolder: github.String(workFolder),
	}
	path := c.path(tg.rel + "/actions/runners/generate-jitconfig")

	jit, err := c.generate(ctx, gh, tg, req)
	if hasStatus(err, http.StatusConflict) {
		err = c.replaceRunner(ctx, gh, tg, name, err)
		if err != nil {
			return JITConfig{}, err
		}
		jit, err = c.generate(ctx, gh, tg, req)
	}
	if err != nil {
		return JITConfig{}, newAPIError(op, http.MethodPost, path, err)
	}
	if jit.GetEncodedJITConfig() == "" || jit.GetRunner().GetID() == 0 {
		return JITConfig{}, newAPIError(op, http.MethodPost, path, errors.New("response lacks the runner or its encoded config"))
	}
	return JITConfig{RunnerID: jit.GetRunner().GetID(), Encoded: jit.GetEncodedJITConfig()}, nil
}

// generate makes one generate-jitconfig call.
func (c *Client) generate(ctx context.Context, gh *github.Client, tg target, req *github.GenerateJITConfigRequest) (*github.JITRunnerConfig, error) {
	if tg.org {
		jit, _, err := gh.Actions.GenerateOrgJITConfig(withRoute(ctx, routeOrgJITConfig), tg.owner, req)
		return jit, err
	}
	jit, _, err := gh.Actions.GenerateRepoJITConfig(withRoute(ctx, routeRepoJITConfig), tg.owner, tg.repo, req)
	return jit, err
}

// replaceRunner deletes the existing runner called name, which made
// generate-jitconfig answer conflict, unless it is busy.
func (c *Client) replaceRunner(ctx context.Context, gh *github.Client, tg target, name string, conflict error) error {
	const op = "generate JIT config"
	path := c.path(tg.rel + "/actions/runners/generate-jitconfig")
	rn, found, err := c.findRunner(ctx, gh, tg, name)
	if err != nil {
		return err
	}
	if !found { // gone since the conflict: just try again
		return nil
	}
	if rn.Busy {
		e := newAPIError(fmt.Sprintf("%s (runner %q, id %d, exists and is busy)", op, name, rn.ID), http.MethodPost, path, conflict)
		e.kind = ErrRunnerBusy
		return e
	}
	if err := c.deleteRunner(ctx, gh, tg, rn.ID); err != nil {
		return err
	}
	c.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "replaced existing runner of the same name",
		slog.String("runner_name", name), slog.Int64("runner_id", rn.ID), slog.String("owner", tg.owner))
	return nil
}

// runnerGroupID resolves Config.RunnerGroup in org, listing the org's groups
// the first time only.
func (c *Client) runnerGroupID(ctx context.Context, gh *github.Client, org string) (int64, error) {
	const op = "resolve runner group"
	key := strings.ToLower(org)
	c.mu.Lock()
	id, ok := c.groups[key]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	rel := "orgs/" + org + "/actions/runner-groups"
	opts := &github.ListOrgRunnerGroupOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for {
		groups, resp, err := gh.Actions.ListOrganizationRunnerGroups(withRoute(ctx, routeListRunnerGroups), org, opts)
		if err != nil {
			return 0, newAPIError(op, http.MethodGet, c.path(rel), err)
		}
		for _, g := range groups.RunnerGroups {
			if strings.EqualFold(g.GetName(), c.cfg.RunnerGroup) {
				c.mu.Lock()
				c.groups[key] = g.GetID()
				c.mu.Unlock()
				return g.GetID(), nil
			}
		}
		if resp.NextPage <= opts.Page {
			break
		}
		opts.Page = resp.NextPage
	}
	return 0, fmt.Errorf("%w: no group %q in organization %s (GET %s)", ErrRunnerGroupNotFound, c.cfg.RunnerGroup, org, c.path(rel))
}

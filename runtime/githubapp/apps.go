package githubapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// JITBudgetPerMinute is about how many JIT runner configurations GitHub lets
// one App generate in a minute before its secondary rate limit answers 403
// with Retry-After (terraform-aws-github-runner documents the ceiling;
// GitHub publishes no figure). Apps uses it to estimate what each App has
// left; the limit itself is GitHub's, and a refusal cools the App down
// whatever the estimate said.
const JITBudgetPerMinute = 180

// notInstalledFor is how long Apps remembers that an App is not installed
// on an owner before asking again (an installation can be added at any
// time; asking on every call would cost a request per call).
const notInstalledFor = 10 * time.Minute

// routeOrgInstallation is the org installation lookup's route.
const routeOrgInstallation = "GET /orgs/{org}/installation"

// Apps calls GitHub through several GitHub Apps installed on the same
// owners, so that a deployment can register more runners a minute than one
// App's JIT budget allows (about 180). It has the methods scaleup and
// scaledown call on a Client and chooses an App for each call:
//
//   - A JIT config goes to the App with the most JIT budget left in the
//     last minute (JITBudgetPerMinute less the configs this process had it
//     generate), ties in turn.
//   - Every other call goes to the Apps in turn, so runner listings and
//     deletions spread over the Apps' primary budgets instead of draining
//     one.
//   - An App that GitHub rate-limited is cooling down until the limit's
//     reset and is skipped; the call moves to the next App at once. Only
//     when every App is cooling down does a call fail, with a
//     *RateLimitError whose ResetIn is the earliest reset, so the caller's
//     hold ends when the first App can work again.
//   - An App's installation on an owner is looked up once (as the App:
//     GET /orgs/{org}/installation, or /repos/{owner}/{repo}/installation
//     in repo scope) and kept for the process's life: the installation id a
//     job's webhook carried is that of whichever App delivered it first. An
//     App not installed on the owner is skipped (and asked again after 10
//     minutes).
//
// With a single App, Apps passes every call to its Client unchanged: the
// installation id the caller gives is used, no lookup is made, and the
// Client's own rate-limit waits apply. It is safe for concurrent use.
type Apps struct {
	scope string
	now   func() time.Time

	mu      sync.Mutex
	members []*member
	next    int // the turn of calls that are not JIT configs
	// installs caches each App's installation per owner key (org, or
	// owner/repo in repo scope): the id, or a time before which the App is
	// known not to be installed there.
	installs map[installKey]installation
}

// member is one App of Apps and what Apps knows of its budgets. The
// fields after c are guarded by Apps.mu.
type member struct {
	c        *Client
	coolTill time.Time
	jit      []time.Time // JIT configs generated in the last minute
}

type installKey struct {
	app   int64
	owner string
}

type installation struct {
	id           int64
	missingUntil time.Time
}

// NewApps returns an Apps over clients (at least one), all of the same API
// URL and scope, of different Apps. Build each Client with a short
// Config.MaxRetryWait when there are several: a rate-limited call should
// move to the next App rather than sleep (FromConfig does).
func NewApps(clients ...*Client) (*Apps, error) {
	if len(clients) == 0 {
		return nil, errors.New("githubapp: no App")
	}
	a := &Apps{scope: clients[0].cfg.Scope, now: time.Now, installs: map[installKey]installation{}}
	seen := map[int64]bool{}
	for _, c := range clients {
		switch {
		case c.cfg.Scope != a.scope:
			return nil, fmt.Errorf("githubapp: App %d has scope %q, App %d %q", c.cfg.AppID, c.cfg.Scope, clients[0].cfg.AppID, a.scope)
		case c.cfg.APIURL != clients[0].cfg.APIURL:
			return nil, fmt.Errorf("githubapp: App %d calls %s, App %d %s", c.cfg.AppID, c.cfg.APIURL, clients[0].cfg.AppID, clients[0].cfg.APIURL)
		case seen[c.cfg.AppID]:
			return nil, fmt.Errorf("githubapp: App %d given twice", c.cfg.AppID)
		}
		seen[c.cfg.AppID] = true
		a.members = append(a.members, &member{c: c})
	}
	return a, nil
}

// AppIDs returns the Apps' ids, in the order given.
func (a *Apps) AppIDs() []int64 {
	ids := make([]int64, len(a.members))
	for i, m := range a.members {
		ids[i] = m.c.cfg.AppID
	}
	return ids
}

// GenerateJITConfig creates the JIT runner configuration through the App
// with the most JIT budget left (see Apps).
func (a *Apps) GenerateJITConfig(ctx context.Context, inst Installation, name string, labels []string) (JITConfig, error) {
	var out JITConfig
	err := a.do(ctx, inst, true, func(c *Client, in Installation) error {
		var err error
		out, err = c.GenerateJITConfig(ctx, in, name, labels)
		return err
	})
	return out, err
}

// GetJob reads a workflow job through the next App in turn.
func (a *Apps) GetJob(ctx context.Context, inst Installation, jobID int64) (Job, error) {
	var out Job
	err := a.do(ctx, inst, false, func(c *Client, in Installation) error {
		var err error
		out, err = c.GetJob(ctx, in, jobID)
		return err
	})
	return out, err
}

// RerunJob re-runs a workflow job through the next App in turn.
func (a *Apps) RerunJob(ctx context.Context, inst Installation, jobID int64) error {
	return a.do(ctx, inst, false, func(c *Client, in Installation) error { return c.RerunJob(ctx, in, jobID) })
}

// DeleteRunner deletes a runner through the next App in turn: runners
// belong to the organization or repository, not to the App that
// registered them.
func (a *Apps) DeleteRunner(ctx context.Context, inst Installation, runnerID int64) error {
	return a.do(ctx, inst, false, func(c *Client, in Installation) error { return c.DeleteRunner(ctx, in, runnerID) })
}

// FindRunner finds a runner by name through the next App in turn.
func (a *Apps) FindRunner(ctx context.Context, inst Installation, name string) (Runner, bool, error) {
	var (
		out   Runner
		found bool
	)
	err := a.do(ctx, inst, false, func(c *Client, in Installation) error {
		var err error
		out, found, err = c.FindRunner(ctx, in, name)
		return err
	})
	return out, found, err
}

// ListRunners lists the runners named namePrefix-* through the next App in
// turn.
func (a *Apps) ListRunners(ctx context.Context, inst Installation, namePrefix string) ([]Runner, error) {
	var out []Runner
	err := a.do(ctx, inst, false, func(c *Client, in Installation) error {
		var err error
		out, err = c.ListRunners(ctx, in, namePrefix)
		return err
	})
	return out, err
}

// RepositoryInstallation finds the installation covering repository of the
// first App in turn that is installed there.
func (a *Apps) RepositoryInstallation(ctx context.Context, repository string) (Installation, error) {
	var out Installation
	err := a.do(ctx, Installation{Repository: repository, Owner: ownerOf(repository)}, false, func(_ *Client, in Installation) error {
		out = in
		return nil
	})
	return out, err
}

func ownerOf(repository string) string {
	owner, _, _ := strings.Cut(repository, "/")
	return owner
}

// do runs call with the chosen App's client and installation, moving to the
// next App when one is rate-limited or not installed on the owner.
func (a *Apps) do(ctx context.Context, inst Installation, jit bool, call func(c *Client, in Installation) error) error {
	if len(a.members) == 1 {
		// Nothing to choose between: nothing is counted (order, which
		// trims the counts, never runs).
		return call(a.members[0].c, inst)
	}
	var limited *RateLimitError
	for _, m := range a.order(jit) {
		in, err := a.installationOf(ctx, m, inst)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err == nil {
			err = a.record(m, jit, call(m.c, in))
		}
		if rl, ok := errors.AsType[*RateLimitError](err); ok {
			a.cool(m, rl)
			if limited == nil || rl.ResetIn < limited.ResetIn {
				limited = rl
			}
			continue
		}
		return err
	}
	if limited != nil {
		return limited
	}
	// No App was limited now: those left out are cooling down from earlier
	// limits, or none is installed on the owner.
	if soonest, ok := a.soonestReset(); ok {
		return &RateLimitError{ResetIn: soonest, Secondary: true, Method: "any", Path: "every App installed on " + a.ownerKey(inst) + " is cooling down"}
	}
	return fmt.Errorf("githubapp: none of the Apps %v is installed on %s: %w", a.AppIDs(), a.ownerKey(inst), ErrNotFound)
}

// order returns the Apps not cooling down, in the order to try them: for a
// JIT config the most budget left first, else the next in turn first.
func (a *Apps) order(jit bool) []*member {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	start := a.next
	a.next = (a.next + 1) % len(a.members)
	var out []*member
	for i := range a.members {
		m := a.members[(start+i)%len(a.members)]
		if now.Before(m.coolTill) {
			continue
		}
		m.jit = slices.DeleteFunc(m.jit, func(t time.Time) bool { return !now.Before(t.Add(time.Minute)) })
		out = append(out, m)
	}
	if jit {
		// Stable: among equals the turn decides.
		slices.SortStableFunc(out, func(x, y *member) int { return len(x.jit) - len(y.jit) })
	}
	return out
}

// record counts a JIT config an App generated.
func (a *Apps) record(m *member, jit bool, err error) error {
	if jit && err == nil {
		a.mu.Lock()
		m.jit = append(m.jit, a.now())
		a.mu.Unlock()
	}
	return err
}

// cool keeps m out of the choice until the limit's reset.
func (a *Apps) cool(m *member, rl *RateLimitError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	till := a.now().Add(rl.ResetIn)
	if till.After(m.coolTill) {
		m.coolTill = till
	}
	m.c.cfg.Logger.Warn("GitHub App rate-limited; using the others until its reset",
		"app_id", m.c.cfg.AppID, "reset_in", rl.ResetIn.String(), "secondary", rl.Secondary)
}

// soonestReset is how long until the first cooling App can work again.
func (a *Apps) soonestReset() (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	var soonest time.Duration
	ok := false
	for _, m := range a.members {
		if d := m.coolTill.Sub(now); d > 0 && (!ok || d < soonest) {
			soonest, ok = d, true
		}
	}
	return soonest, ok
}

// ownerKey is what an installation is looked up for: the organization in
// org scope, the repository in repo scope.
func (a *Apps) ownerKey(inst Installation) string {
	if a.scope == ScopeOrg {
		if inst.Owner != "" {
			return strings.ToLower(inst.Owner)
		}
		return strings.ToLower(ownerOf(inst.Repository))
	}
	return strings.ToLower(inst.Repository)
}

// installationOf returns inst with m's installation id on inst's owner,
// looking it up once. ErrNotFound: m is not installed there.
func (a *Apps) installationOf(ctx context.Context, m *member, inst Installation) (Installation, error) {
	key := installKey{app: m.c.cfg.AppID, owner: a.ownerKey(inst)}
	a.mu.Lock()
	cached, ok := a.installs[key]
	now := a.now()
	a.mu.Unlock()
	switch {
	case ok && cached.id != 0:
		inst.ID = cached.id
		return inst, nil
	case ok && now.Before(cached.missingUntil):
		return Installation{}, fmt.Errorf("githubapp: App %d is not installed on %s: %w", key.app, key.owner, ErrNotFound)
	}
	var (
		id  int64
		err error
	)
	if a.scope == ScopeOrg {
		id, err = m.c.orgInstallation(ctx, key.owner)
	} else {
		var in Installation
		in, err = m.c.RepositoryInstallation(ctx, inst.Repository)
		id = in.ID
	}
	switch {
	case errors.Is(err, ErrNotFound):
		a.mu.Lock()
		a.installs[key] = installation{missingUntil: a.now().Add(notInstalledFor)}
		a.mu.Unlock()
		return Installation{}, err
	case err != nil:
		return Installation{}, err
	}
	a.mu.Lock()
	a.installs[key] = installation{id: id}
	a.mu.Unlock()
	inst.ID = id
	return inst, nil
}

// orgInstallation finds the App's installation on organization org,
// authenticating as the App. An organization the App is not installed on
// is ErrNotFound.
func (c *Client) orgInstallation(ctx context.Context, org string) (int64, error) {
	gh, err := c.appClient()
	if err != nil {
		return 0, err
	}
	in, _, err := gh.Apps.FindOrganizationInstallation(withRoute(ctx, routeOrgInstallation), org)
	if err != nil {
		return 0, newAPIError("find organization installation", http.MethodGet, c.path("orgs/"+org+"/installation"), err)
	}
	return in.GetID(), nil
}

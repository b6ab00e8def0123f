package ghfake

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Runner statuses as GitHub reports them.
const (
	RunnerStatusOnline  = "online"
	RunnerStatusOffline = "offline"
)

// DefaultRunnerGroupID is the id of the runner group "Default", which every
// organization has.
const DefaultRunnerGroupID int64 = 1

// Errors of the test hooks.
var (
	ErrRunnerNotFound   = errors.New("ghfake: runner not found")
	ErrJobNotFound      = errors.New("ghfake: job not found")
	ErrUnknownJITConfig = errors.New("ghfake: unknown JIT config")
	ErrJITConfigUsed    = errors.New("ghfake: JIT config already used")
	ErrRunnerExists     = errors.New("ghfake: a runner with that name already exists")
	ErrInvalidStatus    = errors.New("ghfake: invalid status")
)

// Runner is a snapshot of a self-hosted runner registered with the fake.
type Runner struct {
	ID   int64
	Name string
	// Owner is the runner's scope: an organization login for org runners,
	// "owner/repo" for repository runners.
	Owner         string
	OS            string // "unknown" until the runner comes online
	Status        string // RunnerStatusOnline or RunnerStatusOffline
	Busy          bool
	Ephemeral     bool // JIT runners are ephemeral
	Labels        []string
	RunnerGroupID int64
	WorkFolder    string
	CreatedAt     time.Time
	// JobID is the job the runner runs, BusySince when it took it.
	JobID     int64
	BusySince time.Time

	used bool // an ephemeral runner took its one job
}

func (r Runner) clone() Runner {
	r.Labels = slices.Clone(r.Labels)
	return r
}

type runnerGroup struct {
	id   int64
	name string
}

// jitEntry maps an encoded JIT config (by hash) back to its runner.
type jitEntry struct {
	runnerID int64
	used     bool
}

// scopeKey normalises an owner ("org" or "owner/repo") for lookups; GitHub
// logins and repository names are case-insensitive.
func scopeKey(owner string) string { return strings.ToLower(owner) }

// scopeOf returns the runner scope of a request's path parameters.
func scopeOf(p params) string {
	if org, ok := p["org"]; ok {
		return org
	}
	return p["owner"] + "/" + p["repo"]
}

// AddRunnerGroup adds a runner group named name to org and returns its id. If
// org already has a group of that name (case-insensitively, "Default"
// included) its id is returned.
func (s *Server) AddRunnerGroup(org, name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.orgGroups(org) {
		if strings.EqualFold(g.name, name) {
			return g.id
		}
	}
	id := s.nextGroupID
	s.nextGroupID++
	k := scopeKey(org)
	s.groups[k] = append(s.groups[k], runnerGroup{id: id, name: name})
	return id
}

// orgGroups lists org's groups, Default first. The caller holds s.mu.
func (s *Server) orgGroups(org string) []runnerGroup {
	return append([]runnerGroup{{id: DefaultRunnerGroupID, name: "Default"}}, s.groups[scopeKey(org)]...)
}

type runnerGroupJSON struct {
	ID                           int64    `json:"id"`
	Name                         string   `json:"name"`
	Visibility                   string   `json:"visibility"`
	Default                      bool     `json:"default"`
	RunnersURL                   string   `json:"runners_url"`
	HostedRunnersURL             string   `json:"hosted_runners_url"`
	Inherited                    bool     `json:"inherited"`
	AllowsPublicRepositories     bool     `json:"allows_public_repositories"`
	RestrictedToWorkflows        bool     `json:"restricted_to_workflows"`
	SelectedWorkflows            []string `json:"selected_workflows"`
	WorkflowRestrictionsReadOnly bool     `json:"workflow_restrictions_read_only"`
}

// handleListRunnerGroups serves GET /orgs/{org}/actions/runner-groups.
func (s *Server) handleListRunnerGroups(w http.ResponseWriter, r *http.Request, p params) {
	org := p["org"]
	s.mu.Lock()
	groups := s.orgGroups(org)
	s.mu.Unlock()
	// visible_to_repository is ignored: every group is visible to every
	// repository in the fake.
	base := apiBase(r) + "/orgs/" + org + "/actions/runner-groups/"
	from, to := paginate(w, r, len(groups))
	out := make([]runnerGroupJSON, 0, to-from)
	for _, g := range groups[from:to] {
		id := strconv.FormatInt(g.id, 10)
		out = append(out, runnerGroupJSON{
			ID:                       g.id,
			Name:                     g.name,
			Visibility:               "all",
			Default:                  g.id == DefaultRunnerGroupID,
			RunnersURL:               base + id + "/runners",
			HostedRunnersURL:         base + id + "/hosted-runners",
			AllowsPublicRepositories: g.id == DefaultRunnerGroupID,
			SelectedWorkflows:        []string{},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(groups), "runner_groups": out})
}

type jitRequest struct {
	Name          string   `json:"name"`
	RunnerGroupID *int64   `json:"runner_group_id"`
	Labels        []string `json:"labels"`
	WorkFolder    string   `json:"work_folder"`
}

type labelJSON struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

type runnerJSON struct {
	ID            int64       `json:"id"`
	Name          string      `json:"name"`
	OS            string      `json:"os"`
	Status        string      `json:"status"`
	Busy          bool        `json:"busy"`
	Ephemeral     bool        `json:"ephemeral"`
	RunnerGroupID int64       `json:"runner_group_id"`
	Labels        []labelJSON `json:"labels"`
}

// systemLabels are the labels GitHub assigns itself ("read-only").
var systemLabels = map[string]bool{
	"self-hosted": true, "linux": true, "windows": true, "macos": true,
	"x64": true, "arm": true, "arm64": true,
}

// runnerView renders a runner. The caller holds s.mu (label ids).
func (s *Server) runnerView(rn *Runner) runnerJSON {
	labels := make([]labelJSON, 0, len(rn.Labels))
	for _, l := range rn.Labels {
		k := strings.ToLower(l)
		id, ok := s.labelIDs[k]
		if !ok {
			id = int64(len(s.labelIDs) + 1)
			s.labelIDs[k] = id
		}
		typ := "custom"
		if systemLabels[k] {
			typ = "read-only"
		}
		labels = append(labels, labelJSON{ID: id, Name: l, Type: typ})
	}
	// GitHub's busy flag lags a job's start (WithBusyLag).
	busy := rn.Busy && !s.now().Before(rn.BusySince.Add(s.busyLag))
	return runnerJSON{
		ID: rn.ID, Name: rn.Name, OS: rn.OS, Status: rn.Status, Busy: busy,
		Ephemeral: rn.Ephemeral, RunnerGroupID: rn.RunnerGroupID, Labels: labels,
	}
}

// handleJITConfig serves POST .../actions/runners/generate-jitconfig for org
// and repository scope.
func (s *Server) handleJITConfig(w http.ResponseWriter, r *http.Request, p params) {
	var req jitRequest
	if !decodeBody(w, r, &req) {
		return
	}
	switch {
	case strings.TrimSpace(req.Name) == "":
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"name\" wasn't supplied.")
		return
	case req.RunnerGroupID == nil:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"runner_group_id\" wasn't supplied.")
		return
	case len(req.Labels) == 0:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/labels', [] should contain at least 1 item(s).")
		return
	}
	for _, l := range req.Labels {
		if strings.TrimSpace(l) == "" {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nLabels must not be empty.")
			return
		}
	}
	scope := scopeOf(p)
	_, orgScope := p["org"]
	workFolder := req.WorkFolder
	if workFolder == "" {
		workFolder = "_work"
	}

	created := s.now().UTC()
	s.mu.Lock()
	groupOK := *req.RunnerGroupID == DefaultRunnerGroupID
	if orgScope && !groupOK {
		for _, g := range s.orgGroups(scope) {
			groupOK = groupOK || g.id == *req.RunnerGroupID
		}
	}
	if !groupOK {
		s.mu.Unlock()
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Invalid request.\n\nRunner group ID %d is not valid.", *req.RunnerGroupID))
		return
	}
	if s.findByName(scope, req.Name) != nil {
		s.mu.Unlock()
		writeError(w, http.StatusConflict, fmt.Sprintf("Already exists - A runner with the name %s already exists.", req.Name))
		return
	}
	rn := &Runner{
		ID:            s.nextRunnerID,
		Name:          req.Name,
		Owner:         scope,
		OS:            "unknown",
		Status:        RunnerStatusOffline,
		Ephemeral:     true,
		Labels:        slices.Clone(req.Labels),
		RunnerGroupID: *req.RunnerGroupID,
		WorkFolder:    workFolder,
		CreatedAt:     created,
	}
	s.nextRunnerID++
	s.runners[rn.ID] = rn
	encoded := encodeJITConfig(rn, scope, apiBase(r))
	s.jitConfigs[hashSecret(encoded)] = &jitEntry{runnerID: rn.ID}
	s.callerOf(r).jitConfigs++
	view := s.runnerView(rn)
	s.mu.Unlock()

	writeJSON(w, http.StatusCreated, map[string]any{"runner": view, "encoded_jit_config": encoded})
}

// encodeJITConfig builds an opaque config shaped like GitHub's: base64 of a
// JSON object holding the base64 of the runner's .runner, .credentials and
// .credentials_rsaparams files, the last two random.
func encodeJITConfig(rn *Runner, scope, serverURL string) string {
	enc := base64.StdEncoding.EncodeToString
	runnerFile, _ := json.Marshal(map[string]any{
		"agentId": rn.ID, "agentName": rn.Name, "poolId": rn.RunnerGroupID,
		"poolName": "Default", "serverUrl": serverURL + "/_services/pipelines/" + randomAlnum(20),
		"gitHubUrl": "https://github.com/" + scope, "workFolder": rn.WorkFolder,
		"ephemeral": true, "useV2Flow": true,
	})
	secret := make([]byte, 256)
	_, _ = rand.Read(secret)
	creds, _ := json.Marshal(map[string]any{
		"scheme": "OAuthAccessToken",
		"data": map[string]string{
			"clientId":                randomAlnum(32),
			"authorizationUrl":        serverURL + "/_apis/oauth2/token/" + randomAlnum(24),
			"requireFipsCryptography": "True",
		},
	})
	rsaParams, _ := json.Marshal(map[string]string{
		"d": enc(secret[:128]), "dp": enc(secret[128:192]), "dq": enc(secret[192:]),
		"exponent": "AQAB", "modulus": enc(secret),
	})
	outer, _ := json.Marshal(map[string]string{
		".runner":                enc(runnerFile),
		".credentials":           enc(creds),
		".credentials_rsaparams": enc(rsaParams),
	})
	return enc(outer)
}

// findByName returns scope's runner called name. The caller holds s.mu.
func (s *Server) findByName(scope, name string) *Runner {
	k := scopeKey(scope)
	for _, rn := range s.runners {
		if scopeKey(rn.Owner) == k && strings.EqualFold(rn.Name, name) {
			return rn
		}
	}
	return nil
}

// handleListRunners serves GET .../actions/runners, optionally filtered by
// the exact runner name.
func (s *Server) handleListRunners(w http.ResponseWriter, r *http.Request, p params) {
	k := scopeKey(scopeOf(p))
	name := r.URL.Query().Get("name")
	s.mu.Lock()
	var list []*Runner
	for _, rn := range s.runners {
		if scopeKey(rn.Owner) == k && (name == "" || strings.EqualFold(rn.Name, name)) {
			list = append(list, rn)
		}
	}
	slices.SortFunc(list, func(a, b *Runner) int { return cmp.Compare(a.ID, b.ID) })
	from, to := paginate(w, r, len(list))
	out := make([]runnerJSON, 0, to-from)
	for _, rn := range list[from:to] {
		out = append(out, s.runnerView(rn))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(list), "runners": out})
}

// runnerInScope finds the runner of the path's id and scope. The caller
// holds s.mu.
func (s *Server) runnerInScope(p params) *Runner {
	id, err := strconv.ParseInt(p["runner_id"], 10, 64)
	if err != nil {
		return nil
	}
	rn := s.runners[id]
	if rn == nil || scopeKey(rn.Owner) != scopeKey(scopeOf(p)) {
		return nil
	}
	return rn
}

// handleGetRunner serves GET .../actions/runners/{runner_id}.
func (s *Server) handleGetRunner(w http.ResponseWriter, _ *http.Request, p params) {
	s.mu.Lock()
	rn := s.runnerInScope(p)
	var view runnerJSON
	if rn != nil {
		view = s.runnerView(rn)
	}
	s.mu.Unlock()
	if rn == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, view)
}

// handleDeleteRunner serves DELETE .../actions/runners/{runner_id}: 422 while
// the runner runs a job, as GitHub.
func (s *Server) handleDeleteRunner(w http.ResponseWriter, _ *http.Request, p params) {
	s.mu.Lock()
	rn := s.runnerInScope(p)
	switch {
	case rn == nil:
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Not Found")
	case rn.Busy:
		name := rn.Name
		s.busyRefusals++
		s.mu.Unlock()
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Bad request - Runner %q is still running a job\"", name))
	default:
		delete(s.runners, rn.ID)
		delete(s.assigned, rn.ID)
		s.mu.Unlock()
		w.Header().Del("Content-Type")
		w.WriteHeader(http.StatusNoContent)
	}
}

// RunnerOnline is what a runner agent does with its JIT config: it marks the
// config's runner online (OS from its labels, Linux by default) and returns
// its id. A config works once; later uses return ErrJITConfigUsed. An unknown
// config returns ErrUnknownJITConfig, and a config whose runner was deleted
// ErrRunnerNotFound.
func (s *Server) RunnerOnline(encodedJIT string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.jitConfigs[hashSecret(encodedJIT)]
	switch {
	case e == nil:
		return 0, ErrUnknownJITConfig
	case e.used:
		return 0, ErrJITConfigUsed
	}
	rn := s.runners[e.runnerID]
	if rn == nil {
		return 0, ErrRunnerNotFound
	}
	e.used = true
	rn.Status = RunnerStatusOnline
	rn.OS = osOf(rn.Labels)
	if s.assigned[rn.ID] == nil {
		s.assigned[rn.ID] = make(chan Job, 1)
	}
	s.wakeDispatch()
	return rn.ID, nil
}

func osOf(labels []string) string {
	for _, l := range labels {
		switch strings.ToLower(l) {
		case "windows":
			return "Windows"
		case "macos":
			return "macOS"
		}
	}
	return "Linux"
}

// AddRunner registers a runner directly (no JIT config), for tests that need
// pre-existing runners. owner is an org login or "owner/repo". Zero fields
// get defaults: ID the next id, OS "unknown", Status offline, RunnerGroupID
// Default, WorkFolder "_work", CreatedAt now. A duplicate name in the scope
// returns ErrRunnerExists.
func (s *Server) AddRunner(owner string, rn Runner) (Runner, error) {
	rn = rn.clone()
	rn.Owner = owner
	if rn.OS == "" {
		rn.OS = "unknown"
	}
	if rn.Status == "" {
		rn.Status = RunnerStatusOffline
	}
	if rn.RunnerGroupID == 0 {
		rn.RunnerGroupID = DefaultRunnerGroupID
	}
	if rn.WorkFolder == "" {
		rn.WorkFolder = "_work"
	}
	if rn.CreatedAt.IsZero() {
		rn.CreatedAt = s.now().UTC()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.findByName(owner, rn.Name) != nil {
		return Runner{}, ErrRunnerExists
	}
	if rn.ID == 0 {
		rn.ID = s.nextRunnerID
	}
	if _, taken := s.runners[rn.ID]; taken {
		return Runner{}, fmt.Errorf("ghfake: runner id %d is taken", rn.ID)
	}
	s.nextRunnerID = max(s.nextRunnerID, rn.ID+1)
	stored := rn
	s.runners[rn.ID] = &stored
	return rn.clone(), nil
}

// DeleteRunner removes a runner as GitHub does when an ephemeral runner
// finishes its job. It reports whether the runner existed.
func (s *Server) DeleteRunner(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.runners[id]
	delete(s.runners, id)
	delete(s.assigned, id)
	return ok
}

// SetRunnerBusy sets whether runner id is running a job.
func (s *Server) SetRunnerBusy(id int64, busy bool) error {
	now := s.now()
	return s.updateRunner(id, func(rn *Runner) {
		if busy && !rn.Busy {
			rn.BusySince = now
		}
		rn.Busy = busy
	})
}

// SetRunnerStatus sets runner id's status to RunnerStatusOnline or
// RunnerStatusOffline.
func (s *Server) SetRunnerStatus(id int64, status string) error {
	if status != RunnerStatusOnline && status != RunnerStatusOffline {
		return fmt.Errorf("%w: runner status %q", ErrInvalidStatus, status)
	}
	return s.updateRunner(id, func(rn *Runner) { rn.Status = status })
}

func (s *Server) updateRunner(id int64, fn func(*Runner)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runners[id]
	if rn == nil {
		return fmt.Errorf("%w: id %d", ErrRunnerNotFound, id)
	}
	fn(rn)
	return nil
}

// Runner returns a snapshot of runner id.
func (s *Server) Runner(id int64) (Runner, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.runners[id]
	if rn == nil {
		return Runner{}, false
	}
	return rn.clone(), true
}

// Runners returns a snapshot of owner's runners ordered by id. owner is an
// org login or "owner/repo"; "" returns every runner.
func (s *Server) Runners(owner string) []Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Runner
	for _, rn := range s.runners {
		if owner == "" || scopeKey(rn.Owner) == scopeKey(owner) {
			out = append(out, rn.clone())
		}
	}
	slices.SortFunc(out, func(a, b Runner) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// RunnerByName returns a snapshot of owner's runner called name.
func (s *Server) RunnerByName(owner, name string) (Runner, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rn := s.findByName(owner, name)
	if rn == nil {
		return Runner{}, false
	}
	return rn.clone(), true
}

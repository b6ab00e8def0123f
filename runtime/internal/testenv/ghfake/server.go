// Package ghfake is a fake of the GitHub REST API for integration tests,
// end-to-end tests and the local sandbox of the control plane.
//
// It implements the slice of the API the control plane uses, as GitHub
// documents it: GitHub App authentication (RS256 JWT -> expiring
// installation tokens), runner groups, just-in-time runner configuration
// (org and repo scope), runners list/get/delete, workflow job get and rerun,
// and primary rate-limit headers. Tests steer it with hooks (SetRunnerBusy,
// UpdateJob, RunnerOnline, ...) and inject faults (FailNext,
// InjectRetryAfter, SetLatency, SetFaultRate).
//
// The fake can play several GitHub Apps installed on the same owners
// (AddApp, InstallApp, SetAppWebhook; see apps.go), each with its own
// installations, webhook deliveries, delivery log and budgets, as a control
// plane spreading JIT configs over Apps meets them on GitHub. Everything
// that names no App is about the primary App the Server was built with.
//
// The real go-github and ghinstallation clients work against it with either
// base URL: URL() (GitHub.com style) or GHESURL() (GHES style, /api/v3/).
//
// The fake never logs tokens, JWTs, JIT configurations or keys.
package ghfake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultAppID is the App id of a Server built without WithAppID.
const DefaultAppID int64 = 12345

// Route names as GitHub's REST documentation spells them. Calls, FailNext,
// InjectRetryAfter and SetFaultRate take these.
const (
	RouteAccessToken      = "POST /app/installations/{installation_id}/access_tokens"
	RouteListRunnerGroups = "GET /orgs/{org}/actions/runner-groups"
	RouteOrgJITConfig     = "POST /orgs/{org}/actions/runners/generate-jitconfig"
	RouteRepoJITConfig    = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig"
	RouteListOrgRunners   = "GET /orgs/{org}/actions/runners"
	RouteListRepoRunners  = "GET /repos/{owner}/{repo}/actions/runners"
	RouteGetOrgRunner     = "GET /orgs/{org}/actions/runners/{runner_id}"
	RouteGetRepoRunner    = "GET /repos/{owner}/{repo}/actions/runners/{runner_id}"
	RouteDeleteOrgRunner  = "DELETE /orgs/{org}/actions/runners/{runner_id}"
	RouteDeleteRepoRunner = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}"
	RouteGetJob           = "GET /repos/{owner}/{repo}/actions/jobs/{job_id}"
	RouteRerunJob         = "POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun"
	RouteRepoInstallation = "GET /repos/{owner}/{repo}/installation"
	RouteOrgInstallation  = "GET /orgs/{org}/installation"
	RouteAppInstallations = "GET /app/installations"
	RouteListDeliveries   = "GET /app/hook/deliveries"
	RouteGetDelivery      = "GET /app/hook/deliveries/{delivery_id}"
	RouteRedeliver        = "POST /app/hook/deliveries/{delivery_id}/attempts"
	// RouteUnknown names every request that matches no route; it gets 404.
	RouteUnknown = "unknown"
)

// Route filters for fault injection, besides the route names above.
const (
	// AnyRoute matches every request, the token endpoint included.
	AnyRoute = "*"
	// APIRoute matches every request except RouteAccessToken.
	APIRoute = "api"
)

const (
	docsURL         = "https://docs.github.com/rest"
	ghesPrefix      = "/api/v3"
	maxRequestBytes = 1 << 20
)

// Option configures a Server.
type Option func(*options)

type options struct {
	appID           int64
	key             *rsa.PrivateKey
	clock           func() time.Time
	rateLimit       int
	anonRateLimit   int
	tokenTTL        time.Duration
	anyInstallation bool
	installations   map[int64]string
	rerunDenied     bool
	seed            uint64
	logger          *slog.Logger
	busyLag         time.Duration
	jitPerMinute    *int
}

// WithAppID sets the primary GitHub App's id (default DefaultAppID). Its
// JWTs must carry it as their iss claim.
func WithAppID(id int64) Option { return func(o *options) { o.appID = id } }

// WithAppKey sets the primary App's RSA private key. Without it New
// generates a 2048-bit key.
func WithAppKey(key *rsa.PrivateKey) Option { return func(o *options) { o.key = key } }

// WithClock sets the clock used for JWT validation, token expiry, rate-limit
// windows and timestamps. It is called from many goroutines and must be safe
// for concurrent use. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithRateLimit sets the hourly request budget of each installation token and
// of each App's JWT (default 5000, as GitHub).
func WithRateLimit(perHour int) Option { return func(o *options) { o.rateLimit = perHour } }

// WithUnauthenticatedRateLimit sets the hourly budget shared by requests
// without valid credentials (default 60, as GitHub).
func WithUnauthenticatedRateLimit(perHour int) Option {
	return func(o *options) { o.anonRateLimit = perHour }
}

// WithTokenTTL sets how long installation tokens live (default 1 hour, as
// GitHub).
func WithTokenTTL(d time.Duration) Option { return func(o *options) { o.tokenTTL = d } }

// WithAnyInstallation makes every installation id exist for the primary
// App: its token request for an id not added with AddInstallation or
// InstallApp succeeds, and that token is valid for every owner. Apps added
// with AddApp have only the installations InstallApp gives them.
func WithAnyInstallation() Option { return func(o *options) { o.anyInstallation = true } }

// WithInstallation registers an installation of the primary App like
// AddInstallation.
func WithInstallation(id int64, owner string) Option {
	return func(o *options) { o.installations[id] = owner }
}

// WithRerunDenied makes job reruns answer 403, as GitHub does when the App
// lacks the actions:write permission. See also SetRerunAllowed.
func WithRerunDenied() Option { return func(o *options) { o.rerunDenied = true } }

// WithSeed seeds the random generator behind SetFaultRate (default 1), so an
// end-to-end run is reproducible.
func WithSeed(seed uint64) Option { return func(o *options) { o.seed = seed } }

// WithBusyLag makes runner lists and gets show a runner idle (busy false)
// for d after it took a job, as GitHub's busy flag lags a job's start by up
// to a minute. Deleting the runner knows at once: 422.
func WithBusyLag(d time.Duration) Option { return func(o *options) { o.busyLag = d } }

// SetBusyLag changes the lag of WithBusyLag at run time.
func (s *Server) SetBusyLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busyLag = d
}

// WithLogger sets a logger for one line per request (method, route, status,
// request id; never credentials or bodies). The default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Server is a running fake of the GitHub REST API on 127.0.0.1. All methods
// are safe for concurrent use.
type Server struct {
	srv       *httptest.Server
	closeOnce sync.Once
	done      chan struct{} // closed by Close, ends injected latency
	bg        sync.WaitGroup
	inflight  sync.WaitGroup // webhook deliveries
	wake      chan struct{}
	busyLag   time.Duration
	// hookClient delivers webhooks (GitHub waits 10 s for an answer).
	hookClient *http.Client

	// primary is the App the Server was built with, apps[0]; its id and
	// key never change, so it is read without s.mu.
	primary  *app
	clock    func() time.Time
	logger   *slog.Logger
	tokenTTL time.Duration
	anyInst  bool
	routes   []route

	mu sync.Mutex
	// configuration that tests change at run time
	rateLimit     int
	anonRateLimit int
	// Each App's JIT-config budget per minute (jitbudget.go); the windows
	// are the Apps'.
	jitPerMinute int
	rerunAllowed bool
	latency      time.Duration
	// authentication: the Apps (apps.go), the primary first
	apps          []*app
	installations map[int64]installation
	tokens        map[string]installToken // by sha256 of the token
	budgets       map[string]*budget
	// runners and groups
	groups       map[string][]runnerGroup // by lower-case org
	nextGroupID  int64
	runners      map[int64]*Runner
	nextRunnerID int64
	jitConfigs   map[string]*jitEntry // by sha256 of the encoded config
	labelIDs     map[string]int64
	// assignment (StartDispatch)
	dispatching  bool
	assignLog    []int64
	assigned     map[int64]chan Job // by runner id, for WaitAssignment
	busyLost     int
	lostJobs     []int64
	busyRefusals int
	// webhooks (SetWebhook, SetAppWebhook); the URLs and secrets are the
	// Apps'
	deliveries     []Delivery
	nextDeliveryID int64
	jobHooks       map[hookOrder]*sync.Mutex // orders each job's deliveries to each App
	redeliveries   int
	// jobs
	jobs      map[int64]*Job
	nextJobID int64
	reruns    map[int64]int
	// counters and faults
	calls          map[string]int
	totalCalls     int
	injectedFaults int
	faultRules     []*faultRule
	limitWindows   []limitWindow
	rateLimited    int
	faultRate      float64
	faultStatus    int
	faultRoutes    []string
	rng            *mrand.Rand
}

// New starts a fake GitHub API on a free 127.0.0.1 port. Call Close when done.
// It panics if it cannot generate a key or listen, like httptest.NewServer.
func New(opts ...Option) *Server {
	o := options{
		appID:         DefaultAppID,
		clock:         time.Now,
		rateLimit:     5000,
		anonRateLimit: 60,
		tokenTTL:      time.Hour,
		installations: map[int64]string{},
		seed:          1,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.key == nil {
		o.key = generateAppKey()
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		done:          make(chan struct{}),
		wake:          make(chan struct{}, 1),
		busyLag:       o.busyLag,
		hookClient:    &http.Client{Timeout: deliveryTimeout},
		assigned:      map[int64]chan Job{},
		jobHooks:      map[hookOrder]*sync.Mutex{},
		primary:       newApp(o.appID, o.key),
		clock:         o.clock,
		logger:        o.logger,
		tokenTTL:      o.tokenTTL,
		anyInst:       o.anyInstallation,
		rateLimit:     o.rateLimit,
		anonRateLimit: o.anonRateLimit,
		rerunAllowed:  !o.rerunDenied,
		installations: map[int64]installation{},
		jitPerMinute:  DefaultJITPerMinute,
		tokens:        map[string]installToken{},
		budgets:       map[string]*budget{},
		groups:        map[string][]runnerGroup{},
		nextGroupID:   2,
		runners:       map[int64]*Runner{},
		nextRunnerID:  1,
		jitConfigs:    map[string]*jitEntry{},
		labelIDs:      map[string]int64{},
		jobs:          map[int64]*Job{},
		nextJobID:     1,
		reruns:        map[int64]int{},
		calls:         map[string]int{},
		rng:           mrand.New(mrand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)),
	}
	if o.jitPerMinute != nil {
		s.jitPerMinute = *o.jitPerMinute
	}
	s.apps = []*app{s.primary}
	for id, owner := range o.installations {
		s.installations[id] = installation{app: s.primary.id, owner: owner}
	}
	s.routes = s.buildRoutes()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("ghfake: listen on 127.0.0.1: %v", err))
	}
	s.srv = httptest.NewUnstartedServer(s)
	_ = s.srv.Listener.Close() // replaced by the 127.0.0.1 listener
	s.srv.Listener = ln
	s.srv.Start()
	return s
}

// NewForTest is New plus t.Cleanup(s.Close).
func NewForTest(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := New(opts...)
	t.Cleanup(s.Close)
	return s
}

// Close shuts the server down, cutting injected latency short; it is safe to
// call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.srv.Close()
		s.bg.Wait()
	})
}

// URL is the GitHub.com style API base URL, with a trailing slash
// (for go-github's BaseURL and ghinstallation's BaseURL).
func (s *Server) URL() string { return s.srv.URL + "/" }

// GHESURL is the GitHub Enterprise Server style API base URL,
// URL() + "api/v3/". Both serve the same API.
func (s *Server) GHESURL() string { return s.srv.URL + ghesPrefix + "/" }

// Client returns an HTTP client for the server (plain, unauthenticated).
func (s *Server) Client() *http.Client { return s.srv.Client() }

// AppID returns the primary GitHub App's id, which its JWTs carry as iss.
func (s *Server) AppID() int64 { return s.primary.id }

// Calls returns how many requests reached route (one of the Route constants),
// whatever their outcome, since the start or the last ResetCalls.
func (s *Server) Calls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// TotalCalls returns how many requests the server received since the start or
// the last ResetCalls.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalCalls
}

// TokenRequests returns Calls(RouteAccessToken).
func (s *Server) TokenRequests() int { return s.Calls(RouteAccessToken) }

// JITConfigRequests returns the requests to both generate-jitconfig routes.
func (s *Server) JITConfigRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[RouteOrgJITConfig] + s.calls[RouteRepoJITConfig]
}

// ResetCalls zeroes the request counters (Calls, TotalCalls, TokenRequests,
// JITConfigRequests, JITRateLimited and the per-App JITRateLimitedBy and
// JITConfigsBy) and InjectedFaults. State such as runners, jobs, reruns
// and the JIT budgets' windows is kept.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
	s.totalCalls = 0
	s.injectedFaults = 0
	for _, a := range s.apps {
		a.jitLimited, a.jitConfigs = 0, 0
	}
}

func (s *Server) now() time.Time { return s.clock() }

type params map[string]string

type authKind int

const (
	authApp authKind = iota
	authInstallation
)

type route struct {
	method  string
	name    string
	segs    []string
	auth    authKind
	ownerOf string // path parameter the installation must own
	handle  func(w http.ResponseWriter, r *http.Request, p params)
}

func (s *Server) buildRoutes() []route {
	mk := func(name string, auth authKind, owner string, h func(http.ResponseWriter, *http.Request, params)) route {
		method, path, _ := strings.Cut(name, " ")
		return route{method: method, name: name, segs: strings.Split(strings.Trim(path, "/"), "/"), auth: auth, ownerOf: owner, handle: h}
	}
	// Literal segments are listed before parameters at the same position, so
	// generate-jitconfig is never taken for a runner id.
	return []route{
		mk(RouteAccessToken, authApp, "", s.handleAccessToken),
		mk(RouteListRunnerGroups, authInstallation, "org", s.handleListRunnerGroups),
		mk(RouteOrgJITConfig, authInstallation, "org", s.handleJITConfig),
		mk(RouteRepoJITConfig, authInstallation, "owner", s.handleJITConfig),
		mk(RouteListOrgRunners, authInstallation, "org", s.handleListRunners),
		mk(RouteListRepoRunners, authInstallation, "owner", s.handleListRunners),
		mk(RouteGetOrgRunner, authInstallation, "org", s.handleGetRunner),
		mk(RouteGetRepoRunner, authInstallation, "owner", s.handleGetRunner),
		mk(RouteDeleteOrgRunner, authInstallation, "org", s.handleDeleteRunner),
		mk(RouteDeleteRepoRunner, authInstallation, "owner", s.handleDeleteRunner),
		mk(RouteGetJob, authInstallation, "owner", s.handleGetJob),
		mk(RouteRerunJob, authInstallation, "owner", s.handleRerunJob),
		mk(RouteRepoInstallation, authApp, "", s.handleRepoInstallation),
		mk(RouteOrgInstallation, authApp, "", s.handleRepoInstallation),
		mk(RouteAppInstallations, authApp, "", s.handleListInstallations),
		mk(RouteListDeliveries, authApp, "", s.handleListDeliveries),
		mk(RouteGetDelivery, authApp, "", s.handleGetDelivery),
		mk(RouteRedeliver, authApp, "", s.handleRedeliver),
	}
}

func (s *Server) match(method, path string) (*route, params) {
	if path == ghesPrefix || strings.HasPrefix(path, ghesPrefix+"/") {
		path = strings.TrimPrefix(path, ghesPrefix)
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i := range s.routes {
		rt := &s.routes[i]
		if rt.method != method || len(rt.segs) != len(segs) {
			continue
		}
		p := params{}
		ok := true
		for j, want := range rt.segs {
			if strings.HasPrefix(want, "{") {
				if segs[j] == "" {
					ok = false
					break
				}
				p[strings.Trim(want, "{}")] = segs[j]
			} else if want != segs[j] {
				ok = false
				break
			}
		}
		if ok {
			return rt, p
		}
	}
	return nil, nil
}

// ServeHTTP serves the fake API; the Server is also usable as a handler
// mounted elsewhere.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	reqID := newRequestID()
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-GitHub-Request-Id", reqID)
	h.Set("X-GitHub-Media-Type", "github.v3; format=json")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)

	rt, p := s.match(r.Method, r.URL.Path)
	name := RouteUnknown
	if rt != nil {
		name = rt.name
	}
	s.mu.Lock()
	s.calls[name]++
	s.totalCalls++
	latency := s.latency
	s.mu.Unlock()
	defer func() {
		s.logger.LogAttrs(r.Context(), slog.LevelDebug, "ghfake request",
			slog.String("method", r.Method), slog.String("route", name),
			slog.Int("status", sw.status), slog.String("request_id", reqID),
			slog.Duration("duration", time.Since(start)))
	}()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			writeError(sw, http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
	}

	if f, ok := s.takeFault(name); ok {
		s.writeFault(sw, r, f, reqID)
		return
	}
	if rt == nil {
		// Unknown routes spend no budget, so a probe of an endpoint the fake
		// lacks never turns into a rate limit.
		setRateHeaders(sw.Header(), s.peek(s.peekKey(r)))
		writeError(sw, http.StatusNotFound, "Not Found")
		return
	}

	var key string
	var caller *app
	switch rt.auth {
	case authApp:
		a, err := s.verifyJWT(bearer(r))
		if err != nil {
			if !s.chargeAnonymous(sw) {
				return
			}
			writeError(sw, http.StatusUnauthorized, err.Error())
			return
		}
		key, caller = appBudgetKey(a.id), a
	case authInstallation:
		k, a, ok := s.checkToken(bearer(r), p[rt.ownerOf])
		if !ok {
			if !s.chargeAnonymous(sw) {
				return
			}
			writeError(sw, http.StatusUnauthorized, "Bad credentials")
			return
		}
		key, caller = k, a
	}
	if !s.charge(sw, key) {
		return
	}
	if (name == RouteOrgJITConfig || name == RouteRepoJITConfig) && !s.chargeJIT(sw, caller, key, reqID) {
		return
	}
	rt.handle(sw, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)), p)
}

// callerKey is the request context key of the App a request authenticated
// as: the App of its JWT, or of its installation token's installation.
// Handlers answer for that App (its installations, its delivery log, its
// JIT count), as GitHub does.
type callerKey struct{}

// callerOf returns the App r authenticated as; the primary App for a
// request served without authentication (there is none today).
func (s *Server) callerOf(r *http.Request) *app {
	if a, ok := r.Context().Value(callerKey{}).(*app); ok && a != nil {
		return a
	}
	return s.primary
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// errorBody is GitHub's error document.
type errorBody struct {
	Message          string `json:"message"`
	DocumentationURL string `json:"documentation_url"`
	Status           string `json:"status"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeErrorDoc(w, status, msg, docsURL)
}

func writeErrorDoc(w http.ResponseWriter, status int, msg, doc string) {
	writeJSON(w, status, errorBody{Message: msg, DocumentationURL: doc, Status: fmt.Sprint(status)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the fake's own types are encoded; this is a bug in the fake.
		panic(fmt.Sprintf("ghfake: encode response: %v", err))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decodeBody decodes a JSON request body; on failure it answers 400 like
// GitHub and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return false
	}
	return true
}

// bearer returns the credential of an "Authorization: token X" or
// "Authorization: Bearer X" header.
func bearer(r *http.Request) string {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || (!strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "bearer")) {
		return ""
	}
	return strings.TrimSpace(cred)
}

func newRequestID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	x := strings.ToUpper(hex.EncodeToString(b[:]))
	return x[0:4] + ":" + x[4:8] + ":" + x[8:14] + ":" + x[14:20]
}

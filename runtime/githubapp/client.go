package githubapp

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"
)

// Routes as GitHub's REST documentation names them; OnRequest receives these.
const (
	routeAccessToken      = "POST /app/installations/{installation_id}/access_tokens"
	routeListRunnerGroups = "GET /orgs/{org}/actions/runner-groups"
	routeOrgJITConfig     = "POST /orgs/{org}/actions/runners/generate-jitconfig"
	routeRepoJITConfig    = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig"
	routeListOrgRunners   = "GET /orgs/{org}/actions/runners"
	routeListRepoRunners  = "GET /repos/{owner}/{repo}/actions/runners"
	routeDeleteOrgRunner  = "DELETE /orgs/{org}/actions/runners/{runner_id}"
	routeDeleteRepoRunner = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}"
	routeGetJob           = "GET /repos/{owner}/{repo}/actions/jobs/{job_id}"
	routeRerunJob         = "POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun"
	routeRepoInstallation = "GET /repos/{owner}/{repo}/installation"
)

const userAgent = "jit-runners-githubapp"

// Client calls the GitHub API as a GitHub App's installations. It caches one
// authenticated client (and so one installation token) per installation and
// the runner group id per organization for its whole life: build one per
// Lambda container. It is safe for concurrent use.
type Client struct {
	cfg      Config
	key      *rsa.PrivateKey
	base     http.RoundTripper
	apiURL   *url.URL // with a trailing slash
	basePath string   // apiURL's path without the trailing slash: "" or "/api/v3"

	// Retry policy collaborators; the package's tests replace them before
	// the first call.
	sleep  func(ctx context.Context, d time.Duration) error
	now    func() time.Time
	jitter func(d time.Duration) time.Duration

	mu       sync.Mutex
	app      *github.Client // authenticated as the App itself (JWT)
	installs map[int64]*github.Client
	groups   map[string]int64 // runner group id by lower-case org
}

// Installation identifies the App installation a call acts as, and what it
// acts on.
type Installation struct {
	// ID is the installation id (from the webhook's installation.id).
	ID int64
	// Owner is the organization or user login the App is installed on.
	Owner string
	// Repository is "owner/name" of the job's repository; repo scope and the
	// job calls need it.
	Repository string
}

// New validates cfg, parses the App's private key and returns a Client. No
// request is made until the first call.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := parseRSAKey(cfg.PrivateKey)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.APIURL)
	if err != nil { // Validate parsed it already
		return nil, fmt.Errorf("githubapp: APIURL: %w", err)
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimRight(u.Path, "/") + "/"
	base := http.DefaultTransport
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		base = cfg.HTTPClient.Transport
	}
	return &Client{
		cfg:      cfg,
		key:      key,
		base:     base,
		apiURL:   u,
		basePath: strings.TrimSuffix(u.Path, "/"),
		sleep:    sleepContext,
		now:      time.Now,
		jitter:   fullJitter,
		installs: map[int64]*github.Client{},
		groups:   map[string]int64{},
	}, nil
}

// parseRSAKey reads a PKCS#1 or PKCS#8 RSA private key from PEM. Its errors
// never quote the input.
func parseRSAKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("githubapp: private key is not PEM encoded")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
	case "PRIVATE KEY":
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if rk, ok := k.(*rsa.PrivateKey); ok {
				return rk, nil
			}
			return nil, fmt.Errorf("githubapp: private key is a %T, not an RSA key", k)
		}
	default:
		return nil, fmt.Errorf("githubapp: private key PEM block is %q, not an RSA private key", block.Type)
	}
	return nil, fmt.Errorf("githubapp: private key PEM block %q does not hold a valid RSA private key", block.Type)
}

// installation returns the go-github client of installation id, creating it
// (with its own token cache) on first use.
func (c *Client) installation(id int64) (*github.Client, error) {
	if id <= 0 {
		return nil, fmt.Errorf("githubapp: invalid installation id %d", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gh, ok := c.installs[id]; ok {
		return gh, nil
	}
	// Each installation gets its own AppsTransport: ghinstallation writes
	// the AppsTransport's BaseURL and Client on every token refresh, which
	// races when installations share one.
	atr := ghinstallation.NewAppsTransportFromPrivateKey(newRetryTransport(c, c.base), c.cfg.AppID, c.key)
	atr.BaseURL = strings.TrimRight(c.apiURL.String(), "/")
	itr := ghinstallation.NewFromAppsTransport(atr, id)

	gh, err := c.newGitHub(itr)
	if err != nil {
		return nil, err
	}
	c.installs[id] = gh
	return gh, nil
}

// appClient returns the go-github client that authenticates as the App
// itself (a fresh RS256 JWT per request), creating it on first use.
func (c *Client) appClient() (*github.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.app != nil {
		return c.app, nil
	}
	atr := ghinstallation.NewAppsTransportFromPrivateKey(newRetryTransport(c, c.base), c.cfg.AppID, c.key)
	atr.BaseURL = strings.TrimRight(c.apiURL.String(), "/")
	gh, err := c.newGitHub(atr)
	if err != nil {
		return nil, err
	}
	c.app = gh
	return gh, nil
}

// newGitHub builds a go-github client on rt for the API URL (GitHub.com or
// GHES).
func (c *Client) newGitHub(rt http.RoundTripper) (*github.Client, error) {
	hc := &http.Client{Transport: rt}
	if b := c.cfg.HTTPClient; b != nil {
		hc.Timeout, hc.CheckRedirect, hc.Jar = b.Timeout, b.CheckRedirect, b.Jar
	}
	gh := github.NewClient(hc)
	if strings.HasSuffix(c.apiURL.Path, "/api/v3/") {
		upload := *c.apiURL
		upload.Path = strings.TrimSuffix(upload.Path, "/api/v3/") + "/api/uploads/"
		var err error
		if gh, err = gh.WithEnterpriseURLs(c.apiURL.String(), upload.String()); err != nil {
			return nil, fmt.Errorf("githubapp: enterprise URLs: %w", err)
		}
	} else {
		u := *c.apiURL
		gh.BaseURL = &u
	}
	gh.UserAgent = userAgent
	return gh, nil
}

// RepositoryInstallation finds the App's installation that covers
// repository ("owner/name"), authenticating as the App. A repository the App
// is not installed on is ErrNotFound.
func (c *Client) RepositoryInstallation(ctx context.Context, repository string) (Installation, error) {
	tg, err := repoTarget(Installation{Repository: repository})
	if err != nil {
		return Installation{}, err
	}
	gh, err := c.appClient()
	if err != nil {
		return Installation{}, err
	}
	in, _, err := gh.Apps.FindRepositoryInstallation(withRoute(ctx, routeRepoInstallation), tg.owner, tg.repo)
	if err != nil {
		return Installation{}, newAPIError("find repository installation", http.MethodGet, c.path(tg.rel+"/installation"), err)
	}
	return Installation{ID: in.GetID(), Owner: tg.owner, Repository: repository}, nil
}

// target is where an installation's runners live.
type target struct {
	org         bool
	owner, repo string
	rel         string // go-github relative path: "orgs/acme" or "repos/acme/app"
}

// runnerTarget returns the owner of inst's runners for the configured scope.
func (c *Client) runnerTarget(inst Installation) (target, error) {
	if c.cfg.Scope == ScopeOrg {
		owner := inst.Owner
		if owner == "" {
			owner, _, _ = strings.Cut(inst.Repository, "/")
		}
		if owner == "" {
			return target{}, fmt.Errorf("githubapp: installation %d: no owner for org scope", inst.ID)
		}
		return target{org: true, owner: owner, rel: "orgs/" + url.PathEscape(owner)}, nil
	}
	return repoTarget(inst)
}

// repoTarget returns inst's repository.
func repoTarget(inst Installation) (target, error) {
	owner, repo, ok := strings.Cut(inst.Repository, "/")
	if !ok {
		owner, repo = inst.Owner, inst.Repository
	}
	if owner == "" || repo == "" || strings.Contains(repo, "/") {
		return target{}, fmt.Errorf("githubapp: installation %d: repository %q is not owner/name", inst.ID, inst.Repository)
	}
	return target{owner: owner, repo: repo, rel: "repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo)}, nil
}

// path is the request path of rel (relative to the API base) for errors.
func (c *Client) path(rel string) string { return c.basePath + "/" + rel }

// routeKey carries the route of a call to the transport.
type routeKey struct{}

func withRoute(ctx context.Context, route string) context.Context {
	return context.WithValue(ctx, routeKey{}, route)
}

// routeOf names req's route for OnRequest and logs. The token request
// carries the context of the API call that needed the token.
func routeOf(req *http.Request) string {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/access_tokens") {
		return routeAccessToken
	}
	if r, ok := req.Context().Value(routeKey{}).(string); ok {
		return r
	}
	return req.Method + " " + req.URL.Path
}

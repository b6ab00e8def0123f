package githubapp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jit-runners/jit-runners/runtime/config"
)

// Scope values for Config.Scope: where runners are registered.
const (
	// ScopeRepo registers runners on the job's repository.
	ScopeRepo = config.ScopeRepo
	// ScopeOrg registers runners on the organization, in Config.RunnerGroup.
	ScopeOrg = config.ScopeOrg
)

// Defaults that Config.Validate fills in.
const (
	DefaultAPIURL       = config.DefaultAPIURL
	DefaultRunnerGroup  = config.DefaultRunnerGroup
	DefaultMaxAttempts  = 4
	DefaultMaxRetryWait = 10 * time.Second
)

// Config configures a Client. Call Validate (New does) to fill defaults.
type Config struct {
	// APIURL is the REST API base: https://api.github.com (the default) or a
	// GitHub Enterprise Server's https://HOST/api/v3. Any other URL is used
	// as it is, as a GitHub.com-style base.
	APIURL string
	// AppID is the GitHub App's id. Required.
	AppID int64
	// PrivateKey is the App's RSA private key, PEM encoded (PKCS#1 as GitHub
	// hands it out, or PKCS#8). Required.
	PrivateKey []byte
	// Scope is ScopeRepo or ScopeOrg. Required.
	Scope string
	// RunnerGroup is the name of the organization runner group JIT runners
	// join in org scope (default "Default"). Repository runners have no
	// groups, so repo scope ignores it.
	RunnerGroup string
	// MaxAttempts bounds the attempts of one request, the first included
	// (default 4).
	MaxAttempts int
	// MaxRetryWait is the longest single wait a rate limit may impose before
	// the call gives up with a *RateLimitError (default 10s). Installation
	// token requests wait at most a minute whatever it says: their App JWT
	// expires after 90 seconds.
	MaxRetryWait time.Duration
	// HTTPClient optionally supplies the base transport, timeout, redirect
	// policy and cookie jar. Its Transport is wrapped, never replaced. Its
	// Timeout bounds a whole call, retries and waits included: a wait that
	// would overrun it (or the context's deadline) is not started.
	HTTPClient *http.Client
	// Logger receives retries and recoveries (never credentials). The default
	// discards.
	Logger *slog.Logger
	// OnRateLimit, when set, is called after every response carrying
	// X-RateLimit headers with the remaining budget and the limit (the App
	// JWT's for token requests, the installation's otherwise). Like
	// OnRequest it is called from concurrent calls and must be safe for
	// concurrent use.
	OnRateLimit func(remaining, limit int)
	// OnRequest, when set, is called for every request sent to GitHub
	// (retries included) with its route, e.g.
	// "POST /orgs/{org}/actions/runners/generate-jitconfig".
	OnRequest func(route string)
}

// Validate checks c and fills in the defaults of optional fields.
func (c *Config) Validate() error {
	var errs []error
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("the APIURL must be an http(s) URL, got %q", c.APIURL))
	}
	if c.AppID <= 0 {
		errs = append(errs, errors.New("missing AppID"))
	}
	if len(c.PrivateKey) == 0 {
		errs = append(errs, errors.New("missing PrivateKey"))
	}
	switch c.Scope {
	case ScopeRepo, ScopeOrg:
	case "":
		errs = append(errs, fmt.Errorf("missing Scope (%q or %q)", ScopeRepo, ScopeOrg))
	default:
		errs = append(errs, fmt.Errorf("the Scope must be %q or %q, got %q", ScopeRepo, ScopeOrg, c.Scope))
	}
	c.RunnerGroup = strings.TrimSpace(c.RunnerGroup)
	if c.RunnerGroup == "" {
		c.RunnerGroup = DefaultRunnerGroup
	}
	switch {
	case c.MaxAttempts == 0:
		c.MaxAttempts = DefaultMaxAttempts
	case c.MaxAttempts < 0:
		errs = append(errs, fmt.Errorf("negative MaxAttempts %d", c.MaxAttempts))
	}
	switch {
	case c.MaxRetryWait == 0:
		c.MaxRetryWait = DefaultMaxRetryWait
	case c.MaxRetryWait < 0:
		errs = append(errs, fmt.Errorf("negative MaxRetryWait %v", c.MaxRetryWait))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("githubapp: invalid config: %w", err)
	}
	return nil
}

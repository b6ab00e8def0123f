package githubapp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Backoff between attempts after errors without a server-given wait.
const (
	backoffBase = 200 * time.Millisecond
	backoffCap  = 5 * time.Second
)

// appWaitLimit caps waits of App JWT requests (the token request):
// ghinstallation signs one JWT per token refresh, valid for 90 seconds, and
// the retries resend it.
const appWaitLimit = time.Minute

const (
	headerRetryAfter = "Retry-After"
	headerRateLimit  = "X-RateLimit-Limit"
	headerRemaining  = "X-RateLimit-Remaining"
	headerReset      = "X-RateLimit-Reset"
)

// retryTransport retries one request under ghinstallation (API calls and
// installation token requests alike). It owns the rate-limit policy: it
// remembers an exhausted primary budget and does not send until its reset,
// and it never hands go-github a reset time, so go-github's client-side
// limiter (which uses its own clock and error types) stays out of the way.
//
// One retryTransport serves one installation, whose token and App JWT each
// have a budget.
type retryTransport struct {
	c    *Client
	base http.RoundTripper

	mu        sync.Mutex
	exhausted map[string]time.Time // credential kind -> reset of its exhausted budget
}

func newRetryTransport(c *Client, base http.RoundTripper) *retryTransport {
	return &retryTransport{c: c, base: base, exhausted: map[string]time.Time{}}
}

// outcome is what the transport does with a response.
type outcome int

const (
	outcomeDone        outcome = iota // hand the response up
	outcomeRetry                      // back off and retry (5xx, 429)
	outcomeRateLimited                // wait exactly as GitHub says, or fail
)

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	cfg := &t.c.cfg
	route := routeOf(req)
	method, path := req.Method, req.URL.Path
	kind := credentialKind(req)
	maxWait := cfg.MaxRetryWait
	if kind == credentialApp {
		maxWait = min(maxWait, appWaitLimit)
	}
	log := cfg.Logger.With(slog.String("route", route))

	getBody, err := replayableBody(req)
	if err != nil {
		return nil, &sendError{method: method, path: path, err: err}
	}

	for attempt := 1; ; attempt++ {
		// Later attempts follow a wait GitHub asked for, or a backoff.
		if wait := t.exhaustedFor(kind); attempt == 1 && wait > 0 {
			if wait > maxWait || !fitsDeadline(ctx, wait) {
				return nil, &RateLimitError{ResetIn: wait, Method: method, Path: path}
			}
			log.LogAttrs(ctx, slog.LevelWarn, "github rate limit exhausted; waiting for reset", slog.Duration("wait", wait))
			if err := t.c.sleep(ctx, wait); err != nil {
				return nil, &sendError{method: method, path: path, attempts: attempt - 1, err: err}
			}
		}

		r := req.Clone(ctx)
		if getBody != nil {
			if r.Body, err = getBody(); err != nil {
				return nil, &sendError{method: method, path: path, attempts: attempt - 1, err: err}
			}
		}
		if cfg.OnRequest != nil {
			cfg.OnRequest(route)
		}
		resp, err := t.base.RoundTrip(r)
		if err != nil {
			if ctx.Err() != nil || attempt >= cfg.MaxAttempts {
				return nil, &sendError{method: method, path: path, attempts: attempt, err: err}
			}
			wait := t.backoff(attempt)
			if !fitsDeadline(ctx, wait) {
				return nil, &sendError{method: method, path: path, attempts: attempt, err: err}
			}
			log.LogAttrs(ctx, slog.LevelWarn, "github request failed; retrying",
				slog.String("method", method), slog.String("path", path), slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("error", err.Error()))
			if err := t.c.sleep(ctx, wait); err != nil {
				return nil, &sendError{method: method, path: path, attempts: attempt, err: err}
			}
			continue
		}

		t.observe(resp, kind)
		out, serverWait, secondary := t.classify(resp)
		var wait time.Duration
		switch out {
		case outcomeDone:
			return t.handUp(resp), nil
		case outcomeRateLimited:
			wait = serverWait
			if wait <= 0 { // a reset already past (clock skew): back off instead
				wait = t.backoff(attempt)
			}
			if wait > maxWait || attempt >= cfg.MaxAttempts || !fitsDeadline(ctx, wait) {
				drain(resp)
				return nil, &RateLimitError{
					ResetIn: wait, Secondary: secondary, Method: method, Path: path,
					StatusCode: resp.StatusCode, RequestID: resp.Header.Get(requestIDHeader),
				}
			}
		case outcomeRetry:
			wait = max(t.backoff(attempt), serverWait)
			if attempt >= cfg.MaxAttempts || serverWait > maxWait || !fitsDeadline(ctx, wait) {
				return t.handUp(resp), nil
			}
		}
		log.LogAttrs(ctx, slog.LevelWarn, "github request failed; retrying",
			slog.String("method", method), slog.String("path", path), slog.Int("status", resp.StatusCode),
			slog.String("request_id", resp.Header.Get(requestIDHeader)),
			slog.Int("attempt", attempt), slog.Duration("wait", wait))
		drain(resp)
		if err := t.c.sleep(ctx, wait); err != nil {
			return nil, &sendError{method: method, path: path, attempts: attempt, err: err}
		}
	}
}

// classify decides what to do with resp and returns the wait GitHub asked
// for, if any, and whether it is a secondary rate limit.
func (t *retryTransport) classify(resp *http.Response) (outcome, time.Duration, bool) {
	h := resp.Header
	retryAfter, hasRetryAfter := parseRetryAfter(h.Get(headerRetryAfter), t.c.now())
	switch code := resp.StatusCode; {
	case code == http.StatusForbidden || code == http.StatusTooManyRequests:
		if hasRetryAfter {
			return outcomeRateLimited, retryAfter, true
		}
		if h.Get(headerRemaining) == "0" {
			if reset, ok := parseReset(h.Get(headerReset)); ok {
				return outcomeRateLimited, reset.Sub(t.c.now()), false
			}
			return outcomeRateLimited, 0, false
		}
		if code == http.StatusTooManyRequests {
			return outcomeRetry, 0, false
		}
		return outcomeDone, 0, false // a permission problem, not a limit
	case code >= 500:
		return outcomeRetry, retryAfter, false
	}
	return outcomeDone, 0, false
}

// observe reports the rate-limit headers to OnRateLimit and remembers an
// exhausted budget.
func (t *retryTransport) observe(resp *http.Response, kind string) {
	h := resp.Header
	remaining, err1 := strconv.Atoi(h.Get(headerRemaining))
	limit, err2 := strconv.Atoi(h.Get(headerRateLimit))
	if err1 != nil || err2 != nil {
		return
	}
	if f := t.c.cfg.OnRateLimit; f != nil {
		f(remaining, limit)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if reset, ok := parseReset(h.Get(headerReset)); ok && remaining == 0 {
		t.exhausted[kind] = reset
	} else {
		delete(t.exhausted, kind)
	}
}

// exhaustedFor returns how long kind's exhausted budget has until its reset
// (0 when it is not known to be exhausted).
func (t *retryTransport) exhaustedFor(kind string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	reset, ok := t.exhausted[kind]
	if !ok {
		return 0
	}
	wait := reset.Sub(t.c.now())
	if wait <= 0 {
		delete(t.exhausted, kind)
		return 0
	}
	return wait
}

// handUp returns resp to go-github without a reset time when the budget is
// exhausted: go-github would otherwise refuse later requests by itself.
func (t *retryTransport) handUp(resp *http.Response) *http.Response {
	if resp.Header.Get(headerRemaining) == "0" {
		resp.Header.Del(headerReset)
	}
	return resp
}

// backoff is exponential backoff with full jitter for attempt (from 1).
func (t *retryTransport) backoff(attempt int) time.Duration {
	d := backoffCap
	if attempt < 16 {
		d = min(backoffBase<<(attempt-1), backoffCap)
	}
	return t.c.jitter(d)
}

// fullJitter returns a uniformly random duration in [0, d].
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// sleepContext waits d or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fitsDeadline reports whether waiting d leaves ctx time to make the request.
func fitsDeadline(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > d
}

// replayableBody returns a function giving a fresh copy of req's body for
// every attempt (nil without a body). It uses req.GetBody when set (go-github
// and ghinstallation build bodies from buffers, so it is) and buffers the
// body otherwise. req.Body is closed either way, as RoundTrip must.
func replayableBody(req *http.Request) (func() (io.ReadCloser, error), error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	if req.GetBody != nil {
		_ = req.Body.Close()
		return req.GetBody, nil
	}
	b, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, nil
}

// drain discards the rest of a response body (so the connection is reused)
// and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// credentialKind names the rate-limit budget a request draws from: the App
// JWT's ("Bearer") or the installation token's.
func credentialKind(req *http.Request) string {
	scheme, _, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "bearer") {
		return credentialApp
	}
	return credentialInstallation
}

// Credential kinds: each has its own rate-limit budget.
const (
	credentialApp          = "app"
	credentialInstallation = "installation"
)

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// parseReset reads X-RateLimit-Reset (Unix seconds).
func parseReset(v string) (time.Time, bool) {
	s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || s <= 0 {
		return time.Time{}, false
	}
	return time.Unix(s, 0), true
}

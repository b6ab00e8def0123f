package ghfake

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

const secondaryRateDocs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"

// faultRule answers the next remaining matching requests with status.
type faultRule struct {
	remaining  int
	status     int
	retryAfter int // seconds; > 0 makes it a secondary rate limit
	routes     []string
}

// fault is one injected response.
type fault struct {
	status     int
	retryAfter int
}

// FailNext makes the next n requests matching routes answer status with a
// GitHub-style JSON error instead of being served. routes are Route constants,
// AnyRoute or APIRoute; none means AnyRoute (the token endpoint included).
// Rules queue up: each request consumes from the oldest matching rule.
func (s *Server) FailNext(n, status int, routes ...string) {
	s.addRule(&faultRule{remaining: n, status: status, routes: routes})
}

// InjectRetryAfter makes the next n requests matching routes answer GitHub's
// secondary rate limit: 403 with a Retry-After header of seconds and
// "You have exceeded a secondary rate limit" (go-github reports an
// *github.AbuseRateLimitError). routes are as for FailNext.
func (s *Server) InjectRetryAfter(n, seconds int, routes ...string) {
	s.addRule(&faultRule{remaining: n, status: http.StatusForbidden, retryAfter: max(seconds, 1), routes: routes})
}

func (s *Server) addRule(f *faultRule) {
	if f.remaining <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultRules = append(s.faultRules, f)
}

// SetFaultRate makes each request matching routes fail with probability p
// (0 turns it off), drawn from the generator seeded by WithSeed. status 403
// or 429 answer a secondary rate limit with Retry-After: 1; any other status
// answers a GitHub-style JSON error. Queued FailNext/InjectRetryAfter rules
// take precedence.
func (s *Server) SetFaultRate(p float64, status int, routes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultRate = p
	s.faultStatus = status
	s.faultRoutes = slices.Clone(routes)
}

// RateLimitFor answers every request matching routes with GitHub's
// secondary rate limit (403, Retry-After: the seconds left) for d, as GitHub
// does once an App exceeded its limit on an endpoint. RateLimited counts the
// requests it refused.
func (s *Server) RateLimitFor(d time.Duration, routes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limitWindows = append(s.limitWindows, limitWindow{until: s.now().Add(d), routes: slices.Clone(routes)})
}

// RateLimited returns how many requests RateLimitFor refused.
func (s *Server) RateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateLimited
}

// limitWindow is a RateLimitFor window.
type limitWindow struct {
	until  time.Time
	routes []string
}

// SetLatency delays every request by d before it is served (0 turns it off).
// A request whose client gives up is abandoned.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// ClearFaults drops queued fault rules and rate-limit windows and turns off
// the fault rate and latency.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultRules = nil
	s.limitWindows = nil
	s.faultRate = 0
	s.latency = 0
}

// InjectedFaults returns how many responses were injected faults since the
// start or the last ResetCalls.
func (s *Server) InjectedFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.injectedFaults
}

func routeMatches(filters []string, name string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		switch {
		case f == AnyRoute, f == name:
			return true
		case f == APIRoute && name != RouteAccessToken:
			return true
		}
	}
	return false
}

// takeFault decides whether the request to route name gets an injected fault.
func (s *Server) takeFault(name string) (fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, w := range s.limitWindows {
		if now.Before(w.until) && routeMatches(w.routes, name) {
			s.rateLimited++
			s.injectedFaults++
			left := int(w.until.Sub(now)/time.Second) + 1
			return fault{status: http.StatusForbidden, retryAfter: left}, true
		}
	}
	for i, f := range s.faultRules {
		if !routeMatches(f.routes, name) {
			continue
		}
		f.remaining--
		if f.remaining <= 0 {
			s.faultRules = slices.Delete(s.faultRules, i, i+1)
		}
		s.injectedFaults++
		return fault{status: f.status, retryAfter: f.retryAfter}, true
	}
	if s.faultRate > 0 && routeMatches(s.faultRoutes, name) && s.rng.Float64() < s.faultRate {
		s.injectedFaults++
		ft := fault{status: s.faultStatus}
		if ft.status == http.StatusForbidden || ft.status == http.StatusTooManyRequests {
			ft.retryAfter = 1
		}
		return ft, true
	}
	return fault{}, false
}

// writeFault answers an injected fault. It carries the rate-limit headers of
// the request's credential without spending from its budget.
func (s *Server) writeFault(w http.ResponseWriter, r *http.Request, f fault, reqID string) {
	setRateHeaders(w.Header(), s.peek(s.peekKey(r)))
	if f.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.retryAfter))
		msg := fmt.Sprintf("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID %s.", reqID)
		writeErrorDoc(w, f.status, msg, secondaryRateDocs)
		return
	}
	writeError(w, f.status, faultMessage(f.status))
}

func faultMessage(status int) string {
	switch status {
	case http.StatusInternalServerError:
		return "Server Error"
	case http.StatusUnauthorized:
		return "Bad credentials"
	case http.StatusUnprocessableEntity:
		return "Validation Failed"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Injected fault"
}

package ghfake

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	rateWindow      = time.Hour
	appKeyPrefix    = "app:"
	anonBudgetKey   = "anonymous"
	tokenKeyPrefix  = "token:"
	primaryRateDocs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit"
)

// budget is one credential's primary rate-limit window.
type budget struct {
	limit int
	used  int
	reset time.Time
}

// rateState is what the X-RateLimit-* headers report.
type rateState struct {
	limit, remaining, used int
	reset                  time.Time
}

func tokenBudgetKey(tokenHash string) string { return tokenKeyPrefix + tokenHash }

// appBudgetKey is the budget of App id's JWT calls: each App has its own,
// as on GitHub.
func appBudgetKey(id int64) string { return appKeyPrefix + strconv.FormatInt(id, 10) }

// SetRateLimit changes the hourly budget of each token and of each App's JWT
// and starts every budget afresh.
func (s *Server) SetRateLimit(perHour int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimit = perHour
	s.budgets = map[string]*budget{}
}

// ResetRateLimits starts every budget afresh, as if the hour had passed.
func (s *Server) ResetRateLimits() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.budgets = map[string]*budget{}
}

// limitFor is the budget size of key. The caller holds s.mu.
func (s *Server) limitFor(key string) int {
	if key == anonBudgetKey {
		return s.anonRateLimit
	}
	return s.rateLimit
}

// window returns key's current budget, opening a new window when the last one
// has passed. The caller holds s.mu.
func (s *Server) window(key string, now time.Time) *budget {
	b := s.budgets[key]
	if b == nil || !now.Before(b.reset) {
		b = &budget{limit: s.limitFor(key), reset: now.Add(rateWindow).Truncate(time.Second)}
		s.budgets[key] = b
	}
	return b
}

func (b *budget) state() rateState {
	rem := max(b.limit-b.used, 0)
	return rateState{limit: b.limit, remaining: rem, used: b.limit - rem, reset: b.reset}
}

// consume spends one request of key's budget. It reports false, without
// spending, when the budget is exhausted.
func (s *Server) consume(key string) (rateState, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.window(key, now)
	if b.used >= b.limit {
		return b.state(), false
	}
	b.used++
	return b.state(), true
}

// peek reports key's budget without spending from it.
func (s *Server) peek(key string) rateState {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.budgets[key]; b != nil && now.Before(b.reset) {
		return b.state()
	}
	l := s.limitFor(key)
	return rateState{limit: l, remaining: l, reset: now.Add(rateWindow).Truncate(time.Second)}
}

func setRateHeaders(h http.Header, st rateState) {
	h.Set("X-RateLimit-Limit", strconv.Itoa(st.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(st.remaining))
	h.Set("X-RateLimit-Used", strconv.Itoa(st.used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(st.reset.Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

// charge spends one request of an authenticated key and sets the headers; when
// the budget is exhausted it answers 403 like GitHub and returns false.
func (s *Server) charge(w http.ResponseWriter, key string) bool {
	st, ok := s.consume(key)
	setRateHeaders(w.Header(), st)
	if !ok {
		writeErrorDoc(w, http.StatusForbidden, s.exceededMessage(key), primaryRateDocs)
	}
	return ok
}

// chargeAnonymous is charge for requests without valid credentials, which
// share one small budget as on GitHub (per IP there; everything is 127.0.0.1
// here).
func (s *Server) chargeAnonymous(w http.ResponseWriter) bool {
	return s.charge(w, anonBudgetKey)
}

func (s *Server) exceededMessage(key string) string {
	switch {
	case key == anonBudgetKey:
		return "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)"
	case strings.HasPrefix(key, appKeyPrefix):
		return fmt.Sprintf("API rate limit exceeded for app ID %s. If you reach out to GitHub Support for help, please include the request ID.", strings.TrimPrefix(key, appKeyPrefix))
	case strings.HasPrefix(key, tokenKeyPrefix):
		s.mu.Lock()
		it := s.tokens[strings.TrimPrefix(key, tokenKeyPrefix)]
		s.mu.Unlock()
		return fmt.Sprintf("API rate limit exceeded for installation ID %d. If you reach out to GitHub Support for help, please include the request ID.", it.installationID)
	}
	return "API rate limit exceeded."
}

// peekKey names the budget a request's credential would draw from, without
// validating it (a JWT's iss names its App; the primary App's when it names
// none); it is used for the headers of injected faults.
func (s *Server) peekKey(r *http.Request) string {
	cred := bearer(r)
	switch {
	case cred == "":
		return anonBudgetKey
	case strings.Count(cred, ".") == 2:
		id := unverifiedIssuer(cred)
		if id == 0 {
			id = s.primary.id
		}
		return appBudgetKey(id)
	default:
		return tokenBudgetKey(hashSecret(cred))
	}
}

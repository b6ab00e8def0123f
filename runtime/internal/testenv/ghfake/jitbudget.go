package ghfake

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// DefaultJITPerMinute is how many JIT runner configurations one App may
// generate in a minute before GitHub's secondary rate limit refuses more:
// about 180, the ceiling terraform-aws-github-runner documents and the
// reason it supports several Apps. GitHub publishes no exact figure; the
// fake enforces this one by default so that a control plane that ignores
// the limit fails here as it would on GitHub.
const DefaultJITPerMinute = 180

// jitWindow is the span the JIT budget counts over: the last minute, a
// sliding window (GitHub does not say how its secondary limits count; a
// sliding window never lets a burst straddling a minute boundary through).
const jitWindow = time.Minute

// WithJITPerMinute sets each App's JIT-config budget per minute (default
// DefaultJITPerMinute; 0 turns the limit off).
func WithJITPerMinute(n int) Option { return func(o *options) { o.jitPerMinute = &n } }

// SetJITPerMinute changes every App's JIT-config budget per minute (0: no
// limit) and forgets the requests counted so far.
func (s *Server) SetJITPerMinute(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jitPerMinute = n
	for _, a := range s.apps {
		a.jitTimes = nil
	}
}

// JITRateLimited returns how many generate-jitconfig requests the JIT
// budgets refused (403 with Retry-After), all Apps together, since the
// start or the last ResetCalls.
func (s *Server) JITRateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.apps {
		n += a.jitLimited
	}
	return n
}

// JITRateLimitedBy is JITRateLimited for App appID alone (0 for an App the
// Server lacks): a control plane spreading JIT configs over Apps should
// keep each under its own budget.
func (s *Server) JITRateLimitedBy(appID int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.appLocked(appID); a != nil {
		return a.jitLimited
	}
	return 0
}

// JITConfigsBy returns how many JIT configs App appID generated (answered
// 201 to its installation tokens) since the start or the last ResetCalls,
// so a test can see how a control plane spread them over its Apps.
func (s *Server) JITConfigsBy(appID int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.appLocked(appID); a != nil {
		return a.jitConfigs
	}
	return 0
}

// chargeJIT spends one JIT config of App a's budget, or answers GitHub's
// secondary rate limit: 403, Retry-After the seconds until the oldest
// counted request of a leaves the window, and the primary rate-limit
// headers of key as they stand. It reports whether the request may go on.
// Each App has its own window, as GitHub counts the limit per App.
func (s *Server) chargeJIT(w http.ResponseWriter, a *app, key, reqID string) bool {
	now := s.now()
	s.mu.Lock()
	limit := s.jitPerMinute
	if limit <= 0 {
		s.mu.Unlock()
		return true
	}
	cut := 0
	for cut < len(a.jitTimes) && !now.Before(a.jitTimes[cut].Add(jitWindow)) {
		cut++
	}
	a.jitTimes = a.jitTimes[cut:]
	if len(a.jitTimes) < limit {
		a.jitTimes = append(a.jitTimes, now)
		s.mu.Unlock()
		return true
	}
	wait := a.jitTimes[0].Add(jitWindow).Sub(now)
	a.jitLimited++
	st := s.window(key, now).state()
	s.mu.Unlock()

	secs := int((wait + time.Second - 1) / time.Second)
	setRateHeaders(w.Header(), st)
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	writeErrorDoc(w, http.StatusForbidden, fmt.Sprintf("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "+
		"If you reach out to GitHub Support for help, please include the request ID %s.", reqID), secondaryRateDocs)
	return false
}

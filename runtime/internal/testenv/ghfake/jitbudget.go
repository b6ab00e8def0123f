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

// WithJITPerMinute sets the App's JIT-config budget per minute (default
// DefaultJITPerMinute; 0 turns the limit off).
func WithJITPerMinute(n int) Option { return func(o *options) { o.jitPerMinute = &n } }

// SetJITPerMinute changes the JIT-config budget per minute (0: no limit)
// and forgets the requests counted so far.
func (s *Server) SetJITPerMinute(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jitPerMinute = n
	s.jitTimes = nil
}

// JITRateLimited returns how many generate-jitconfig requests the JIT
// budget refused (403 with Retry-After), since the start or the last
// ResetCalls.
func (s *Server) JITRateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jitLimited
}

// chargeJIT spends one JIT config of the App's budget, or answers GitHub's
// secondary rate limit: 403, Retry-After the seconds until the oldest
// counted request leaves the window, and the primary rate-limit headers as
// they stand. It reports whether the request may go on.
func (s *Server) chargeJIT(w http.ResponseWriter, key, reqID string) bool {
	now := s.now()
	s.mu.Lock()
	limit := s.jitPerMinute
	if limit <= 0 {
		s.mu.Unlock()
		return true
	}
	cut := 0
	for cut < len(s.jitTimes) && !now.Before(s.jitTimes[cut].Add(jitWindow)) {
		cut++
	}
	s.jitTimes = s.jitTimes[cut:]
	if len(s.jitTimes) < limit {
		s.jitTimes = append(s.jitTimes, now)
		s.mu.Unlock()
		return true
	}
	wait := s.jitTimes[0].Add(jitWindow).Sub(now)
	s.jitLimited++
	st := s.window(key, now).state()
	s.mu.Unlock()

	secs := int((wait + time.Second - 1) / time.Second)
	setRateHeaders(w.Header(), st)
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	writeErrorDoc(w, http.StatusForbidden, fmt.Sprintf("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "+
		"If you reach out to GitHub Support for help, please include the request ID %s.", reqID), secondaryRateDocs)
	return false
}

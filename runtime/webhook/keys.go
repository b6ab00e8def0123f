package webhook

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// retiredFor is how long a secret replaced by a refresh is still accepted:
// GitHub may have signed deliveries with it just before the rotation.
const retiredFor = 10 * time.Minute

// keyring is what the handler knows of the webhook secrets besides the
// current one (Handler.secret).
type keyring struct {
	fresh    SecretFunc    // a read that bypasses the cache; nil: no refresh
	every    time.Duration // at most one refresh per every
	previous SecretFunc    // a configured previous secret; nil: none
	replaced ReplacedFunc  // the value the current secret replaced; nil: none

	mu           sync.Mutex
	lastRefresh  time.Time
	retired      []byte
	retiredUntil time.Time
}

// verify checks sig against the current secret, then a configured previous
// one, then one a refresh replaced a short while ago; on a mismatch it
// refreshes the current secret (at most once per keys.every) and tries it
// again. It returns the signature's verdict, and unavailable when no secret
// could be read at all.
func (h *Handler) verify(ctx context.Context, log *slog.Logger, body []byte, sig string) (verdict, unavailable error) {
	current, err := h.secret(ctx)
	if err != nil {
		return nil, err
	}
	verdict = Verify(current, body, sig)
	if !errors.Is(verdict, ErrSignatureMismatch) {
		return verdict, nil // valid, or not a signature at all
	}
	k := &h.keys
	if k.previous != nil {
		if prev, err := k.previous(ctx); err == nil && Verify(prev, body, sig) == nil {
			return nil, nil
		}
	}
	now := h.now()
	k.mu.Lock()
	retired := k.retired
	if now.After(k.retiredUntil) {
		retired = nil
	}
	refresh := k.fresh != nil && now.Sub(k.lastRefresh) >= k.every
	if refresh {
		k.lastRefresh = now
	}
	k.mu.Unlock()
	if retired != nil && Verify(retired, body, sig) == nil {
		return nil, nil
	}
	if !refresh {
		return verdict, nil
	}
	fresh, err := k.fresh(ctx)
	if err != nil {
		log.Warn("could not read the webhook secret again", slog.String("error", err.Error()))
		return verdict, nil
	}
	if !bytes.Equal(fresh, current) {
		log.Info("webhook secret changed; the previous one is accepted for a while", slog.Duration("window", retiredFor))
		k.retire(current, now.Add(retiredFor))
		return Verify(fresh, body, sig), nil
	}
	if k.replaced == nil {
		return verdict, nil // fresh is current, which did not match
	}
	// This container already had the newest secret: it may have started
	// after a rotation in place, and the delivery be one GitHub signed just
	// before it. The value the rotation replaced is accepted as a refresh
	// would have kept it: for retiredFor after the rotation.
	prev, at, err := k.replaced(ctx)
	switch {
	case err != nil:
		log.Warn("could not read the webhook secret's previous version", slog.String("error", err.Error()))
		return verdict, nil
	case prev == nil || now.Sub(at) >= retiredFor:
		return verdict, nil // never rotated, or too long ago
	}
	k.retire(prev, at.Add(retiredFor))
	return Verify(prev, body, sig), nil
}

// retire accepts old until until.
func (k *keyring) retire(old []byte, until time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.retired, k.retiredUntil = old, until
}

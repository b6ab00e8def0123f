package fleet

import (
	"strings"
	"sync"
	"time"
)

// DefaultUnavailableTTL is how long an offering that failed with a capacity
// error is left out of launch requests. Spot and on-demand capacity changes
// within minutes, so the entry only has to outlive a burst of jobs.
const DefaultUnavailableTTL = 3 * time.Minute

// UnavailableOfferings remembers offerings (capacity type, instance type,
// Availability Zone) that recently failed with a capacity-class error, so the
// next launches leave them out instead of failing on them again. It is safe
// for concurrent use. The zero value is not usable; call
// NewUnavailableOfferings.
type UnavailableOfferings struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	expires map[string]time.Time // key(capacityType, instanceType, zone) -> expiry
}

// NewUnavailableOfferings returns an empty cache whose entries live for ttl
// (DefaultUnavailableTTL if ttl <= 0) as measured by now (time.Now if nil).
func NewUnavailableOfferings(ttl time.Duration, now func() time.Time) *UnavailableOfferings {
	if ttl <= 0 {
		ttl = DefaultUnavailableTTL
	}
	if now == nil {
		now = time.Now
	}
	return &UnavailableOfferings{ttl: ttl, now: now, expires: map[string]time.Time{}}
}

// MarkUnavailable records that the offering is out of capacity for the TTL
// from now. Marking an entry again extends it.
func (u *UnavailableOfferings) MarkUnavailable(capacityType, instanceType, zone string) {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	// Drop expired entries here so the map stays as small as the set of
	// offerings that are out right now; it is tiny, so a sweep is cheap.
	for k, exp := range u.expires {
		if !now.Before(exp) {
			delete(u.expires, k)
		}
	}
	u.expires[OfferingKey(capacityType, instanceType, zone)] = now.Add(u.ttl)
}

// IsUnavailable reports whether the offering was marked within the TTL.
func (u *UnavailableOfferings) IsUnavailable(capacityType, instanceType, zone string) bool {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	exp, ok := u.expires[OfferingKey(capacityType, instanceType, zone)]
	return ok && now.Before(exp)
}

// OfferingKey is capacityType:instanceType:zone, the key karpenter uses; the
// jobs table shares interrupted offerings under it.
func OfferingKey(capacityType, instanceType, zone string) string {
	return capacityType + ":" + instanceType + ":" + zone
}

// ParseOfferingKey splits an OfferingKey; ok is false for anything else.
func ParseOfferingKey(key string) (capacityType, instanceType, zone string, ok bool) {
	parts := strings.SplitN(key, ":", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

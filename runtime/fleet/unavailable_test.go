package fleet_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

func TestUnavailableOfferingsTTL(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(fakeStart)
	u := fleet.NewUnavailableOfferings(time.Minute, clock.Now)

	u.MarkUnavailable("spot", "t3.large", "us-east-1a")
	for _, tc := range []struct {
		capacityType, instanceType, zone string
		want                             bool
	}{
		{"spot", "t3.large", "us-east-1a", true},
		{"on-demand", "t3.large", "us-east-1a", false},
		{"spot", "m5.large", "us-east-1a", false},
		{"spot", "t3.large", "us-east-1b", false},
	} {
		if got := u.IsUnavailable(tc.capacityType, tc.instanceType, tc.zone); got != tc.want {
			t.Errorf("IsUnavailable(%s, %s, %s) = %v; want %v", tc.capacityType, tc.instanceType, tc.zone, got, tc.want)
		}
	}

	clock.Advance(59 * time.Second)
	if !u.IsUnavailable("spot", "t3.large", "us-east-1a") {
		t.Error("expired before the TTL")
	}
	u.MarkUnavailable("spot", "t3.large", "us-east-1a") // extends to now+TTL
	clock.Advance(59 * time.Second)
	if !u.IsUnavailable("spot", "t3.large", "us-east-1a") {
		t.Error("marking again did not extend the entry")
	}
	clock.Advance(time.Second)
	if u.IsUnavailable("spot", "t3.large", "us-east-1a") {
		t.Error("still unavailable at the TTL")
	}
}

func TestUnavailableOfferingsDefaults(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(fakeStart)
	u := fleet.NewUnavailableOfferings(0, clock.Now)
	u.MarkUnavailable("spot", "t3.large", "us-east-1a")
	clock.Advance(fleet.DefaultUnavailableTTL - time.Nanosecond)
	if !u.IsUnavailable("spot", "t3.large", "us-east-1a") {
		t.Error("expired before DefaultUnavailableTTL")
	}
	clock.Advance(time.Nanosecond)
	if u.IsUnavailable("spot", "t3.large", "us-east-1a") {
		t.Error("still unavailable at DefaultUnavailableTTL")
	}
}

func TestUnavailableOfferingsConcurrent(t *testing.T) {
	t.Parallel()
	clock := testkit.NewClock(fakeStart)
	// The goroutines advance the clock 64 s in all: the TTL must outlast that
	// whatever order they run in.
	u := fleet.NewUnavailableOfferings(time.Hour, clock.Now)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 100 {
				it := fmt.Sprintf("t%d.large", j%10)
				u.MarkUnavailable("spot", it, fmt.Sprintf("zone-%d", i))
				u.IsUnavailable("spot", it, "zone-0")
				if j%25 == 0 {
					clock.Advance(time.Second)
				}
			}
		})
	}
	wg.Wait()
	if !u.IsUnavailable("spot", "t9.large", "zone-15") {
		t.Error("an entry marked within the TTL is missing")
	}
}

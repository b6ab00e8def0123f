package fleet_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// The catalogue is walked once per deployment, not once per container:
// scaledown's refresh stores it, a new container (Launcher) reads it with
// one GetItem and no EC2 call, and the refresh walks again only when the
// stored copy is older than half the TTL.
func TestSharedCatalogue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := newNetwork(t)
	a := testenv.AWSForTest(t)
	clock := testkit.NewClock(fakeStart)
	store := state.NewStore(a.Dynamo, a.JobsTable(t), time.Hour, clock.Now)

	sweeper, sweeperAPI := newCatalogueLauncher(t, n, fleet.WithClock(clock.Now), fleet.WithCatalogueStore(store))
	refreshed, err := sweeper.RefreshCatalogue(ctx, n.subnets)
	if err != nil || !refreshed {
		t.Fatalf("first refresh: %v, %v; want a walk", refreshed, err)
	}
	if tw, ow := sweeperAPI.walks(); tw != 1 || ow != 1 {
		t.Fatalf("first refresh walked types %d, offerings %d times; want once each", tw, ow)
	}
	own, err := sweeper.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}

	// A new container: the stored catalogue, no EC2 call, the same answer.
	fresh, freshAPI := newCatalogueLauncher(t, n, fleet.WithClock(clock.Now), fleet.WithCatalogueStore(store))
	got, err := fresh.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	if ts, os := freshAPI.calls(); len(ts)+len(os) != 0 {
		t.Fatalf("a container with the stored catalogue made %d DescribeInstanceTypes and %d offerings calls", len(ts), len(os))
	}
	if len(got) != len(own) || len(got) < 100 {
		t.Fatalf("stored catalogue has %d types; the walk found %d", len(got), len(own))
	}
	want := byName(own)
	for _, typ := range got {
		if want[typ.Name] != typ {
			t.Fatalf("stored %+v; walked %+v", typ, want[typ.Name])
		}
	}
	// Launches of offered types are filtered from the stored offerings too.
	if _, err := fresh.Launch(ctx, fleet.Request{InstanceTypes: []string{"trn1.2xlarge"}, SubnetIDs: n.subnets,
		LaunchTemplateID: n.lt, OfferedOnly: true}); err == nil {
		t.Fatal("a launch of a type offered in none of the zones went ahead")
	}
	if ts, os := freshAPI.calls(); len(ts)+len(os) != 0 {
		t.Fatalf("the launch asked EC2 for the catalogue (%d, %d calls)", len(ts), len(os))
	}

	// Within half the TTL the refresh does nothing; past it, it walks.
	clock.Advance(fleet.CatalogueTTL/2 - time.Minute)
	if refreshed, err := sweeper.RefreshCatalogue(ctx, n.subnets); err != nil || refreshed {
		t.Fatalf("refresh at %s: %v, %v; want none", fleet.CatalogueTTL/2-time.Minute, refreshed, err)
	}
	clock.Advance(2 * time.Minute)
	if refreshed, err := sweeper.RefreshCatalogue(ctx, n.subnets); err != nil || !refreshed {
		t.Fatalf("refresh past half the TTL: %v, %v; want a walk", refreshed, err)
	}
	if tw, ow := sweeperAPI.walks(); tw != 2 || ow != 2 {
		t.Fatalf("refreshes walked types %d, offerings %d times; want twice each", tw, ow)
	}

	// A stored catalogue past the TTL is not used: with no refresh, a
	// container walks EC2 itself (and stores what it walked).
	clock.Advance(fleet.CatalogueTTL)
	late, lateAPI := newCatalogueLauncher(t, n, fleet.WithClock(clock.Now), fleet.WithCatalogueStore(store))
	if _, err := late.Catalogue(ctx, n.subnets); err != nil {
		t.Fatal(err)
	}
	if tw, ow := lateAPI.walks(); tw != 1 || ow != 1 {
		t.Fatalf("a container with only a stale stored catalogue walked types %d, offerings %d times; want once each", tw, ow)
	}
	// ...and a container after it reads what it stored.
	next, nextAPI := newCatalogueLauncher(t, n, fleet.WithClock(clock.Now), fleet.WithCatalogueStore(store))
	if _, err := next.Catalogue(ctx, n.subnets); err != nil {
		t.Fatal(err)
	}
	if ts, os := nextAPI.calls(); len(ts)+len(os) != 0 {
		t.Fatalf("the container after the late walk asked EC2 (%d, %d calls)", len(ts), len(os))
	}
}

// Cold containers that find no stored catalogue at once make one walk
// between them: one claims it, the others wait for what it stores.
func TestColdLaunchersWalkOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := newNetwork(t)
	a := testenv.AWSForTest(t)
	store := state.NewStore(a.Dynamo, a.JobsTable(t), time.Hour, nil)
	const containers = 4
	var (
		apis []*catalogueAPI
		wg   sync.WaitGroup
		errs = make(chan error, containers)
	)
	for range containers {
		l, api := newCatalogueLauncher(t, n, fleet.WithCatalogueStore(store))
		apis = append(apis, api)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cat, err := l.Catalogue(ctx, n.subnets)
			if err == nil && len(cat) < 100 {
				err = fmt.Errorf("catalogue of %d types", len(cat))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	typeWalks, offeringWalks := 0, 0
	for _, api := range apis {
		tw, ow := api.walks()
		typeWalks, offeringWalks = typeWalks+tw, offeringWalks+ow
	}
	if typeWalks != 1 || offeringWalks != 1 {
		t.Fatalf("%d cold containers walked the types %d times and the offerings %d times; want once each", containers, typeWalks, offeringWalks)
	}
}

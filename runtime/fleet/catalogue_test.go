package fleet_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// catalogueAPI records the catalogue calls on top of the recording client
// and lets a test answer them first (call counts from 1 per operation; a
// nil output and nil error pass the call on to moto).
type catalogueAPI struct {
	*testenv.FaultyEC2

	mu            sync.Mutex
	typeCalls     []*ec2.DescribeInstanceTypesInput
	offeringCalls []*ec2.DescribeInstanceTypeOfferingsInput
	types         func(call int) (*ec2.DescribeInstanceTypesOutput, error)
	offerings     func(call int) (*ec2.DescribeInstanceTypeOfferingsOutput, error)
}

func (c *catalogueAPI) DescribeInstanceTypes(ctx context.Context, in *ec2.DescribeInstanceTypesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error) {
	c.mu.Lock()
	c.typeCalls = append(c.typeCalls, in)
	call, answer := len(c.typeCalls), c.types
	c.mu.Unlock()
	if answer != nil {
		if out, err := answer(call); out != nil || err != nil {
			return out, err
		}
	}
	return c.FaultyEC2.DescribeInstanceTypes(ctx, in, o...)
}

func (c *catalogueAPI) DescribeInstanceTypeOfferings(ctx context.Context, in *ec2.DescribeInstanceTypeOfferingsInput, o ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error) {
	c.mu.Lock()
	c.offeringCalls = append(c.offeringCalls, in)
	call, answer := len(c.offeringCalls), c.offerings
	c.mu.Unlock()
	if answer != nil {
		if out, err := answer(call); out != nil || err != nil {
			return out, err
		}
	}
	return c.FaultyEC2.DescribeInstanceTypeOfferings(ctx, in, o...)
}

// calls returns the DescribeInstanceTypes and DescribeInstanceTypeOfferings
// inputs so far.
func (c *catalogueAPI) calls() ([]*ec2.DescribeInstanceTypesInput, []*ec2.DescribeInstanceTypeOfferingsInput) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ec2.DescribeInstanceTypesInput(nil), c.typeCalls...),
		append([]*ec2.DescribeInstanceTypeOfferingsInput(nil), c.offeringCalls...)
}

// walks counts the walks among the calls so far: the calls without a
// NextToken, which start one.
func (c *catalogueAPI) walks() (typeWalks, offeringWalks int) {
	ts, os := c.calls()
	for _, in := range ts {
		if in.NextToken == nil {
			typeWalks++
		}
	}
	for _, in := range os {
		if in.NextToken == nil {
			offeringWalks++
		}
	}
	return typeWalks, offeringWalks
}

func newCatalogueLauncher(t *testing.T, n *network, opts ...fleet.Option) (*fleet.Launcher, *catalogueAPI) {
	t.Helper()
	api := &catalogueAPI{FaultyEC2: testenv.NewFaultyEC2(n.client)}
	return fleet.New(api, opts...), api
}

func byName(cat []shapes.InstanceType) map[string]shapes.InstanceType {
	m := make(map[string]shapes.InstanceType, len(cat))
	for _, t := range cat {
		m[t.Name] = t
	}
	return m
}

// offeredIn asks moto directly (not through a Launcher) in which of zones
// instanceType is offered; nil zones asks about every zone of the region.
func offeredIn(t *testing.T, client *ec2.Client, instanceType string, zones []string) []string {
	t.Helper()
	filters := []types.Filter{{Name: aws.String("instance-type"), Values: []string{instanceType}}}
	if zones != nil {
		filters = append(filters, types.Filter{Name: aws.String("location"), Values: zones})
	}
	out, err := client.DescribeInstanceTypeOfferings(context.Background(), &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      filters,
	})
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, o := range out.InstanceTypeOfferings {
		in = append(in, aws.ToString(o.Location))
	}
	return in
}

var throttled = &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."}

// TestCatalogueWalksEveryPage: moto pages as EC2 does (moto_server.py), so
// a catalogue of more than one page of types and offerings is every page
// followed, each type read as EC2 describes it.
func TestCatalogueWalksEveryPage(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newCatalogueLauncher(t, n)

	cat, err := l.Catalogue(context.Background(), n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	typeCalls, offeringCalls := api.calls()
	if len(cat) <= 100 || len(typeCalls) < 2 {
		t.Fatalf("got %d types from %d DescribeInstanceTypes calls; want more than 100 types, from more than one page", len(cat), len(typeCalls))
	}
	if len(offeringCalls) < 2 {
		t.Errorf("got %d DescribeInstanceTypeOfferings calls; want more than one page (two zones offer over 2000 types)", len(offeringCalls))
	}
	for i, in := range typeCalls {
		if aws.ToInt32(in.MaxResults) != 100 || (i == 0) != (in.NextToken == nil) || len(in.InstanceTypes) > 0 || len(in.Filters) > 0 {
			t.Errorf("DescribeInstanceTypes call %d: MaxResults %d, NextToken %v, types %v, filters %v; want 100, a token after the first page, no filter",
				i+1, aws.ToInt32(in.MaxResults), in.NextToken, in.InstanceTypes, in.Filters)
		}
	}
	for i, in := range offeringCalls {
		want := []types.Filter{{Name: aws.String("location"), Values: n.zones}}
		if aws.ToInt32(in.MaxResults) != 1000 || (i == 0) != (in.NextToken == nil) || in.LocationType != types.LocationTypeAvailabilityZone || !reflect.DeepEqual(in.Filters, want) {
			t.Errorf("DescribeInstanceTypeOfferings call %d: MaxResults %d, NextToken %v, location type %q, filters %v; want 1000, a token after the first page, availability-zone, location %v",
				i+1, aws.ToInt32(in.MaxResults), in.NextToken, in.LocationType, in.Filters, n.zones)
		}
	}

	got := byName(cat)
	if len(got) != len(cat) {
		t.Errorf("got %d types under %d names; want no type twice", len(cat), len(got))
	}
	for _, want := range []shapes.InstanceType{
		{Name: "c7i.2xlarge", VCPUs: 8, MemoryMiB: 16384, Arch: "x64", Spot: true, OnDemand: true, CurrentGeneration: true},
		{Name: "m7g.large", VCPUs: 2, MemoryMiB: 8192, Arch: "arm64", Spot: true, OnDemand: true, CurrentGeneration: true},
		{Name: "g5.xlarge", VCPUs: 4, MemoryMiB: 16384, Arch: "x64", GPUs: 1, Spot: true, OnDemand: true, CurrentGeneration: true},
		{Name: "p4d.24xlarge", VCPUs: 96, MemoryMiB: 1179648, Arch: "x64", GPUs: 8, Spot: true, OnDemand: true, CurrentGeneration: true},
		{Name: "c7i.metal-24xl", VCPUs: 96, MemoryMiB: 196608, Arch: "x64", Spot: true, OnDemand: true, CurrentGeneration: true, BareMetal: true},
		{Name: "m4.large", VCPUs: 2, MemoryMiB: 8192, Arch: "x64", Spot: true, OnDemand: true},
		{Name: "mac2.metal", VCPUs: 8, MemoryMiB: 16384, Arch: "", OnDemand: true, CurrentGeneration: true, BareMetal: true},
	} {
		if g, ok := got[want.Name]; !ok {
			t.Errorf("%s not in the catalogue", want.Name)
		} else if g != want {
			t.Errorf("%s: got %+v; want %+v", want.Name, g, want)
		}
	}
}

// TestCatalogueCachedForTTL: within CatalogueTTL a call makes no EC2 call;
// after it, both the types and the offerings are walked again.
func TestCatalogueCachedForTTL(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	clock := testkit.NewClock(fakeStart)
	l, api := newCatalogueLauncher(t, n, fleet.WithClock(clock.Now))
	ctx := context.Background()

	first, err := l.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	typeCalls, offeringCalls := api.calls()
	subnetCalls := api.SubnetCalls()

	clock.Advance(fleet.CatalogueTTL - time.Second)
	again, err := l.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	if ts, os := api.calls(); len(ts) != len(typeCalls) || len(os) != len(offeringCalls) || api.SubnetCalls() != subnetCalls {
		t.Errorf("within the TTL: %d more DescribeInstanceTypes, %d more DescribeInstanceTypeOfferings, %d more DescribeSubnets calls; want none",
			len(ts)-len(typeCalls), len(os)-len(offeringCalls), api.SubnetCalls()-subnetCalls)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("within the TTL: got %d types; want the first call's %d", len(again), len(first))
	}

	clock.Advance(time.Second)
	later, err := l.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	if tw, ow := api.walks(); tw != 2 || ow != 2 {
		t.Errorf("after the TTL: %d walks of the types and %d of the offerings in all; want 2 of each", tw, ow)
	}
	if ts, _ := api.calls(); len(ts) != 2*len(typeCalls) {
		t.Errorf("after the TTL: %d DescribeInstanceTypes calls in all; want twice the first walk's %d", len(ts), len(typeCalls))
	}
	if !reflect.DeepEqual(later, first) {
		t.Errorf("after the TTL: got %d types; want the first call's %d", len(later), len(first))
	}
}

// TestCatalogueConcurrentFirstCallsWalkOnce: a warm container's batch of
// shaped jobs makes one walk, not one per job.
func TestCatalogueConcurrentFirstCallsWalkOnce(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newCatalogueLauncher(t, n)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	lens := make(chan int, 4)
	for range 4 {
		wg.Go(func() {
			cat, err := l.Catalogue(context.Background(), n.subnets)
			errs <- err
			lens <- len(cat)
		})
	}
	wg.Wait()
	close(errs)
	close(lens)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if tw, ow := api.walks(); tw != 1 || ow != 1 {
		t.Errorf("4 concurrent first calls: %d walks of the types, %d of the offerings; want 1 each", tw, ow)
	}
	first := <-lens
	for got := range lens {
		if got != first || got <= 100 {
			t.Errorf("concurrent calls got %d and %d types; want the same catalogue", first, got)
		}
	}
}

// TestCatalogueErrorNotCached: a failed page fails the call with the SDK's
// error and what was being described; the next call walks again.
func TestCatalogueErrorNotCached(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	for _, tc := range []struct {
		name, what string
		fail       func(*catalogueAPI)
		typeWalks  int // in all, after the failed call and the next one
		offerWalks int
	}{
		{
			name: "DescribeInstanceTypes second page", what: "describe instance types (page 2)",
			fail: func(api *catalogueAPI) {
				api.types = func(call int) (*ec2.DescribeInstanceTypesOutput, error) {
					if call == 2 {
						return nil, throttled
					}
					return nil, nil
				}
			},
			typeWalks: 2, offerWalks: 1,
		},
		{
			name: "DescribeInstanceTypeOfferings", what: "describe instance type offerings in [us-east-1a us-east-1b] (page 1)",
			fail: func(api *catalogueAPI) {
				api.offerings = func(call int) (*ec2.DescribeInstanceTypeOfferingsOutput, error) {
					if call == 1 {
						return nil, throttled
					}
					return nil, nil
				}
			},
			typeWalks: 1, offerWalks: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, api := newCatalogueLauncher(t, n)
			tc.fail(api)
			cat, err := l.Catalogue(context.Background(), n.subnets)
			if err == nil {
				t.Fatalf("got %d types; want an error", len(cat))
			}
			if apiErr, ok := errors.AsType[smithy.APIError](err); !ok || apiErr.ErrorCode() != "RequestLimitExceeded" {
				t.Errorf("got %v; want it to wrap RequestLimitExceeded", err)
			}
			if !strings.Contains(err.Error(), tc.what) {
				t.Errorf("got %q; want it to say %q", err, tc.what)
			}
			if !fleet.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = false; want true", err)
			}
			cat, err = l.Catalogue(context.Background(), n.subnets)
			if err != nil || len(cat) <= 100 {
				t.Fatalf("the call after the error: got %d types, %v; want the catalogue", len(cat), err)
			}
			if tw, ow := api.walks(); tw != tc.typeWalks || ow != tc.offerWalks {
				t.Errorf("got %d walks of the types, %d of the offerings; want %d, %d (nothing cached of what failed)", tw, ow, tc.typeWalks, tc.offerWalks)
			}
		})
	}
}

// TestCatalogueNextTokenLoop: a NextToken that never ends is an error after
// a bounded number of pages, and is not cached.
func TestCatalogueNextTokenLoop(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newCatalogueLauncher(t, n)
	api.types = func(int) (*ec2.DescribeInstanceTypesOutput, error) {
		return &ec2.DescribeInstanceTypesOutput{
			InstanceTypes: []types.InstanceTypeInfo{{InstanceType: "t3.large"}},
			NextToken:     aws.String("again"),
		}, nil
	}
	if cat, err := l.Catalogue(context.Background(), n.subnets); err == nil {
		t.Fatalf("got %d types; want an error", len(cat))
	}
	typeCalls, _ := api.calls()
	if len(typeCalls) != 100 {
		t.Errorf("got %d DescribeInstanceTypes calls; want 100, the bound", len(typeCalls))
	}
	api.mu.Lock()
	api.types = nil
	api.mu.Unlock()
	if cat, err := l.Catalogue(context.Background(), n.subnets); err != nil || len(cat) <= 100 {
		t.Errorf("after the loop: got %d types, %v; want moto's catalogue", len(cat), err)
	}
}

// TestCatalogueOnlyTypesOfferedInTheSubnetsZones: a type the region offers
// in none of the subnets' zones is left out; a subnet in a zone that
// offers it brings it in, asking EC2 only about that zone's offerings.
func TestCatalogueOnlyTypesOfferedInTheSubnetsZones(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	const elsewhere = "trn1.2xlarge" // offered in us-east-1, not in us-east-1a or us-east-1b (moto's data)
	if in := offeredIn(t, n.client, elsewhere, n.zones); len(in) != 0 {
		t.Fatalf("moto offers %s in %v; the test needs a type offered in none of %v", elsewhere, in, n.zones)
	}
	zones := offeredIn(t, n.client, elsewhere, nil)
	if len(zones) == 0 {
		t.Fatalf("moto offers %s in no zone; the test needs one", elsewhere)
	}
	const oneZone = "vt1.3xlarge" // offered in us-east-1a, not in us-east-1b
	if in := offeredIn(t, n.client, oneZone, n.zones); !reflect.DeepEqual(in, n.zones[:1]) {
		t.Fatalf("moto offers %s in %v of %v; the test needs it in the first only", oneZone, in, n.zones)
	}

	l, api := newCatalogueLauncher(t, n)
	ctx := context.Background()
	cat, err := l.Catalogue(ctx, n.subnets)
	if err != nil {
		t.Fatal(err)
	}
	got := byName(cat)
	if _, ok := got[elsewhere]; ok {
		t.Errorf("%s is in the catalogue of %v; it is offered only in %v", elsewhere, n.zones, zones)
	}
	if _, ok := got[oneZone]; !ok {
		t.Errorf("%s is not in the catalogue of %v; it is offered in %s", oneZone, n.zones, n.zones[0])
	}

	// A third subnet, in a zone that offers the type.
	sn, err := n.client.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: n.subnets[:1]})
	if err != nil {
		t.Fatal(err)
	}
	third, err := n.client.CreateSubnet(ctx, &ec2.CreateSubnetInput{
		VpcId:            sn.Subnets[0].VpcId,
		CidrBlock:        aws.String("10.20.9.0/24"),
		AvailabilityZone: aws.String(zones[0]),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, before := api.calls()
	cat, err = l.Catalogue(ctx, append(n.subnets[:2:2], aws.ToString(third.Subnet.SubnetId)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byName(cat)[elsewhere]; !ok {
		t.Errorf("%s is not in the catalogue with a subnet in %s, which offers it", elsewhere, zones[0])
	}
	_, after := api.calls()
	for _, in := range after[len(before):] {
		if want := []string{zones[0]}; !reflect.DeepEqual(in.Filters[0].Values, want) {
			t.Errorf("offerings asked for %v; want only the new zone %v (the others are cached)", in.Filters[0].Values, want)
		}
	}
	if len(after) == len(before) {
		t.Error("no DescribeInstanceTypeOfferings call for the new zone")
	}
	if tw, _ := api.walks(); tw != 1 {
		t.Errorf("got %d walks of the types; want 1 (one catalogue for every zone)", tw)
	}
}

// TestLaunchOfferedOnly: the overrides of a type not offered in a subnet's
// zone are left out, of the spot request and of its on-demand fallback,
// from the offerings cached with the catalogue's.
func TestLaunchOfferedOnly(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	const oneZone = "vt1.3xlarge"
	if in := offeredIn(t, n.client, oneZone, n.zones); !reflect.DeepEqual(in, n.zones[:1]) {
		t.Fatalf("moto offers %s in %v of %v; the test needs it in the first only", oneZone, in, n.zones)
	}
	l, api := newCatalogueLauncher(t, n)
	api.Answer(func(_ int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		if capacityType(in) == fleet.CapacityTypeSpot {
			return testenv.FleetErrors(in, "InsufficientInstanceCapacity"), nil
		}
		return nil, nil
	})
	req := n.request(150)
	req.InstanceTypes = []string{"t3.large", oneZone}
	req.OfferedOnly = true

	res, err := l.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !res.SpotFallback || res.InstanceID == "" {
		t.Errorf("got %+v; want an on-demand instance after the spot fallback", res)
	}
	want := []offering{{"t3.large", n.subnets[0], n.zones[0]}, {"t3.large", n.subnets[1], n.zones[1]}, {oneZone, n.subnets[0], n.zones[0]}}
	inputs := api.FleetInputs()
	if len(inputs) != 2 {
		t.Fatalf("got %d CreateFleet calls; want spot then on-demand", len(inputs))
	}
	for _, in := range inputs {
		if got := overridesOf(in); !reflect.DeepEqual(got, want) {
			t.Errorf("%s overrides: got %v; want %v (no %s in %s)", capacityType(in), got, want, oneZone, n.zones[1])
		}
	}

	// Offerings cached: a second launch and a catalogue ask EC2 for none.
	if _, err := l.Launch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Catalogue(context.Background(), n.subnets); err != nil {
		t.Fatal(err)
	}
	if _, ow := api.walks(); ow != 1 {
		t.Errorf("got %d walks of the offerings for two launches and a catalogue; want 1", ow)
	}

	// Without OfferedOnly the request is as it always was, with no call.
	l, api = newCatalogueLauncher(t, n)
	req.OfferedOnly, req.Spot = false, false
	if _, err := l.Launch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := overridesOf(api.FleetInputs()[0]); len(got) != 4 {
		t.Errorf("without OfferedOnly: got overrides %v; want all 4", got)
	}
	if ts, os := api.calls(); len(ts)+len(os) != 0 {
		t.Errorf("without OfferedOnly: %d catalogue calls; want none", len(ts)+len(os))
	}
}

// TestLaunchOfferedOnlyNothingOffered: types offered in none of the
// subnets' zones are an invalid request, and no CreateFleet is made.
func TestLaunchOfferedOnlyNothingOffered(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	const elsewhere = "trn1.2xlarge"
	if in := offeredIn(t, n.client, elsewhere, n.zones); len(in) != 0 {
		t.Fatalf("moto offers %s in %v; the test needs a type offered in none of %v", elsewhere, in, n.zones)
	}
	l, api := newCatalogueLauncher(t, n)
	req := n.request(151)
	req.InstanceTypes = []string{elsewhere}
	req.OfferedOnly = true
	_, err := l.Launch(context.Background(), req)
	if !errors.Is(err, fleet.ErrInvalidRequest) {
		t.Fatalf("got %v; want ErrInvalidRequest", err)
	}
	if !strings.Contains(err.Error(), elsewhere) {
		t.Errorf("got %q; want it to name %s", err, elsewhere)
	}
	if fleet.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = true; want false", err)
	}
	if len(api.FleetInputs()) != 0 {
		t.Errorf("got %d CreateFleet calls; want none", len(api.FleetInputs()))
	}
}

// TestLaunchOfferedOnlyOfferingsError: when EC2 cannot say what is offered,
// the launch fails with that error before any CreateFleet, and the next
// launch asks again.
func TestLaunchOfferedOnlyOfferingsError(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newCatalogueLauncher(t, n)
	api.offerings = func(call int) (*ec2.DescribeInstanceTypeOfferingsOutput, error) {
		if call == 1 {
			return nil, throttled
		}
		return nil, nil
	}
	req := n.request(152)
	req.OfferedOnly = true
	_, err := l.Launch(context.Background(), req)
	if apiErr, ok := errors.AsType[smithy.APIError](err); !ok || apiErr.ErrorCode() != "RequestLimitExceeded" {
		t.Fatalf("got %v; want it to wrap RequestLimitExceeded", err)
	}
	if !strings.Contains(err.Error(), "describe instance type offerings") {
		t.Errorf("got %q; want it to say what was described", err)
	}
	if !fleet.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false; want true", err)
	}
	if len(api.FleetInputs()) != 0 {
		t.Fatalf("got %d CreateFleet calls; want none", len(api.FleetInputs()))
	}
	if _, err := l.Launch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, ow := api.walks(); ow != 2 {
		t.Errorf("got %d walks of the offerings; want 2 (the error is not cached)", ow)
	}
	if got := len(overridesOf(api.FleetInputs()[0])); got != 4 {
		t.Errorf("got %d overrides; want 4 (t3.large and m5.large are offered in both zones)", got)
	}
}

// TestCatalogueNoSubnets: nothing to ask EC2 about.
func TestCatalogueNoSubnets(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, api := newCatalogueLauncher(t, n)
	if _, err := l.Catalogue(context.Background(), []string{""}); !errors.Is(err, fleet.ErrInvalidRequest) {
		t.Errorf("got %v; want ErrInvalidRequest", err)
	}
	if ts, os := api.calls(); len(ts)+len(os)+api.SubnetCalls() != 0 {
		t.Errorf("%d EC2 calls for no subnets; want none", len(ts)+len(os)+api.SubnetCalls())
	}
}

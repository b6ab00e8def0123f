package fleet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// CatalogueTTL is how long a Launcher keeps the region's instance types and
// each zone's offerings. They change only when AWS releases a type or
// brings one to a zone, while a walk of the catalogue is a dozen
// DescribeInstanceTypes pages: six hours costs a warm container a handful
// of walks a day, and a new type is offered to jobs the same day.
const CatalogueTTL = 6 * time.Hour

// Page sizes: the largest MaxResults each call accepts, for the fewest calls.
const (
	instanceTypesPageSize = 100
	offeringsPageSize     = 1000
)

// maxCataloguePages bounds a walk of pages. A region has about a thousand
// instance types (ten pages) and a zone a little more offerings (a page or
// two per zone), so a walk that goes on longer is a NextToken loop, which
// would otherwise
// hold the cache's lock, and every launch waiting for it, until the
// invocation times out.
const maxCataloguePages = 100

// zoneOfferings is the set of instance types offered in one Availability
// Zone, and when EC2 said so. A set is never changed once cached: a stale
// one is replaced whole, so callers read it without the lock.
type zoneOfferings struct {
	types map[string]struct{}
	at    time.Time
}

// Catalogue returns the region's instance types (DescribeInstanceTypes)
// that are offered in at least one of the subnets' Availability Zones
// (DescribeInstanceTypeOfferings), for shapes.Select: a type offered in
// none of them could only ever fail to launch. A type offered in only some
// of the zones is kept; Launch with Request.OfferedOnly then leaves out its
// overrides in the other subnets.
//
// The catalogue and each zone's offerings are cached for CatalogueTTL, so
// most calls make no EC2 call; concurrent first calls make one walk. An
// error is not cached: the next call asks EC2 again.
func (l *Launcher) Catalogue(ctx context.Context, subnetIDs []string) ([]shapes.InstanceType, error) {
	zs, err := l.catalogueZones(ctx, subnetIDs)
	if err != nil {
		return nil, err
	}
	if !l.loadShared(ctx, zs) {
		l.awaitWalk(ctx, zs)
	}
	offered, walkedZones, err := l.offeredTypes(ctx, zs)
	if err != nil {
		return nil, err
	}
	all, walkedTypes, err := l.instanceTypes(ctx)
	if err != nil {
		return nil, err
	}
	if walkedZones || walkedTypes {
		l.saveShared(ctx, zs)
	}
	out := make([]shapes.InstanceType, 0, len(all))
	for _, t := range all {
		for _, o := range offered {
			if _, ok := o[t.Name]; ok {
				out = append(out, t)
				break
			}
		}
	}
	return out, nil
}

// catalogueZones returns the distinct zones of subnetIDs, sorted: what
// the catalogue's offerings (and the stored copy's key) are read for.
func (l *Launcher) catalogueZones(ctx context.Context, subnetIDs []string) ([]string, error) {
	subnetIDs = dedupe(subnetIDs)
	if len(subnetIDs) == 0 {
		return nil, fmt.Errorf("%w: catalogue: no subnets", ErrInvalidRequest)
	}
	zones, err := l.subnetZones(ctx, subnetIDs)
	if err != nil {
		return nil, err
	}
	return zoneNames(zones), nil
}

// zoneNames returns the distinct zones of a subnet -> zone map, sorted so
// that requests are deterministic.
func zoneNames(zones map[string]string) []string {
	out := make([]string, 0, len(zones))
	for _, az := range zones {
		if !slices.Contains(out, az) {
			out = append(out, az)
		}
	}
	slices.Sort(out)
	return out
}

// instanceTypes returns the region's whole catalogue, walking
// DescribeInstanceTypes when the cached one is older than CatalogueTTL. No
// filter: which types serve a job is shapes.Select's decision, and one
// cached catalogue serves every shape. The lock is held across the walk
// so that concurrent first calls make one walk, not many. The slice
// returned is the cache's: read it, do not change it.
func (l *Launcher) instanceTypes(ctx context.Context) (_ []shapes.InstanceType, walked bool, _ error) {
	l.catalogueMu.Lock()
	defer l.catalogueMu.Unlock()
	if l.catalogue != nil && l.now().Sub(l.catalogueAt) < CatalogueTTL {
		return l.catalogue, false, nil
	}
	var all []shapes.InstanceType
	err := walk("instance types", func(token *string) (*string, error) {
		out, err := l.api.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{
			MaxResults: aws.Int32(instanceTypesPageSize),
			NextToken:  token,
		})
		if err != nil {
			return nil, err
		}
		for _, it := range out.InstanceTypes {
			all = append(all, instanceType(it))
		}
		return out.NextToken, nil
	})
	if err != nil {
		return nil, false, err
	}
	l.catalogue, l.catalogueAt = slices.Clip(all), l.now()
	return l.catalogue, true, nil
}

// instanceType converts EC2's description of a type to what choosing a
// type for a shape needs.
func instanceType(it types.InstanceTypeInfo) shapes.InstanceType {
	t := shapes.InstanceType{
		Name:              string(it.InstanceType),
		CurrentGeneration: aws.ToBool(it.CurrentGeneration),
		BareMetal:         aws.ToBool(it.BareMetal),
	}
	if it.VCpuInfo != nil {
		t.VCPUs = int(aws.ToInt32(it.VCpuInfo.DefaultVCpus))
	}
	if it.MemoryInfo != nil {
		t.MemoryMiB = int(aws.ToInt64(it.MemoryInfo.SizeInMiB))
	}
	if it.ProcessorInfo != nil {
		archs := make([]string, 0, len(it.ProcessorInfo.SupportedArchitectures))
		for _, a := range it.ProcessorInfo.SupportedArchitectures {
			archs = append(archs, string(a))
		}
		t.Arch = shapes.ArchFromEC2(archs)
	}
	if it.GpuInfo != nil {
		for _, g := range it.GpuInfo.Gpus {
			t.GPUs += int(aws.ToInt32(g.Count))
		}
	}
	for _, c := range it.SupportedUsageClasses {
		switch c {
		case types.UsageClassTypeSpot:
			t.Spot = true
		case types.UsageClassTypeOnDemand:
			t.OnDemand = true
		}
	}
	return t
}

// offeredTypes returns the set of instance types offered in each of zones,
// asking EC2 (one walk of DescribeInstanceTypeOfferings for every zone
// not cached, or cached longer than CatalogueTTL) only about the zones it
// needs. Offerings are per zone, not per type: a type EC2 does not offer
// in a zone is answered with Unsupported for every override there. The
// lock is held across the walk, as subnetZones does, so that concurrent
// first calls make one walk. The sets returned are the cache's: read them,
// do not change them.
func (l *Launcher) offeredTypes(ctx context.Context, zones []string) (_ map[string]map[string]struct{}, walked bool, _ error) {
	l.offeredMu.Lock()
	defer l.offeredMu.Unlock()
	now := l.now()
	var stale []string
	for _, az := range zones {
		if o, ok := l.offered[az]; !ok || now.Sub(o.at) >= CatalogueTTL {
			stale = append(stale, az)
		}
	}
	if len(stale) > 0 {
		fresh := make(map[string]map[string]struct{}, len(stale))
		for _, az := range stale {
			fresh[az] = map[string]struct{}{} // a zone EC2 lists nothing for offers nothing
		}
		err := walk(fmt.Sprintf("instance type offerings in %v", stale), func(token *string) (*string, error) {
			out, err := l.api.DescribeInstanceTypeOfferings(ctx, &ec2.DescribeInstanceTypeOfferingsInput{
				LocationType: types.LocationTypeAvailabilityZone,
				Filters:      []types.Filter{{Name: aws.String("location"), Values: stale}},
				MaxResults:   aws.Int32(offeringsPageSize),
				NextToken:    token,
			})
			if err != nil {
				return nil, err
			}
			for _, o := range out.InstanceTypeOfferings {
				if set, ok := fresh[aws.ToString(o.Location)]; ok {
					set[string(o.InstanceType)] = struct{}{}
				}
			}
			return out.NextToken, nil
		})
		if err != nil {
			return nil, false, err
		}
		at := l.now()
		if l.offered == nil {
			l.offered = map[string]zoneOfferings{}
		}
		for az, set := range fresh {
			l.offered[az] = zoneOfferings{types: set, at: at}
		}
	}
	out := make(map[string]map[string]struct{}, len(zones))
	for _, az := range zones {
		out[az] = l.offered[az].types
	}
	return out, len(stale) > 0, nil
}

// walk calls page with each NextToken EC2 returns, starting with none,
// until EC2 returns none; what names the walk in errors. It gives up after
// maxCataloguePages pages: a NextToken loop must end in an error, not in a
// walk that never ends.
func walk(what string, page func(token *string) (next *string, err error)) error {
	var token *string
	for n := 1; n <= maxCataloguePages; n++ {
		next, err := page(token)
		if err != nil {
			return fmt.Errorf("describe %s (page %d): %w", what, n, err)
		}
		if aws.ToString(next) == "" {
			return nil
		}
		token = next
	}
	return fmt.Errorf("describe %s: more than %d pages; EC2's NextToken does not end", what, maxCataloguePages)
}

// offeredOnly leaves out of offerings those whose instance type EC2 does
// not offer in the subnet's zone (see Request.OfferedOnly).
func (l *Launcher) offeredOnly(ctx context.Context, req Request, offerings []offering, zones map[string]string) ([]offering, error) {
	zs := zoneNames(zones)
	l.loadShared(ctx, zs)
	offered, _, err := l.offeredTypes(ctx, zs)
	if err != nil {
		return nil, err
	}
	out := make([]offering, 0, len(offerings))
	for _, o := range offerings {
		if _, ok := offered[o.zone][o.instanceType]; ok {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: none of the instance types %v is offered in the subnets' zones %v",
			ErrInvalidRequest, req.InstanceTypes, zoneNames(zones))
	}
	if left := len(offerings) - len(out); left > 0 {
		l.log.DebugContext(ctx, "left out overrides whose type is not offered in the subnet's zone",
			"job_id", req.JobID, "left_out", left, "overrides", len(out))
	}
	return out, nil
}

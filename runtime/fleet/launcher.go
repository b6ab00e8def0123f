// Package fleet launches the single EC2 instance that runs one GitHub Actions
// job: one CreateFleet request of type instant over the profile's instance
// types x subnets, spot first and on-demand in the same call when spot has no
// capacity. It remembers offerings that just failed for lack of capacity and
// leaves them out of the next requests for a few minutes.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/jit-runners/jit-runners/runtime/launchspec"
	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// Capacity types, as CreateFleet spells them.
const (
	CapacityTypeSpot     = string(types.DefaultTargetCapacityTypeSpot)
	CapacityTypeOnDemand = string(types.DefaultTargetCapacityTypeOnDemand)
)

// DefaultRootDevice is the root device name of Amazon Linux AMIs, used for
// the root volume mapping when Request.RootDevice is empty.
const DefaultRootDevice = "/dev/xvda"

// launchTemplateVersion: the stack updates the template in place, and a
// launch always wants what the stack last wrote.
const launchTemplateVersion = "$Latest"

// maxVolumeGiB is the largest gp3 volume.
const maxVolumeGiB = 16384

// ErrInvalidRequest is wrapped by Launch's error when the Request itself is
// unusable; no EC2 call was made.
var ErrInvalidRequest = errors.New("invalid launch request")

// Request is one job's launch.
type Request struct {
	JobID      int64
	Repository string // owner/name; for logs
	Profile    string // launch profile name; for logs
	// InstanceTypes in order of preference. The allocation strategies
	// (price-capacity-optimized for spot, lowest-price for on-demand) pick
	// among them; the order only decides the order of the overrides.
	InstanceTypes []string
	// ImageID is set on every override, so one launch template serves every
	// profile. Empty leaves the launch template's image.
	ImageID string
	// Arch is the profile's architecture (x64, arm64); for logs. ImageID and
	// InstanceTypes must already agree with it.
	Arch             string
	SubnetIDs        []string
	LaunchTemplateID string // used at version $Latest
	Spot             bool   // spot first, on-demand on capacity errors; false = on-demand only
	// VolumeGiB is the root volume's size (launchspec.Runner.VolumeGiB when
	// 0): every override maps the root volume, encrypted, of the launch
	// spec's type, deleted on termination.
	VolumeGiB int
	// RootDevice is the AMI's root device name for that mapping; when
	// empty, Launch asks EC2 (DescribeImages, once per AMI). A name that is
	// not the AMI's root device would add a second volume instead of sizing
	// the root one.
	RootDevice string
	// OfferedOnly leaves out the (instance type, subnet) overrides whose
	// type EC2 does not offer in the subnet's zone, from the offerings
	// Catalogue caches. Set it for types not chosen for these subnets, such
	// as a shape's types from the region's catalogue, which are offered in
	// at least one of the zones, not necessarily in all. EC2 answers an
	// unoffered override with Unsupported, which this package reads as a
	// capacity error: skipped for a few minutes, then asked for again, and
	// a launch of types offered in none of the zones would be retried as
	// if capacity could come. With OfferedOnly that launch fails at once
	// with ErrInvalidRequest, before any CreateFleet. Without it (a
	// profile's own types, the platform team's choice) the overrides are
	// sent as they are, with no DescribeInstanceTypeOfferings call.
	OfferedOnly bool
	// Tags go on the instance and its volumes at launch.
	Tags map[string]string
}

// Result is the instance Launch started.
type Result struct {
	InstanceID       string
	InstanceType     string
	SubnetID         string
	AvailabilityZone string
	CapacityType     string // CapacityTypeSpot or CapacityTypeOnDemand
	// SpotFallback is true when spot was wanted and the instance is
	// on-demand: spot failed for capacity, or every spot offering was cached
	// as unavailable.
	SpotFallback bool
	// Errors are the per-override errors EC2 reported during this Launch,
	// including those of a spot request before the fallback and those
	// alongside the instance that did come back.
	Errors []LaunchError
}

// Option configures a Launcher.
type Option func(*Launcher)

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(x *Launcher) {
		if l != nil {
			x.log = l
		}
	}
}

// WithClock sets the clock of the unavailable-offerings cache.
func WithClock(now func() time.Time) Option {
	return func(x *Launcher) {
		if now != nil {
			x.now = now
		}
	}
}

// WithUnavailableTTL sets how long a capacity error keeps an offering out of
// launch requests (DefaultUnavailableTTL by default, and when d <= 0).
func WithUnavailableTTL(d time.Duration) Option {
	return func(x *Launcher) { x.ttl = d }
}

// Launcher launches, tags and terminates runner instances. Create it once per
// process (Lambda container) with New: it caches subnet zones for its whole
// life and unavailable offerings for their TTL. It is safe for concurrent use.
type Launcher struct {
	api         EC2API
	log         *slog.Logger
	now         func() time.Time
	ttl         time.Duration
	unavailable *UnavailableOfferings

	zonesMu sync.Mutex
	zones   map[string]string // subnet id -> Availability Zone

	imagesMu    sync.Mutex
	rootDevices map[string]string // AMI id -> root device name (AMIs are immutable)

	// The instance-type catalogue and the offerings per zone, each kept for
	// CatalogueTTL (see Catalogue).
	catalogueMu sync.Mutex
	catalogue   []shapes.InstanceType
	catalogueAt time.Time
	offeredMu   sync.Mutex
	offered     map[string]zoneOfferings // Availability Zone -> types offered there
	shared      CatalogueStore           // nil: not shared (WithCatalogueStore)
	walkWait    time.Duration            // WithCatalogueWait
}

// New returns a Launcher that calls api.
func New(api EC2API, opts ...Option) *Launcher {
	l := &Launcher{
		api:      api,
		log:      slog.New(slog.DiscardHandler),
		now:      time.Now,
		ttl:      DefaultUnavailableTTL,
		zones:    map[string]string{},
		walkWait: DefaultWalkWait,
	}
	for _, o := range opts {
		o(l)
	}
	l.unavailable = NewUnavailableOfferings(l.ttl, l.now)
	return l
}

// MarkUnavailable keeps the offering (capacityType is CapacityTypeSpot or
// CapacityTypeOnDemand) out of launch requests for the TTL. The
// Launcher calls it for every capacity error; callers feed it other evidence,
// such as spot interruption warnings.
func (l *Launcher) MarkUnavailable(capacityType, instanceType, az string) {
	l.unavailable.MarkUnavailable(capacityType, instanceType, az)
}

// IsUnavailable reports whether the offering is cached as unavailable.
func (l *Launcher) IsUnavailable(capacityType, instanceType, az string) bool {
	return l.unavailable.IsUnavailable(capacityType, instanceType, az)
}

// offering is one (instance type, subnet) override and the subnet's zone.
type offering struct {
	instanceType, subnetID, zone string
}

// Launch starts one instance for req with CreateFleet (type instant, target
// capacity 1) over every instance type x subnet that is not cached as
// unavailable (and, with req.OfferedOnly, whose type is offered in the
// subnet's zone).
//
// With req.Spot it asks for spot first. If no instance comes back and the
// errors are capacity errors (IsCapacityError) with no authorization or
// validation error among them, it asks again for on-demand before returning
// (Result.SpotFallback). When every spot offering is cached as unavailable it
// asks for on-demand straight away. The on-demand request leaves out the
// offerings cached as unavailable for on-demand, unless that would leave
// none: it is the last resort, so it then tries them all.
//
// When no instance comes back the error wraps a *LaunchFailure with every
// error EC2 reported; IsRetryable says whether a later attempt can succeed.
func (l *Launcher) Launch(ctx context.Context, req Request) (Result, error) {
	req, err := normalize(req)
	if err != nil {
		return Result{}, err
	}
	zones, err := l.subnetZones(ctx, req.SubnetIDs)
	if err != nil {
		return Result{}, err
	}
	if req.RootDevice == "" {
		if req.RootDevice, err = l.rootDevice(ctx, req.ImageID); err != nil {
			return Result{}, err
		}
	}
	offerings := make([]offering, 0, len(req.InstanceTypes)*len(req.SubnetIDs))
	for _, it := range req.InstanceTypes {
		for _, s := range req.SubnetIDs {
			offerings = append(offerings, offering{instanceType: it, subnetID: s, zone: zones[s]})
		}
	}
	if req.OfferedOnly {
		if offerings, err = l.offeredOnly(ctx, req, offerings, zones); err != nil {
			return Result{}, err
		}
	}
	log := l.log.With("job_id", req.JobID, "repository", req.Repository, "profile", req.Profile, "arch", req.Arch)

	var all []LaunchError
	fallback := false
	if req.Spot {
		avail := l.available(CapacityTypeSpot, offerings)
		if len(avail) == 0 {
			log.InfoContext(ctx, "every spot offering is cached as unavailable; launching on-demand")
			fallback = true
		} else {
			a := l.createFleet(ctx, log, req, CapacityTypeSpot, avail, zones)
			all = append(all, a.errs...)
			if a.placed != nil {
				return l.result(ctx, log, *a.placed, false, all), nil
			}
			if !shouldFallBack(a.errs) {
				return Result{}, &LaunchFailure{Errors: all, Err: a.err}
			}
			log.InfoContext(ctx, "no spot capacity; launching on-demand", "errors", len(a.errs))
			fallback = true
		}
	}

	avail := l.available(CapacityTypeOnDemand, offerings)
	if len(avail) == 0 {
		avail = offerings
	}
	a := l.createFleet(ctx, log, req, CapacityTypeOnDemand, avail, zones)
	all = append(all, a.errs...)
	if a.placed == nil {
		return Result{}, &LaunchFailure{Errors: all, Err: a.err}
	}
	return l.result(ctx, log, *a.placed, fallback, all), nil
}

func (l *Launcher) result(ctx context.Context, log *slog.Logger, r Result, fallback bool, errs []LaunchError) Result {
	r.SpotFallback = fallback
	r.Errors = errs
	log.InfoContext(ctx, "launched instance", "instance_id", r.InstanceID, "instance_type", r.InstanceType,
		"availability_zone", r.AvailabilityZone, "capacity_type", r.CapacityType, "spot_fallback", fallback,
		"override_errors", len(errs))
	return r
}

// shouldFallBack: at least one capacity error and nothing that an on-demand
// request would repeat for sure (authorization, validation, unknown codes).
// Throttling or quota errors mixed in do not prevent it.
func shouldFallBack(errs []LaunchError) bool {
	capacity := false
	for _, e := range errs {
		if !isRetryableCode(e.Code) {
			return false
		}
		capacity = capacity || IsCapacityError(e.Code)
	}
	return capacity
}

func (l *Launcher) available(capacityType string, offerings []offering) []offering {
	var out []offering
	for _, o := range offerings {
		if !l.unavailable.IsUnavailable(capacityType, o.instanceType, o.zone) {
			out = append(out, o)
		}
	}
	return out
}

// attempt is the outcome of one CreateFleet call.
type attempt struct {
	placed *Result // nil when no instance came back
	errs   []LaunchError
	err    error // the API-level error, if the call itself failed
}

func (l *Launcher) createFleet(ctx context.Context, log *slog.Logger, req Request, capacityType string, offerings []offering, zones map[string]string) attempt {
	in := fleetInput(req, capacityType, offerings)
	out, err := l.api.CreateFleet(ctx, in)
	if err != nil {
		le := LaunchError{Message: err.Error(), CapacityType: capacityType}
		if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
			le.Code, le.Message = apiErr.ErrorCode(), apiErr.ErrorMessage()
		}
		log.WarnContext(ctx, "create fleet failed", "capacity_type", capacityType, "code", le.Code, "error", err)
		return attempt{errs: []LaunchError{le}, err: fmt.Errorf("create fleet (%s): %w", capacityType, err)}
	}

	var a attempt
	for _, fe := range out.Errors {
		le := launchError(capacityType, fe, zones)
		a.errs = append(a.errs, le)
		if IsCapacityError(le.Code) && le.InstanceType != "" && le.AvailabilityZone != "" {
			l.unavailable.MarkUnavailable(le.CapacityType, le.InstanceType, le.AvailabilityZone)
		}
		log.DebugContext(ctx, "create fleet override error", "capacity_type", le.CapacityType, "code", le.Code,
			"instance_type", le.InstanceType, "availability_zone", le.AvailabilityZone, "subnet_id", le.SubnetID)
	}

	var extra []string
	for _, inst := range out.Instances {
		for _, id := range inst.InstanceIds {
			if a.placed != nil {
				extra = append(extra, id)
				continue
			}
			r := placed(capacityType, id, inst, zones)
			a.placed = &r
		}
	}
	if len(extra) > 0 {
		// Target capacity 1 should never return more; an extra instance would
		// run with no job, so do not leave it to the reaper.
		log.WarnContext(ctx, "create fleet returned more than one instance; terminating the extras", "instance_ids", extra)
		if _, err := l.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: extra}); err != nil {
			log.ErrorContext(ctx, "terminate extra instances", "instance_ids", extra, "error", err)
		}
	}
	return a
}

func launchError(capacityType string, fe types.CreateFleetError, zones map[string]string) LaunchError {
	le := LaunchError{
		Code:         aws.ToString(fe.ErrorCode),
		Message:      aws.ToString(fe.ErrorMessage),
		CapacityType: capacityType,
	}
	if fe.Lifecycle != "" {
		le.CapacityType = string(fe.Lifecycle)
	}
	if fe.LaunchTemplateAndOverrides != nil && fe.LaunchTemplateAndOverrides.Overrides != nil {
		o := fe.LaunchTemplateAndOverrides.Overrides
		le.InstanceType = string(o.InstanceType)
		le.SubnetID = aws.ToString(o.SubnetId)
		le.AvailabilityZone = aws.ToString(o.AvailabilityZone)
	}
	if le.AvailabilityZone == "" {
		le.AvailabilityZone = zones[le.SubnetID]
	}
	return le
}

// placed reads where the instance landed: the response's own fields where
// EC2 fills them, else the override that launched it.
func placed(capacityType, id string, inst types.CreateFleetInstance, zones map[string]string) Result {
	r := Result{
		InstanceID:       id,
		InstanceType:     string(inst.InstanceType),
		SubnetID:         aws.ToString(inst.SubnetId),
		AvailabilityZone: aws.ToString(inst.AvailabilityZone),
		CapacityType:     capacityType,
	}
	if inst.Lifecycle != "" {
		r.CapacityType = string(inst.Lifecycle)
	}
	if inst.LaunchTemplateAndOverrides != nil && inst.LaunchTemplateAndOverrides.Overrides != nil {
		o := inst.LaunchTemplateAndOverrides.Overrides
		if r.InstanceType == "" {
			r.InstanceType = string(o.InstanceType)
		}
		if r.SubnetID == "" {
			r.SubnetID = aws.ToString(o.SubnetId)
		}
		if r.AvailabilityZone == "" {
			r.AvailabilityZone = aws.ToString(o.AvailabilityZone)
		}
	}
	if r.AvailabilityZone == "" {
		r.AvailabilityZone = zones[r.SubnetID]
	}
	return r
}

// fleetInput builds the CreateFleet request for one capacity type.
func fleetInput(req Request, capacityType string, offerings []offering) *ec2.CreateFleetInput {
	overrides := make([]types.FleetLaunchTemplateOverridesRequest, 0, len(offerings))
	for _, o := range offerings {
		ov := types.FleetLaunchTemplateOverridesRequest{
			InstanceType: types.InstanceType(o.instanceType),
			SubnetId:     aws.String(o.subnetID),
			// Redundant with the subnet, but it makes EC2 echo the zone in
			// every per-override error, which keys the unavailable cache.
			AvailabilityZone: aws.String(o.zone),
		}
		if req.ImageID != "" {
			ov.ImageId = aws.String(req.ImageID)
		}
		if req.VolumeGiB > 0 {
			ov.BlockDeviceMappings = []types.FleetBlockDeviceMappingRequest{{
				DeviceName: aws.String(req.RootDevice),
				Ebs: &types.FleetEbsBlockDeviceRequest{
					VolumeSize:          aws.Int32(int32(req.VolumeGiB)),
					VolumeType:          types.VolumeType(launchspec.Runner.VolumeType),
					Encrypted:           aws.Bool(launchspec.Runner.Encrypted),
					DeleteOnTermination: aws.Bool(true),
				},
			}}
		}
		overrides = append(overrides, ov)
	}
	return &ec2.CreateFleetInput{
		Type: types.FleetTypeInstant,
		TargetCapacitySpecification: &types.TargetCapacitySpecificationRequest{
			TotalTargetCapacity:       aws.Int32(1),
			DefaultTargetCapacityType: types.DefaultTargetCapacityType(capacityType),
		},
		SpotOptions:     &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategyPriceCapacityOptimized},
		OnDemandOptions: &types.OnDemandOptionsRequest{AllocationStrategy: types.FleetOnDemandAllocationStrategyLowestPrice},
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{
				LaunchTemplateId: aws.String(req.LaunchTemplateID),
				Version:          aws.String(launchTemplateVersion),
			},
			Overrides: overrides,
		}},
		TagSpecifications: tagSpecifications(req.Tags, types.ResourceTypeInstance, types.ResourceTypeVolume),
	}
}

func tagSpecifications(tags map[string]string, resources ...types.ResourceType) []types.TagSpecification {
	if len(tags) == 0 {
		return nil // EC2 rejects a tag specification without tags
	}
	specs := make([]types.TagSpecification, 0, len(resources))
	for _, r := range resources {
		specs = append(specs, types.TagSpecification{ResourceType: r, Tags: ec2Tags(tags)})
	}
	return specs
}

// ec2Tags returns tags sorted by key, so requests are deterministic.
func ec2Tags(tags map[string]string) []types.Tag {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return out
}

// normalize checks req and fills defaults; duplicate instance types or
// subnets are dropped (EC2 rejects duplicate overrides).
func normalize(req Request) (Request, error) {
	req.InstanceTypes = dedupe(req.InstanceTypes)
	req.SubnetIDs = dedupe(req.SubnetIDs)
	switch {
	case len(req.InstanceTypes) == 0:
		return req, fmt.Errorf("%w: no instance types", ErrInvalidRequest)
	case len(req.SubnetIDs) == 0:
		return req, fmt.Errorf("%w: no subnets", ErrInvalidRequest)
	case req.LaunchTemplateID == "":
		return req, fmt.Errorf("%w: no launch template", ErrInvalidRequest)
	case req.VolumeGiB < 0 || req.VolumeGiB > maxVolumeGiB:
		return req, fmt.Errorf("%w: volume size %d GiB", ErrInvalidRequest, req.VolumeGiB)
	}
	if req.VolumeGiB == 0 {
		req.VolumeGiB = launchspec.Runner.VolumeGiB
	}
	return req, nil
}

// rootDevice returns the root device name of image (DefaultRootDevice for
// the launch template's own image), asking EC2 once per AMI: a custom AMI's
// root device may be /dev/sda1 (Ubuntu), and a mapping for any other name
// would add a second volume and leave the root one at the AMI's size.
func (l *Launcher) rootDevice(ctx context.Context, imageID string) (string, error) {
	if imageID == "" {
		return DefaultRootDevice, nil
	}
	l.imagesMu.Lock()
	defer l.imagesMu.Unlock()
	if name, ok := l.rootDevices[imageID]; ok {
		return name, nil
	}
	out, err := l.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil {
		return "", fmt.Errorf("describe image %s: %w", imageID, err)
	}
	for _, img := range out.Images {
		if aws.ToString(img.ImageId) != imageID {
			continue
		}
		name := aws.ToString(img.RootDeviceName)
		if name == "" {
			return "", fmt.Errorf("%w: image %s has no root device name", ErrInvalidRequest, imageID)
		}
		if l.rootDevices == nil {
			l.rootDevices = map[string]string{}
		}
		l.rootDevices[imageID] = name
		return name, nil
	}
	return "", fmt.Errorf("%w: image %s not found (deregistered, or not shared with this account)", ErrInvalidRequest, imageID)
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// subnetZones returns the Availability Zone of each subnet, asking EC2 only
// about subnets this Launcher has not seen. The lock is held across the call
// so that concurrent first launches make one DescribeSubnets, not many.
func (l *Launcher) subnetZones(ctx context.Context, subnetIDs []string) (map[string]string, error) {
	l.zonesMu.Lock()
	defer l.zonesMu.Unlock()
	var missing []string
	for _, id := range subnetIDs {
		if _, ok := l.zones[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		out, err := l.api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: missing})
		if err != nil {
			return nil, fmt.Errorf("describe subnets %v: %w", missing, err)
		}
		for _, s := range out.Subnets {
			if id, az := aws.ToString(s.SubnetId), aws.ToString(s.AvailabilityZone); id != "" && az != "" {
				l.zones[id] = az
			}
		}
	}
	zones := make(map[string]string, len(subnetIDs))
	for _, id := range subnetIDs {
		az, ok := l.zones[id]
		if !ok {
			return nil, fmt.Errorf("%w: subnet %s not found", ErrInvalidRequest, id)
		}
		zones[id] = az
	}
	return zones, nil
}

// Tag adds tags to an instance, e.g. Name once the caller has named the
// runner after the instance id.
func (l *Launcher) Tag(ctx context.Context, instanceID string, tags map[string]string) error {
	if instanceID == "" {
		return fmt.Errorf("%w: tag: no instance id", ErrInvalidRequest)
	}
	if len(tags) == 0 {
		return nil
	}
	if _, err := l.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{instanceID}, Tags: ec2Tags(tags)}); err != nil {
		return fmt.Errorf("tag instance %s: %w", instanceID, err)
	}
	return nil
}

// Terminate terminates an instance. An instance that does not exist (any
// more) is not an error, so callers can retry and race each other freely.
// It terminates without asking GitHub: callers that may hold a registered
// runner go through runtime/retire, which deletes the runner first.
func (l *Launcher) Terminate(ctx context.Context, instanceID string) error {
	if err := TerminateInstance(ctx, l.api, instanceID); err != nil {
		return err
	}
	l.log.InfoContext(ctx, "terminated instance", "instance_id", instanceID)
	return nil
}

// TerminateAPI is the part of the EC2 client TerminateInstance uses.
type TerminateAPI interface {
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

// TerminateInstance terminates one instance with api; an instance that does
// not exist (any more) is not an error.
func TerminateInstance(ctx context.Context, api TerminateAPI, instanceID string) error {
	if instanceID == "" {
		return fmt.Errorf("%w: terminate: no instance id", ErrInvalidRequest)
	}
	_, err := api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		if apiErr, ok := errors.AsType[smithy.APIError](err); ok && has(notFoundInstanceCodes, apiErr.ErrorCode()) {
			return nil
		}
		return fmt.Errorf("terminate instance %s: %w", instanceID, err)
	}
	return nil
}

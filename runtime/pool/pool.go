// Package pool launches instances into warm pools (config.Pool): the one
// definition of a pooled instance's launch, used by scaledown's sweep (which
// tops pools up to their size) and by scaleup (which launches a replacement
// for each pooled instance a job takes, so a busy pool refills within
// seconds rather than at the next sweep).
//
// A pooled instance is launched from the deployment's launch template like
// any runner, tagged tags.ForPool (no job, no runner yet), and recorded in
// one transaction with its pool marker in the JIT table (the bootstrap
// reads the marker, knows it is pooled and waits for a job without a
// deadline: see runtime/bootstrap). An instance whose record could not be
// written is terminated at once: it never had a runner.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// EC2 is what a pool launch needs of EC2; *fleet.Launcher implements it.
type EC2 interface {
	Launch(ctx context.Context, req fleet.Request) (fleet.Result, error)
	Terminate(ctx context.Context, instanceID string) error
	TemplateVersion(ctx context.Context, templateID string) (int64, error)
}

// Records records pooled instances; *state.Store implements it.
type Records interface {
	AddPooled(ctx context.Context, p state.PoolInstance, others ...types.TransactWriteItem) error
	RemovePooled(ctx context.Context, instanceID string) error
}

// Markers writes pool markers; *jitstore.Store implements it.
type Markers interface {
	Marker(instanceARN, kind string) types.TransactWriteItem
}

// versionTTL is how long a launcher trusts the launch template's latest
// version it read: a stack update that changes the template replaces pooled
// instances within this much of it (the sweep retires the older ones).
const versionTTL = 30 * time.Second

// Launcher launches pooled instances. Safe for concurrent use.
type Launcher struct {
	cfg      *config.Config
	ec2      EC2
	records  Records
	markers  Markers
	identity jitstore.Identity
	now      func() time.Time

	mu        sync.Mutex
	version   int64
	versionAt time.Time
}

// New returns a Launcher; now nil means time.Now.
func New(cfg *config.Config, ec2 EC2, records Records, markers Markers, identity jitstore.Identity, now func() time.Time) *Launcher {
	if now == nil {
		now = time.Now
	}
	return &Launcher{cfg: cfg, ec2: ec2, records: records, markers: markers, identity: identity, now: now}
}

// TemplateVersion is the launch template's latest version, read at most
// every versionTTL.
func (l *Launcher) TemplateVersion(ctx context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.version > 0 && l.now().Sub(l.versionAt) < versionTTL {
		return l.version, nil
	}
	v, err := l.ec2.TemplateVersion(ctx, l.cfg.Launch.LaunchTemplateID)
	if err != nil {
		return 0, err
	}
	l.version, l.versionAt = v, l.now()
	return v, nil
}

// Request is the launch of one instance into profile's pool of kind. A
// stopped pool is on-demand: AWS stops only spot instances of persistent
// requests.
func (l *Launcher) Request(profile, kind string) fleet.Request {
	p := l.cfg.Profiles[profile]
	return fleet.Request{
		Profile:          profile,
		InstanceTypes:    p.InstanceTypes,
		ImageID:          p.ImageID,
		Arch:             p.Arch,
		SubnetIDs:        l.cfg.Launch.SubnetIDs,
		LaunchTemplateID: l.cfg.Launch.LaunchTemplateID,
		Spot:             p.UseSpot() && kind == jitstore.PoolHot,
		VolumeGiB:        p.VolumeGiB,
		Tags:             tags.ForPool(l.cfg.NamePrefix, profile, kind),
	}
}

// Launch launches one instance into profile's pool of kind and records it.
// res.Errors are the launch's per-override errors (for metrics), also when
// it failed.
func (l *Launcher) Launch(ctx context.Context, profile, kind string) (p state.PoolInstance, res fleet.Result, err error) {
	if _, ok := l.cfg.Profiles[profile]; !ok {
		return p, res, fmt.Errorf("pool launch: no profile %q", profile)
	}
	version, err := l.TemplateVersion(ctx)
	if err != nil {
		return p, res, err
	}
	res, err = l.ec2.Launch(ctx, l.Request(profile, kind))
	if err != nil {
		return p, res, err
	}
	p = state.PoolInstance{
		InstanceID: res.InstanceID, Profile: profile, Kind: kind, State: state.PoolReady, LaunchedAt: l.now(),
		InstanceType: res.InstanceType, AvailabilityZone: res.AvailabilityZone, SubnetID: res.SubnetID,
		CapacityType: res.CapacityType, ImageID: l.cfg.Profiles[profile].ImageID, TemplateVersion: version,
	}
	if kind == jitstore.PoolStopped {
		p.State = state.PoolPreparing
	}
	if err := l.records.AddPooled(ctx, p, l.markers.Marker(l.identity.InstanceARN(res.InstanceID), kind)); err != nil {
		// A write whose answer was lost may have recorded it: the item is
		// removed first (unless a job claimed it meanwhile, which then
		// owns it), and only an instance no item owns is terminated. It
		// never had a runner.
		if rerr := l.records.RemovePooled(ctx, res.InstanceID); rerr != nil &&
			(!errors.Is(rerr, state.ErrNotPooled) || errors.Is(rerr, state.ErrPoolTaken)) {
			return p, res, errors.Join(err, fmt.Errorf("the pooled instance's record stays (a job claimed it, or the sweep drops it): %w", rerr))
		}
		if terr := l.ec2.Terminate(ctx, res.InstanceID); terr != nil {
			err = errors.Join(err, fmt.Errorf("terminate the unrecorded instance (the orphan rule will): %w", terr))
		}
		return p, res, err
	}
	return p, res, nil
}

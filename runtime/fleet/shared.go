package fleet

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// CatalogueStore keeps one copy of the instance-type catalogue for every
// Launcher of a deployment (every Lambda container); *state.Store
// implements it. data is the Launcher's own encoding; at is when it was read
// from EC2.
type CatalogueStore interface {
	LoadCatalogue(ctx context.Context, key string) (data []byte, at time.Time, ok bool, err error)
	SaveCatalogue(ctx context.Context, key string, data []byte, at time.Time) error
	// ClaimCatalogueWalk takes the lease of walking EC2 for key, unless
	// another process holds it (false).
	ClaimCatalogueWalk(ctx context.Context, key string, lease time.Duration) (bool, error)
}

// Of the Launchers that find no fresh stored catalogue at once, the one
// that claims the walk walks EC2; the others poll the store every
// walkPoll for up to Launcher.walkWait (WithCatalogueWait) and walk
// themselves only if nothing came. walkLease outlasts a walk (16 pages,
// seconds on AWS).
const (
	walkLease       = time.Minute
	walkPoll        = 500 * time.Millisecond
	DefaultWalkWait = 20 * time.Second
)

// WithCatalogueWait sets how long a Launcher waits for another one's walk
// of the catalogue before walking itself (DefaultWalkWait; 0 never waits).
func WithCatalogueWait(d time.Duration) Option { return func(x *Launcher) { x.walkWait = d } }

// WithCatalogueStore shares the catalogue through s: a Launcher whose own
// copy is missing or older than CatalogueTTL takes the stored one when that
// is fresh, and stores what it walks. Without it each Launcher walks EC2's
// catalogue itself, a dozen DescribeInstanceTypes pages per container:
// harmless for one container, but a burst of cold ones would spend the
// account's EC2 Describe request budget and seconds of each first launch.
func WithCatalogueStore(s CatalogueStore) Option {
	return func(x *Launcher) { x.shared = s }
}

// snapshot is the stored catalogue: every instance type of the region and
// the types offered in each of the key's zones.
type snapshot struct {
	Version int                   `json:"v"`
	Types   []shapes.InstanceType `json:"types"`
	Offered map[string][]string   `json:"offered"`
}

// snapshotVersion changes when snapshot's meaning does; a stored snapshot
// of another version is ignored (and replaced by the next walk).
const snapshotVersion = 1

// sharedKey names the stored catalogue of a set of zones (sorted).
func sharedKey(zones []string) string {
	return fmt.Sprintf("v%d/%s", snapshotVersion, strings.Join(zones, ","))
}

// loadShared takes the stored catalogue of zones when this Launcher's copy
// (of the types, or of any zone's offerings) is missing or stale and the
// stored one is fresh and newer. It reports whether this Launcher's copy is
// fresh now. A failed read is logged and ignored: the caller walks EC2
// itself.
func (l *Launcher) loadShared(ctx context.Context, zones []string) (fresh bool) {
	if l.shared == nil {
		return false
	}
	l.catalogueMu.Lock()
	defer l.catalogueMu.Unlock()
	l.offeredMu.Lock()
	defer l.offeredMu.Unlock()
	now := l.now()
	stale := l.catalogue == nil || now.Sub(l.catalogueAt) >= CatalogueTTL
	for _, az := range zones {
		o, ok := l.offered[az]
		stale = stale || !ok || now.Sub(o.at) >= CatalogueTTL
	}
	if !stale {
		return true
	}
	snap, at, ok := l.readShared(ctx, zones)
	if !ok || now.Sub(at) >= CatalogueTTL {
		return false
	}
	if l.catalogue == nil || at.After(l.catalogueAt) {
		l.catalogue, l.catalogueAt = snap.Types, at
	}
	if l.offered == nil {
		l.offered = map[string]zoneOfferings{}
	}
	for _, az := range zones {
		if o, ok := l.offered[az]; ok && !at.After(o.at) {
			continue
		}
		set := make(map[string]struct{}, len(snap.Offered[az]))
		for _, t := range snap.Offered[az] {
			set[t] = struct{}{}
		}
		l.offered[az] = zoneOfferings{types: set, at: at}
	}
	return true
}

// awaitWalk is for a Launcher whose copy is stale and found no fresh
// stored one: it claims the walk (and returns, to walk), or waits for the
// Launcher that holds the claim to store the catalogue. It reports whether
// the stored catalogue came; false means walk EC2 now.
func (l *Launcher) awaitWalk(ctx context.Context, zones []string) bool {
	if l.shared == nil || l.walkWait <= 0 {
		return false
	}
	won, err := l.shared.ClaimCatalogueWalk(ctx, sharedKey(zones), walkLease)
	if err != nil {
		l.log.WarnContext(ctx, "could not claim the walk of the instance-type catalogue; walking", "error", err)
		return false
	}
	if won {
		return false
	}
	deadline := time.Now().Add(l.walkWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(walkPoll):
		}
		if l.loadShared(ctx, zones) {
			return true
		}
	}
	l.log.WarnContext(ctx, "another process's walk of the instance-type catalogue stored nothing in time; walking", "waited", l.walkWait.String())
	return false
}

// readShared reads and decodes the stored catalogue of zones; ok is false
// when there is none usable (none stored, another version, a zone missing,
// or a failed read, which is logged).
func (l *Launcher) readShared(ctx context.Context, zones []string) (snapshot, time.Time, bool) {
	data, at, ok, err := l.shared.LoadCatalogue(ctx, sharedKey(zones))
	if err != nil {
		l.log.WarnContext(ctx, "could not read the shared instance-type catalogue; asking EC2", "error", err)
		return snapshot{}, time.Time{}, false
	}
	if !ok {
		return snapshot{}, time.Time{}, false
	}
	snap, err := decodeSnapshot(data)
	if err != nil || snap.Version != snapshotVersion || len(snap.Types) == 0 {
		l.log.WarnContext(ctx, "the shared instance-type catalogue is unusable; asking EC2", "error", err, "version", snap.Version)
		return snapshot{}, time.Time{}, false
	}
	for _, az := range zones {
		if _, ok := snap.Offered[az]; !ok {
			return snapshot{}, time.Time{}, false
		}
	}
	return snap, at, true
}

// saveShared stores this Launcher's catalogue of zones, dated by its
// oldest part. A failed write is logged: the next container walks again.
func (l *Launcher) saveShared(ctx context.Context, zones []string) {
	if l.shared == nil {
		return
	}
	snap := snapshot{Version: snapshotVersion, Offered: map[string][]string{}}
	l.catalogueMu.Lock()
	types, at := l.catalogue, l.catalogueAt
	l.catalogueMu.Unlock()
	snap.Types = types
	l.offeredMu.Lock()
	for _, az := range zones {
		o, ok := l.offered[az]
		if !ok {
			l.offeredMu.Unlock()
			return
		}
		if o.at.Before(at) {
			at = o.at
		}
		names := make([]string, 0, len(o.types))
		for t := range o.types {
			names = append(names, t)
		}
		slices.Sort(names)
		snap.Offered[az] = names
	}
	l.offeredMu.Unlock()
	if len(snap.Types) == 0 {
		return
	}
	data, err := encodeSnapshot(snap)
	if err == nil {
		err = l.shared.SaveCatalogue(ctx, sharedKey(zones), data, at)
	}
	if err != nil {
		l.log.WarnContext(ctx, "could not store the shared instance-type catalogue", "error", err)
		return
	}
	l.log.InfoContext(ctx, "stored the shared instance-type catalogue", "zones", zones, "types", len(snap.Types), "bytes", len(data))
}

// RefreshCatalogue keeps the stored catalogue of the subnets' zones fresh,
// so that scaleup's containers read it rather than walk EC2: when the
// stored one is missing or older than half of CatalogueTTL, it walks EC2
// and stores the result (refreshed true). scaledown's sweep calls it.
// Without a CatalogueStore there is nothing to share, and it does nothing.
func (l *Launcher) RefreshCatalogue(ctx context.Context, subnetIDs []string) (refreshed bool, err error) {
	if l.shared == nil {
		return false, nil
	}
	zones, err := l.catalogueZones(ctx, subnetIDs)
	if err != nil {
		return false, err
	}
	// This Launcher's own copy, stored or read by it, is as new as the
	// stored one or newer: when it is within half the TTL, so is the
	// stored one, and the sweep needs no read.
	if l.ownAge(zones) < CatalogueTTL/2 {
		return false, nil
	}
	if _, at, ok := l.readShared(ctx, zones); ok && l.now().Sub(at) < CatalogueTTL/2 {
		return false, nil
	}
	// Walk EC2 anew, whatever this Launcher holds: its copy may be the
	// stored one, read hours ago.
	l.catalogueMu.Lock()
	l.catalogue = nil
	l.catalogueMu.Unlock()
	l.offeredMu.Lock()
	for _, az := range zones {
		delete(l.offered, az)
	}
	l.offeredMu.Unlock()
	if _, _, err := l.offeredTypes(ctx, zones); err != nil {
		return false, err
	}
	if _, _, err := l.instanceTypes(ctx); err != nil {
		return false, err
	}
	l.saveShared(ctx, zones)
	return true, nil
}

// ownAge is the age of this Launcher's copy of the catalogue of zones (its
// oldest part); a missing part makes it older than any TTL.
func (l *Launcher) ownAge(zones []string) time.Duration {
	l.catalogueMu.Lock()
	defer l.catalogueMu.Unlock()
	l.offeredMu.Lock()
	defer l.offeredMu.Unlock()
	if l.catalogue == nil {
		return math.MaxInt64
	}
	at := l.catalogueAt
	for _, az := range zones {
		o, ok := l.offered[az]
		if !ok {
			return math.MaxInt64
		}
		if o.at.Before(at) {
			at = o.at
		}
	}
	return l.now().Sub(at)
}

func encodeSnapshot(s snapshot) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(s); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxSnapshotBytes bounds a decoded snapshot (a few hundred KB in practice).
const maxSnapshotBytes = 16 << 20

func decodeSnapshot(data []byte) (snapshot, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return snapshot{}, err
	}
	var s snapshot
	if err := json.NewDecoder(io.LimitReader(zr, maxSnapshotBytes)).Decode(&s); err != nil {
		return snapshot{}, err
	}
	return s, nil
}

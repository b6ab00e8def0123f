package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// A pooled instance is launched before any job asks for it (warm pools,
// config.Pool) and has an item of its own in the jobs table, keyed
// "pool#<instance-id>", until a job takes it: then the job's record owns
// the instance as if it had been launched for the job, and the pool item
// is deleted in the same transaction that records the launch and hands the
// JIT config over. So an instance belongs to exactly one item at any time,
// a pool item or a job record, and serves at most one job.
//
// A pool item holds a runner slot from its launch (slot index, sort key
// "<profile>#pool#<id>"), so pooled instances count against maxRunners and
// the profile's cap; the slot passes to the job that takes it. While the
// instance can be taken it is in the sparse pool index under
// "<profile>#<kind>", oldest first: a job's scaleup reads a few candidates
// and claims one with a conditional write, so no two jobs take the same
// instance even when the (eventually consistent) index lists it to both.

// Pool states, in attribute poolState.
const (
	// PoolPreparing: a stopped-pool instance on its first boot, not yet
	// prepared (its bootstrap has not consumed its pool marker).
	PoolPreparing = "preparing"
	// PoolStopping: prepared; the control plane asked EC2 to stop it.
	PoolStopping = "stopping"
	// PoolReady: can be taken (in the pool index). A hot instance is ready
	// from its launch: a job that takes it before it has booted gets it as
	// soon as it has.
	PoolReady = "ready"
	// PoolClaimed: a job's scaleup has claimed it and is handing it over.
	PoolClaimed = "claimed"
	// PoolTaken: a job took it (the launch's transaction): the item is a
	// tombstone that no longer holds a slot and cannot be taken or
	// removed, so that a sweep that saw the instance pooled before the
	// job took it finds it owned (GetPooled) and leaves it to the job's
	// record. It expires with TTL a day later.
	PoolTaken = "taken"
)

// takenTTL is how long a taken pooled instance's tombstone lives: far
// longer than any sweep's view of the instance can be stale.
const takenTTL = 24 * time.Hour

// Pool-item attributes and the pool index.
const (
	AttrPoolKey   = "poolKey"   // S: "<profile>#<kind>" while the instance can be taken
	AttrPoolSince = "poolSince" // N: unix milliseconds since it can be taken: oldest first

	attrPoolKind        = "poolKind"
	attrPoolState       = "poolState"
	attrPoolStateSince  = "poolStateSince"
	attrImageID         = "imageId"
	attrTemplateVersion = "templateVersion"
	// attrFromPool on a job record: the kind of pool its instance came from.
	attrFromPool = "fromPool"

	// PoolIndex is the sparse index of the pooled instances that can be
	// taken, by profile and kind, oldest first.
	PoolIndex = "pool-index"
)

const poolKeyPrefix = "pool#"

func poolPK(instanceID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: poolKeyPrefix + instanceID}}
}

func poolIndexKey(profile, kind string) string { return profile + "#" + kind }

// poolSlotKey is a pool item's slot-index sort key: under its profile, like
// a job's (slotKey), so CountSlots counts both.
func poolSlotKey(profile, instanceID string) string {
	return profile + "#" + poolKeyPrefix + instanceID
}

// PoolInstance is a pooled instance's item.
type PoolInstance struct {
	InstanceID string
	Profile    string
	Kind       string // jitstore.PoolHot or jitstore.PoolStopped
	State      string // PoolPreparing ... PoolClaimed
	// StateSince is when the item entered State.
	StateSince time.Time
	LaunchedAt time.Time
	// Where and what it runs, copied to the job's record when a job takes it.
	InstanceType     string
	AvailabilityZone string
	SubnetID         string
	CapacityType     string
	// ImageID and TemplateVersion it was launched from: an instance of an
	// older image or launch template is replaced.
	ImageID         string
	TemplateVersion int64
	// ClaimID and ClaimExpiresAt: the claim of a job's scaleup (PoolClaimed).
	ClaimID        string
	ClaimExpiresAt time.Time
}

// Age is how long the instance has existed at now.
func (p *PoolInstance) Age(now time.Time) time.Duration { return now.Sub(p.LaunchedAt) }

// AddPooled records a pooled instance just launched, with the others (the
// instance's pool marker in the JIT table, jitstore.Store.Marker) in the
// same transaction. A hot instance can be taken at once; a stopped one
// starts PoolPreparing.
func (s *Store) AddPooled(ctx context.Context, p PoolInstance, others ...types.TransactWriteItem) error {
	now := s.now()
	if p.LaunchedAt.IsZero() {
		p.LaunchedAt = now
	}
	if p.State == "" {
		p.State = PoolPreparing
	}
	item := poolPK(p.InstanceID)
	for k, v := range map[string]types.AttributeValue{
		attrInstanceID:      &types.AttributeValueMemberS{Value: p.InstanceID},
		attrProfile:         &types.AttributeValueMemberS{Value: p.Profile},
		attrPoolKind:        &types.AttributeValueMemberS{Value: p.Kind},
		attrPoolState:       &types.AttributeValueMemberS{Value: p.State},
		attrPoolStateSince:  num(now.UnixMilli()),
		attrLaunchedAt:      num(p.LaunchedAt.UnixMilli()),
		attrInstanceType:    &types.AttributeValueMemberS{Value: orDash(p.InstanceType)},
		attrAZ:              &types.AttributeValueMemberS{Value: orDash(p.AvailabilityZone)},
		attrSubnetID:        &types.AttributeValueMemberS{Value: orDash(p.SubnetID)},
		attrCapacityType:    &types.AttributeValueMemberS{Value: orDash(p.CapacityType)},
		attrImageID:         &types.AttributeValueMemberS{Value: orDash(p.ImageID)},
		attrTemplateVersion: num(p.TemplateVersion),
		AttrSlot:            &types.AttributeValueMemberS{Value: LiveValue},
		AttrSlotKey:         &types.AttributeValueMemberS{Value: poolSlotKey(p.Profile, p.InstanceID)},
		AttrUpdatedAt:       num(now.UnixMilli()),
		AttrExpiresAt:       num(now.Add(s.retention).Unix()),
	} {
		item[k] = v
	}
	if p.State == PoolReady {
		item[AttrPoolKey] = &types.AttributeValueMemberS{Value: poolIndexKey(p.Profile, p.Kind)}
		item[AttrPoolSince] = num(now.UnixMilli())
	}
	put := &types.Put{TableName: aws.String(s.table), Item: item}
	var err error
	if len(others) == 0 {
		_, err = s.api.PutItem(ctx, &dynamodb.PutItemInput{TableName: put.TableName, Item: put.Item})
	} else {
		_, err = s.api.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
			TransactItems: append([]types.TransactWriteItem{{Put: put}}, others...),
		})
	}
	if err != nil {
		return fmt.Errorf("record pooled instance %s: %w", p.InstanceID, err)
	}
	return nil
}

// PoolCandidates lists up to limit instances of profile's pool of kind that
// can be taken, oldest first. The index is eventually consistent: one
// listed may have been taken a moment ago (ClaimPooled then says so).
func (s *Store) PoolCandidates(ctx context.Context, profile, kind string, limit int32) ([]*PoolInstance, error) {
	out, err := s.api.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(PoolIndex),
		KeyConditionExpression:    aws.String("#k = :k"),
		ExpressionAttributeNames:  map[string]string{"#k": AttrPoolKey},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": &types.AttributeValueMemberS{Value: poolIndexKey(profile, kind)}},
		ScanIndexForward:          aws.Bool(true),
		Limit:                     aws.Int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("query the %s pool of %s: %w", kind, profile, err)
	}
	pool := make([]*PoolInstance, 0, len(out.Items))
	for _, item := range out.Items {
		pool = append(pool, decodePool(item))
	}
	return pool, nil
}

// Pooled lists every pooled instance of profile, whatever its state (one
// paginated Query of the slot index: a pool item holds a slot all its life).
func (s *Store) Pooled(ctx context.Context, profile string) ([]*PoolInstance, error) {
	in := &dynamodb.QueryInput{
		TableName:              aws.String(s.table),
		IndexName:              aws.String(SlotIndex),
		KeyConditionExpression: aws.String("#slot = :one AND begins_with(#slotKey, :p)"),
		ExpressionAttributeNames: map[string]string{
			"#slot": AttrSlot, "#slotKey": AttrSlotKey,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":one": &types.AttributeValueMemberS{Value: LiveValue},
			":p":   &types.AttributeValueMemberS{Value: profile + "#" + poolKeyPrefix},
		},
	}
	var pool []*PoolInstance
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list the pool of %s: %w", profile, err)
		}
		for _, item := range out.Items {
			pool = append(pool, decodePool(item))
		}
		if len(out.LastEvaluatedKey) == 0 {
			return pool, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// ClaimPooled takes a ready instance of profile's pool of kind for claimID
// until the lease ends: one conditional write, so of two jobs reaching for
// the same instance one wins and the other is told false (and tries the
// next). The instance leaves the pool index.
func (s *Store) ClaimPooled(ctx context.Context, instanceID, profile, kind, claimID string, lease time.Duration) (bool, error) {
	now := s.now()
	return s.updateKey(ctx, poolPK(instanceID), "pooled instance "+instanceID,
		"SET #state = :claimed, #since = :now, #claimId = :claim, #claimExp = :exp, #updated = :now REMOVE #key, #poolSince",
		"#key = :key",
		map[string]string{"#state": attrPoolState, "#since": attrPoolStateSince, "#claimId": attrClaimID,
			"#claimExp": attrClaimExpiresAt, "#updated": AttrUpdatedAt, "#key": AttrPoolKey, "#poolSince": AttrPoolSince},
		map[string]types.AttributeValue{
			":claimed": &types.AttributeValueMemberS{Value: PoolClaimed}, ":now": num(now.UnixMilli()),
			":claim": &types.AttributeValueMemberS{Value: claimID}, ":exp": num(now.Add(lease).UnixMilli()),
			":key": &types.AttributeValueMemberS{Value: poolIndexKey(profile, kind)},
		})
}

// ReturnPooled puts an instance claimed by claimID back in its pool, as it
// was: nothing was handed to it (the JIT config could not be generated).
func (s *Store) ReturnPooled(ctx context.Context, p *PoolInstance, claimID string) error {
	now := s.now()
	_, err := s.updateKey(ctx, poolPK(p.InstanceID), "pooled instance "+p.InstanceID,
		"SET #state = :ready, #since = :now, #key = :key, #poolSince = :now, #updated = :now REMOVE #claimId, #claimExp",
		"#claimId = :claim AND #state = :claimed",
		map[string]string{"#state": attrPoolState, "#since": attrPoolStateSince, "#claimId": attrClaimID,
			"#claimExp": attrClaimExpiresAt, "#updated": AttrUpdatedAt, "#key": AttrPoolKey, "#poolSince": AttrPoolSince},
		map[string]types.AttributeValue{
			":ready": &types.AttributeValueMemberS{Value: PoolReady}, ":now": num(now.UnixMilli()),
			":claim": &types.AttributeValueMemberS{Value: claimID}, ":claimed": &types.AttributeValueMemberS{Value: PoolClaimed},
			":key": &types.AttributeValueMemberS{Value: poolIndexKey(p.Profile, p.Kind)},
		})
	return err
}

// TakePooled turns the item of an instance claimed by claimID into its
// tombstone (PoolTaken: no slot, no claim, out of the pool index), as an
// item of the transaction that records the job's launch on it
// (Launch.With): the job's record owns the instance from then on, and
// its slot is the job's.
func (s *Store) TakePooled(instanceID, claimID string) types.TransactWriteItem {
	now := s.now()
	return types.TransactWriteItem{Update: &types.Update{
		TableName: aws.String(s.table),
		Key:       poolPK(instanceID),
		UpdateExpression: aws.String("SET #state = :taken, #since = :now, #updated = :now, #exp = :exp " +
			"REMOVE #slot, #slotKey, #key, #poolSince, #claimExp"),
		ConditionExpression: aws.String("#claimId = :claim AND #state = :claimed"),
		ExpressionAttributeNames: map[string]string{
			"#claimId": attrClaimID, "#state": attrPoolState, "#since": attrPoolStateSince, "#updated": AttrUpdatedAt,
			"#exp": AttrExpiresAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey, "#key": AttrPoolKey, "#poolSince": AttrPoolSince,
			"#claimExp": attrClaimExpiresAt,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":claim": &types.AttributeValueMemberS{Value: claimID}, ":taken": &types.AttributeValueMemberS{Value: PoolTaken},
			":claimed": &types.AttributeValueMemberS{Value: PoolClaimed}, ":now": num(now.UnixMilli()),
			":exp": num(now.Add(takenTTL).Unix()),
		},
	}}
}

// ErrPoolLost is returned by RecordLaunch when the pooled instance's
// claim no longer held (its lease ran out and scaledown retired it): the
// job's own claim may still hold, and nothing was written.
var ErrPoolLost = errors.New("the claim of the pooled instance was lost")

// ErrPoolClaimed: the pooled instance was claimed by a job meanwhile.
var ErrPoolClaimed = errors.New("pooled instance claimed by a job")

// ErrNotPooled: the instance is not pooled (any more): a job took it (its
// record owns the instance now; the item is a PoolTaken tombstone, and the
// error is also ErrPoolTaken), or its item was removed before.
var ErrNotPooled = errors.New("instance not pooled (any more)")

// ErrPoolTaken: a job took the pooled instance.
var ErrPoolTaken = errors.New("pooled instance taken by a job")

// RemovePooled deletes a pooled instance's item before the instance is
// terminated (retired, gone, past its age): unless a job holds an
// unexpired claim on it (ErrPoolClaimed) or the item is gone
// (ErrNotPooled: a job took the instance since the caller read the pool,
// and it must not be terminated as a pooled one). A claim whose lease ran
// out was abandoned by its scaleup, which handed nothing over (the
// hand-over makes the item a tombstone).
func (s *Store) RemovePooled(ctx context.Context, instanceID string) error {
	_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       poolPK(instanceID),
		ConditionExpression: aws.String("attribute_exists(#pk) AND #state <> :taken AND " +
			"(attribute_not_exists(#claimExp) OR #claimExp < :now)"),
		ExpressionAttributeNames: map[string]string{"#claimExp": attrClaimExpiresAt, "#pk": AttrPK, "#state": attrPoolState},
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": num(s.now().UnixMilli()),
			":taken": &types.AttributeValueMemberS{Value: PoolTaken}},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		if len(ccf.Item) == 0 {
			return fmt.Errorf("remove pooled instance %s: %w", instanceID, ErrNotPooled)
		}
		if getS(ccf.Item, attrPoolState) == PoolTaken {
			return fmt.Errorf("remove pooled instance %s: %w: %w", instanceID, ErrNotPooled, ErrPoolTaken)
		}
		return fmt.Errorf("remove pooled instance %s: %w", instanceID, ErrPoolClaimed)
	}
	if err != nil {
		return fmt.Errorf("remove pooled instance %s: %w", instanceID, err)
	}
	return nil
}

// AdvancePooled moves an unclaimed pooled instance from state from to to
// (preparing → stopping → ready); reaching PoolReady puts it in the pool
// index. It reports false when the item was not in from (moved or gone).
func (s *Store) AdvancePooled(ctx context.Context, p *PoolInstance, from, to string) (bool, error) {
	now := s.now()
	expr := "SET #state = :to, #since = :now, #updated = :now"
	names := map[string]string{"#state": attrPoolState, "#since": attrPoolStateSince, "#updated": AttrUpdatedAt}
	vals := map[string]types.AttributeValue{
		":to": &types.AttributeValueMemberS{Value: to}, ":from": &types.AttributeValueMemberS{Value: from},
		":now": num(now.UnixMilli()),
	}
	if to == PoolReady {
		expr += ", #key = :key, #poolSince = :now"
		names["#key"], names["#poolSince"] = AttrPoolKey, AttrPoolSince
		vals[":key"] = &types.AttributeValueMemberS{Value: poolIndexKey(p.Profile, p.Kind)}
	}
	return s.updateKey(ctx, poolPK(p.InstanceID), "pooled instance "+p.InstanceID, expr, "#state = :from", names, vals)
}

// GetPooled reads a pooled instance's item consistently; ok is false when
// there is none (never pooled, or taken by a job).
func (s *Store) GetPooled(ctx context.Context, instanceID string) (p *PoolInstance, ok bool, err error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: poolPK(instanceID), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, false, fmt.Errorf("read pooled instance %s: %w", instanceID, err)
	}
	if len(out.Item) == 0 {
		return nil, false, nil
	}
	return decodePool(out.Item), true, nil
}

func decodePool(item map[string]types.AttributeValue) *PoolInstance {
	ms := func(name string) time.Time {
		if v := getN(item, name); v != 0 {
			return time.UnixMilli(v)
		}
		return time.Time{}
	}
	undash := func(name string) string {
		if v := getS(item, name); v != "-" {
			return v
		}
		return ""
	}
	p := &PoolInstance{
		InstanceID:       getS(item, attrInstanceID),
		Profile:          getS(item, attrProfile),
		Kind:             getS(item, attrPoolKind),
		State:            getS(item, attrPoolState),
		StateSince:       ms(attrPoolStateSince),
		LaunchedAt:       ms(attrLaunchedAt),
		InstanceType:     undash(attrInstanceType),
		AvailabilityZone: undash(attrAZ),
		SubnetID:         undash(attrSubnetID),
		CapacityType:     undash(attrCapacityType),
		ImageID:          undash(attrImageID),
		TemplateVersion:  getN(item, attrTemplateVersion),
		ClaimID:          getS(item, attrClaimID),
		ClaimExpiresAt:   ms(attrClaimExpiresAt),
	}
	if p.InstanceID == "" {
		p.InstanceID = strings.TrimPrefix(getS(item, AttrPK), poolKeyPrefix)
	}
	return p
}

// poolLaunchAttributes are what a job's launch record adds when its
// instance came from a pool.
func poolLaunchAttributes(kind string) (string, map[string]string, map[string]types.AttributeValue) {
	if kind == "" {
		return "", nil, nil
	}
	return ", #fromPool = :fromPool", map[string]string{"#fromPool": attrFromPool},
		map[string]types.AttributeValue{":fromPool": &types.AttributeValueMemberS{Value: kind}}
}

package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Launch-side attributes, written by scaleup.
const (
	attrPhase          = "phase"
	attrClaimID        = "claimId"
	attrClaimExpiresAt = "claimExpiresAt"
	attrLaunchedAt     = "launchedAt"
	attrInstanceID     = "instanceId"
	attrInstanceType   = "instanceType"
	attrAZ             = "availabilityZone"
	attrSubnetID       = "subnetId"
	attrCapacityType   = "capacityType"
	attrSpotFallback   = "spotFallback"
	attrLaunchAttempts = "launchAttempts"
	attrLastError      = "lastError"
	// The runner the instance was launched with; attrRunnerName and
	// attrRunnerID hold the runner the job ran on (often another one).
	attrInstanceRunnerName = "instanceRunnerName"
	attrInstanceRunnerID   = "instanceRunnerId"
)

// Phases of a job's launch, in attribute "phase".
const (
	PhaseClaimed  = "claimed"
	PhaseLaunched = "launched"
	PhaseFailed   = "failed"
	PhaseSkipped  = "skipped"
)

// ClaimOutcome is what Claim found.
type ClaimOutcome int

const (
	// Claimed: the caller holds the job until the lease ends and must launch
	// it, then RecordLaunch or ReleaseClaim.
	Claimed ClaimOutcome = iota
	// AlreadyLaunched: a runner was launched for the job before; nothing to do.
	AlreadyLaunched
	// ClaimHeld: another invocation holds an unexpired claim; try later.
	ClaimHeld
	// JobStarted: GitHub already reported the job in progress or completed
	// on a runner that is not this deployment's, or cancelled it; nothing
	// to launch. A job that started on one of our runners (launched for
	// another job, which now needs a runner) is still claimed and launched.
	JobStarted
	// NoRecord: the job has no record (it expired); nothing to launch.
	NoRecord
)

func (o ClaimOutcome) String() string {
	return [...]string{"claimed", "already_launched", "claim_held", "job_started", "no_record"}[o]
}

// ErrClaimLost is returned when the caller's claim was taken over (its lease
// ran out); the caller must undo what it launched.
var ErrClaimLost = errors.New("claim lost: the lease ran out and another invocation took the job over")

// Claim takes the job for claimID for lease, reserving a runner slot of
// profile. One conditional write decides: the job must have a record, no
// launch, no live claim of another invocation, and no in-progress or
// completed status unless it started on one of our runners. An expired
// claim (its holder died mid-way) is taken over.
//
// GitHub gives a queued job to any idle runner whose labels match, so a job
// often runs on the runner launched for another one; that other job then
// waits for the runner launched for this one. Launching exactly one runner
// per job of ours, whoever runs on it, keeps the two counts equal.
func (s *Store) Claim(ctx context.Context, jobID int64, claimID, profile string, lease time.Duration) (ClaimOutcome, error) {
	out, _, err := s.ClaimAttempt(ctx, jobID, claimID, profile, lease)
	return out, err
}

// ClaimAttempt is Claim, and also returns the job's launch attempt that the
// claim counts (1 for its first claim): the runner launched under the claim
// is named after it (tags.RunnerName).
func (s *Store) ClaimAttempt(ctx context.Context, jobID int64, claimID, profile string, lease time.Duration) (ClaimOutcome, int64, error) {
	now := s.now()
	upd, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key:       jobKey(jobID),
		UpdateExpression: aws.String("SET #claimId = :claim, #claimExp = :exp, #slot = :live, #slotKey = :slotKey, #phase = :phase, " +
			"#updated = :now, #live = :live ADD #attempts :one REMOVE #wait"),
		ConditionExpression: aws.String("attribute_exists(#pk) AND attribute_not_exists(#launchedAt) AND " +
			"(attribute_not_exists(#rank) OR #rank < :started OR attribute_exists(#ranOn)) AND " +
			"(attribute_not_exists(#claimExp) OR #claimExp < :now OR #claimId = :claim)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": AttrPK, "#claimId": attrClaimID, "#claimExp": attrClaimExpiresAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey,
			"#phase": attrPhase, "#updated": AttrUpdatedAt, "#live": AttrLive, "#attempts": attrLaunchAttempts,
			"#launchedAt": attrLaunchedAt, "#rank": attrStatusRank, "#ranOn": attrRunnerJob, "#wait": AttrWait,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":claim":   &types.AttributeValueMemberS{Value: claimID},
			":exp":     num(now.Add(lease).UnixMilli()),
			":slotKey": &types.AttributeValueMemberS{Value: slotKey(profile, jobID)},
			":phase":   &types.AttributeValueMemberS{Value: PhaseClaimed},
			":now":     num(now.UnixMilli()),
			":live":    &types.AttributeValueMemberS{Value: LiveValue},
			":one":     num(1),
			":started": num(2),
		},
		ReturnValues:                        types.ReturnValueUpdatedNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err == nil {
		return Claimed, getN(upd.Attributes, attrLaunchAttempts), nil
	}
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		return 0, 0, fmt.Errorf("claim job %d: %w", jobID, err)
	}
	old := ccf.Item
	switch {
	case len(old) == 0:
		return NoRecord, 0, nil
	case old[attrLaunchedAt] != nil:
		return AlreadyLaunched, 0, nil
	case getN(old, attrStatusRank) >= 2 && old[attrRunnerJob] == nil:
		return JobStarted, 0, nil
	default:
		return ClaimHeld, 0, nil
	}
}

// Launch describes the instance launched for a job.
type Launch struct {
	InstanceID       string
	InstanceType     string
	AvailabilityZone string
	SubnetID         string
	CapacityType     string // "spot" or "on-demand"
	SpotFallback     bool
	// RunnerName and RunnerID: the runner the instance was launched with.
	RunnerName string
	RunnerID   int64
	LaunchedAt time.Time
	// FromPool is the kind of warm pool the instance was taken from (empty:
	// launched for the job); With then holds the pool item's tombstone
	// (Store.TakePooled).
	FromPool string
	// CandidateTypes are the instance types the launch offered EC2 when a
	// job's shape labels chose them (runtime/shapes); empty otherwise.
	CandidateTypes []string
	// With are written in the same transaction as the launch, all or
	// nothing: the JIT-config hand-over (jitstore.Store.Handover), so that
	// no instance gets a runner configuration for a launch that was not
	// recorded (a lost claim).
	With []types.TransactWriteItem
}

// RecordLaunch records the launch on the job, provided claimID still holds
// it; otherwise it returns ErrClaimLost and writes nothing (l.With
// included).
func (s *Store) RecordLaunch(ctx context.Context, jobID int64, claimID string, l Launch) error {
	now := s.now()
	if l.LaunchedAt.IsZero() {
		l.LaunchedAt = now
	}
	names := map[string]string{
		"#phase": attrPhase, "#launchedAt": attrLaunchedAt, "#instance": attrInstanceID, "#type": attrInstanceType,
		"#az": attrAZ, "#subnet": attrSubnetID, "#capacity": attrCapacityType, "#fallback": attrSpotFallback,
		"#runnerName": attrInstanceRunnerName, "#runnerId": attrInstanceRunnerID, "#updated": AttrUpdatedAt,
		"#claimExp": attrClaimExpiresAt, "#lastError": attrLastError, "#claimId": attrClaimID,
	}
	vals := map[string]types.AttributeValue{
		":phase":    &types.AttributeValueMemberS{Value: PhaseLaunched},
		":at":       num(l.LaunchedAt.UnixMilli()),
		":instance": &types.AttributeValueMemberS{Value: l.InstanceID},
		":type":     &types.AttributeValueMemberS{Value: l.InstanceType},
		":az":       &types.AttributeValueMemberS{Value: orDash(l.AvailabilityZone)},
		":subnet":   &types.AttributeValueMemberS{Value: orDash(l.SubnetID)},
		":capacity": &types.AttributeValueMemberS{Value: l.CapacityType},
		":fallback": &types.AttributeValueMemberBOOL{Value: l.SpotFallback},
		":rname":    &types.AttributeValueMemberS{Value: l.RunnerName},
		":rid":      num(l.RunnerID),
		":now":      num(now.UnixMilli()),
		":claim":    &types.AttributeValueMemberS{Value: claimID},
	}
	poolExpr, poolNames, poolVals := poolLaunchAttributes(l.FromPool)
	maps.Copy(names, poolNames)
	maps.Copy(vals, poolVals)
	if len(l.CandidateTypes) > 0 {
		poolExpr += ", #candidates = :candidates"
		names["#candidates"] = attrCandidateTypes
		vals[":candidates"] = stringList(l.CandidateTypes)
	}
	ok, err := s.updateWith(ctx, jobID,
		"SET #phase = :phase, #launchedAt = :at, #instance = :instance, #type = :type, "+
			"#az = :az, #subnet = :subnet, #capacity = :capacity, #fallback = :fallback, #runnerName = :rname, "+
			"#runnerId = :rid, #updated = :now"+poolExpr+" REMOVE #claimExp, #lastError",
		"#claimId = :claim AND attribute_not_exists(#launchedAt)", names, vals, l.With)
	if errors.Is(err, errOtherCondition) && l.FromPool != "" {
		return fmt.Errorf("record launch of job %d: %w", jobID, ErrPoolLost)
	}
	if err != nil {
		return fmt.Errorf("record launch: %w", err)
	}
	if !ok {
		return fmt.Errorf("record launch of job %d: %w", jobID, ErrClaimLost)
	}
	return nil
}

// ReleaseClaim gives the job back after a failed launch (the message will be
// retried): the claim and the runner slot are removed and reason recorded.
// A claim that is no longer claimID's is left alone.
func (s *Store) ReleaseClaim(ctx context.Context, jobID int64, claimID, reason string) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 jobKey(jobID),
		UpdateExpression:    aws.String("SET #phase = :phase, #lastError = :reason, #updated = :now REMOVE #claimId, #claimExp, #slot, #slotKey"),
		ConditionExpression: aws.String("#claimId = :claim AND attribute_not_exists(#launchedAt)"),
		ExpressionAttributeNames: map[string]string{
			"#phase": attrPhase, "#lastError": attrLastError, "#updated": AttrUpdatedAt, "#claimId": attrClaimID,
			"#claimExp": attrClaimExpiresAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey, "#launchedAt": attrLaunchedAt,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":phase":  &types.AttributeValueMemberS{Value: PhaseFailed},
			":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)},
			":now":    num(s.now().UnixMilli()),
			":claim":  &types.AttributeValueMemberS{Value: claimID},
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("release claim on job %d: %w", jobID, err)
	}
	return nil
}

// Skip records that the job will not be launched (its labels are not ours,
// or GitHub no longer shows it queued) and takes it out of the live index.
func (s *Store) Skip(ctx context.Context, jobID int64, reason string) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 jobKey(jobID),
		UpdateExpression:    aws.String("SET #phase = :phase, #skip = :reason, #updated = :now REMOVE #live, #slot, #slotKey, #claimExp, #wait"),
		ConditionExpression: aws.String("attribute_exists(#pk) AND attribute_not_exists(#launchedAt)"),
		ExpressionAttributeNames: map[string]string{
			"#pk": AttrPK, "#phase": attrPhase, "#skip": attrSkipReason, "#updated": AttrUpdatedAt, "#live": AttrLive,
			"#slot": AttrSlot, "#slotKey": AttrSlotKey, "#claimExp": attrClaimExpiresAt, "#launchedAt": attrLaunchedAt,
			"#wait": AttrWait,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":phase":  &types.AttributeValueMemberS{Value: PhaseSkipped},
			":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)},
			":now":    num(s.now().UnixMilli()),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("skip job %d: %w", jobID, err)
	}
	return nil
}

// CountSlots counts the runner slots held by profile, or by every profile
// when profile is "": records claimed or launched whose job has not
// finished. One Query (COUNT) on the sparse slot index, paginated; never a
// Scan. The index is eventually consistent, so concurrent launches can
// overshoot a limit by at most the number of concurrent scaleup invocations.
func (s *Store) CountSlots(ctx context.Context, profile string) (int, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(SlotIndex),
		KeyConditionExpression:    aws.String("#slot = :one"),
		ExpressionAttributeNames:  map[string]string{"#slot": AttrSlot},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": &types.AttributeValueMemberS{Value: LiveValue}},
		Select:                    types.SelectCount,
	}
	if profile != "" {
		in.KeyConditionExpression = aws.String("#slot = :one AND begins_with(#slotKey, :p)")
		in.ExpressionAttributeNames["#slotKey"] = AttrSlotKey
		in.ExpressionAttributeValues[":p"] = &types.AttributeValueMemberS{Value: profile + "#"}
	}
	total := 0
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return 0, fmt.Errorf("count runners of profile %s: %w", profile, err)
		}
		total += int(out.Count)
		if len(out.LastEvaluatedKey) == 0 {
			return total, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// slotKey is the slot index's sort key: profile names never contain '#'.
func slotKey(profile string, jobID int64) string { return profile + "#" + JobKey(jobID) }

// profileOfSlot returns the profile of a slot key.
func profileOfSlot(key string) string {
	p, _, _ := strings.Cut(key, "#")
	return p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

package state

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Reconciliation attributes, written by scaledown.
const (
	attrRequeues = "requeues"
	// attrInterruptedAt: the job ran on an instance that got a spot
	// interruption warning (the job is re-run once if it then fails);
	// attrInstanceInterruptedAt: the record's own instance got one.
	attrInterruptedAt         = "interruptedAt"
	attrInstanceInterruptedAt = "instanceInterruptedAt"
	attrRerunRequestedAt      = "rerunRequestedAt"
	attrFinishedReason        = "finishedReason"
	attrInstanceGoneAt        = "instanceGoneAt"
)

// PhaseLost marks a launched job whose instance disappeared before the job
// finished.
const PhaseLost = "lost"

// LiveJobs returns every record in the live index, projected to
// sweepAttributes: one paginated Query, never a Scan. pages reports how many
// pages it took. The index is eventually consistent; read a record with Get
// before acting on it.
func (s *Store) LiveJobs(ctx context.Context) (jobs []*Job, pages int, err error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(LiveIndex),
		KeyConditionExpression:    aws.String("#live = :one"),
		ExpressionAttributeNames:  map[string]string{"#live": AttrLive},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": &types.AttributeValueMemberS{Value: LiveValue}},
	}
	// Only what the rules read: smaller pages to move and decode.
	proj := make([]string, len(sweepAttributes))
	for i, a := range sweepAttributes {
		ph := "#p" + strconv.Itoa(i)
		in.ExpressionAttributeNames[ph] = a
		proj[i] = ph
	}
	in.ProjectionExpression = aws.String(strings.Join(proj, ", "))
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, pages, fmt.Errorf("query live jobs: %w", err)
		}
		pages++
		for _, item := range out.Items {
			jobs = append(jobs, decodeJob(item))
		}
		if len(out.LastEvaluatedKey) == 0 {
			return jobs, pages, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// sweepAttributes are what a sweep needs to tell the records it must look
// at closely (which it then reads whole, consistently, with Get) from the
// many that need nothing: a smaller projection moves and decodes less.
var sweepAttributes = []string{
	AttrPK, attrJobID, attrStatus, attrStatusRank, attrRepository, attrOwner, attrInstallationID,
	attrRunnerName, attrRunnerJob, attrInstanceRunnerName, attrLaunchedAt, attrInstanceID,
	attrInterruptedAt, attrInstanceInterruptedAt, attrPhase, attrCompletedAt, AttrUpdatedAt, AttrWait, AttrWaitSince,
}

// Requeue resets a job for a new launch after its launch was lost (never
// launched, or its instance never came up or vanished): the launch fields
// and the slot are removed, enqueuedAt restarted and the re-queue counted.
// The condition (same instance as the caller saw, or still none; never
// started) keeps it from undoing a launch that happened meanwhile. The
// caller sends the new message after it returns true.
func (s *Store) Requeue(ctx context.Context, jobID int64, seenInstanceID, reason string) (bool, error) {
	now := s.now()
	names := map[string]string{
		"#enq": attrEnqueuedAt, "#req": attrRequeues, "#phase": attrPhase, "#updated": AttrUpdatedAt, "#live": AttrLive,
		"#err": attrLastError, "#launchedAt": attrLaunchedAt, "#instance": attrInstanceID, "#claimId": attrClaimID,
		"#claimExp": attrClaimExpiresAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey, "#rank": attrStatusRank,
		"#exp": AttrExpiresAt, "#wait": AttrWait,
	}
	vals := map[string]types.AttributeValue{
		":now": num(now.UnixMilli()), ":one": num(1), ":phase": &types.AttributeValueMemberS{Value: "requeued"},
		":live": &types.AttributeValueMemberS{Value: LiveValue}, ":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)},
		":started": num(2), ":expires": num(now.Add(s.retention).Unix()),
	}
	cond := "(attribute_not_exists(#rank) OR #rank < :started) AND "
	if seenInstanceID == "" {
		cond += "attribute_not_exists(#instance)"
	} else {
		cond += "#instance = :seen"
		vals[":seen"] = &types.AttributeValueMemberS{Value: seenInstanceID}
	}
	return s.update(ctx, jobID,
		"SET #enq = :now, #phase = :phase, #updated = :now, #live = :live, #err = :reason, #exp = :expires ADD #req :one "+
			"REMOVE #launchedAt, #instance, #claimId, #claimExp, #slot, #slotKey, #wait",
		cond, names, vals)
}

// Finish takes a job out of the live index: nothing about it is left to
// reconcile (job finished, instance and runner gone, or nothing to launch).
func (s *Store) Finish(ctx context.Context, jobID int64, reason string) error {
	now := s.now()
	_, err := s.update(ctx, jobID, "SET #reason = :reason, #updated = :now, #exp = :expires REMOVE #live, #slot, #slotKey, #wait",
		"attribute_exists(#pk)",
		map[string]string{"#reason": attrFinishedReason, "#updated": AttrUpdatedAt, "#live": AttrLive, "#slot": AttrSlot,
			"#slotKey": AttrSlotKey, "#pk": AttrPK, "#exp": AttrExpiresAt, "#wait": AttrWait},
		map[string]types.AttributeValue{":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)},
			":now": num(now.UnixMilli()), ":expires": num(now.Add(s.retention).Unix())})
	return err
}

// MarkLost records that a launched job's instance is gone while the job was
// not finished; its slot is freed.
func (s *Store) MarkLost(ctx context.Context, jobID int64, instanceID, reason string) error {
	_, err := s.update(ctx, jobID, "SET #phase = :lost, #gone = :now, #err = :reason, #updated = :now REMOVE #slot, #slotKey",
		"#instance = :instance",
		map[string]string{"#phase": attrPhase, "#gone": attrInstanceGoneAt, "#err": attrLastError, "#updated": AttrUpdatedAt,
			"#slot": AttrSlot, "#slotKey": AttrSlotKey, "#instance": attrInstanceID},
		map[string]types.AttributeValue{":lost": &types.AttributeValueMemberS{Value: PhaseLost}, ":now": num(s.now().UnixMilli()),
			":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)}, ":instance": &types.AttributeValueMemberS{Value: instanceID}})
	return err
}

// MarkInstanceGone records that the job's instance has terminated.
func (s *Store) MarkInstanceGone(ctx context.Context, jobID int64, instanceID string) error {
	_, err := s.update(ctx, jobID, "SET #gone = if_not_exists(#gone, :now), #updated = :now REMOVE #slot, #slotKey",
		"#instance = :instance",
		map[string]string{"#gone": attrInstanceGoneAt, "#updated": AttrUpdatedAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey,
			"#instance": attrInstanceID},
		map[string]types.AttributeValue{":now": num(s.now().UnixMilli()), ":instance": &types.AttributeValueMemberS{Value: instanceID}})
	return err
}

// MarkInstanceInterrupted records a spot interruption warning for the
// record's own instance (the one launched for the job).
func (s *Store) MarkInstanceInterrupted(ctx context.Context, jobID int64, instanceID string) (bool, error) {
	return s.update(ctx, jobID, "SET #int = if_not_exists(#int, :now), #live = :live, #updated = :now",
		"#instance = :instance",
		map[string]string{"#int": attrInstanceInterruptedAt, "#live": AttrLive, "#updated": AttrUpdatedAt, "#instance": attrInstanceID},
		map[string]types.AttributeValue{":now": num(s.now().UnixMilli()), ":live": &types.AttributeValueMemberS{Value: LiveValue},
			":instance": &types.AttributeValueMemberS{Value: instanceID}})
}

// MarkJobInterrupted records that the job ran on runnerName when that
// runner's instance got a spot interruption warning: if the job then fails
// it is re-run once (ClaimRerun). The job need not be the one the instance
// was launched for; the condition checks it ran there.
func (s *Store) MarkJobInterrupted(ctx context.Context, jobID int64, runnerName string) (bool, error) {
	return s.update(ctx, jobID, "SET #int = if_not_exists(#int, :now), #live = :live, #updated = :now",
		"#ranOn = :runner",
		map[string]string{"#int": attrInterruptedAt, "#live": AttrLive, "#updated": AttrUpdatedAt, "#ranOn": attrRunnerName},
		map[string]types.AttributeValue{":now": num(s.now().UnixMilli()), ":live": &types.AttributeValueMemberS{Value: LiveValue},
			":runner": &types.AttributeValueMemberS{Value: runnerName}})
}

// FreeRunnerSlot frees the runner slot of the job whose launch registered
// runnerName, when the job that runner ran is over: a slot belongs to an
// instance, and is held until the job on its runner (whichever job that is)
// completes or the instance is gone. It reports whether a slot was freed.
func (s *Store) FreeRunnerSlot(ctx context.Context, launchJobID int64, runnerName string) (bool, error) {
	// The write token makes a retry whose first attempt was applied report
	// the slot freed (and its wake sent), not "freed already".
	freed, err := s.update(ctx, launchJobID, "SET #updated = :now REMOVE #slot, #slotKey",
		"#rname = :runner AND attribute_exists(#slot)",
		map[string]string{"#updated": AttrUpdatedAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey, "#rname": attrInstanceRunnerName},
		map[string]types.AttributeValue{":now": num(s.now().UnixMilli()), ":runner": &types.AttributeValueMemberS{Value: runnerName}})
	if err != nil {
		return false, fmt.Errorf("free the slot of runner %s: %w", runnerName, err)
	}
	return freed, nil // false: freed already, or another launch's runner
}

// RunningOn returns the live records of the jobs that ran on runnerName,
// the job keeping it busy first (highest status first). One paginated
// Query of the live index with a filter: the index is eventually
// consistent, so a job that started a moment ago may be missing.
func (s *Store) RunningOn(ctx context.Context, runnerName string) ([]*Job, error) {
	in := &dynamodb.QueryInput{
		TableName:                aws.String(s.table),
		IndexName:                aws.String(LiveIndex),
		KeyConditionExpression:   aws.String("#live = :one"),
		FilterExpression:         aws.String("#ranOn = :runner"),
		ExpressionAttributeNames: map[string]string{"#live": AttrLive, "#ranOn": attrRunnerName},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":one": &types.AttributeValueMemberS{Value: LiveValue}, ":runner": &types.AttributeValueMemberS{Value: runnerName},
		},
	}
	var jobs []*Job
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("query jobs running on %s: %w", runnerName, err)
		}
		for _, item := range out.Items {
			jobs = append(jobs, decodeJob(item))
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	slices.SortFunc(jobs, func(a, b *Job) int { return cmp.Compare(b.StatusRank, a.StatusRank) })
	return jobs, nil
}

// ClaimRerun records that the job's re-run is being requested; it returns
// true exactly once per job, so a job is never re-run twice.
func (s *Store) ClaimRerun(ctx context.Context, jobID int64) (bool, error) {
	return s.update(ctx, jobID, "SET #rr = :now, #updated = :now", "attribute_not_exists(#rr)",
		map[string]string{"#rr": attrRerunRequestedAt, "#updated": AttrUpdatedAt},
		map[string]types.AttributeValue{":now": num(s.now().UnixMilli())})
}

// Timestamps of the reconciliation attributes, for the sweep's rules.
func decodeSweep(j *Job, item map[string]types.AttributeValue) {
	ms := func(name string) time.Time {
		if v := getN(item, name); v != 0 {
			return time.UnixMilli(v)
		}
		return time.Time{}
	}
	j.EnqueuedAt = ms(attrEnqueuedAt)
	j.ClaimExpiresAt = ms(attrClaimExpiresAt)
	j.InterruptedAt = ms(attrInterruptedAt)
	j.InstanceInterruptedAt = ms(attrInstanceInterruptedAt)
	j.RerunRequestedAt = ms(attrRerunRequestedAt)
	j.InstanceGoneAt = ms(attrInstanceGoneAt)
	j.Requeues = getN(item, attrRequeues)
	j.FinishedReason = getS(item, attrFinishedReason)
	j.StatusRank = getN(item, attrStatusRank)
}

// offeringsKey is the item that shares unavailable spot offerings between
// scaledown (which learns of interruptions) and scaleup (which launches).
const offeringsKey = "offerings#unavailable"

// offeringPrefix prefixes each offering attribute: "u:spot:c6i.large:us-east-1a".
const offeringPrefix = "u:"

// MarkOfferingUnavailable records that an offering ("capacityType:instanceType:zone")
// should be avoided until until.
func (s *Store) MarkOfferingUnavailable(ctx context.Context, offering string, until time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: offeringsKey}},
		UpdateExpression:          aws.String("SET #o = :until, #exp = :exp"),
		ExpressionAttributeNames:  map[string]string{"#o": offeringPrefix + offering, "#exp": AttrExpiresAt},
		ExpressionAttributeValues: map[string]types.AttributeValue{":until": num(until.UnixMilli()), ":exp": num(until.Add(time.Hour).Unix())},
	})
	if err != nil {
		return fmt.Errorf("mark offering %s unavailable: %w", offering, err)
	}
	return nil
}

// UnavailableOfferings returns the offerings marked unavailable that have
// not expired, with their expiry.
func (s *Store) UnavailableOfferings(ctx context.Context) (map[string]time.Time, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table),
		Key:       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: offeringsKey}},
	})
	if err != nil {
		return nil, fmt.Errorf("read unavailable offerings: %w", err)
	}
	now := s.now()
	res := map[string]time.Time{}
	for k := range out.Item {
		if len(k) > len(offeringPrefix) && k[:len(offeringPrefix)] == offeringPrefix {
			if until := time.UnixMilli(getN(out.Item, k)); until.After(now) {
				res[k[len(offeringPrefix):]] = until
			}
		}
	}
	return res, nil
}

package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// PhaseWaiting marks a job that waits in the table for a launch: every
// runner slot it may use is taken, or GitHub's rate limit holds JIT configs
// back. It leaves the wait when a launch claims it, or when GitHub starts
// it on a runner that is not ours or ends it.
const PhaseWaiting = "waiting"

// attrWaitReason says why the job waits, for people.
const attrWaitReason = "waitReason"

// Wait gives the claim back and parks the job in the wait index instead of
// an SQS retry: nothing is spent on it while it waits, and a wake (a slot
// freed, a rate limit reset) launches the oldest waiting jobs first. since
// orders it: the time it was first enqueued, kept across waits. The write is
// conditioned on claimID still holding the job; a claim that was lost
// meanwhile returns ErrClaimLost.
func (s *Store) Wait(ctx context.Context, jobID int64, claimID, profile, reason string, since time.Time) error {
	ok, err := s.update(ctx, jobID,
		"SET #phase = :phase, #wait = :profile, #since = if_not_exists(#since, :since), #reason = :reason, #updated = :now "+
			"REMOVE #claimId, #claimExp, #slot, #slotKey",
		"#claimId = :claim AND attribute_not_exists(#launchedAt)",
		map[string]string{
			"#phase": attrPhase, "#wait": AttrWait, "#since": AttrWaitSince, "#reason": attrWaitReason, "#updated": AttrUpdatedAt,
			"#claimId": attrClaimID, "#claimExp": attrClaimExpiresAt, "#slot": AttrSlot, "#slotKey": AttrSlotKey,
			"#launchedAt": attrLaunchedAt,
		},
		map[string]types.AttributeValue{
			":phase": &types.AttributeValueMemberS{Value: PhaseWaiting}, ":profile": &types.AttributeValueMemberS{Value: profile},
			":since": num(since.UnixMilli()), ":reason": &types.AttributeValueMemberS{Value: truncate(reason, 500)},
			":now": num(s.now().UnixMilli()), ":claim": &types.AttributeValueMemberS{Value: claimID},
		})
	switch {
	case err != nil:
		return fmt.Errorf("park job %d: %w", jobID, err)
	case !ok:
		return fmt.Errorf("park job %d: %w", jobID, ErrClaimLost)
	}
	return nil
}

// Waiting returns up to limit jobs of profile in the wait index, oldest
// first, that have waited since before (zero: any). The index is eventually
// consistent: a job parked a moment ago may be missing, one claimed a
// moment ago may still be listed (its claim then decides).
func (s *Store) Waiting(ctx context.Context, profile string, before time.Time, limit int32) ([]*Job, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(WaitIndex),
		KeyConditionExpression:    aws.String("#wait = :one"),
		ExpressionAttributeNames:  map[string]string{"#wait": AttrWait},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": &types.AttributeValueMemberS{Value: profile}},
		ScanIndexForward:          aws.Bool(true),
		Limit:                     aws.Int32(limit),
	}
	if !before.IsZero() {
		in.KeyConditionExpression = aws.String("#wait = :one AND #since < :before")
		in.ExpressionAttributeNames["#since"] = AttrWaitSince
		in.ExpressionAttributeValues[":before"] = num(before.UnixMilli())
	}
	var jobs []*Job
	for len(jobs) < int(limit) {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("query waiting jobs: %w", err)
		}
		for _, item := range out.Items {
			jobs = append(jobs, decodeJob(item))
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
		in.Limit = aws.Int32(limit - int32(len(jobs)))
	}
	return jobs, nil
}

// CountWaiting counts the waiting jobs of profile: one paginated Query
// (COUNT) of the wait index.
func (s *Store) CountWaiting(ctx context.Context, profile string) (int, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(WaitIndex),
		KeyConditionExpression:    aws.String("#wait = :one"),
		ExpressionAttributeNames:  map[string]string{"#wait": AttrWait},
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": &types.AttributeValueMemberS{Value: profile}},
		Select:                    types.SelectCount,
	}
	total := 0
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return 0, fmt.Errorf("count waiting jobs: %w", err)
		}
		total += int(out.Count)
		if len(out.LastEvaluatedKey) == 0 {
			return total, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// AnyWaiting reports whether a job of any of profiles waits (one Query of
// at most one item per profile, until one is found).
func (s *Store) AnyWaiting(ctx context.Context, profiles []string) (bool, error) {
	for _, p := range profiles {
		jobs, err := s.Waiting(ctx, p, time.Time{}, 1)
		if err != nil {
			return false, err
		}
		if len(jobs) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// WaitingSummary counts the waiting jobs of profiles and returns when the
// oldest of them started waiting (zero when none waits): one COUNT Query
// and one single-item Query per profile.
func (s *Store) WaitingSummary(ctx context.Context, profiles []string) (n int, oldest time.Time, err error) {
	for _, p := range profiles {
		c, err := s.CountWaiting(ctx, p)
		if err != nil {
			return 0, time.Time{}, err
		}
		if c == 0 {
			continue
		}
		n += c
		first, err := s.Waiting(ctx, p, time.Time{}, 1)
		if err != nil {
			return 0, time.Time{}, err
		}
		if len(first) > 0 && (oldest.IsZero() || first[0].WaitSince.Before(oldest)) {
			oldest = first[0].WaitSince
		}
	}
	return n, oldest, nil
}

// gitHubHoldKey is the item that shares a GitHub rate limit between every
// scaleup invocation: while it holds, no JIT config is asked for and no
// instance is launched; jobs wait in the table instead.
const gitHubHoldKey = "github#hold"

const attrHoldUntil = "until"

// HoldGitHub records that GitHub refuses requests until until (its
// Retry-After or X-RateLimit-Reset). A later hold never shortens an
// earlier one.
func (s *Store) HoldGitHub(ctx context.Context, until time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: gitHubHoldKey}},
		UpdateExpression:          aws.String("SET #until = :until, #exp = :exp"),
		ConditionExpression:       aws.String("attribute_not_exists(#until) OR #until < :until"),
		ExpressionAttributeNames:  map[string]string{"#until": attrHoldUntil, "#exp": AttrExpiresAt},
		ExpressionAttributeValues: map[string]types.AttributeValue{":until": num(until.UnixMilli()), ":exp": num(until.Add(24 * time.Hour).Unix())},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("record GitHub's rate limit: %w", err)
	}
	return nil
}

// GitHubHold returns until when GitHub refuses requests (zero: no hold, or
// one that is over).
func (s *Store) GitHubHold(ctx context.Context) (time.Time, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table),
		Key:       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: gitHubHoldKey}},
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("read GitHub's rate limit: %w", err)
	}
	until := time.UnixMilli(getN(out.Item, attrHoldUntil))
	if !until.After(s.now()) {
		return time.Time{}, nil
	}
	return until, nil
}

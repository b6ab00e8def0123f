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

// The recovery of failed webhook deliveries (runtime/redelivery) keeps its
// state in the jobs table, in three kinds of items: the point up to which
// the App's delivery log was read (redeliveryMarkKey), one lease so that
// runs never overlap, and one item per delivery GUID redelivered (its
// attempts), which makes a redelivery idempotent across runs and
// containers. They expire with the TTL like job records.
const (
	redeliveryMarkKey  = "redelivery#mark"
	redeliveryLeaseKey = "redelivery#lease"
	redeliveryPrefix   = "redelivery#guid#"

	attrMark     = "mark"
	attrAttempts = "attempts"
	attrLastAt   = "lastAt"
	attrHolder   = "holder"
)

// RedeliveryMark returns the delivery time up to which the delivery log was
// read in full (zero before the first run).
func (s *Store) RedeliveryMark(ctx context.Context) (time.Time, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: redeliveryMarkKey}},
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("read the delivery log mark: %w", err)
	}
	if ms := getN(out.Item, attrMark); ms != 0 {
		return time.UnixMilli(ms), nil
	}
	return time.Time{}, nil
}

// SetRedeliveryMark moves the mark to t; it never moves back.
func (s *Store) SetRedeliveryMark(ctx context.Context, t time.Time) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: redeliveryMarkKey}},
		UpdateExpression:          aws.String("SET #mark = :t"),
		ConditionExpression:       aws.String("attribute_not_exists(#mark) OR #mark < :t"),
		ExpressionAttributeNames:  map[string]string{"#mark": attrMark},
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": num(t.UnixMilli())},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("move the delivery log mark: %w", err)
	}
	return nil
}

// LeaseRedelivery takes the recovery's lease for holder until now+d; false
// when another holder's lease is running.
func (s *Store) LeaseRedelivery(ctx context.Context, holder string, d time.Duration) (bool, error) {
	now := s.now()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: redeliveryLeaseKey}},
		UpdateExpression:         aws.String("SET #until = :until, #holder = :holder"),
		ConditionExpression:      aws.String("attribute_not_exists(#until) OR #until < :now OR #holder = :holder"),
		ExpressionAttributeNames: map[string]string{"#until": attrHoldUntil, "#holder": attrHolder},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":until": num(now.Add(d).UnixMilli()), ":now": num(now.UnixMilli()), ":holder": &types.AttributeValueMemberS{Value: holder},
		},
	})
	var ccf *types.ConditionalCheckFailedException
	switch {
	case errors.As(err, &ccf):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("take the redelivery lease: %w", err)
	}
	return true, nil
}

// ClaimRedelivery records one more redelivery of the delivery guid and
// reports whether it may go ahead: a GUID gets at most max redeliveries, at
// least gap apart (so that a redelivery still under way is not doubled by
// the next run, which cannot see it in the log yet).
func (s *Store) ClaimRedelivery(ctx context.Context, guid string, max int, gap time.Duration) (bool, error) {
	now := s.now()
	// With the write token, a retry whose first attempt was applied (a lost
	// response) still reports the claim, rather than skip a redelivery
	// whose attempt it just counted.
	return s.updateKey(ctx, map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: redeliveryPrefix + guid}},
		"the redelivery of "+guid,
		"SET #last = :now, #exp = :exp ADD #attempts :one",
		"attribute_not_exists(#attempts) OR (#attempts < :max AND #last < :before)",
		map[string]string{"#last": attrLastAt, "#exp": AttrExpiresAt, "#attempts": attrAttempts},
		map[string]types.AttributeValue{
			":now": num(now.UnixMilli()), ":exp": num(now.Add(4 * 24 * time.Hour).Unix()), ":one": num(1),
			":max": num(int64(max)), ":before": num(now.Add(-gap).UnixMilli()),
		})
}

// ReleaseRedelivery ends holder's lease (a lease of another holder stays).
func (s *Store) ReleaseRedelivery(ctx context.Context, holder string) error {
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: redeliveryLeaseKey}},
		UpdateExpression:          aws.String("SET #until = :zero"),
		ConditionExpression:       aws.String("#holder = :holder"),
		ExpressionAttributeNames:  map[string]string{"#until": attrHoldUntil, "#holder": attrHolder},
		ExpressionAttributeValues: map[string]types.AttributeValue{":zero": num(0), ":holder": &types.AttributeValueMemberS{Value: holder}},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return fmt.Errorf("release the redelivery lease: %w", err)
	}
	return nil
}

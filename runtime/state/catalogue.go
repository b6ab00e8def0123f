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

// The shared instance-type catalogue (fleet.Launcher.Catalogue): one item
// per set of Availability Zones, holding the launcher's own encoding of
// EC2's catalogue and offerings, so that one walk of DescribeInstanceTypes
// serves every Lambda container rather than each walking a dozen pages on
// its first shape job (a burst of cold containers would otherwise throttle
// the account's EC2 Describe calls). The item has no index attribute: no
// query of jobs or pools ever sees it.
const (
	catalogueKeyPrefix = "catalogue#"
	attrCatalogueData  = "data"
	attrCatalogueAt    = "at"
	// catalogueRetention: DynamoDB's TTL removes an item nothing refreshed
	// for this long (a deployment whose subnets changed).
	catalogueRetention = 48 * time.Hour
)

// LoadCatalogue returns the catalogue stored under key and when it was
// read from EC2; ok is false when there is none.
func (s *Store) LoadCatalogue(ctx context.Context, key string) (data []byte, at time.Time, ok bool, err error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table),
		Key:       map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: catalogueKeyPrefix + key}},
	})
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("read the instance-type catalogue: %w", err)
	}
	b, isB := out.Item[attrCatalogueData].(*types.AttributeValueMemberB)
	if !isB {
		return nil, time.Time{}, false, nil
	}
	return b.Value, time.UnixMilli(getN(out.Item, attrCatalogueAt)), true, nil
}

// SaveCatalogue stores the catalogue under key, read from EC2 at at. An
// older one never replaces a newer: two containers that walked at once
// leave the later walk.
func (s *Store) SaveCatalogue(ctx context.Context, key string, data []byte, at time.Time) error {
	_, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrPK:            &types.AttributeValueMemberS{Value: catalogueKeyPrefix + key},
			attrCatalogueData: &types.AttributeValueMemberB{Value: data},
			attrCatalogueAt:   num(at.UnixMilli()),
			AttrExpiresAt:     num(at.Add(catalogueRetention).Unix()),
		},
		ConditionExpression:       aws.String("attribute_not_exists(#at) OR #at < :at"),
		ExpressionAttributeNames:  map[string]string{"#at": attrCatalogueAt},
		ExpressionAttributeValues: map[string]types.AttributeValue{":at": num(at.UnixMilli())},
	})
	if _, lost := errors.AsType[*types.ConditionalCheckFailedException](err); lost {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store the instance-type catalogue: %w", err)
	}
	return nil
}

// catalogueWalkPrefix keys the lease of a walk of EC2's catalogue.
const catalogueWalkPrefix = "catalogue-walk#"

// ClaimCatalogueWalk takes the lease of walking EC2's catalogue for key
// for lease, unless another process holds an unexpired one: of the
// containers that find no fresh stored catalogue at once (a burst of cold
// containers on a new deployment), one walks and the others wait for what
// it stores, instead of every one spending the account's EC2 Describe
// budget.
func (s *Store) ClaimCatalogueWalk(ctx context.Context, key string, lease time.Duration) (bool, error) {
	now := s.now()
	_, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrPK:          &types.AttributeValueMemberS{Value: catalogueWalkPrefix + key},
			attrCatalogueAt: num(now.Add(lease).UnixMilli()),
			AttrExpiresAt:   num(now.Add(lease).Add(time.Hour).Unix()),
		},
		ConditionExpression:       aws.String("attribute_not_exists(#at) OR #at < :now"),
		ExpressionAttributeNames:  map[string]string{"#at": attrCatalogueAt},
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": num(now.UnixMilli())},
	})
	if _, held := errors.AsType[*types.ConditionalCheckFailedException](err); held {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim the walk of the instance-type catalogue: %w", err)
	}
	return true, nil
}

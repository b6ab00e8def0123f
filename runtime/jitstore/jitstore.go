// Package jitstore hands each runner instance its just-in-time runner
// configuration. Scaleup writes the encoded config under the instance's ARN;
// the instance (runtime/bootstrap) reads and deletes it in one DeleteItem,
// which is the only call its IAM role allows, and only on its own key:
//
//	"Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${ec2:SourceInstanceARN}"]}}
//
// So no other instance, and no job on another instance, can read it; it can
// be read once; it never passes through user-data, environment variables or
// logs. DynamoDB on demand absorbs bursts far above GitHub's own JIT-config
// rate, unlike SSM PutParameter's few-TPS default.
package jitstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// Attribute names; the bootstrap script reads exactly these.
const (
	AttrInstanceARN = "instanceArn"
	AttrJITConfig   = "jitConfig"
	AttrExpiresAt   = "expiresAt"
	// AttrPool marks the entry of a pooled instance that has no job yet:
	// its value (PoolHot or PoolStopped) tells the bootstrap which pool it
	// is in. The bootstrap reads it with the same DeleteItem as a config,
	// and consuming it is the instance's sign that it is prepared.
	AttrPool = "pool"
)

// Pool kinds, the values of AttrPool: the configuration's.
const (
	// PoolHot: the instance stays running and waits, without a deadline,
	// for a job's JIT config.
	PoolHot = config.PoolHot
	// PoolStopped: the instance is prepared; the control plane stops it,
	// and its next boot (StartInstances) finds a job's JIT config.
	PoolStopped = config.PoolStopped
)

// Table is the JIT-config table's shape; the stack, the sandbox and the tests
// create it from here.
var Table = state.Table{
	Attributes:   map[string]state.AttrType{AttrInstanceARN: "S"},
	Keys:         []state.Key{{Name: AttrInstanceARN, Type: "HASH"}},
	TTLAttribute: AttrExpiresAt,
}

// TTL bounds how long an unread config lives. An instance that never reads
// it is terminated by scaledown long before; the TTL only tidies up.
const TTL = 2 * time.Hour

// API is the part of the DynamoDB client the store uses.
type API interface {
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

// Store reads and writes one JIT-config table.
type Store struct {
	api   API
	table string
	now   func() time.Time
}

// New returns a store on table.
func New(api API, table string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{api: api, table: table, now: now}
}

// Identity names the partition, region and account instance ARNs live in.
type Identity struct {
	Partition, Region, Account string
}

// InstanceARN returns the ARN of instance id in i.
func (i Identity) InstanceARN(id string) string {
	return InstanceARN(i.Partition, i.Region, i.Account, id)
}

// InstanceARN returns the ARN that keys an instance's entry, the value IAM
// exposes as ec2:SourceInstanceARN for requests made with its role.
func InstanceARN(partition, region, account, instanceID string) string {
	return "arn:" + partition + ":ec2:" + region + ":" + account + ":instance/" + instanceID
}

// Handover stores encoded for the instance, as an item of a transaction:
// scaleup writes it with the launch's record (state.Launch.With), so an
// instance whose launch could not be recorded never finds a configuration.
func (s *Store) Handover(instanceARN, encoded string) types.TransactWriteItem {
	return types.TransactWriteItem{Put: &types.Put{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrInstanceARN: &types.AttributeValueMemberS{Value: instanceARN},
			AttrJITConfig:   &types.AttributeValueMemberS{Value: encoded},
			AttrExpiresAt:   &types.AttributeValueMemberN{Value: strconv.FormatInt(s.now().Add(TTL).Unix(), 10)},
		},
	}}
}

// Marker stores a pooled instance's pool marker (kind: PoolHot or
// PoolStopped), as an item of the transaction that records the pooled
// instance (state.Store.AddPooled). The instance's bootstrap consumes it
// once prepared; a job's Handover later replaces it if it is still there.
func (s *Store) Marker(instanceARN, kind string) types.TransactWriteItem {
	return types.TransactWriteItem{Put: &types.Put{
		TableName: aws.String(s.table),
		Item: map[string]types.AttributeValue{
			AttrInstanceARN: &types.AttributeValueMemberS{Value: instanceARN},
			AttrPool:        &types.AttributeValueMemberS{Value: kind},
			AttrExpiresAt:   &types.AttributeValueMemberN{Value: strconv.FormatInt(s.now().Add(TTL).Unix(), 10)},
		},
	}}
}

// Unconsumed returns which of the instances still have an entry (a pool
// marker the bootstrap has not consumed yet): state.BatchGet, reading only
// the key.
func (s *Store) Unconsumed(ctx context.Context, instanceARNs []string) (map[string]bool, error) {
	found := map[string]bool{}
	proj := &types.KeysAndAttributes{ProjectionExpression: aws.String("#k"), ExpressionAttributeNames: map[string]string{"#k": AttrInstanceARN}}
	err := state.BatchGet(ctx, s.api, s.table, instanceARNs, key, proj, "pool markers", func(item map[string]types.AttributeValue) {
		if v, ok := item[AttrInstanceARN].(*types.AttributeValueMemberS); ok {
			found[v.Value] = true
		}
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// ErrNotFound is returned by Take when the instance has no entry (yet).
var ErrNotFound = errors.New("no JIT config for this instance")

// Take reads and deletes the instance's entry in one call, as the bootstrap
// does on the instance; the sandbox's simulated runners use it.
func (s *Store) Take(ctx context.Context, instanceARN string) (string, error) {
	encoded, _, err := s.Fetch(ctx, instanceARN)
	if err == nil && encoded == "" {
		err = ErrNotFound
	}
	return encoded, err
}

// Fetch is the bootstrap's one call: it reads and deletes the instance's
// entry and returns its JIT config or its pool marker (both empty: no
// entry yet).
func (s *Store) Fetch(ctx context.Context, instanceARN string) (encoded, pool string, err error) {
	out, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:    aws.String(s.table),
		Key:          key(instanceARN),
		ReturnValues: types.ReturnValueAllOld,
	})
	if err != nil {
		return "", "", fmt.Errorf("take JIT config of %s: %w", instanceARN, err)
	}
	if v, ok := out.Attributes[AttrJITConfig].(*types.AttributeValueMemberS); ok {
		encoded = v.Value
	}
	if v, ok := out.Attributes[AttrPool].(*types.AttributeValueMemberS); ok {
		pool = v.Value
	}
	return encoded, pool, nil
}

// Delete removes the instance's entry if it is still there (a launch that
// failed after the config was stored).
func (s *Store) Delete(ctx context.Context, instanceARN string) error {
	if _, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(s.table), Key: key(instanceARN)}); err != nil {
		return fmt.Errorf("delete JIT config of %s: %w", instanceARN, err)
	}
	return nil
}

func key(instanceARN string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrInstanceARN: &types.AttributeValueMemberS{Value: instanceARN}}
}

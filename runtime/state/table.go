// Package state keeps the job records in DynamoDB: one item per GitHub
// workflow job, written by the webhook (every action), claimed and updated by
// scaleup, reconciled by scaledown. The table's shape is defined here once;
// the Pulumi stack, the sandbox and the tests all build the table from
// JobsTable.
package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Attribute names that are part of the table's key schema or indexes.
const (
	AttrPK        = "pk"        // S: "job#<id>"
	AttrLive      = "live"      // S: present (value LiveValue) while the job still needs reconciling
	AttrUpdatedAt = "updatedAt" // N: unix milliseconds of the last write
	AttrSlot      = "slot"      // S: present (value LiveValue) while the job holds a runner slot
	AttrSlotKey   = "slotKey"   // S: "<profile>#<job key>" while the job holds a runner slot
	AttrExpiresAt = "expiresAt" // N: unix seconds; DynamoDB TTL deletes the item after it
	AttrWait      = "wait"      // S: the job's profile while the job waits for a runner slot or GitHub
	AttrWaitSince = "waitSince" // N: unix milliseconds the job has waited since (its first enqueue): oldest first
)

// Index names.
const (
	// LiveIndex is a sparse index of the records that scaledown must look
	// at: queued, launching, running, or finished with an instance that may
	// still be alive. Scaledown queries it; it never scans the table.
	LiveIndex = "live-index"
	// SlotIndex is a sparse index of the records that hold a runner slot
	// (claimed or launched, job not finished): one Query (COUNT) counts all
	// of them, and one with begins_with on the sort key counts a profile's.
	SlotIndex = "slot-index"
	// WaitIndex is a sparse index of the jobs waiting for a launch (every
	// runner slot taken, or GitHub's rate limit), by profile, oldest first:
	// one Query per profile finds the next jobs to launch when a slot
	// frees, and waiting costs nothing per job while it lasts.
	WaitIndex = "wait-index"
)

// LiveValue is the one partition value of LiveIndex.
const LiveValue = "1"

// KeyType is "HASH" or "RANGE"; AttrType is "S", "N" or "B".
type (
	KeyType  = string
	AttrType = string
)

// Key is one element of a key schema.
type Key struct {
	Name string
	Type KeyType
}

// Index is a global secondary index projecting all attributes.
type Index struct {
	Name string
	Keys []Key
}

// Table describes a DynamoDB table independently of the client that creates
// it: the SDK (sandbox, tests) and Pulumi (stack) both read it.
type Table struct {
	Attributes   map[string]AttrType
	Keys         []Key
	Indexes      []Index
	TTLAttribute string
	// PointInTimeRecovery, DeletionProtection and on-demand billing are
	// what the stack sets; emulators ignore them.
	PointInTimeRecovery bool
	// DeletionProtection refuses DeleteTable (also from `pulumi destroy`)
	// until it is turned off: the jobs table is the only record of which
	// job was served by which instance.
	DeletionProtection bool
}

// JobsTable is the shape of the job-records table.
var JobsTable = Table{
	Attributes: map[string]AttrType{
		AttrPK:        "S",
		AttrLive:      "S",
		AttrUpdatedAt: "N",
		AttrSlot:      "S",
		AttrSlotKey:   "S",
		AttrWait:      "S",
		AttrWaitSince: "N",
		AttrPoolKey:   "S",
		AttrPoolSince: "N",
	},
	Keys: []Key{{Name: AttrPK, Type: "HASH"}},
	Indexes: []Index{
		{Name: LiveIndex, Keys: []Key{{Name: AttrLive, Type: "HASH"}, {Name: AttrUpdatedAt, Type: "RANGE"}}},
		{Name: SlotIndex, Keys: []Key{{Name: AttrSlot, Type: "HASH"}, {Name: AttrSlotKey, Type: "RANGE"}}},
		{Name: WaitIndex, Keys: []Key{{Name: AttrWait, Type: "HASH"}, {Name: AttrWaitSince, Type: "RANGE"}}},
		{Name: PoolIndex, Keys: []Key{{Name: AttrPoolKey, Type: "HASH"}, {Name: AttrPoolSince, Type: "RANGE"}}},
	},
	TTLAttribute:        AttrExpiresAt,
	PointInTimeRecovery: true,
	DeletionProtection:  true,
}

// CreateTableInput returns the SDK request that creates t under name, with
// on-demand billing and server-side encryption.
func (t Table) CreateTableInput(name string) *dynamodb.CreateTableInput {
	in := &dynamodb.CreateTableInput{
		TableName:        aws.String(name),
		BillingMode:      types.BillingModePayPerRequest,
		KeySchema:        keySchema(t.Keys),
		SSESpecification: &types.SSESpecification{Enabled: aws.Bool(true)},
	}
	names := make([]string, 0, len(t.Attributes))
	for n := range t.Attributes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		in.AttributeDefinitions = append(in.AttributeDefinitions, types.AttributeDefinition{
			AttributeName: aws.String(n), AttributeType: types.ScalarAttributeType(t.Attributes[n]),
		})
	}
	for _, ix := range t.Indexes {
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, types.GlobalSecondaryIndex{
			IndexName:  aws.String(ix.Name),
			KeySchema:  keySchema(ix.Keys),
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		})
	}
	return in
}

// UpdateTTLInput returns the SDK request that turns on TTL for t under name,
// or nil when t has no TTL attribute.
func (t Table) UpdateTTLInput(name string) *dynamodb.UpdateTimeToLiveInput {
	if t.TTLAttribute == "" {
		return nil
	}
	return &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(name),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(t.TTLAttribute), Enabled: aws.Bool(true),
		},
	}
}

func keySchema(keys []Key) []types.KeySchemaElement {
	out := make([]types.KeySchemaElement, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.KeySchemaElement{AttributeName: aws.String(k.Name), KeyType: types.KeyType(k.Type)})
	}
	return out
}

// TableAPI is the part of the DynamoDB client that Create uses.
type TableAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
	DescribeTimeToLive(ctx context.Context, in *dynamodb.DescribeTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
}

// Create creates t under name, waits until it is active and turns on TTL.
// The Pulumi stack creates the same table from the same Table value; Create
// serves the sandbox and the tests.
func (t Table) Create(ctx context.Context, api TableAPI, name string) error {
	if _, err := api.CreateTable(ctx, t.CreateTableInput(name)); err != nil {
		// A retried create whose first response was lost finds the table in
		// use: it is the one this call made; wait for it like any other.
		var inUse *types.ResourceInUseException
		if !errors.As(err, &inUse) {
			return fmt.Errorf("create table %s: %w", name, err)
		}
	}
	w := dynamodb.NewTableExistsWaiter(api, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, 2*time.Minute); err != nil {
		return fmt.Errorf("wait for table %s: %w", name, err)
	}
	if in := t.UpdateTTLInput(name); in != nil {
		if _, err := api.UpdateTimeToLive(ctx, in); err != nil && !t.ttlEnabled(ctx, api, name) {
			// DynamoDB refuses to enable TTL twice, which is what a retried
			// call whose first response was lost asks; that error is fine.
			return fmt.Errorf("enable TTL on %s: %w", name, err)
		}
	}
	return nil
}

// ttlEnabled reports whether TTL is on (or turning on) for t's attribute.
func (t Table) ttlEnabled(ctx context.Context, api TableAPI, name string) bool {
	out, err := api.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(name)})
	if err != nil || out.TimeToLiveDescription == nil {
		return false
	}
	d := out.TimeToLiveDescription
	return aws.ToString(d.AttributeName) == t.TTLAttribute &&
		(d.TimeToLiveStatus == types.TimeToLiveStatusEnabled || d.TimeToLiveStatus == types.TimeToLiveStatusEnabling)
}

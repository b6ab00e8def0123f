package jitstore_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestHandoverTakeOnce(t *testing.T) {
	ctx := context.Background()
	a := testenv.AWSForTest(t)
	table := testenv.UniqueName(t)
	if err := jitstore.Table.Create(ctx, a.Dynamo, table); err != nil {
		t.Fatal(err)
	}
	s := jitstore.New(a.Dynamo, table, func() time.Time { return time.Unix(1_800_000_000, 0) })
	arn := jitstore.InstanceARN("aws", "us-east-1", "123456789012", "i-0123456789abcdef0")
	if arn != "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0" {
		t.Fatalf("InstanceARN = %s", arn)
	}
	if _, err := s.Take(ctx, arn); !errors.Is(err, jitstore.ErrNotFound) {
		t.Fatalf("Take before the hand-over = %v; want ErrNotFound", err)
	}
	handOver(t, a, s, arn, "ZW5jb2RlZA==")
	other := jitstore.InstanceARN("aws", "us-east-1", "123456789012", "i-0fedcba9876543210")
	if _, err := s.Take(ctx, other); !errors.Is(err, jitstore.ErrNotFound) {
		t.Fatalf("another instance's Take = %v; want ErrNotFound", err)
	}
	got, err := s.Take(ctx, arn)
	if err != nil || got != "ZW5jb2RlZA==" {
		t.Fatalf("Take = %q, %v", got, err)
	}
	if _, err := s.Take(ctx, arn); !errors.Is(err, jitstore.ErrNotFound) {
		t.Fatalf("second Take = %v; want ErrNotFound (read once)", err)
	}
	handOver(t, a, s, arn, "eA==")
	if err := s.Delete(ctx, arn); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Take(ctx, arn); !errors.Is(err, jitstore.ErrNotFound) {
		t.Fatalf("Take after Delete = %v", err)
	}
}

// handOver writes the hand-over item in a transaction of its own.
func handOver(t *testing.T, a *testenv.AWS, s *jitstore.Store, arn, encoded string) {
	t.Helper()
	if _, err := a.Dynamo.TransactWriteItems(context.Background(), &dynamodb.TransactWriteItemsInput{
		TransactItems: []types.TransactWriteItem{s.Handover(arn, encoded)},
	}); err != nil {
		t.Fatal(err)
	}
}

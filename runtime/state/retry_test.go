package state_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// TestWritesSurviveRetriesOfAppliedCalls: each conditional write, retried
// after its first attempt was applied, reports what the first attempt did.
// Read naively, the retry's failed condition would drop a job that was
// just enqueued (no message ever sent), terminate a runner whose launch
// was just recorded, and skip a re-queue or re-run that was just claimed.
func TestWritesSurviveRetriesOfAppliedCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := testenv.AWSForTest(t)
	// Every write is sent twice and answered with the second response.
	rt := testenv.NewReplay(func(op string) bool { return op == "PutItem" || op == "UpdateItem" })
	api := dynamodb.NewFromConfig(a.Config, func(o *dynamodb.Options) { o.HTTPClient = rt.Client() })
	s := state.NewStore(api, a.JobsTable(t), 24*time.Hour, nil)

	ev := &state.JobEvent{JobID: 5, Action: state.StatusQueued, Repository: "o/r", Owner: "o", InstallationID: 1,
		Labels: []string{"self-hosted"}, Ours: true, Profile: "default", DeliveryID: "d-1", ReceivedAt: time.Now()}
	if out, err := s.RecordEvent(ctx, ev); err != nil || out != state.Enqueue {
		t.Fatalf("queued event whose put was retried: %v %v; want enqueue", out, err)
	}
	// Another delivery of the same job is still a duplicate.
	again := *ev
	again.DeliveryID = "d-2"
	if out, err := s.RecordEvent(ctx, &again); err != nil || out != state.Duplicate {
		t.Fatalf("second delivery: %v %v; want duplicate", out, err)
	}
	// Job 6 runs on one of our runners without having been enqueued (its
	// queued delivery never came): its one enqueue is taken now, even with
	// both writes retried, and only once.
	started := &state.JobEvent{JobID: 6, Action: state.StatusInProgress, Ours: true, RunnerName: "jitr-j5-1", RunnerJob: 5, ReceivedAt: time.Now()}
	if out, err := s.RecordEvent(ctx, started); err != nil || out != state.Enqueue {
		t.Fatalf("in_progress event of a job never enqueued, writes retried: %v %v; want enqueue", out, err)
	}
	if out, err := s.RecordEvent(ctx, started); err != nil || out != state.Recorded {
		t.Fatalf("second in_progress delivery: %v %v; want recorded", out, err)
	}

	if got, err := s.Claim(ctx, 5, "inv-a", "default", time.Minute); err != nil || got != state.Claimed {
		t.Fatalf("claim: %v %v", got, err)
	}
	err := s.RecordLaunch(ctx, 5, "inv-a", state.Launch{InstanceID: "i-0a", InstanceType: "t3.large", CapacityType: "spot", RunnerName: "jitr-j5-1", RunnerID: 9})
	if err != nil {
		t.Fatalf("record launch whose update was retried: %v", err)
	}
	// A different claim is still refused.
	err = s.RecordLaunch(ctx, 5, "inv-b", state.Launch{InstanceID: "i-0b", InstanceType: "t3.large", CapacityType: "spot"})
	if !errors.Is(err, state.ErrClaimLost) {
		t.Fatalf("record launch by another claim: %v; want ErrClaimLost", err)
	}
	// The job on job 5's runner is over: its slot is freed by a retried
	// call (so its wake is sent), and only once.
	if freed, err := s.FreeRunnerSlot(ctx, 5, "jitr-j5-1"); err != nil || !freed {
		t.Fatalf("free a slot whose update was retried: %v %v; want freed", freed, err)
	}
	if freed, err := s.FreeRunnerSlot(ctx, 5, "jitr-j5-1"); err != nil || freed {
		t.Fatalf("free the same slot again: %v %v; want not freed", freed, err)
	}
	if ok, err := s.MarkInstanceInterrupted(ctx, 5, "i-0a"); err != nil || !ok {
		t.Fatalf("mark instance interrupted whose update was retried: %v %v; want true", ok, err)
	}
	// Job 6 ran on job 5's instance (GitHub's choice): it is the one marked.
	if ok, err := s.MarkJobInterrupted(ctx, 6, "jitr-j5-1"); err != nil || !ok {
		t.Fatalf("mark job interrupted whose update was retried: %v %v; want true", ok, err)
	}
	if ok, err := s.MarkJobInterrupted(ctx, 5, "jitr-j5-1"); err != nil || ok {
		t.Fatalf("mark interrupted a job that did not run there: %v %v; want false", ok, err)
	}
	if ok, err := s.ClaimRerun(ctx, 5); err != nil || !ok {
		t.Fatalf("claim re-run whose update was retried: %v %v; want true", ok, err)
	}
	if ok, err := s.ClaimRerun(ctx, 5); err != nil || ok {
		t.Fatalf("second re-run claim: %v %v; want false", ok, err)
	}
	if ok, err := s.Requeue(ctx, 5, "i-0a", "instance gone"); err != nil || !ok {
		t.Fatalf("re-queue whose update was retried: %v %v; want true", ok, err)
	}
	if ok, err := s.Requeue(ctx, 5, "i-0a", "instance gone"); err != nil || ok {
		t.Fatalf("second re-queue of the same instance: %v %v; want false", ok, err)
	}
	job, ok, err := s.Get(ctx, 5)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if job.InstanceID != "" || !job.Enqueued {
		t.Errorf("after re-queue: instance %q enqueued %v", job.InstanceID, job.Enqueued)
	}
	// A redelivery claimed by a retried call is claimed (its attempt was
	// counted), and a second claim within the gap is refused.
	if ok, err := s.ClaimRedelivery(ctx, "guid-1", 3, time.Minute); err != nil || !ok {
		t.Fatalf("claim a redelivery whose update was retried: %v %v; want true", ok, err)
	}
	if ok, err := s.ClaimRedelivery(ctx, "guid-1", 3, time.Minute); err != nil || ok {
		t.Fatalf("second claim of the redelivery within the gap: %v %v; want false", ok, err)
	}
	if n := len(rt.Replayed()); n < 8 {
		t.Fatalf("only %d writes were replayed; the test does not exercise retries", n)
	}
}

// ttlRetried applies UpdateTimeToLive and then answers as DynamoDB answers
// the SDK's retry of it after a lost response.
type ttlRetried struct {
	*dynamodb.Client
	replays atomic.Int64
}

func (l *ttlRetried) UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error) {
	if _, err := l.Client.UpdateTimeToLive(ctx, in, opts...); err != nil {
		return nil, err
	}
	l.replays.Add(1)
	// DynamoDB refuses the retry; moto accepts it, so its answer is given
	// here as DynamoDB documents it.
	return nil, &smithy.GenericAPIError{Code: "ValidationException", Message: "TimeToLive is already enabled"}
}

// TestTableCreateSurvivesRetriedTTL: enabling TTL twice is refused by
// DynamoDB; a retried call must still leave Create successful.
func TestTableCreateSurvivesRetriedTTL(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	api := &ttlRetried{Client: a.Dynamo}
	name := testenv.UniqueName(t)
	if err := state.JobsTable.Create(context.Background(), api, name); err != nil {
		t.Fatalf("create with a retried TTL update: %v", err)
	}
	if api.replays.Load() != 1 {
		t.Fatalf("%d calls replayed; want the TTL update", api.replays.Load())
	}
}

// TestLaunchTransactionSurvivesRetries: the launch's record and the JIT
// config are one TransactWriteItems; retried after its first attempt was
// applied (moto, unlike DynamoDB, ignores the SDK's ClientRequestToken, so
// the retry fails its condition) it still reports success, from the write
// token; a lost claim writes neither item.
func TestLaunchTransactionSurvivesRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := testenv.AWSForTest(t)
	rt := testenv.NewReplay(func(op string) bool { return op == "TransactWriteItems" })
	api := dynamodb.NewFromConfig(a.Config, func(o *dynamodb.Options) { o.HTTPClient = rt.Client() })
	s := state.NewStore(api, a.JobsTable(t), 24*time.Hour, nil)
	jitTable := testenv.UniqueName(t)
	if err := jitstore.Table.Create(ctx, a.Dynamo, jitTable); err != nil {
		t.Fatal(err)
	}
	jit := jitstore.New(a.Dynamo, jitTable, nil)
	if _, err := s.RecordEvent(ctx, &state.JobEvent{JobID: 7, Action: state.StatusQueued, Repository: "o/r", Owner: "o",
		InstallationID: 1, Ours: true, Profile: "default", ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Claim(ctx, 7, "inv-a", "default", time.Minute); err != nil || got != state.Claimed {
		t.Fatalf("claim: %v %v", got, err)
	}
	arnA, arnB := jitstore.InstanceARN("aws", "us-east-1", "123456789012", "i-0a"), jitstore.InstanceARN("aws", "us-east-1", "123456789012", "i-0b")
	err := s.RecordLaunch(ctx, 7, "inv-a", state.Launch{InstanceID: "i-0a", InstanceType: "t3.large", CapacityType: "spot",
		RunnerName: "jitr-j7-1", With: []types.TransactWriteItem{jit.Handover(arnA, "config-a")}})
	if err != nil {
		t.Fatalf("record launch whose transaction was retried: %v", err)
	}
	if n := len(rt.Replayed()); n != 1 {
		t.Fatalf("%d transactions replayed; want 1", n)
	}
	err = s.RecordLaunch(ctx, 7, "inv-b", state.Launch{InstanceID: "i-0b", InstanceType: "t3.large", CapacityType: "spot",
		With: []types.TransactWriteItem{jit.Handover(arnB, "config-b")}})
	if !errors.Is(err, state.ErrClaimLost) {
		t.Fatalf("record launch by another claim: %v; want ErrClaimLost", err)
	}
	// Read with GetItem, not the instance's read-and-delete: moto now and
	// then drops a connection after applying a request, and a retried
	// DeleteItem finds the item gone (testing.md).
	config := func(arn string) string {
		t.Helper()
		out, err := a.Dynamo.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(jitTable), ConsistentRead: aws.Bool(true),
			Key: map[string]types.AttributeValue{jitstore.AttrInstanceARN: &types.AttributeValueMemberS{Value: arn}}})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Item[jitstore.AttrJITConfig].(*types.AttributeValueMemberS)
		if v == nil {
			return ""
		}
		return v.Value
	}
	if got := config(arnA); got != "config-a" {
		t.Fatalf("config of the recorded launch: %q; want config-a", got)
	}
	if got := config(arnB); got != "" {
		t.Fatalf("config of the refused launch: %q; want none written", got)
	}
	if job, _, err := s.Get(ctx, 7); err != nil || job.InstanceID != "i-0a" || job.Phase != state.PhaseLaunched {
		t.Fatalf("record %+v %v; want launched on i-0a", job, err)
	}
}

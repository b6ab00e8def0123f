package state

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Job statuses as GitHub names them in workflow_job actions.
const (
	StatusQueued     = "queued"
	StatusWaiting    = "waiting"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
)

// Rank orders statuses; a record's status only moves to an equal or higher
// rank. queued and waiting share a rank: a job waiting on an environment's
// protection rules is queued again when approved.
func Rank(status string) (int, bool) {
	switch status {
	case StatusQueued, StatusWaiting:
		return 1, true
	case StatusInProgress:
		return 2, true
	case StatusCompleted:
		return 3, true
	}
	return 0, false
}

// Item attribute names besides the key and index attributes.
const (
	attrJobID          = "jobId"
	attrRunID          = "runId"
	attrStatus         = "status"
	attrStatusRank     = "statusRank"
	attrRepository     = "repository"
	attrOwner          = "owner"
	attrInstallationID = "installationId"
	attrLabels         = "labels"
	// attrCandidateTypes: the instance types a shape's launch offered EC2.
	attrCandidateTypes = "candidateTypes"
	attrWorkflow       = "workflow"
	attrJobName        = "jobName"
	attrCreatedAt      = "createdAt"
	attrStartedAt      = "startedAt"
	attrCompletedAt    = "completedAt"
	attrConclusion     = "conclusion"
	attrRunnerName     = "runnerName" // the runner the job ran on, as GitHub says
	attrRunnerID       = "runnerId"
	attrRunnerJob      = "runnerJob" // the job that runner was launched for, when it is one of ours
	attrLastDelivery   = "lastDelivery"
	attrOurs           = "ours"
	attrSkipReason     = "skipReason"
	attrProfile        = "profile"
	attrEnqueuedAt     = "enqueuedAt"
	attrReceivedAt     = "receivedAt"
	attrWriteToken     = "writeToken"
)

// A write token makes a conditional write safe to retry. The SDK retries a
// call whose response was lost (a reset connection, a timeout), and the
// first attempt may well have been applied: the retry then fails its own
// condition and, read naively, a job just enqueued would look like a
// duplicate (and never be sent), a launch just recorded like a lost claim.
// Every conditional write therefore stamps a fresh random token on the
// item and asks for the old item when its condition fails; an old item that
// carries the caller's token means the write is the caller's own, applied
// on an earlier attempt.
func newWriteToken() string { return rand.Text() }

// ownWrite reports whether old, the item a failed condition returned, was
// last written with token.
func ownWrite(old map[string]types.AttributeValue, token string) bool {
	v, ok := old[attrWriteToken].(*types.AttributeValueMemberS)
	return ok && v.Value == token
}

// update runs one conditional UpdateItem on a job; a failed condition is
// reported as ok=false (the record moved on meanwhile), not as an error.
// expr must start with its SET clause: the write token (see newWriteToken)
// joins it, so a retried call whose first attempt was applied still
// reports ok=true.
func (s *Store) update(ctx context.Context, jobID int64, expr, cond string, names map[string]string, vals map[string]types.AttributeValue) (bool, error) {
	return s.updateKey(ctx, jobKey(jobID), "job "+strconv.FormatInt(jobID, 10), expr, cond, names, vals)
}

// updateKey is update on any item of the table (key), named what in errors.
func (s *Store) updateKey(ctx context.Context, key map[string]types.AttributeValue, what, expr, cond string, names map[string]string, vals map[string]types.AttributeValue) (bool, error) {
	u, token, err := s.tokenUpdate(key, what, expr, cond, names, vals)
	if err != nil {
		return false, err
	}
	_, err = s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: u.TableName, Key: u.Key, UpdateExpression: u.UpdateExpression, ConditionExpression: u.ConditionExpression,
		ExpressionAttributeNames: u.ExpressionAttributeNames, ExpressionAttributeValues: u.ExpressionAttributeValues,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ownWrite(ccf.Item, token), nil
	}
	if err != nil {
		return false, fmt.Errorf("update %s: %w", what, err)
	}
	return true, nil
}

// tokenUpdate is updateKey's write as a transaction item: expr with the
// write token joined to its SET clause, and the token.
func (s *Store) tokenUpdate(key map[string]types.AttributeValue, what, expr, cond string, names map[string]string, vals map[string]types.AttributeValue) (*types.Update, string, error) {
	rest, ok := strings.CutPrefix(expr, "SET ")
	if !ok {
		return nil, "", fmt.Errorf("update %s: expression %q has no leading SET clause", what, expr)
	}
	token := newWriteToken()
	names["#wtok"] = attrWriteToken
	vals[":wtok"] = &types.AttributeValueMemberS{Value: token}
	u := &types.Update{
		TableName:                           aws.String(s.table),
		Key:                                 key,
		UpdateExpression:                    aws.String("SET #wtok = :wtok, " + rest),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           vals,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if cond != "" {
		u.ConditionExpression = aws.String(cond)
	}
	return u, token, nil
}

// transactAttempts bounds the tries of a transaction DynamoDB cancels for
// a conflict (another write on one of its items in flight) or throttling;
// the SDK does not retry a cancelled transaction itself.
const transactAttempts = 4

// updateWith applies update's write and the other items in one
// TransactWriteItems: all or nothing (without others, it is update).
// ok=false: the update's condition failed (and not on an earlier attempt of
// the caller's own, which the write token tells); the other items were then
// not written either.
func (s *Store) updateWith(ctx context.Context, jobID int64, expr, cond string, names map[string]string, vals map[string]types.AttributeValue, others []types.TransactWriteItem) (bool, error) {
	if len(others) == 0 {
		return s.update(ctx, jobID, expr, cond, names, vals)
	}
	u, token, err := s.tokenUpdate(jobKey(jobID), "job "+strconv.FormatInt(jobID, 10), expr, cond, names, vals)
	if err != nil {
		return false, err
	}
	in := &dynamodb.TransactWriteItemsInput{TransactItems: append([]types.TransactWriteItem{{Update: u}}, others...)}
	for attempt := 1; ; attempt++ {
		// The SDK gives the call one idempotency token (ClientRequestToken)
		// for all its own retries: a retry after a lost response that
		// DynamoDB had applied succeeds without writing again.
		_, err = s.api.TransactWriteItems(ctx, in)
		var tce *types.TransactionCanceledException
		if !errors.As(err, &tce) {
			break
		}
		if len(tce.CancellationReasons) > 0 && aws.ToString(tce.CancellationReasons[0].Code) == "ConditionalCheckFailed" {
			return ownWrite(tce.CancellationReasons[0].Item, token), nil
		}
		if otherConditionFailed(tce) {
			// Another item's condition (a pooled instance's claim, see
			// TakePooled) no longer holds; nothing was written.
			return false, fmt.Errorf("update job %d: %w", jobID, errOtherCondition)
		}
		if attempt == transactAttempts || !transientCancel(tce) {
			break
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(time.Duration(mrand.N(int64(25<<attempt))) * time.Millisecond):
		}
	}
	if err != nil {
		return false, fmt.Errorf("update job %d (with %d more items): %w", jobID, len(others), err)
	}
	return true, nil
}

// errOtherCondition: the condition of a transaction's item other than the
// job's update failed.
var errOtherCondition = errors.New("the condition of another item of the transaction failed")

// otherConditionFailed reports whether the condition of an item after the
// first failed.
func otherConditionFailed(tce *types.TransactionCanceledException) bool {
	for _, r := range tce.CancellationReasons[min(1, len(tce.CancellationReasons)):] {
		if aws.ToString(r.Code) == "ConditionalCheckFailed" {
			return true
		}
	}
	return false
}

// transientCancel reports whether a transaction was cancelled only for
// reasons a retry can clear.
func transientCancel(tce *types.TransactionCanceledException) bool {
	transient := false
	for _, r := range tce.CancellationReasons {
		switch aws.ToString(r.Code) {
		case "", "None":
		case "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded":
			transient = true
		default:
			return false
		}
	}
	return transient
}

// JobKey returns the partition key value of a job's record.
func JobKey(jobID int64) string { return "job#" + strconv.FormatInt(jobID, 10) }

// JobEvent is one workflow_job delivery as the webhook records it.
type JobEvent struct {
	DeliveryID     string
	Action         string // queued, waiting, in_progress, completed
	JobID          int64
	RunID          int64
	Repository     string // owner/name
	Owner          string
	InstallationID int64
	Labels         []string
	Workflow       string
	JobName        string
	CreatedAt      string // RFC 3339, as GitHub sent it
	StartedAt      string
	CompletedAt    string
	Conclusion     string
	// RunnerName and RunnerID name the runner GitHub gave the job to: any
	// idle runner whose labels match, often not the one launched for it.
	RunnerName string
	RunnerID   int64
	// RunnerJob is the job that runner was launched for, when it is one of
	// this deployment's (tags.RunnerJob); such a record stays live, since it
	// tells scaledown which job keeps that runner's instance busy.
	RunnerJob int64

	// Ours says whether this deployment serves the job; Profile is the
	// launch profile when it does, SkipReason why not when it does not.
	Ours       bool
	Profile    string
	SkipReason string

	// ReceivedAt is when the webhook received the delivery; zero means now.
	// An enqueue claim is stamped with it (see ReleaseEnqueue).
	ReceivedAt time.Time
}

// Outcome is what recording an event did.
type Outcome int

const (
	// Recorded: the record now reflects the event.
	Recorded Outcome = iota
	// Stale: the record is already at a later status; nothing changed.
	Stale
	// Enqueue: a queued job of ours was recorded for the first time and the
	// caller must now send its one scale-up message (or call ReleaseEnqueue).
	Enqueue
	// Duplicate: a queued job of ours whose message was already sent.
	Duplicate
)

func (o Outcome) String() string {
	switch o {
	case Recorded:
		return "recorded"
	case Stale:
		return "stale"
	case Enqueue:
		return "enqueue"
	case Duplicate:
		return "duplicate"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// DynamoAPI is the part of the DynamoDB client the store uses.
type DynamoAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// Store reads and writes job records in one table.
type Store struct {
	api       DynamoAPI
	table     string
	retention time.Duration
	now       func() time.Time
}

// NewStore returns a store on table. Records expire retention after their
// last write.
func NewStore(api DynamoAPI, table string, retention time.Duration, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{api: api, table: table, retention: retention, now: now}
}

// RecordEvent writes ev onto the job's record with conditional writes.
// Statuses only move forward. For a queued job of ours the same write claims
// the right to enqueue it: it succeeds only when no message was sent before,
// so any number of deliveries of the same job (same or different
// X-GitHub-Delivery) give one Enqueue.
//
// A queued or waiting event is usually the job's first: it is tried as one
// PutItem that succeeds only when the record does not exist yet. Otherwise
// (or when that put finds a record that may still move) one UpdateItem with
// the forward-only condition applies it.
func (s *Store) RecordEvent(ctx context.Context, ev *JobEvent) (Outcome, error) {
	rank, ok := Rank(ev.Action)
	if !ok {
		return 0, fmt.Errorf("record job %d: unknown action %q", ev.JobID, ev.Action)
	}
	now := ev.ReceivedAt
	if now.IsZero() {
		now = s.now()
	}
	enqueue := ev.Action == StatusQueued && ev.Ours
	// A job of ours that runs on one of our runners took the runner
	// launched for another job, which now needs one: if the job itself was
	// never enqueued (its queued delivery was lost, or came after this
	// one), it is enqueued now, so that every such job launches exactly one
	// runner. See claimEnqueue.
	lateEnqueue := ev.Ours && ev.RunnerJob != 0 && rank >= 2
	token := newWriteToken()
	attrs := s.eventAttributes(ev, rank, now, enqueue)
	attrs = append(attrs, attribute{attrWriteToken, &types.AttributeValueMemberS{Value: token}})

	if rank == 1 {
		item := make(map[string]types.AttributeValue, len(attrs)+2)
		item[AttrPK] = &types.AttributeValueMemberS{Value: JobKey(ev.JobID)}
		for _, a := range attrs {
			item[a.name] = a.value
		}
		item[attrReceivedAt] = num(now.UnixMilli())
		_, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                           aws.String(s.table),
			Item:                                item,
			ConditionExpression:                 aws.String("attribute_not_exists(" + AttrPK + ")"),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		out, old, err := written(ev, enqueue, token, err)
		if old == nil || getN(old, attrStatusRank) > int64(rank) {
			return out, err
		}
	}

	names := make(map[string]string, len(attrs))
	vals := make(map[string]types.AttributeValue, len(attrs)+2)
	set := make([]string, 0, len(attrs)+1)
	for _, a := range attrs {
		names["#"+a.name] = a.name
		vals[":"+a.name] = a.value
		set = append(set, "#"+a.name+" = :"+a.name)
	}
	names["#"+attrReceivedAt] = attrReceivedAt
	set = append(set, "#"+attrReceivedAt+" = if_not_exists(#"+attrReceivedAt+", :"+AttrUpdatedAt+")")
	expr := "SET " + strings.Join(set, ", ")
	if rank >= 2 && ev.RunnerJob == 0 {
		// Started on a runner that is not ours, or over: nothing to launch.
		names["#"+AttrWait] = AttrWait
		expr += " REMOVE #" + AttrWait
	}
	cond := "(attribute_not_exists(#" + attrStatusRank + ") OR #" + attrStatusRank + " <= :" + attrStatusRank + ")"
	if enqueue {
		cond = "attribute_not_exists(#" + attrEnqueuedAt + ") AND " + cond
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                           aws.String(s.table),
		Key:                                 jobKey(ev.JobID),
		UpdateExpression:                    aws.String(expr),
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           vals,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if lateEnqueue {
		in.ReturnValues = types.ReturnValueAllOld
	}
	upd, err := s.api.UpdateItem(ctx, in)
	var seen map[string]types.AttributeValue // the record as it was (or is, after our own retried write)
	var ccf *types.ConditionalCheckFailedException
	switch {
	case err == nil && upd != nil:
		seen = upd.Attributes
	case errors.As(err, &ccf) && ownWrite(ccf.Item, token):
		seen = ccf.Item
	}
	out, _, err := written(ev, enqueue, token, err)
	if err != nil || out != Recorded || !lateEnqueue {
		return out, err
	}
	if _, sent := seen[attrEnqueuedAt]; sent {
		return Recorded, nil
	}
	return s.claimEnqueue(ctx, ev, now)
}

// claimEnqueue takes a job's one enqueue after its record was written by a
// later event (RecordEvent's lateEnqueue): Enqueue when this call took it,
// Recorded when the job had been enqueued meanwhile.
func (s *Store) claimEnqueue(ctx context.Context, ev *JobEvent, now time.Time) (Outcome, error) {
	ok, err := s.update(ctx, ev.JobID, "SET #enq = :at, #live = :live", "attribute_not_exists(#enq)",
		map[string]string{"#enq": attrEnqueuedAt, "#live": AttrLive},
		map[string]types.AttributeValue{":at": num(now.UnixMilli()), ":live": &types.AttributeValueMemberS{Value: LiveValue}})
	switch {
	case err != nil:
		return 0, fmt.Errorf("record job %d (%s): %w", ev.JobID, ev.Action, err)
	case ok:
		return Enqueue, nil
	}
	return Recorded, nil
}

// written interprets the result of RecordEvent's conditional write, made
// with token. When the condition failed on a record that is not a duplicate
// of an enqueued job it returns Stale and the record it found (old), so the
// caller may try another write; otherwise old is nil and the outcome final.
// A condition that failed on the caller's own earlier attempt counts as
// the write succeeding.
func written(ev *JobEvent, enqueue bool, token string, err error) (out Outcome, old map[string]types.AttributeValue, _ error) {
	var ccf *types.ConditionalCheckFailedException
	if err == nil || errors.As(err, &ccf) && ownWrite(ccf.Item, token) {
		if enqueue {
			return Enqueue, nil, nil
		}
		return Recorded, nil, nil
	}
	if ccf == nil {
		return 0, nil, fmt.Errorf("record job %d (%s): %w", ev.JobID, ev.Action, err)
	}
	if _, sent := ccf.Item[attrEnqueuedAt]; sent && enqueue {
		return Duplicate, nil, nil
	}
	if ccf.Item == nil {
		ccf.Item = map[string]types.AttributeValue{}
	}
	return Stale, ccf.Item, nil
}

type attribute struct {
	name  string
	value types.AttributeValue
}

// eventAttributes lists the attributes an event sets; empty values are left
// out so a later, sparser delivery never erases what an earlier one recorded.
func (s *Store) eventAttributes(ev *JobEvent, rank int, now time.Time, enqueue bool) []attribute {
	attrs := make([]attribute, 0, 24)
	add := func(name string, v types.AttributeValue) { attrs = append(attrs, attribute{name, v}) }
	str := func(name, v string) {
		if v != "" {
			add(name, &types.AttributeValueMemberS{Value: v})
		}
	}
	n := func(name string, v int64) {
		if v != 0 {
			add(name, num(v))
		}
	}
	str(attrStatus, ev.Action)
	add(attrStatusRank, num(int64(rank)))
	add(attrJobID, num(ev.JobID))
	add(AttrUpdatedAt, num(now.UnixMilli()))
	add(AttrExpiresAt, num(now.Add(s.retention).Unix()))
	add(attrOurs, &types.AttributeValueMemberBOOL{Value: ev.Ours})
	str(attrLastDelivery, ev.DeliveryID)
	n(attrRunID, ev.RunID)
	str(attrRepository, ev.Repository)
	str(attrOwner, ev.Owner)
	n(attrInstallationID, ev.InstallationID)
	str(attrWorkflow, ev.Workflow)
	str(attrJobName, ev.JobName)
	str(attrCreatedAt, ev.CreatedAt)
	str(attrStartedAt, ev.StartedAt)
	str(attrCompletedAt, ev.CompletedAt)
	str(attrConclusion, ev.Conclusion)
	str(attrRunnerName, ev.RunnerName)
	n(attrRunnerID, ev.RunnerID)
	n(attrRunnerJob, ev.RunnerJob)
	str(attrProfile, ev.Profile)
	str(attrSkipReason, ev.SkipReason)
	if len(ev.Labels) > 0 {
		add(attrLabels, stringList(ev.Labels))
	}
	if enqueue {
		add(attrEnqueuedAt, num(now.UnixMilli()))
	}
	if enqueue || ev.RunnerJob != 0 {
		add(AttrLive, &types.AttributeValueMemberS{Value: LiveValue})
	}
	return attrs
}

// ReleaseEnqueue undoes the enqueue claim that RecordEvent made for ev when
// the message could not be sent, so a redelivery of the webhook can try
// again. It removes only that claim (stamped with ev.ReceivedAt); if the
// release fails too, scaledown re-queues the job once it is overdue. A job
// running on one of our runners stays live: its record tells scaledown
// which job keeps that runner's instance busy.
func (s *Store) ReleaseEnqueue(ctx context.Context, ev *JobEvent) error {
	expr := "REMOVE " + attrEnqueuedAt + ", " + AttrLive
	if ev.RunnerJob != 0 {
		expr = "REMOVE " + attrEnqueuedAt
	}
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       jobKey(ev.JobID),
		UpdateExpression:          aws.String(expr),
		ConditionExpression:       aws.String(attrEnqueuedAt + " = :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":t": num(ev.ReceivedAt.UnixMilli())},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release enqueue claim of job %d: %w", ev.JobID, err)
	}
	return nil
}

func jobKey(jobID int64) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: JobKey(jobID)}}
}

func num(v int64) *types.AttributeValueMemberN {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

// Job is a job record as read back from the table.
type Job struct {
	JobID          int64
	RunID          int64
	Status         string
	Repository     string
	Owner          string
	InstallationID int64
	Labels         []string
	Workflow       string
	JobName        string
	CreatedAt      string
	StartedAt      string
	CompletedAt    string
	Conclusion     string
	// RunnerName, RunnerID and RunnerJob: the runner the job ran on (see
	// JobEvent).
	RunnerName   string
	RunnerID     int64
	RunnerJob    int64
	LastDelivery string
	Ours         bool
	Profile      string
	SkipReason   string
	Enqueued     bool
	Live         bool
	UpdatedAt    time.Time
	ExpiresAt    time.Time

	// Launch side (scaleup).
	Phase            string
	SlotProfile      string
	ClaimID          string
	LaunchAttempts   int64
	LastError        string
	LaunchedAt       time.Time
	InstanceID       string
	InstanceType     string
	AvailabilityZone string
	SubnetID         string
	CapacityType     string
	SpotFallback     bool
	// FromPool is the kind of warm pool (jitstore.PoolHot or PoolStopped)
	// the instance was taken from; empty for a launch for the job.
	FromPool string
	// CandidateTypes are the instance types the launch offered EC2 when
	// the job's shape labels chose them; empty otherwise.
	CandidateTypes []string
	// InstanceRunnerName and InstanceRunnerID name the runner the instance
	// was launched with (tags.RunnerName), fixed at launch: the
	// runner whose deletion must come before the instance's termination,
	// whichever job it runs.
	InstanceRunnerName string
	InstanceRunnerID   int64

	// Waiting for a launch (PhaseWaiting): in the wait index since
	// WaitSince, for WaitReason.
	Waiting    bool
	WaitSince  time.Time
	WaitReason string

	// Reconciliation (scaledown).
	StatusRank     int64
	EnqueuedAt     time.Time
	ClaimExpiresAt time.Time
	Requeues       int64
	InterruptedAt  time.Time
	// InstanceInterruptedAt: the record's own instance got a spot
	// interruption warning (InterruptedAt: the job's runner's instance did).
	InstanceInterruptedAt time.Time
	RerunRequestedAt      time.Time
	InstanceGoneAt        time.Time
	FinishedReason        string
}

// Get reads a job's record with a consistent read. ok is false when the job
// has no record.
func (s *Store) Get(ctx context.Context, jobID int64) (job *Job, ok bool, err error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            jobKey(jobID),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, false, fmt.Errorf("read job %d: %w", jobID, err)
	}
	if len(out.Item) == 0 {
		return nil, false, nil
	}
	return decodeJob(out.Item), true, nil
}

// batchGetKeys is the most keys one BatchGetItem may name.
const batchGetKeys = 100

// BatchGetAPI is the part of the DynamoDB client BatchGet uses.
type BatchGetAPI interface {
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

// BatchGet reads the items of ids (the key of each is key(id); an id
// named twice is read once, since BatchGetItem refuses a key named twice)
// from table with consistent reads, in BatchGetItem calls of up to 100
// keys, and hands each item found to each; proj, when set, is the
// attributes to read (a projection expression and its names). Keys
// DynamoDB leaves unprocessed (throttling) are asked for again with
// backoff, at most 5 times. what names the read in errors.
func BatchGet[ID comparable](ctx context.Context, api BatchGetAPI, table string, ids []ID, key func(ID) map[string]types.AttributeValue,
	proj *types.KeysAndAttributes, what string, each func(item map[string]types.AttributeValue)) error {
	keys := make([]map[string]types.AttributeValue, 0, len(ids))
	seen := make(map[ID]bool, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			keys = append(keys, key(id))
		}
	}
	for start := 0; start < len(keys); start += batchGetKeys {
		ka := types.KeysAndAttributes{Keys: keys[start:min(start+batchGetKeys, len(keys))], ConsistentRead: aws.Bool(true)}
		if proj != nil {
			ka.ProjectionExpression, ka.ExpressionAttributeNames = proj.ProjectionExpression, proj.ExpressionAttributeNames
		}
		req := map[string]types.KeysAndAttributes{table: ka}
		for attempt := 0; len(req) > 0; attempt++ {
			if attempt > 0 {
				if attempt > 5 {
					return fmt.Errorf("read %s: keys still unprocessed after %d attempts", what, attempt)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
				}
			}
			out, err := api.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
			if err != nil {
				return fmt.Errorf("read %s: %w", what, err)
			}
			for _, item := range out.Responses[table] {
				each(item)
			}
			req = out.UnprocessedKeys
		}
	}
	return nil
}

// GetMany reads the records of jobIDs with consistent reads (BatchGet);
// jobs without a record are left out.
func (s *Store) GetMany(ctx context.Context, jobIDs []int64) (map[int64]*Job, error) {
	jobs := make(map[int64]*Job, len(jobIDs))
	err := BatchGet(ctx, s.api, s.table, jobIDs, jobKey, nil, fmt.Sprintf("%d jobs", len(jobIDs)), func(item map[string]types.AttributeValue) {
		j := decodeJob(item)
		jobs[j.JobID] = j
	})
	if err != nil {
		return nil, err
	}
	return jobs, nil
}

func decodeJob(item map[string]types.AttributeValue) *Job {
	j := &Job{
		JobID:          getN(item, attrJobID),
		RunID:          getN(item, attrRunID),
		Status:         getS(item, attrStatus),
		Repository:     getS(item, attrRepository),
		Owner:          getS(item, attrOwner),
		InstallationID: getN(item, attrInstallationID),
		Workflow:       getS(item, attrWorkflow),
		JobName:        getS(item, attrJobName),
		CreatedAt:      getS(item, attrCreatedAt),
		StartedAt:      getS(item, attrStartedAt),
		CompletedAt:    getS(item, attrCompletedAt),
		Conclusion:     getS(item, attrConclusion),
		RunnerName:     getS(item, attrRunnerName),
		RunnerID:       getN(item, attrRunnerID),
		RunnerJob:      getN(item, attrRunnerJob),
		LastDelivery:   getS(item, attrLastDelivery),
		Profile:        getS(item, attrProfile),
		SkipReason:     getS(item, attrSkipReason),
		UpdatedAt:      time.UnixMilli(getN(item, AttrUpdatedAt)),
		ExpiresAt:      time.Unix(getN(item, AttrExpiresAt), 0),
	}
	if v, ok := item[attrOurs].(*types.AttributeValueMemberBOOL); ok {
		j.Ours = v.Value
	}
	j.Phase = getS(item, attrPhase)
	j.SlotProfile = profileOfSlot(getS(item, AttrSlotKey))
	j.ClaimID = getS(item, attrClaimID)
	j.LaunchAttempts = getN(item, attrLaunchAttempts)
	j.LastError = getS(item, attrLastError)
	if ms := getN(item, attrLaunchedAt); ms != 0 {
		j.LaunchedAt = time.UnixMilli(ms)
	}
	j.InstanceID = getS(item, attrInstanceID)
	j.InstanceType = getS(item, attrInstanceType)
	j.AvailabilityZone = getS(item, attrAZ)
	j.SubnetID = getS(item, attrSubnetID)
	j.CapacityType = getS(item, attrCapacityType)
	j.FromPool = getS(item, attrFromPool)
	j.InstanceRunnerName = getS(item, attrInstanceRunnerName)
	j.InstanceRunnerID = getN(item, attrInstanceRunnerID)
	if v, ok := item[attrSpotFallback].(*types.AttributeValueMemberBOOL); ok {
		j.SpotFallback = v.Value
	}
	decodeSweep(j, item)
	_, j.Enqueued = item[attrEnqueuedAt]
	_, j.Live = item[AttrLive]
	_, j.Waiting = item[AttrWait]
	if ms := getN(item, AttrWaitSince); ms != 0 {
		j.WaitSince = time.UnixMilli(ms)
	}
	j.WaitReason = getS(item, attrWaitReason)
	j.Labels = getStrings(item, attrLabels)
	j.CandidateTypes = getStrings(item, attrCandidateTypes)
	return j
}

// stringList is a list attribute of strings, in order.
func stringList(ss []string) *types.AttributeValueMemberL {
	l := make([]types.AttributeValue, len(ss))
	for i, v := range ss {
		l[i] = &types.AttributeValueMemberS{Value: v}
	}
	return &types.AttributeValueMemberL{Value: l}
}

// getStrings reads a list attribute of strings.
func getStrings(item map[string]types.AttributeValue, name string) []string {
	var out []string
	if l, ok := item[name].(*types.AttributeValueMemberL); ok {
		for _, v := range l.Value {
			if s, ok := v.(*types.AttributeValueMemberS); ok {
				out = append(out, s.Value)
			}
		}
	}
	return out
}

func getS(item map[string]types.AttributeValue, name string) string {
	if v, ok := item[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getN(item map[string]types.AttributeValue, name string) int64 {
	if v, ok := item[name].(*types.AttributeValueMemberN); ok {
		n, _ := strconv.ParseInt(v.Value, 10, 64)
		return n
	}
	return 0
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
)

var nameSeq atomic.Int64

// UniqueName returns a resource name unique within this test binary run,
// derived from the test's name, so parallel tests share one moto server.
func UniqueName(tb testing.TB) string {
	tb.Helper()
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, tb.Name())
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	return fmt.Sprintf("t%d-%d-%s", time.Now().UnixNano()%1e6, nameSeq.Add(1), strings.Trim(base, "-"))
}

// AWS is a set of real SDK clients pointed at the shared moto server.
type AWS struct {
	Config  aws.Config
	Dynamo  *dynamodb.Client
	SQS     *sqs.Client
	Secrets *secretsmanager.Client
}

// AWSForTest starts (or reuses) moto and returns clients built the way the
// Lambdas build theirs (awsconfig.Load, so through AWS_ENDPOINT_URL).
func AWSForTest(tb testing.TB) *AWS {
	tb.Helper()
	MotoForTest(tb)
	cfg, err := awsconfig.Load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return &AWS{
		Config:  cfg,
		Dynamo:  dynamodb.NewFromConfig(cfg),
		SQS:     sqs.NewFromConfig(cfg),
		Secrets: secretsmanager.NewFromConfig(cfg),
	}
}

// JobsTable creates a jobs table (state.JobsTable) with a unique name.
func (a *AWS) JobsTable(tb testing.TB) string {
	tb.Helper()
	name := UniqueName(tb)
	if err := state.JobsTable.Create(context.Background(), a.Dynamo, name); err != nil {
		tb.Fatal(err)
	}
	return name
}

// Queue creates the scale-up queue pair (queue.ScaleUp) with a unique name.
func (a *AWS) Queue(tb testing.TB) queue.Created {
	tb.Helper()
	c, err := queue.ScaleUp.Create(context.Background(), a.SQS, UniqueName(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Secret stores value in Secrets Manager and returns its ARN.
func (a *AWS) Secret(tb testing.TB, value string) string {
	tb.Helper()
	out, err := a.Secrets.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name:         aws.String(UniqueName(tb)),
		SecretString: aws.String(value),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return aws.ToString(out.ARN)
}

// receiveVisibility hides what ReceiveAll received for this long; a receive
// whose response was lost hides its messages for no longer either.
const receiveVisibility = 5 * time.Second

// ReceiveAll drains url: it receives and deletes the messages that are
// visible, up to max, and returns their bodies, each message once. A
// receive is never retried blindly (a retry after a lost response would
// find the messages that response carried hidden, and a count would come
// out short): after a failed receive it waits until what that receive may
// have hidden is visible again, then goes on.
func (a *AWS) ReceiveAll(tb testing.TB, url string, max int) []string {
	tb.Helper()
	ctx := context.Background()
	once := sqs.NewFromConfig(a.Config, func(o *sqs.Options) { o.Retryer = aws.NopRetryer{} })
	seen := map[string]bool{}
	var bodies []string
	var failures []error
	for len(bodies) < max {
		out, err := once.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(url), MaxNumberOfMessages: 10, WaitTimeSeconds: 0,
			VisibilityTimeout: int32(receiveVisibility / time.Second),
		})
		if err != nil {
			if failures = append(failures, err); len(failures) > 5 {
				tb.Fatalf("receive from %s: %v", url, errors.Join(failures...))
			}
			time.Sleep(receiveVisibility + time.Second)
			continue
		}
		if len(out.Messages) == 0 {
			break
		}
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, 0, len(out.Messages))
		for i, m := range out.Messages {
			entries = append(entries, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
			if id := aws.ToString(m.MessageId); !seen[id] {
				seen[id] = true
				bodies = append(bodies, aws.ToString(m.Body))
			}
		}
		del, err := a.SQS.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			tb.Fatalf("delete received messages from %s: %v", url, err)
		}
		if len(del.Failed) > 0 {
			tb.Fatalf("delete received messages from %s: %d failed: %s", url, len(del.Failed), aws.ToString(del.Failed[0].Message))
		}
	}
	return bodies
}

// CountingSecrets passes GetSecretValue calls to API and counts them: how
// many reads reach Secrets Manager.
type CountingSecrets struct {
	API interface {
		GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	}
	calls atomic.Int32
}

// GetSecretValue implements the Secrets Manager read.
func (c *CountingSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.calls.Add(1)
	return c.API.GetSecretValue(ctx, in, opts...)
}

// Calls is how many reads were made.
func (c *CountingSecrets) Calls() int { return int(c.calls.Load()) }

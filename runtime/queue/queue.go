// Package queue defines the scale-up queue: the message the webhook sends for
// each queued job, and the queue's settings, which the Pulumi stack, the
// sandbox's SQS poller and the tests all take from here.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Spec holds the scale-up queue's settings.
type Spec struct {
	// ScaleupTimeoutSeconds is the scaleup Lambda's timeout.
	ScaleupTimeoutSeconds int
	// VisibilityTimeoutSeconds is at least six times the scaleup timeout,
	// as AWS recommends for an SQS event source.
	VisibilityTimeoutSeconds int
	// MessageRetentionSeconds keeps a job's message long enough for every
	// retry; DeadLetterRetentionSeconds keeps failed ones for inspection.
	MessageRetentionSeconds    int
	DeadLetterRetentionSeconds int
	// MaxReceiveCount receives before a message moves to the dead-letter
	// queue. Limit-reached retries count too, so it is generous.
	MaxReceiveCount int
	// BatchSize and MaxBatchingWindowSeconds configure the event source
	// mapping; MaxConcurrency caps concurrent scaleup invocations.
	BatchSize                int
	MaxBatchingWindowSeconds int
	MaxConcurrency           int
}

// ScaleUp is the scale-up queue's specification.
var ScaleUp = Spec{
	ScaleupTimeoutSeconds:      60,
	VisibilityTimeoutSeconds:   360,
	MessageRetentionSeconds:    4 * 24 * 3600,
	DeadLetterRetentionSeconds: 14 * 24 * 3600,
	MaxReceiveCount:            30,
	BatchSize:                  10,
	MaxBatchingWindowSeconds:   0,
	MaxConcurrency:             10,
}

// Message is one queued job to launch a runner for.
type Message struct {
	JobID          int64    `json:"jobId"`
	RunID          int64    `json:"runId"`
	Repository     string   `json:"repository"` // owner/name
	Owner          string   `json:"owner"`
	InstallationID int64    `json:"installationId"`
	Labels         []string `json:"labels"`
	Profile        string   `json:"profile"`
	// ReceivedAt is when the webhook received the queued event (unix ms);
	// scaleup reports queue-to-launch time from it.
	ReceivedAt int64  `json:"receivedAt"`
	DeliveryID string `json:"deliveryId,omitempty"`
	// Attempt counts re-queues by scaledown (0 for the webhook's message).
	Attempt int `json:"attempt,omitempty"`

	// Wake marks a message that names no job: a runner slot was freed, or
	// GitHub's rate limit reset, and scaleup should launch the oldest
	// waiting jobs. Reason says what woke it, for the logs.
	Wake   bool   `json:"wake,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// WakeMessage returns a wake (see Message.Wake).
func WakeMessage(reason string) *Message { return &Message{Wake: true, Reason: reason} }

// Validate checks the fields scaleup relies on.
func (m *Message) Validate() error {
	switch {
	case m.Wake && m.JobID != 0:
		return errors.New("message: a wake names no job")
	case m.Wake:
		return nil
	case m.JobID <= 0:
		return errors.New("message: jobId must be positive")
	case m.InstallationID <= 0:
		return errors.New("message: installationId must be positive")
	case m.Repository == "" || m.Owner == "":
		return errors.New("message: repository and owner are required")
	case len(m.Labels) == 0:
		return errors.New("message: labels are required")
	}
	return nil
}

// Decode parses and validates a message body.
func Decode(body string) (*Message, error) {
	var m Message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// SQSAPI is the part of the SQS client that Sender uses.
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Sender sends scale-up messages to one queue.
type Sender struct {
	api   SQSAPI
	url   string
	delay int32
}

// NewSender returns a Sender for the queue at url; each message is delayed
// by delaySeconds (0..900).
func NewSender(api SQSAPI, url string, delaySeconds int) *Sender {
	return &Sender{api: api, url: url, delay: int32(delaySeconds)}
}

// Send sends m and returns the SQS message id.
func (s *Sender) Send(ctx context.Context, m *Message) (string, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode message for job %d: %w", m.JobID, err)
	}
	out, err := s.api.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:     aws.String(s.url),
		MessageBody:  aws.String(string(body)),
		DelaySeconds: s.delay,
	})
	if err != nil {
		if m.Wake {
			return "", fmt.Errorf("send wake (%s): %w", m.Reason, err)
		}
		return "", fmt.Errorf("send scale-up message for job %d: %w", m.JobID, err)
	}
	return aws.ToString(out.MessageId), nil
}

// SendAfter sends m to become visible after delay (at most 15 minutes, SQS's
// limit) instead of the sender's own delay.
func (s *Sender) SendAfter(ctx context.Context, m *Message, delay time.Duration) (string, error) {
	delayed := *s
	delayed.delay = int32(min(max(delay, 0), 15*time.Minute) / time.Second)
	return delayed.Send(ctx, m)
}

// RedrivePolicy returns the queue attribute that sends messages to the
// dead-letter queue dlqARN after spec.MaxReceiveCount receives.
func (s Spec) RedrivePolicy(dlqARN string) string {
	return `{"deadLetterTargetArn":` + strconv.Quote(dlqARN) + `,"maxReceiveCount":` + strconv.Itoa(s.MaxReceiveCount) + `}`
}

// AdminAPI is the part of the SQS client that Create uses.
type AdminAPI interface {
	CreateQueue(ctx context.Context, in *sqs.CreateQueueInput, opts ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// Created names a queue and its dead-letter queue.
type Created struct {
	URL, ARN       string
	DLQURL, DLQARN string
}

// Create creates the queue name and its dead-letter queue name+"-dlq" with
// s's settings and server-side encryption. The Pulumi stack creates the same
// pair from the same Spec; Create serves the sandbox and the tests.
func (s Spec) Create(ctx context.Context, api AdminAPI, name string) (Created, error) {
	var c Created
	dlq, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name + "-dlq"),
		Attributes: map[string]string{
			"MessageRetentionPeriod": strconv.Itoa(s.DeadLetterRetentionSeconds),
			"SqsManagedSseEnabled":   "true",
		},
	})
	if err != nil {
		return c, fmt.Errorf("create queue %s-dlq: %w", name, err)
	}
	c.DLQURL = aws.ToString(dlq.QueueUrl)
	if c.DLQARN, err = queueARN(ctx, api, c.DLQURL); err != nil {
		return c, err
	}
	q, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(name),
		Attributes: map[string]string{
			"VisibilityTimeout":      strconv.Itoa(s.VisibilityTimeoutSeconds),
			"MessageRetentionPeriod": strconv.Itoa(s.MessageRetentionSeconds),
			"RedrivePolicy":          s.RedrivePolicy(c.DLQARN),
			"SqsManagedSseEnabled":   "true",
		},
	})
	if err != nil {
		return c, fmt.Errorf("create queue %s: %w", name, err)
	}
	c.URL = aws.ToString(q.QueueUrl)
	if c.ARN, err = queueARN(ctx, api, c.URL); err != nil {
		return c, err
	}
	return c, nil
}

func queueARN(ctx context.Context, api AdminAPI, url string) (string, error) {
	out, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(url),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", fmt.Errorf("get ARN of queue %s: %w", url, err)
	}
	return out.Attributes[string(types.QueueAttributeNameQueueArn)], nil
}

// VisibilityAPI is the part of the SQS client Visibility uses.
type VisibilityAPI interface {
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// Visibility makes a received message visible again after a delay.
type Visibility struct {
	api VisibilityAPI
	url string
}

// NewVisibility returns a Visibility for the queue at url.
func NewVisibility(api VisibilityAPI, url string) *Visibility { return &Visibility{api: api, url: url} }

// Retry makes the message with receiptHandle visible again after the delay
// (instead of after the queue's whole visibility timeout).
func (v *Visibility) Retry(ctx context.Context, receiptHandle string, after time.Duration) error {
	_, err := v.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(v.url),
		ReceiptHandle:     aws.String(receiptHandle),
		VisibilityTimeout: int32(after / time.Second),
	})
	if err != nil {
		return fmt.Errorf("change message visibility: %w", err)
	}
	return nil
}

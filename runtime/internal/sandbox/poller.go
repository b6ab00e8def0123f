package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/jit-runners/jit-runners/runtime/functions"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// pollIdle is the pause after an empty receive (short polls).
const pollIdle = 50 * time.Millisecond

// poller stands in for the SQS event source mapping of scaleup (batch size
// queue.ScaleUp.BatchSize, ReportBatchItemFailures, at most
// Options.ScaleupConcurrency concurrent invocations): it receives a batch,
// invokes scaleup with it, deletes the records that succeeded and leaves the
// batch item failures to come back after the visibility timeout.
type poller struct {
	s        *Sandbox
	sqs      *sqs.Client
	url      string
	arn      string
	batch    int32
	vis      int32
	inflight chan struct{}

	// With a fault rate, that share of processed records is not deleted,
	// as when a DeleteMessage is lost: SQS delivers them again and scaleup
	// must find their jobs launched and do nothing.
	mu     sync.Mutex
	rng    *mrand.Rand
	faults float64
}

func newPoller(s *Sandbox) *poller {
	return &poller{
		s: s, sqs: sqs.NewFromConfig(s.awsCfg), url: s.cfg.QueueURL, arn: s.res.queue.ARN,
		batch: int32(queue.ScaleUp.BatchSize), vis: int32(s.opts.VisibilityTimeout / time.Second),
		inflight: make(chan struct{}, max(s.opts.ScaleupConcurrency, 1)),
		rng:      mrand.New(mrand.NewPCG(s.opts.Seed, 0x5eed)),
		faults:   s.opts.FaultRate,
	}
}

func (p *poller) run(ctx context.Context) {
	for {
		// A receive only when an invocation can take the batch.
		select {
		case <-ctx.Done():
			return
		case p.inflight <- struct{}{}:
		}
		out, err := p.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(p.url),
			MaxNumberOfMessages:         p.batch,
			WaitTimeSeconds:             0,
			VisibilityTimeout:           p.vis,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if err != nil || len(out.Messages) == 0 {
			<-p.inflight
			if err != nil && ctx.Err() == nil {
				p.s.log.Warn("receive from the scale-up queue failed", slog.String("error", err.Error()))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pollIdle):
			}
			continue
		}
		p.s.wg.Add(1)
		go func() {
			defer p.s.wg.Done()
			defer func() { <-p.inflight }()
			p.handle(ctx, out.Messages)
		}()
	}
}

// handle invokes scaleup with one batch and settles its records.
func (p *poller) handle(ctx context.Context, msgs []types.Message) {
	ev := events.SQSEvent{Records: make([]events.SQSMessage, 0, len(msgs))}
	jobOf := map[string]int64{}
	for _, m := range msgs {
		rec := events.SQSMessage{
			MessageId:      aws.ToString(m.MessageId),
			ReceiptHandle:  aws.ToString(m.ReceiptHandle),
			Body:           aws.ToString(m.Body),
			Md5OfBody:      aws.ToString(m.MD5OfBody),
			Attributes:     m.Attributes,
			EventSource:    "aws:sqs",
			EventSourceARN: p.arn,
			AWSRegion:      p.s.region,
		}
		if len(m.MessageAttributes) > 0 {
			rec.MessageAttributes = map[string]events.SQSMessageAttribute{}
			for k, v := range m.MessageAttributes {
				rec.MessageAttributes[k] = events.SQSMessageAttribute{
					StringValue: v.StringValue, BinaryValue: v.BinaryValue, DataType: aws.ToString(v.DataType),
				}
			}
		}
		ev.Records = append(ev.Records, rec)
		// A wake (a hold's end, a freed slot) is no job's: its redelivery
		// is no job's retry.
		if msg, err := queue.Decode(rec.Body); err == nil && !msg.Wake {
			jobOf[rec.MessageId] = msg.JobID
			if n, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]); n > 1 {
				p.s.tracker.onRetried(msg.JobID, fmt.Sprintf("SQS redelivery (receive %d)", n))
			}
		}
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return
	}
	failed := map[string]bool{}
	out, err := p.s.lambdas[FuncScaleup].invoke(ctx, payload)
	var resp events.SQSEventResponse
	if err == nil {
		if uerr := json.Unmarshal(out, &resp); uerr != nil || isFunctionError(out) {
			err = fmt.Errorf("scaleup failed: %s", truncate(string(out), 300))
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// The whole batch comes back after the visibility timeout.
		p.s.log.Warn("scaleup invocation failed; the batch will be redelivered", slog.String("error", err.Error()))
		for _, r := range ev.Records {
			failed[r.MessageId] = true
		}
	}
	for _, f := range resp.BatchItemFailures {
		failed[f.ItemIdentifier] = true
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, r := range ev.Records {
		if failed[r.MessageId] {
			if id, ok := jobOf[r.MessageId]; ok {
				p.s.tracker.onRetried(id, "scaleup reported a batch item failure; redelivery after the visibility timeout")
			}
			continue
		}
		if p.dropDelete() {
			p.s.log.Debug("delete of a processed record dropped: SQS will deliver it again", slog.String("message_id", r.MessageId))
			continue
		}
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(r.ReceiptHandle)})
	}
	if len(del) == 0 {
		return
	}
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.sqs.DeleteMessageBatch(dctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(p.url), Entries: del})
	switch {
	case err != nil:
		p.s.log.Warn("delete of processed records failed", slog.String("error", err.Error()))
	case len(res.Failed) > 0:
		p.s.log.Warn("delete of processed records partly failed", slog.Int("failed", len(res.Failed)))
	}
}

// dropDelete decides, with the fault rate, to leave a processed record
// undeleted (at-least-once delivery: the record comes back).
func (p *poller) dropDelete() bool {
	if p.faults <= 0 || p.rng == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < p.faults
}

// isFunctionError reports a Lambda function error payload.
func isFunctionError(out []byte) bool {
	var e struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}
	return json.Unmarshal(out, &e) == nil && (e.ErrorMessage != "" || e.ErrorType != "")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// runScheduler invokes scaledown every Options.SweepInterval, as the
// EventBridge Scheduler schedule does.
func (s *Sandbox) runScheduler(ctx context.Context) {
	s.every(ctx, s.opts.SweepInterval, func() {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduled sweep failed", slog.String("error", err.Error()))
		}
	})
}

// every calls run every d until ctx ends.
func (s *Sandbox) every(ctx context.Context, d time.Duration, run func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			run()
		}
	}
}

// invokeScaledown invokes scaledown with ev and returns its answer; a
// function error (the answer says so) is an error too.
func (s *Sandbox) invokeScaledown(ctx context.Context, ev []byte) (json.RawMessage, error) {
	out, err := s.lambdas[FuncScaledown].invoke(ctx, ev)
	if err != nil {
		return nil, err
	}
	if isFunctionError(out) {
		return out, fmt.Errorf("scaledown failed: %s", truncate(string(out), 300))
	}
	return out, nil
}

// stateChange sends scaledown an "EC2 Instance State-change Notification"
// (shutting-down), as the stack's EventBridge rule does when a managed
// instance terminates (it frees the instance's runner slot and wakes
// waiting jobs at once). It runs in the background; a failure is logged, as
// EventBridge retries and the next sweep converges.
func (s *Sandbox) stateChange(id string) {
	ev, _ := json.Marshal(map[string]any{
		"version": "0", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
		"time": time.Now().UTC().Format(time.RFC3339), "region": s.region,
		"detail": map[string]string{"instance-id": id, "state": "shutting-down"},
	})
	s.goBackground(func(ctx context.Context) {
		if _, err := s.invokeScaledown(ctx, ev); err != nil && ctx.Err() == nil {
			s.log.Warn("state-change event failed", slog.String("instance_id", id), slog.String("error", err.Error()))
		}
	})
}

// RedeliveryEvent is the redelivery schedule's payload.
var RedeliveryEvent = []byte(functions.RedeliveryEvent)

// runRedelivery invokes scaledown's recovery of failed deliveries every
// Options.RedeliveryInterval, as the stack's second schedule does.
func (s *Sandbox) runRedelivery(ctx context.Context) {
	s.every(ctx, s.opts.RedeliveryInterval, func() {
		out, err := s.invokeScaledown(ctx, RedeliveryEvent)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("redelivery run failed", slog.String("error", err.Error()))
		} else if err == nil {
			s.log.Debug("redelivery run done", slog.String("report", string(out)))
		}
	})
}

// SweepEvent is the scheduler's payload.
var SweepEvent = []byte(`{"source":"jitr.scheduler"}`)

// Sweep invokes scaledown once with the scheduler's event and returns its
// report (the JSON it answered).
func (s *Sandbox) Sweep(ctx context.Context) (json.RawMessage, error) {
	out, err := s.invokeScaledown(ctx, SweepEvent)
	if err != nil {
		return out, err
	}
	s.log.Info("sweep done", slog.String("report", string(out)))
	return out, nil
}

package sandbox

import (
	"context"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

// Load is a burst of generated jobs (built-in GitHub fake only).
type Load struct {
	// Jobs is how many jobs are queued, at Rate per second.
	Jobs int
	Rate float64
	// Labels are the runs-on labels of the jobs, in turn: job i has
	// Labels[i % len(Labels)]. Default: JobLabels for every job.
	Labels [][]string
	// DupRate is the share of jobs whose queued event is delivered twice,
	// the second time with a new X-GitHub-Delivery.
	DupRate float64
	// Timeout bounds the wait for every job to complete and its instance
	// to terminate (default 10m).
	Timeout time.Duration
}

var jobSeq atomic.Int64

// RunLoad queues l.Jobs jobs at the fake and delivers their signed queued
// webhooks to the endpoint, waits until every job completed and its
// instance terminated, runs one scaledown sweep and returns the summary.
// The summary's OK says whether nothing was lost or leaked.
func (s *Sandbox) RunLoad(ctx context.Context, l Load) (*Summary, error) {
	if s.fake == nil {
		return nil, errors.New("sandbox: generated load needs the built-in GitHub fake")
	}
	if l.Jobs <= 0 {
		return nil, errors.New("sandbox: no jobs to generate")
	}
	if l.Rate <= 0 {
		l.Rate = 10
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultLoadTimeout
	}
	rng := mrand.New(mrand.NewPCG(s.opts.Seed, uint64(jobSeq.Load())+0x9e37))
	ghBefore, faultsBefore, awsBefore, cpuBefore := s.fake.TotalCalls(), s.fake.InjectedFaults(), s.proxy.stats(), s.CPU()
	jitLimitedBefore := s.fake.JITRateLimited()
	latMark := s.proxy.latencyMark()
	refusalsBefore := s.fake.BusyDeleteRefusals()
	base := time.Now().UnixMilli() * 1000
	ids := make([]int64, l.Jobs)
	for i := range ids {
		ids[i] = base + jobSeq.Add(1)
	}
	// Some GitHub calls get a secondary rate limit (403, Retry-After: 1)
	// on top of the 5xx rate.
	retryAfterAt := map[int]bool{}
	if f := s.opts.FaultRate; f > 0 {
		for n := max(1, int(float64(l.Jobs)*f/5)); n > 0; n-- {
			retryAfterAt[rng.IntN(l.Jobs)] = true
		}
	}
	s.log.Info("load started", slog.Int("jobs", l.Jobs), slog.Float64("rate", l.Rate),
		slog.Float64("dup_rate", l.DupRate), slog.Float64("fault_rate", s.opts.FaultRate))

	start := time.Now()
	var wg sync.WaitGroup
	for i, id := range ids {
		at := start.Add(time.Duration(float64(i) / l.Rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		case <-time.After(time.Until(at)):
		}
		if retryAfterAt[i] {
			s.fake.InjectRetryAfter(1, 1, ghfake.APIRoute)
		}
		dup := rng.Float64() < l.DupRate
		dupDelay := time.Duration(rng.IntN(250)) * time.Millisecond
		labels := JobLabels
		if len(l.Labels) > 0 {
			labels = l.Labels[i%len(l.Labels)]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.queueJob(ctx, id, labels, dup, dupDelay)
		}()
	}
	wg.Wait()

	deadline := time.Now().Add(l.Timeout)
	for !s.allDone(ids) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Every message settled too: redeliveries (records whose delete was
	// dropped, or that failed) must find their jobs done and change nothing.
	for !s.queueDrained(ctx) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := s.Sweep(ctx); err != nil {
		s.log.Warn("final sweep failed", slog.String("error", err.Error()))
	}
	sum := s.summarize(ctx, ids, start)
	sum.GitHubCalls = s.fake.TotalCalls() - ghBefore
	sum.BusyDeleteRefusals = s.fake.BusyDeleteRefusals() - refusalsBefore
	sum.GitHubInjectedFaults = s.fake.InjectedFaults() - faultsBefore
	sum.GitHubJITRateLimited = s.fake.JITRateLimited() - jitLimitedBefore
	sum.GitHubCallsPerJob = float64(sum.GitHubCalls) / float64(l.Jobs)
	sum.AWS = s.proxy.stats().sub(awsBefore)
	sum.AWSLatency = s.proxy.latencySince(latMark)
	sum.AWSCallsPerJob = float64(sum.AWS.Requests) / float64(l.Jobs)
	sum.CPUPerJobMs = map[string]float64{}
	for fn, t := range s.CPU() {
		sum.CPUPerJobMs[fn] = float64(t-cpuBefore[fn]) / float64(time.Millisecond) / float64(l.Jobs)
	}
	return sum, nil
}

// queueJob queues the job at the fake, which delivers its queued webhook
// (a second delivery with a new GUID when dup, as GitHub sometimes sends).
// As on GitHub, a failed delivery is not retried: the control plane must
// find the job some other way.
func (s *Sandbox) queueJob(ctx context.Context, id int64, labels []string, dup bool, dupDelay time.Duration) {
	var wg sync.WaitGroup
	if dup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(dupDelay):
			}
			if d := s.fake.DeliverJob(ctx, id, ghfake.JobQueued); !d.OK() && ctx.Err() == nil {
				s.tracker.onFailed(id, "", "duplicate delivery: "+d.Status)
			}
		}()
	}
	if _, d := s.fake.QueueJob(ctx, ghfake.Job{ID: id, Owner: Owner, Repo: Repo, Labels: labels}); !d.OK() && ctx.Err() == nil {
		s.tracker.onFailed(id, "", "queued delivery: "+d.Status)
	}
	wg.Wait()
}

func (s *Sandbox) allDone(ids []int64) bool {
	for _, j := range s.tracker.snapshot(ids) {
		if !j.done() {
			return false
		}
	}
	return true
}

// countAlive counts the deployment's instances that are not terminated.
// countAlive counts the deployment's instances that are not terminated,
// apart from the pooled ones no job took (a pool stays after the load).
func (s *Sandbox) countAlive(ctx context.Context) (int, error) {
	list, _, err := s.instances.List(ctx, s.cfg.NamePrefix)
	n := 0
	for _, in := range list {
		if in.Pool == "" || in.JobID != 0 {
			n++
		}
	}
	return n, err
}

// queueDrained reports whether the scale-up queue holds no message, visible
// or in flight.
func (s *Sandbox) queueDrained(ctx context.Context) bool {
	out, err := sqs.NewFromConfig(s.awsCfg).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(s.cfg.QueueURL),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	if err != nil {
		return false
	}
	for _, v := range out.Attributes {
		if v != "0" {
			return false
		}
	}
	return true
}

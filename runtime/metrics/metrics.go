// Package metrics writes CloudWatch metrics as Embedded Metric Format (EMF)
// log lines: one JSON object per datum on the Lambda's stdout, which
// CloudWatch Logs turns into metrics without any API call (so a metric can
// never slow down or fail an invocation).
package metrics

import (
	"encoding/json"
	"io"
	"slices"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every jit-runners metric.
const Namespace = "jit-runners"

// Units used by jit-runners.
const (
	Count   = "Count"
	Seconds = "Seconds"
	None    = "None"
)

// Names of the metrics (the dashboard and alarms refer to these).
const (
	Launches             = "Launches"             // dims: Profile, CapacityType
	SpotFallbacks        = "SpotFallbacks"        // dims: Profile
	LaunchErrors         = "LaunchErrors"         // dims: Code
	QueueToLaunchSeconds = "QueueToLaunchSeconds" // dims: Profile
	QueueToStartSeconds  = "QueueToStartSeconds"  // dims: none
	LimitReached         = "LimitReached"         // dims: Profile; a job parked because every slot it may use is taken
	WaitingJobs          = "WaitingJobs"          // dims: none; jobs in the wait index (saturation, rate limits)
	RateLimitHolds       = "RateLimitHolds"       // dims: Profile; a job held until GitHub's rate limit resets
	OldestWaitSeconds    = "OldestWaitSeconds"    // dims: none; how long the oldest waiting job has waited
	JobsSkipped          = "JobsSkipped"          // dims: Reason
	GitHubRateRemaining  = "GitHubRateLimitRemaining"
	ScaleDownDecisions   = "ScaleDownDecisions" // dims: Rule, Action
	// Warm pools.
	PoolHits      = "PoolHits"      // dims: Profile, Pool; a job took a pooled instance
	PoolMisses    = "PoolMisses"    // dims: Profile; a job of a pooled profile found none and launched cold
	PoolInstances = "PoolInstances" // dims: Profile, Pool, State; pooled instances at each sweep (idle instance-hours: sum per hour / sweeps per hour)
	PoolLaunches  = "PoolLaunches"  // dims: Profile, Pool; instances launched to refill a pool
	PoolRetired   = "PoolRetired"   // dims: Profile, Pool, Reason; pooled instances retired (age, image, shrink, gone)
	// Machine shapes from job labels (runtime/shapes).
	ShapeLaunches   = "ShapeLaunches"   // dims: Profile, InstanceType; a job launched on a type its shape labels chose
	ShapeRefusals   = "ShapeRefusals"   // dims: Reason (malformed, bounds, conflict, no_type); a job not served for its shape labels
	ShapeCandidates = "ShapeCandidates" // dims: Profile; the number of instance types a shape's launch offered EC2
)

// Deployment is the dimension every datum carries: the deployment's
// namePrefix, so that two deployments in one account and region keep their
// figures, alarms and dashboards apart.
const Deployment = "Deployment"

// Recorder writes EMF lines to w. The zero value discards.
type Recorder struct {
	mu         sync.Mutex
	w          io.Writer
	now        func() time.Time
	fn         string
	deployment string
}

// New returns a recorder writing to w for the deployment named deployment
// (its namePrefix, the Deployment dimension of every datum); function is
// added as the "Function" property (not a dimension) for log queries.
func New(w io.Writer, function, deployment string) *Recorder {
	return &Recorder{w: w, now: time.Now, fn: function, deployment: deployment}
}

// Put records one datum of metric name with unit and the given dimensions.
func (r *Recorder) Put(name string, value float64, unit string, dims map[string]string) {
	if r == nil || r.w == nil {
		return
	}
	keys := make([]string, 0, len(dims)+1)
	doc := make(map[string]any, len(dims)+4)
	for k, v := range dims {
		if k == Deployment {
			continue
		}
		keys = append(keys, k)
		doc[k] = v
	}
	if r.deployment != "" {
		keys = append(keys, Deployment)
		doc[Deployment] = r.deployment
	}
	slices.Sort(keys)
	doc[name] = value
	if r.fn != "" {
		doc["Function"] = r.fn
	}
	doc["_aws"] = map[string]any{
		"Timestamp": r.now().UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace":  Namespace,
			"Dimensions": [][]string{keys},
			"Metrics":    []any{map[string]string{"Name": name, "Unit": unit}},
		}},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.w.Write(b)
}

// Inc records a count of 1.
func (r *Recorder) Inc(name string, dims map[string]string) { r.Put(name, 1, Count, dims) }

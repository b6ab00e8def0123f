// Package functions describes the three Lambda functions: memory, timeout
// and concurrency. The Pulumi stack deploys them with these values and the
// sandbox runs them with the same, so the two cannot disagree.
package functions

import "github.com/jit-runners/jit-runners/runtime/queue"

// Spec is one Lambda function's settings.
type Spec struct {
	// Name is the function's short name (webhook, scaleup, scaledown).
	Name string
	// Package is the import path of its main package.
	Package string
	// MemoryMB and TimeoutSeconds are the function's configuration.
	MemoryMB       int
	TimeoutSeconds int
	// ReservedConcurrency > 0 caps concurrent executions (scaledown: 1, so
	// two sweeps never overlap).
	ReservedConcurrency int
}

const module = "github.com/jit-runners/jit-runners/runtime/cmd/"

// The three functions.
var (
	Webhook   = Spec{Name: "webhook", Package: module + "webhook", MemoryMB: 128, TimeoutSeconds: 10}
	Scaleup   = Spec{Name: "scaleup", Package: module + "scaleup", MemoryMB: 256, TimeoutSeconds: queue.ScaleUp.ScaleupTimeoutSeconds}
	Scaledown = Spec{Name: "scaledown", Package: module + "scaledown", MemoryMB: 256, TimeoutSeconds: 240, ReservedConcurrency: 1}
)

// All lists the functions in deployment order.
var All = []Spec{Webhook, Scaleup, Scaledown}

// ScaledownSchedule is the EventBridge Scheduler expression of the sweep.
const ScaledownSchedule = "rate(5 minutes)"

// RedeliverySchedule is the EventBridge Scheduler expression of the
// recovery of failed webhook deliveries; the schedule sends scaledown
// RedeliveryEvent.
const RedeliverySchedule = "rate(1 minute)"

// RedeliverySource is the source of the event that makes scaledown recover
// failed deliveries instead of sweeping; RedeliveryEvent is that event.
const (
	RedeliverySource = "jitr.redelivery"
	RedeliveryEvent  = `{"source":"` + RedeliverySource + `"}`
)

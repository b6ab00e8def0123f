// Command scaledown is the scaledown Lambda: EventBridge Scheduler ticks and
// EC2 events -> scaledown.Reconciler.
package main

import (
	"context"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/lambdaenv"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/redelivery"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
)

func main() { lambdaenv.Main("scaledown", start) }

func start(ctx context.Context, e *lambdaenv.Env) error {
	cfg := e.Config
	gh, err := githubapp.FromConfig(ctx, cfg, e.Secrets, e.Log, e.Metrics)
	if err != nil {
		return err
	}
	var redeliver func(context.Context) (*redelivery.Report, error)
	if cfg.Redelivery.On() {
		redeliver = redelivery.New(gh, e.Store, redelivery.Options{
			MaxPerRun: cfg.Redelivery.MaxPerRun, Lookback: time.Duration(cfg.Redelivery.LookbackMinutes) * time.Minute,
		}, e.Log, nil).Run
	}
	deps := scaledown.Deps{
		Instances: fleet.New(ec2.NewFromConfig(e.AWS), fleet.WithLogger(e.Log), fleet.WithCatalogueStore(e.Store)),
		GitHub:    gh,
		Jobs:      e.Store,
		Queue:     queue.NewSender(sqs.NewFromConfig(e.AWS), cfg.QueueURL, 0),
		Redeliver: redeliver,
	}
	if len(cfg.PooledProfiles()) > 0 {
		// Warm pools: their instances' markers live in the JIT table,
		// keyed by instance ARN.
		if cfg.Launch.JITConfigTableName == "" {
			return &config.KeyError{Key: "launch.jitConfigTableName", Reason: "is required by scaledown when a profile has a pool"}
		}
		if deps.Identity, err = e.Identity(ctx); err != nil {
			return err
		}
		deps.JIT = jitstore.New(e.DB, cfg.Launch.JITConfigTableName, nil)
	}
	r := scaledown.New(cfg, deps, scaledown.WithLogger(e.Log), scaledown.WithMetrics(e.Metrics))
	lambda.Start(r.Handle)
	return nil
}

// Command scaleup is the scaleup Lambda: SQS (ReportBatchItemFailures) -> scaleup.Handler.
package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/lambdaenv"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
)

func main() { lambdaenv.Main("scaleup", start) }

func start(ctx context.Context, e *lambdaenv.Env) error {
	cfg := e.Config
	if cfg.Launch.JITConfigTableName == "" {
		return &config.KeyError{Key: "launch.jitConfigTableName", Reason: "is required by scaleup"}
	}
	id, err := e.Identity(ctx)
	if err != nil {
		return err
	}
	gh, err := githubapp.FromConfig(ctx, cfg, e.Secrets, e.Log, e.Metrics)
	if err != nil {
		return err
	}
	sqsClient := sqs.NewFromConfig(e.AWS)
	h := scaleup.New(cfg, scaleup.Deps{
		GitHub:    gh,
		Launcher:  fleet.New(ec2.NewFromConfig(e.AWS), fleet.WithLogger(e.Log), fleet.WithCatalogueStore(e.Store)),
		Jobs:      e.Store,
		Offerings: e.Store,
		JIT:       jitstore.New(e.DB, cfg.Launch.JITConfigTableName, nil),
		Identity:  id,
		Waker:     queue.NewSender(sqsClient, cfg.QueueURL, 0),
	}, scaleup.WithLogger(e.Log), scaleup.WithMetrics(e.Metrics), scaleup.WithVisibility(queue.NewVisibility(sqsClient, cfg.QueueURL)))
	lambda.Start(h.Handle)
	return nil
}

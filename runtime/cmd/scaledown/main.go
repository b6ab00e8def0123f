// Command scaledown is the scaledown Lambda: EventBridge Scheduler ticks and
// EC2 events -> scaledown.Reconciler.
package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/logging"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/redelivery"
	"github.com/jit-runners/jit-runners/runtime/scaledown"
	"github.com/jit-runners/jit-runners/runtime/secrets"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func main() {
	if err := run(); err != nil {
		logging.New(os.Stdout, "info", "scaledown").Error("scaledown cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	log := logging.New(os.Stdout, cfg.LogLevel, "scaledown")
	m := metrics.New(os.Stdout, "scaledown", cfg.NamePrefix)
	awsCfg, err := awsconfig.Load(ctx)
	if err != nil {
		return err
	}
	gh, err := githubapp.FromConfig(ctx, cfg, secrets.New(secretsmanager.NewFromConfig(awsCfg)), log, m)
	if err != nil {
		return err
	}
	db := dynamodb.NewFromConfig(awsCfg)
	store := state.NewStore(db, cfg.TableName, time.Duration(cfg.RecordRetentionSeconds)*time.Second, nil)
	var redeliver func(context.Context) (*redelivery.Report, error)
	if cfg.Redelivery.On() {
		redeliver = redelivery.New(gh, store, redelivery.Options{
			MaxPerRun: cfg.Redelivery.MaxPerRun, Lookback: time.Duration(cfg.Redelivery.LookbackMinutes) * time.Minute,
		}, log, nil).Run
	}
	r := scaledown.New(cfg, scaledown.Deps{
		Instances: fleet.New(ec2.NewFromConfig(awsCfg), fleet.WithLogger(log)),
		GitHub:    gh,
		Jobs:      store,
		Queue:     queue.NewSender(sqs.NewFromConfig(awsCfg), cfg.QueueURL, 0),
		Redeliver: redeliver,
	}, scaledown.WithLogger(log), scaledown.WithMetrics(m))
	lambda.Start(r.Handle)
	return nil
}

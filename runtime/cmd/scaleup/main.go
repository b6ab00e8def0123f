// Command scaleup is the scaleup Lambda: SQS (ReportBatchItemFailures) -> scaleup.Handler.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/githubapp"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/logging"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/scaleup"
	"github.com/jit-runners/jit-runners/runtime/secrets"
	"github.com/jit-runners/jit-runners/runtime/state"
)

func main() {
	if err := run(); err != nil {
		logging.New(os.Stdout, "info", "scaleup").Error("scaleup cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	if cfg.Launch.JITConfigTableName == "" {
		return &config.KeyError{Key: "launch.jitConfigTableName", Reason: "is required by scaleup"}
	}
	log := logging.New(os.Stdout, cfg.LogLevel, "scaleup")
	m := metrics.New(os.Stdout, "scaleup", cfg.NamePrefix)
	awsCfg, err := awsconfig.Load(ctx)
	if err != nil {
		return err
	}
	id, err := identity(ctx, sts.NewFromConfig(awsCfg), awsCfg.Region)
	if err != nil {
		return err
	}
	gh, err := githubapp.FromConfig(ctx, cfg, secrets.New(secretsmanager.NewFromConfig(awsCfg)), log, m)
	if err != nil {
		return err
	}
	db := dynamodb.NewFromConfig(awsCfg)
	sqsClient := sqs.NewFromConfig(awsCfg)
	store := state.NewStore(db, cfg.TableName, time.Duration(cfg.RecordRetentionSeconds)*time.Second, nil)
	h := scaleup.New(cfg, scaleup.Deps{
		GitHub:    gh,
		Launcher:  fleet.New(ec2.NewFromConfig(awsCfg), fleet.WithLogger(log)),
		Jobs:      store,
		Offerings: store,
		JIT:       jitstore.New(db, cfg.Launch.JITConfigTableName, nil),
		Identity:  id,
		Waker:     queue.NewSender(sqsClient, cfg.QueueURL, 0),
	}, scaleup.WithLogger(log), scaleup.WithMetrics(m), scaleup.WithVisibility(queue.NewVisibility(sqsClient, cfg.QueueURL)))
	lambda.Start(h.Handle)
	return nil
}

// identity reads the account and partition instance ARNs use from the
// Lambda's own role (sts:GetCallerIdentity needs no permission).
func identity(ctx context.Context, api *sts.Client, region string) (scaleup.Identity, error) {
	out, err := api.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return scaleup.Identity{}, fmt.Errorf("sts:GetCallerIdentity: %w", err)
	}
	parts := strings.SplitN(aws.ToString(out.Arn), ":", 6)
	if len(parts) < 5 || parts[1] == "" {
		return scaleup.Identity{}, fmt.Errorf("unexpected caller ARN %q", aws.ToString(out.Arn))
	}
	return scaleup.Identity{Partition: parts[1], Region: region, Account: aws.ToString(out.Account)}, nil
}

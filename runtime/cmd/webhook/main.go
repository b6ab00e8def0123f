// Command webhook is the webhook Lambda: API Gateway HTTP API -> webhook.Handler.
package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/labels"
	"github.com/jit-runners/jit-runners/runtime/logging"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/secrets"
	"github.com/jit-runners/jit-runners/runtime/state"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// secretRefreshEvery bounds the fresh reads of the webhook secret that a
// mismatching signature causes (a forged delivery cannot make more).
const secretRefreshEvery = 30 * time.Second

func main() {
	ctx := context.Background()
	cfg, err := config.FromEnv()
	if err != nil {
		logging.New(os.Stdout, "info", "webhook").Error("invalid configuration", slog.String("error", err.Error()))
		os.Exit(1)
	}
	log := logging.New(os.Stdout, cfg.LogLevel, "webhook")
	awsCfg, err := awsconfig.Load(ctx)
	if err != nil {
		log.Error("aws configuration", slog.String("error", err.Error()))
		os.Exit(1)
	}
	secrets := secrets.New(secretsmanager.NewFromConfig(awsCfg))
	secret := func(ctx context.Context) ([]byte, error) { return secrets.Get(ctx, cfg.GitHub.WebhookSecretARN) }
	// Fetch the secret during init; a failure here is retried per request.
	if _, err := secret(ctx); err != nil {
		log.Warn("webhook secret prefetch failed; retrying per request", slog.String("error", err.Error()))
	}

	db := dynamodb.NewFromConfig(awsCfg)
	store := state.NewStore(db, cfg.TableName, time.Duration(cfg.RecordRetentionSeconds)*time.Second, nil)
	sender := queue.NewSender(sqs.NewFromConfig(awsCfg), cfg.QueueURL, cfg.QueueDelaySeconds)
	opts := []webhook.Option{
		webhook.WithLogger(log), webhook.WithAllowedOwners(cfg.GitHub.AllowedOwners), webhook.WithNamePrefix(cfg.NamePrefix),
		webhook.WithWaiters(func(ctx context.Context) (bool, error) {
			return store.AnyWaiting(ctx, cfg.ProfileNames())
		}, sender),
		webhook.WithSecretRefresh(func(ctx context.Context) ([]byte, error) {
			return secrets.Refresh(ctx, cfg.GitHub.WebhookSecretARN)
		}, secretRefreshEvery),
		webhook.WithMetrics(metrics.New(os.Stdout, "webhook", cfg.NamePrefix)),
	}
	if prev := cfg.GitHub.PreviousWebhookSecretARN; prev != "" {
		opts = append(opts, webhook.WithPreviousSecret(func(ctx context.Context) ([]byte, error) { return secrets.Get(ctx, prev) }))
	}
	lambda.Start(webhook.New(secret, store, sender, labels.NewMatcher(cfg), opts...).Handle)
}

// Command webhook is the webhook Lambda: API Gateway HTTP API -> webhook.Handler.
package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/lambdaenv"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/webhook"
)

// secretRefreshEvery bounds the fresh reads of the webhook secret that a
// mismatching signature causes (a forged delivery cannot make more).
const secretRefreshEvery = 30 * time.Second

func main() { lambdaenv.Main("webhook", start) }

func start(ctx context.Context, e *lambdaenv.Env) error {
	cfg := e.Config
	secret := func(ctx context.Context) ([]byte, error) { return e.Secrets.Get(ctx, cfg.GitHub.WebhookSecretARN) }
	// Fetch the secret during init; a failure here is retried per request.
	if _, err := secret(ctx); err != nil {
		e.Log.Warn("webhook secret prefetch failed; retrying per request", slog.String("error", err.Error()))
	}
	sender := queue.NewSender(sqs.NewFromConfig(e.AWS), cfg.QueueURL, cfg.QueueDelaySeconds)
	opts := []webhook.Option{
		webhook.WithLogger(e.Log), webhook.WithMetrics(e.Metrics),
		webhook.WithSecretRefresh(func(ctx context.Context) ([]byte, error) {
			return e.Secrets.Refresh(ctx, cfg.GitHub.WebhookSecretARN)
		}, secretRefreshEvery),
		webhook.WithReplacedSecret(func(ctx context.Context) ([]byte, time.Time, error) {
			return e.Secrets.Previous(ctx, cfg.GitHub.WebhookSecretARN)
		}),
	}
	if prev := cfg.GitHub.PreviousWebhookSecretARN; prev != "" {
		opts = append(opts, webhook.WithPreviousSecret(func(ctx context.Context) ([]byte, error) { return e.Secrets.Get(ctx, prev) }))
	}
	lambda.Start(webhook.New(cfg, webhook.Deps{Secret: secret, Store: e.Store, Queue: sender}, opts...).Handle)
	return nil
}

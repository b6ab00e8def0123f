package githubapp

import (
	"context"
	"log/slog"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/metrics"
)

// SecretGetter fetches a secret by ARN; *secrets.Cache implements it.
type SecretGetter interface {
	Get(ctx context.Context, arn string) ([]byte, error)
}

// FromConfig builds the Client a Lambda uses: the App described by cfg, its
// private key fetched from Secrets Manager, rate-limit headroom reported as
// a metric.
func FromConfig(ctx context.Context, cfg *config.Config, secrets SecretGetter, log *slog.Logger, m *metrics.Recorder) (*Client, error) {
	key, err := secrets.Get(ctx, cfg.GitHub.PrivateKeySecretARN)
	if err != nil {
		return nil, err
	}
	return New(Config{
		APIURL: cfg.GitHub.APIURL, AppID: cfg.GitHub.AppID, PrivateKey: key,
		Scope: cfg.GitHub.Scope, RunnerGroup: cfg.GitHub.RunnerGroup, Logger: log,
		OnRateLimit: func(remaining, limit int) {
			m.Put(metrics.GitHubRateRemaining, float64(remaining), metrics.None, nil)
		},
	})
}

// Package lambdaenv is what each of the control plane's Lambdas starts
// from: its configuration (JITR_CONFIG), its logger and metrics, the AWS
// configuration, the secret cache and the jobs table's store. The mains
// build their handler on it and do nothing else. (The GitHub App client is
// githubapp.FromConfig(ctx, e.Config, e.Secrets, e.Log, e.Metrics): not
// here, so the webhook, which never calls GitHub, does not link it.)
package lambdaenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/jit-runners/jit-runners/runtime/awsconfig"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/logging"
	"github.com/jit-runners/jit-runners/runtime/metrics"
	"github.com/jit-runners/jit-runners/runtime/secrets"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// Env is one Lambda's starting point.
type Env struct {
	Config  *config.Config
	Log     *slog.Logger
	Metrics *metrics.Recorder
	AWS     aws.Config
	Secrets *secrets.Cache
	DB      *dynamodb.Client
	Store   *state.Store // the jobs table
}

// Load reads function fn's configuration and builds its environment.
func Load(ctx context.Context, fn string) (*Env, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.Load(ctx)
	if err != nil {
		return nil, err
	}
	db := dynamodb.NewFromConfig(awsCfg)
	return &Env{
		Config:  cfg,
		Log:     logging.New(os.Stdout, cfg.LogLevel, fn),
		Metrics: metrics.New(os.Stdout, fn, cfg.NamePrefix),
		AWS:     awsCfg,
		Secrets: secrets.New(secretsmanager.NewFromConfig(awsCfg)),
		DB:      db,
		Store:   state.NewStore(db, cfg.TableName, time.Duration(cfg.RecordRetentionSeconds)*time.Second, nil),
	}, nil
}

// Main runs a Lambda's main: start builds the environment and the handler
// and starts the runtime; an error before the runtime starts is logged as
// fn's start failure and exits 1.
func Main(fn string, start func(ctx context.Context, e *Env) error) {
	ctx := context.Background()
	e, err := Load(ctx, fn)
	if err == nil {
		err = start(ctx, e)
	}
	if err != nil {
		logging.New(os.Stdout, "info", fn).Error(fn+" cannot start", slog.String("error", err.Error()))
		os.Exit(1)
	}
}

// Identity reads the partition and account instance ARNs use from the
// function's own role (sts:GetCallerIdentity needs no permission), with
// the function's region.
func (e *Env) Identity(ctx context.Context) (jitstore.Identity, error) {
	out, err := sts.NewFromConfig(e.AWS).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return jitstore.Identity{}, fmt.Errorf("sts:GetCallerIdentity: %w", err)
	}
	parts := strings.SplitN(aws.ToString(out.Arn), ":", 6)
	if len(parts) < 5 || parts[1] == "" {
		return jitstore.Identity{}, fmt.Errorf("unexpected caller ARN %q", aws.ToString(out.Arn))
	}
	return jitstore.Identity{Partition: parts[1], Region: e.AWS.Region, Account: aws.ToString(out.Account)}, nil
}

package config

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
)

// AWSMaxAttempts bounds every AWS call: the SDK's standard retryer backs off
// exponentially with jitter between attempts and honours throttling errors.
const AWSMaxAttempts = 4

// LoadAWS returns the AWS configuration every client is built from. It is
// config.LoadDefaultConfig and nothing more, so the standard environment
// (AWS_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, credentials)
// decides where calls go; there is no custom endpoint code.
func LoadAWS(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = AWSMaxAttempts })
	}))
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

// Package awsconfig loads the AWS configuration every client of the Lambdas
// (and of the sandbox that stands in for AWS) is built from.
package awsconfig

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sdkconfig "github.com/aws/aws-sdk-go-v2/config"
)

// MaxAttempts bounds every AWS call: the SDK's standard retryer backs off
// exponentially with jitter between attempts and honours throttling errors.
const MaxAttempts = 4

// Load returns the AWS configuration every client is built from. It is
// the SDK's LoadDefaultConfig and nothing more, so the standard environment
// (AWS_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>, credentials)
// decides where calls go; there is no custom endpoint code.
func Load(ctx context.Context) (aws.Config, error) {
	cfg, err := sdkconfig.LoadDefaultConfig(ctx, sdkconfig.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = MaxAttempts })
	}))
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

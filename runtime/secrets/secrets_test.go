package secrets_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/secrets"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// countingSecrets counts calls to the real (moto) client.
type countingSecrets struct {
	api   secrets.API
	calls atomic.Int32
}

func (c *countingSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.calls.Add(1)
	return c.api.GetSecretValue(ctx, in, opts...)
}

func TestSecretsFetchedOnceAndCached(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	arn := a.Secret(t, "s3cr3t-value")
	api := &countingSecrets{api: a.Secrets}
	s := secrets.New(api)

	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.Get(context.Background(), arn)
			if err != nil || string(v) != "s3cr3t-value" {
				t.Errorf("Get = %q, %v", v, err)
			}
		}()
	}
	wg.Wait()
	if n := api.calls.Load(); n != 1 {
		t.Fatalf("10 Gets made %d GetSecretValue calls; want 1", n)
	}
}

func TestSecretsErrorNotCachedAndNamesARN(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	api := &countingSecrets{api: a.Secrets}
	s := secrets.New(api)
	missing := "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf"
	for i := 0; i < 2; i++ {
		_, err := s.Get(context.Background(), missing)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("Get(missing) = %v; want an error naming the ARN", err)
		}
	}
	if n := api.calls.Load(); n != 2 {
		t.Fatalf("failed fetch was cached: %d calls; want 2", n)
	}
}

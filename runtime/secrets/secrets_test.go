package secrets_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/secrets"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestSecretsFetchedOnceAndCached(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	arn := a.Secret(t, "s3cr3t-value")
	api := &testenv.CountingSecrets{API: a.Secrets}
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
	if n := int32(api.Calls()); n != 1 {
		t.Fatalf("10 Gets made %d GetSecretValue calls; want 1", n)
	}
}

func TestSecretsErrorNotCachedAndNamesARN(t *testing.T) {
	t.Parallel()
	a := testenv.AWSForTest(t)
	api := &testenv.CountingSecrets{API: a.Secrets}
	s := secrets.New(api)
	missing := "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf"
	for i := 0; i < 2; i++ {
		_, err := s.Get(context.Background(), missing)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Fatalf("Get(missing) = %v; want an error naming the ARN", err)
		}
	}
	if n := int32(api.Calls()); n != 2 {
		t.Fatalf("failed fetch was cached: %d calls; want 2", n)
	}
}

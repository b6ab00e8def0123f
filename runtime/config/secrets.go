package config

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// SecretsAPI is the part of the Secrets Manager client that Secrets uses.
type SecretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Secrets fetches secret values by ARN and keeps them for the life of the
// process (one warm Lambda container). A failed fetch is not cached, so the
// next invocation tries again. Values are never logged; errors name the ARN
// and the cause, never the value.
type Secrets struct {
	api SecretsAPI

	mu     sync.Mutex
	values map[string][]byte
}

// NewSecrets returns a cache backed by api.
func NewSecrets(api SecretsAPI) *Secrets {
	return &Secrets{api: api, values: make(map[string][]byte)}
}

// Get returns the secret's value (SecretString, or SecretBinary when the
// secret has no string). Concurrent callers for the same ARN share one fetch.
func (s *Secrets) Get(ctx context.Context, arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[arn]; ok {
		return v, nil
	}
	return s.fetch(ctx, arn)
}

// Refresh fetches the secret's value again, bypassing the cache, and keeps
// it: a secret rotated in place is picked up without a new container.
func (s *Secrets) Refresh(ctx context.Context, arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetch(ctx, arn)
}

// fetch reads arn and caches the value. The caller holds s.mu.
func (s *Secrets) fetch(ctx context.Context, arn string) ([]byte, error) {
	out, err := s.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return nil, fmt.Errorf("fetch secret %s: %w", arn, err)
	}
	var v []byte
	switch {
	case out.SecretString != nil:
		v = []byte(*out.SecretString)
	case len(out.SecretBinary) > 0:
		v = out.SecretBinary
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("fetch secret %s: %w", arn, ErrEmptySecret)
	}
	s.values[arn] = v
	return v, nil
}

// ErrEmptySecret is returned for a secret that exists but holds no value.
var ErrEmptySecret = errors.New("secret is empty")

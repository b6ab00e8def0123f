// Package secrets reads Secrets Manager secrets by ARN and keeps them for
// the life of a warm Lambda container.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// API is the part of the Secrets Manager client that Cache uses.
type API interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Cache fetches secret values by ARN and keeps them for the life of the
// process (one warm Lambda container). A failed fetch is not cached, so the
// next invocation tries again. Values are never logged; errors name the ARN
// and the cause, never the value.
type Cache struct {
	api API

	mu     sync.Mutex
	values map[string][]byte
}

// New returns a cache backed by api.
func New(api API) *Cache {
	return &Cache{api: api, values: make(map[string][]byte)}
}

// Get returns the secret's value (SecretString, or SecretBinary when the
// secret has no string). Concurrent callers for the same ARN share one fetch.
func (s *Cache) Get(ctx context.Context, arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[arn]; ok {
		return v, nil
	}
	return s.fetch(ctx, arn)
}

// Refresh fetches the secret's value again, bypassing the cache, and keeps
// it: a secret rotated in place is picked up without a new container.
func (s *Cache) Refresh(ctx context.Context, arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetch(ctx, arn)
}

// fetch reads arn and caches the value. The caller holds s.mu.
func (s *Cache) fetch(ctx context.Context, arn string) ([]byte, error) {
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
		return nil, fmt.Errorf("fetch secret %s: %w", arn, ErrEmpty)
	}
	s.values[arn] = v
	return v, nil
}

// ErrEmpty is returned for a secret that exists but holds no value.
var ErrEmpty = errors.New("secret is empty")

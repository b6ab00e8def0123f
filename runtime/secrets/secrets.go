// Package secrets reads Secrets Manager secrets by ARN and keeps them for
// the life of a warm Lambda container.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
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
	values map[string]version // by ARN: the AWSCURRENT version last read
}

// version is one read of a secret's current version.
type version struct {
	value   []byte
	created time.Time // when this version was created: when it replaced the one before
}

// New returns a cache backed by api.
func New(api API) *Cache {
	return &Cache{api: api, values: make(map[string]version)}
}

// Get returns the secret's value (SecretString, or SecretBinary when the
// secret has no string). Concurrent callers for the same ARN share one fetch.
func (s *Cache) Get(ctx context.Context, arn string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[arn]; ok {
		return v.value, nil
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
	v, err := valueOf(out)
	if err != nil {
		return nil, fmt.Errorf("fetch secret %s: %w", arn, err)
	}
	s.values[arn] = version{value: v, created: aws.ToTime(out.CreatedDate)}
	return v, nil
}

// valueOf is the SecretString, or SecretBinary when the secret has no string.
func valueOf(out *secretsmanager.GetSecretValueOutput) ([]byte, error) {
	var v []byte
	switch {
	case out.SecretString != nil:
		v = []byte(*out.SecretString)
	case len(out.SecretBinary) > 0:
		v = out.SecretBinary
	}
	if len(v) == 0 {
		return nil, ErrEmpty
	}
	return v, nil
}

// Previous returns the value the secret's current version replaced (the
// version Secrets Manager labels AWSPREVIOUS after a rotation in place) and
// when it was replaced: the creation time of the current version as last
// read (Get or Refresh; read now when it never was). A nil value and no
// error when the secret was never rotated. The previous value is not cached: callers
// keep what they accept, for as long as they accept it.
func (s *Cache) Previous(ctx context.Context, arn string) (value []byte, replacedAt time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.values[arn]
	if !ok {
		if _, err := s.fetch(ctx, arn); err != nil {
			return nil, time.Time{}, err
		}
		cur = s.values[arn]
	}
	out, err := s.api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(arn), VersionStage: aws.String(previousStage),
	})
	var nf *smtypes.ResourceNotFoundException
	switch {
	case errors.As(err, &nf):
		return nil, time.Time{}, nil // never rotated
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("fetch secret %s (%s): %w", arn, previousStage, err)
	}
	v, err := valueOf(out)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch secret %s (%s): %w", arn, previousStage, err)
	}
	return v, cur.created, nil
}

// previousStage is the staging label Secrets Manager moves to the version
// a new current version replaces.
const previousStage = "AWSPREVIOUS"

// ErrEmpty is returned for a secret that exists but holds no value.
var ErrEmpty = errors.New("secret is empty")

// Package githubapp is the GitHub App client of the scaleup and scaledown
// Lambdas: it creates just-in-time (JIT) runner configurations, lists and
// deletes self-hosted runners, and reads and reruns workflow jobs, as the
// App's installation on an organization (scope "org") or a repository (scope
// "repo").
//
// # Authentication
//
// The App's private key is parsed once by New. Installation tokens come from
// ghinstallation and are cached per installation for the life of the Client
// (one warm Lambda container) until a minute before they expire, so any
// number of calls for one installation costs one token request an hour.
//
// # Retries and rate limits
//
// Every request, the token request included, goes through one retrying
// http.RoundTripper: at most Config.MaxAttempts attempts, exponential backoff
// with full jitter (base 200ms, cap 5s) after network errors, 5xx and 429,
// and exactly the wait GitHub asks for after a secondary rate limit
// (Retry-After) or an exhausted primary limit (X-RateLimit-Remaining: 0, wait
// until X-RateLimit-Reset). A wait longer than Config.MaxRetryWait is not
// slept through: the call fails with a *RateLimitError saying when the limit
// resets, so the caller can retry its SQS message later. Other 4xx answers
// are not retried. The transport owns this policy; go-github's own
// client-side limiter (which would refuse requests with its own error types
// and its own clock) never sees a reset time.
//
// # Several Apps
//
// One App may generate only about 180 JIT configurations a minute. Apps
// spreads calls over several Apps installed on the same owners: a JIT
// config through the App with the most budget left, other calls in turn,
// a rate-limited App skipped until its reset, each App's installation on
// an owner looked up once. With one App it passes calls through unchanged.
//
// # Errors
//
// Failed calls return an *APIError naming the operation, the method and path
// (never the query), the status and GitHub's X-GitHub-Request-Id. Classify
// errors with errors.Is (ErrNotFound, ErrRunnerBusy, ErrRunnerGroupNotFound)
// and errors.As (*RateLimitError, *APIError). No error or log line carries a
// token, a JWT, the private key or a JIT configuration.
package githubapp

package githubapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v60/github"
)

// Sentinel errors; test for them with errors.Is.
var (
	// ErrNotFound means GitHub answered 404 for the object asked for (not
	// for the installation's token).
	ErrNotFound = errors.New("githubapp: not found")
	// ErrRunnerBusy means a runner could not be deleted or replaced because
	// it is running a job.
	ErrRunnerBusy = errors.New("githubapp: runner is busy")
	// ErrRunnerGroupNotFound means the organization has no runner group of
	// Config.RunnerGroup's name.
	ErrRunnerGroupNotFound = errors.New("githubapp: runner group not found")
)

const requestIDHeader = "X-GitHub-Request-Id"

// APIError is a failed GitHub call. Its message names the operation, the
// method and path of the request that failed (which may be the installation
// token request), the status and GitHub's request id; it never carries the
// query string, credentials or request and response bodies beyond GitHub's
// error message.
type APIError struct {
	// Op is what the Client was doing, e.g. "generate JIT config".
	Op string
	// Method and Path identify the request; Path is the URL path only.
	Method, Path string
	// StatusCode is GitHub's status, 0 when no response arrived.
	StatusCode int
	// RequestID is GitHub's X-GitHub-Request-Id, when known.
	RequestID string
	// Message is GitHub's error message, or the cause when there is none.
	Message string
	// Err is the underlying error (a *github.ErrorResponse, a
	// *RateLimitError, a *ghinstallation.HTTPError, a network or context
	// error).
	Err error

	kind error // the sentinel errors.Is matches besides Err's chain
}

// Error implements error.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("githubapp: ")
	b.WriteString(e.Op)
	fmt.Fprintf(&b, ": %s %s", e.Method, e.Path)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request id %s)", e.RequestID)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *APIError) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel this error was classified as
// (ErrNotFound, ErrRunnerBusy).
func (e *APIError) Is(target error) bool { return e.kind != nil && target == e.kind }

// RateLimitError means GitHub's rate limit (primary or secondary) demands a
// wait longer than Config.MaxRetryWait, longer than the context allows, or
// the attempts ran out while waiting. The caller should retry the work after
// ResetIn (e.g. by letting its SQS message become visible again then).
type RateLimitError struct {
	// ResetIn is how long until GitHub accepts requests again.
	ResetIn time.Duration
	// Secondary is true for a secondary rate limit (Retry-After), false for
	// an exhausted primary budget (X-RateLimit-Remaining: 0).
	Secondary bool
	// Method and Path identify the request that was limited.
	Method, Path string
	// StatusCode is GitHub's status (403 or 429), 0 when the request was not
	// sent because the budget was known to be exhausted.
	StatusCode int
	// RequestID is GitHub's X-GitHub-Request-Id, when a response arrived.
	RequestID string
}

// Error implements error.
func (e *RateLimitError) Error() string {
	kind := "primary rate limit exhausted"
	if e.Secondary {
		kind = "secondary rate limit"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "githubapp: %s %s: ", e.Method, e.Path)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, "%d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.RequestID != "" {
			fmt.Fprintf(&b, " (request id %s)", e.RequestID)
		}
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s, resets in %v", kind, e.ResetIn)
	return b.String()
}

// reason is the RateLimitError's text without the request.
func (e *RateLimitError) reason() string {
	if e.Secondary {
		return fmt.Sprintf("secondary rate limit, retry in %v", e.ResetIn)
	}
	return fmt.Sprintf("primary rate limit exhausted, resets in %v", e.ResetIn)
}

// sendError is the transport's failure to get any response: a network or
// context error, after the attempts it made.
type sendError struct {
	method, path string
	attempts     int
	err          error
}

func (e *sendError) Error() string {
	return fmt.Sprintf("%s %s: after %d attempt(s): %v", e.method, e.path, e.attempts, e.err)
}

func (e *sendError) Unwrap() error { return e.err }

// newAPIError is the one constructor of the Client's errors. op names the
// operation; method and path are the request the operation made (path
// includes the API base path). When err shows that another request failed
// (the installation token request), that one is named instead. A 404 of the
// operation's own request is classified as ErrNotFound.
func newAPIError(op, method, path string, err error) *APIError {
	e := &APIError{Op: op, Method: method, Path: path, Err: err}
	var (
		rle *RateLimitError
		ger *github.ErrorResponse
		he  *ghinstallation.HTTPError
		se  *sendError
	)
	switch {
	case errors.As(err, &rle):
		e.Method, e.Path, e.StatusCode, e.RequestID = rle.Method, rle.Path, rle.StatusCode, rle.RequestID
		e.Message = rle.reason()
	case errors.As(err, &ger) && ger.Response != nil:
		e.fromResponse(ger.Response)
		e.Message = githubMessage(ger)
	case errors.As(err, &he) && he.Response != nil:
		// ghinstallation leaves the body of a failed token response open.
		e.fromResponse(he.Response)
		e.Message = "installation token request failed"
		if m := bodyMessage(he.Response); m != "" {
			e.Message += ": " + m
		}
	case errors.As(err, &se):
		e.Method, e.Path = se.method, se.path
		e.Message = fmt.Sprintf("after %d attempt(s): %v", se.attempts, se.err)
	default:
		e.Message = causeText(err)
	}
	e.Message = strings.Join(strings.Fields(e.Message), " ") // GitHub's messages may span lines
	if e.StatusCode == http.StatusNotFound && e.Method == method && e.Path == path {
		e.kind = ErrNotFound
	}
	return e
}

// fromResponse takes status, request id and the request line from resp.
func (e *APIError) fromResponse(resp *http.Response) {
	e.StatusCode = resp.StatusCode
	e.RequestID = resp.Header.Get(requestIDHeader)
	if resp.Request != nil && resp.Request.URL != nil {
		e.Method, e.Path = resp.Request.Method, resp.Request.URL.Path
	}
}

// githubMessage is GitHub's message with its validation details.
func githubMessage(er *github.ErrorResponse) string {
	msg := er.Message
	var details []string
	for _, d := range er.Errors {
		switch {
		case d.Message != "":
			details = append(details, d.Message)
		case d.Code != "":
			details = append(details, strings.Trim(d.Field+" "+d.Code, " "))
		}
	}
	if len(details) > 0 {
		msg += " (" + strings.Join(details, "; ") + ")"
	}
	return msg
}

// bodyMessage reads GitHub's message from an error response body and closes
// it.
func bodyMessage(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	defer func() { _ = resp.Body.Close() }()
	var doc struct {
		Message string `json:"message"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&doc) != nil {
		return ""
	}
	return doc.Message
}

// causeText is err's message without the *url.Error wrapper, whose text
// repeats the full URL, query included.
func causeText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

// hasStatus reports whether err is GitHub's answer with status code to the
// operation's own request.
func hasStatus(err error, code int) bool {
	var ger *github.ErrorResponse
	return errors.As(err, &ger) && ger.Response != nil && ger.Response.StatusCode == code
}

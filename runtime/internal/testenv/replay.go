package testenv

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Replay is an HTTP transport for SDK clients that sends every request
// whose AWS operation match accepts twice and answers with the second
// response: what the SDK's retryer does when the response to a call that
// AWS applied is lost (a reset connection, a timeout). Code that must be
// safe to retry is tested through it.
type Replay struct {
	match    func(op string) bool
	mu       sync.Mutex
	replayed []string
}

// NewReplay returns a Replay of the operations match accepts (by name, as
// "PutItem" or "CreateSubnet").
func NewReplay(match func(op string) bool) *Replay { return &Replay{match: match} }

// Client returns an HTTP client for an SDK client's options (HTTPClient).
func (r *Replay) Client() *http.Client { return &http.Client{Transport: r} }

// Replayed lists the operations replayed so far, in order.
func (r *Replay) Replayed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.replayed...)
}

// RoundTrip implements http.RoundTripper.
func (r *Replay) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	_ = req.Body.Close()
	send := func() (*http.Response, error) {
		again := req.Clone(req.Context())
		again.Body = io.NopCloser(bytes.NewReader(body))
		return http.DefaultTransport.RoundTrip(again)
	}
	op := operation(req, body)
	if !r.match(op) {
		return send()
	}
	first, err := send()
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, first.Body)
	_ = first.Body.Close()
	r.mu.Lock()
	r.replayed = append(r.replayed, op)
	r.mu.Unlock()
	return send()
}

// operation names the AWS operation of req: the X-Amz-Target suffix of
// the JSON protocols (DynamoDB, SQS), or the Action of the query protocols
// (EC2).
func operation(req *http.Request, body []byte) string {
	if t := req.Header.Get("X-Amz-Target"); t != "" {
		return t[strings.LastIndexByte(t, '.')+1:]
	}
	form, _ := url.ParseQuery(string(body))
	return form.Get("Action")
}

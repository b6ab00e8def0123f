package sandbox

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// maxPayloadBytes is Lambda's synchronous invocation payload limit.
const maxPayloadBytes = 6 << 20

// webhookHandler stands in for API Gateway's HTTP API: route POST /webhook
// to the webhook Lambda with a payload 2.0 event and answer with its
// response.
func (s *Sandbox) webhookHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(WebhookPath, s.serveWebhook)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeGatewayError(w, http.StatusNotFound, "Not Found")
	})
	return mux
}

func writeGatewayError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"message":"`+msg+`"}`)
}

func (s *Sandbox) serveWebhook(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	if r.Method != http.MethodPost {
		// The stack's only route is POST /webhook.
		writeGatewayError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayloadBytes+1))
	if err != nil {
		writeGatewayError(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if len(body) > maxPayloadBytes {
		writeGatewayError(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	d := s.tracker.parseDelivery(r.Header.Get("X-GitHub-Event"), body, received)
	if d != nil {
		s.tracker.onDelivery(d)
		if status := s.deliveryFault(d); status != 0 {
			// Refused before the Lambda: throttled by the stage, or an
			// error of the gateway itself. GitHub records it as failed.
			s.tracker.onWebhookAnswer(d, status, nil)
			msg := "Too Many Requests"
			if status == http.StatusInternalServerError {
				msg = "Internal Server Error"
			}
			writeGatewayError(w, status, msg)
			return
		}
	}

	ev := gatewayEvent(r, body, received)
	payload, err := json.Marshal(ev)
	if err != nil {
		writeGatewayError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	// As behind API Gateway, the function runs to completion even when the
	// client gives up; only the sandbox's shutdown cuts it short.
	out, err := s.lambdas[FuncWebhook].invoke(s.ctx, payload)
	var resp events.APIGatewayV2HTTPResponse
	if err == nil {
		err = json.Unmarshal(out, &resp)
	}
	if err != nil || resp.StatusCode == 0 {
		// A function error or a crash: API Gateway answers 500.
		if err != nil && s.ctx.Err() == nil {
			s.log.Warn("webhook invocation failed", slog.String("error", err.Error()))
		}
		if d != nil {
			s.tracker.onWebhookAnswer(d, http.StatusInternalServerError, nil)
		}
		writeGatewayError(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	respBody := []byte(resp.Body)
	if resp.IsBase64Encoded {
		if b, err := base64.StdEncoding.DecodeString(resp.Body); err == nil {
			respBody = b
		}
	}
	if d != nil {
		s.tracker.onWebhookAnswer(d, resp.StatusCode, respBody)
	}
	h := w.Header()
	for k, v := range resp.Headers {
		h.Set(k, v)
	}
	for k, vs := range resp.MultiValueHeaders {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	for _, c := range resp.Cookies {
		h.Add("Set-Cookie", c)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}

// deliveryFault decides whether the endpoint refuses a queued delivery
// (Options.DeliveryFaultRate): 429 or 500, else 0.
func (s *Sandbox) deliveryFault(d *delivery) int {
	if s.opts.DeliveryFaultRate <= 0 || d.action != "queued" {
		return 0
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faultRNG.Float64() >= s.opts.DeliveryFaultRate {
		return 0
	}
	if s.faultRNG.IntN(2) == 0 {
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// gatewayEvent converts an HTTP request into API Gateway's payload 2.0:
// lower-cased header names (repeated headers joined by commas), the raw
// body (base64 only when it is not UTF-8, as API Gateway does for binary
// bodies), method, path and source.
func gatewayEvent(r *http.Request, body []byte, at time.Time) events.APIGatewayV2HTTPRequest {
	headers := make(map[string]string, len(r.Header)+1)
	for k, vs := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	headers["host"] = r.Host
	var query map[string]string
	if q := r.URL.Query(); len(q) > 0 {
		query = make(map[string]string, len(q))
		for k, vs := range q {
			query[k] = strings.Join(vs, ",")
		}
	}
	source, _, _ := net.SplitHostPort(r.RemoteAddr)
	ev := events.APIGatewayV2HTTPRequest{
		Version:               "2.0",
		RouteKey:              "POST " + WebhookPath,
		RawPath:               r.URL.Path,
		RawQueryString:        r.URL.RawQuery,
		Headers:               headers,
		QueryStringParameters: query,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     "POST " + WebhookPath,
			AccountID:    "123456789012",
			Stage:        "$default",
			RequestID:    requestID(),
			APIID:        "sandbox",
			DomainName:   r.Host,
			DomainPrefix: strings.SplitN(r.Host, ".", 2)[0],
			Time:         at.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:    at.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: source, UserAgent: r.UserAgent(),
			},
		},
	}
	if utf8.Valid(body) {
		ev.Body = string(body)
	} else {
		ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
	}
	return ev
}

package ghfake

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// deliveryTimeout is how long GitHub waits for a webhook answer.
const deliveryTimeout = 10 * time.Second

// Delivery is one webhook delivery as the App's delivery log records it.
type Delivery struct {
	ID          int64
	GUID        string // X-GitHub-Delivery
	DeliveredAt time.Time
	Redelivery  bool
	Duration    time.Duration
	// StatusCode is the endpoint's HTTP status, 0 when no response came
	// (connection refused, timeout); Status is GitHub's text for it.
	StatusCode int
	Status     string
	Event      string
	Action     string
	JobID      int64
	// InstallationID is the installation the payload names.
	InstallationID int64

	body []byte // what was sent, for a redelivery (GitHub resends it as it was)
}

// OK reports whether the endpoint answered 2xx.
func (d Delivery) OK() bool { return d.StatusCode >= 200 && d.StatusCode < 300 }

// SetWebhook sets the App's webhook URL and secret: from then on the fake
// delivers workflow_job events there (QueueJob, the dispatcher's
// in_progress, CompleteJob's and RunnerLost's completed), signed as GitHub
// signs them. As on GitHub, a failed delivery is recorded and never retried
// by itself. An empty url stops deliveries.
func (s *Server) SetWebhook(url string, secret []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hookURL, s.hookSecret = url, slices.Clone(secret)
}

// QueueJob adds a queued job (see AddJob) and delivers its queued webhook,
// as GitHub does when a workflow run reaches the job; the dispatcher (if
// started) then looks for a runner.
func (s *Server) QueueJob(ctx context.Context, j Job) (Job, Delivery) {
	j.Status = JobQueued
	j = s.AddJob(j)
	d := s.DeliverJob(ctx, j.ID, JobQueued)
	return j, d
}

// DeliverJob delivers job id's current state with action as a new delivery
// (a fresh GUID: GitHub's duplicate deliveries carry new GUIDs too) and
// returns its log entry. Without a webhook URL nothing is sent and the
// entry has StatusCode 0.
func (s *Server) DeliverJob(ctx context.Context, id int64, action string) Delivery {
	s.mu.Lock()
	url, secret := s.hookURL, s.hookSecret
	j := s.jobs[id]
	var snap Job
	if j != nil {
		snap = j.clone()
	}
	inst := s.installationForLocked(snap.Owner)
	s.mu.Unlock()
	d := Delivery{Event: "workflow_job", Action: action, JobID: id, InstallationID: inst, DeliveredAt: s.now().UTC()}
	if url == "" || j == nil {
		d.Status = "no webhook configured"
		return d
	}
	d.body = WorkflowJobPayload(WorkflowJobEvent{Action: action, Job: snap, InstallationID: inst, Now: s.now()})
	return s.send(ctx, d, url, secret)
}

// send posts d's body to url signed with secret (under d.GUID, or a new
// GUID when it has none), logs the attempt and returns its log entry.
func (s *Server) send(ctx context.Context, d Delivery, url string, secret []byte) Delivery {
	d.DeliveredAt = s.now().UTC()
	ctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	start := time.Now()
	req, err := NewWebhookRequest(ctx, url, "workflow_job", secret, d.body)
	if err == nil {
		if d.GUID != "" {
			req.Header.Set("X-GitHub-Delivery", d.GUID)
		}
		d.GUID = req.Header.Get("X-GitHub-Delivery")
		var resp *http.Response
		resp, err = s.hookClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			d.StatusCode = resp.StatusCode
		}
	}
	d.Duration = time.Since(start)
	switch {
	case err != nil && strings.Contains(err.Error(), "deadline"):
		d.Status = "timed out"
	case err != nil:
		d.Status = "failed to connect to host"
	case d.OK():
		d.Status = "OK"
	default:
		d.Status = fmt.Sprintf("Invalid HTTP Response: %d", d.StatusCode)
	}
	s.mu.Lock()
	s.nextDeliveryID++
	d.ID = s.nextDeliveryID
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	return d
}

// deliverAsync delivers in the background, as GitHub's hook service does;
// Close waits for deliveries in flight. A job's deliveries go out one at a
// time in the order they were made (in_progress before completed).
func (s *Server) deliverAsync(id int64, action string) {
	s.mu.Lock()
	off := s.hookURL == ""
	order := s.jobHooks[id]
	if order == nil {
		order = &sync.Mutex{}
		s.jobHooks[id] = order
	}
	s.mu.Unlock()
	if off {
		return
	}
	order.Lock() // taken here, in call order; released by the delivery
	s.inBackground(func(ctx context.Context) {
		defer order.Unlock()
		s.DeliverJob(ctx, id, action)
	})
}

// inBackground runs deliver in its own goroutine, counted as a delivery in
// flight, with a context that Close cancels.
func (s *Server) inBackground(deliver func(ctx context.Context)) {
	s.bg.Add(1)
	s.inflight.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.inflight.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		deliver(ctx)
	}()
}

// WaitDeliveries waits until no delivery is in flight (Close cancels them
// instead).
func (s *Server) WaitDeliveries() { s.inflight.Wait() }

// Deliveries returns the delivery log, oldest first.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deliveries)
}

// installationForLocked returns the lowest installation id on owner, or 0.
// The caller holds s.mu.
func (s *Server) installationForLocked(owner string) int64 {
	var id int64
	for iid, o := range s.installations {
		if strings.EqualFold(o, owner) && (id == 0 || iid < id) {
			id = iid
		}
	}
	return id
}

// Redeliveries counts the redeliveries asked for through
// POST /app/hook/deliveries/{id}/attempts.
func (s *Server) Redeliveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redeliveries
}

// hookDeliveryJSON is GitHub's delivery object in the App's delivery log.
type hookDeliveryJSON struct {
	ID             int64   `json:"id"`
	GUID           string  `json:"guid"`
	DeliveredAt    string  `json:"delivered_at"`
	Redelivery     bool    `json:"redelivery"`
	Duration       float64 `json:"duration"`
	Status         string  `json:"status"`
	StatusCode     int     `json:"status_code"`
	Event          string  `json:"event"`
	Action         *string `json:"action"`
	InstallationID *int64  `json:"installation_id"`
	RepositoryID   *int64  `json:"repository_id"`
	ThrottledAt    *string `json:"throttled_at"`
}

func (d Delivery) render() hookDeliveryJSON {
	return hookDeliveryJSON{
		ID: d.ID, GUID: d.GUID, DeliveredAt: d.DeliveredAt.UTC().Format(time.RFC3339), Redelivery: d.Redelivery,
		Duration: d.Duration.Seconds(), Status: d.Status, StatusCode: d.StatusCode, Event: d.Event,
		Action: optString(d.Action), InstallationID: optInt(d.InstallationID),
	}
}

// handleListDeliveries serves GET /app/hook/deliveries (App JWT): the
// delivery log newest first, per_page (default 30, at most 100) at a time,
// continued with the cursor of the Link header's rel="next" (GitHub's cursor
// pagination).
func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request, _ params) {
	q := r.URL.Query()
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || perPage <= 0 {
		perPage = defaultPerPage
	}
	perPage = min(perPage, maxPerPage)
	s.mu.Lock()
	log := slices.Clone(s.deliveries)
	s.mu.Unlock()
	slices.Reverse(log) // newest first
	from := 0
	if c := q.Get("cursor"); c != "" {
		// The cursor names the first delivery of the page: the log's ids
		// only grow, so it is the first entry at or below that id.
		id, err := strconv.ParseInt(strings.TrimPrefix(c, "v1_"), 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "Invalid cursor")
			return
		}
		from = len(log)
		for i, d := range log {
			if d.ID <= id {
				from = i
				break
			}
		}
	}
	to := min(from+perPage, len(log))
	if to < len(log) {
		w.Header().Set("Link", fmt.Sprintf("<%s/app/hook/deliveries?per_page=%d&cursor=v1_%d>; rel=\"next\"", apiBase(r), perPage, log[to].ID))
	}
	out := make([]hookDeliveryJSON, 0, to-from)
	for _, d := range log[from:to] {
		out = append(out, d.render())
	}
	writeJSON(w, http.StatusOK, out)
}

// deliveryOf finds delivery p["delivery_id"]. The caller holds s.mu.
func (s *Server) deliveryOf(p params) (Delivery, bool) {
	id, err := strconv.ParseInt(p["delivery_id"], 10, 64)
	if err != nil {
		return Delivery{}, false
	}
	for _, d := range s.deliveries {
		if d.ID == id {
			return d, true
		}
	}
	return Delivery{}, false
}

// handleGetDelivery serves GET /app/hook/deliveries/{delivery_id}.
func (s *Server) handleGetDelivery(w http.ResponseWriter, _ *http.Request, p params) {
	s.mu.Lock()
	d, ok := s.deliveryOf(p)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, d.render())
}

// handleRedeliver serves POST /app/hook/deliveries/{delivery_id}/attempts:
// 202, and the same payload goes out again under the same GUID, logged as a
// redelivery, in the background.
func (s *Server) handleRedeliver(w http.ResponseWriter, _ *http.Request, p params) {
	s.mu.Lock()
	d, ok := s.deliveryOf(p)
	url, secret := s.hookURL, s.hookSecret
	if ok {
		s.redeliveries++
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	d.Redelivery, d.StatusCode, d.Status, d.Duration = true, 0, "", 0
	s.inBackground(func(ctx context.Context) {
		if url != "" {
			s.send(ctx, d, url, secret)
		}
	})
	writeJSON(w, http.StatusAccepted, struct{}{})
}

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

// Delivery is one webhook delivery as its App's delivery log records it.
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
	// AppID is the App the delivery is of: its webhook received it, signed
	// with its secret, and only its delivery log lists it.
	AppID int64
	// InstallationID is the installation the payload names: the App's
	// installation on the job's owner.
	InstallationID int64

	body []byte // what was sent, for a redelivery (GitHub resends it as it was)
}

// OK reports whether the endpoint answered 2xx.
func (d Delivery) OK() bool { return d.StatusCode >= 200 && d.StatusCode < 300 }

// primaryHookID is the X-GitHub-Hook-ID of the primary App's deliveries
// (DeliveryHeaders'); other Apps' hooks get ids of their own.
const primaryHookID = "471398452"

// hookOrder names the sequence of one job's deliveries to one App.
type hookOrder struct{ job, app int64 }

// SetWebhook sets the primary App's webhook URL and secret: from then on
// the fake delivers workflow_job events there (QueueJob, the dispatcher's
// in_progress, CompleteJob's and RunnerLost's completed), signed as GitHub
// signs them. As on GitHub, a failed delivery is recorded and never retried
// by itself. An empty url stops deliveries. Other Apps get theirs with
// SetAppWebhook.
func (s *Server) SetWebhook(url string, secret []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primary.hookURL, s.primary.hookSecret = url, slices.Clone(secret)
}

// QueueJob adds a queued job (see AddJob) and delivers its queued webhook
// to every App with a webhook, as GitHub does when a workflow run reaches
// the job; the dispatcher (if started) then looks for a runner. The
// delivery returned is the primary App's, as DeliverJob's; JobDeliveries
// or the log has the others.
func (s *Server) QueueJob(ctx context.Context, j Job) (Job, Delivery) {
	j.Status = JobQueued
	j = s.AddJob(j)
	d := s.DeliverJob(ctx, j.ID, JobQueued)
	return j, d
}

// DeliverJob delivers job id's current state with action as new deliveries
// (fresh GUIDs: GitHub's duplicate deliveries carry new GUIDs too), one to
// each App with a webhook (see DeliverJobAll), and returns the primary
// App's log entry, which is what a Server with one App delivers. Without a
// primary webhook URL nothing is sent to the primary App and the entry has
// StatusCode 0.
func (s *Server) DeliverJob(ctx context.Context, id int64, action string) Delivery {
	primary, _ := s.deliverJob(ctx, id, action)
	return primary
}

// DeliverJobAll is DeliverJob returning every App's delivery, the primary
// App's first and then in the order of Apps: one per App with a webhook
// URL that is installed on the job's owner (the primary App is delivered
// to wherever it is installed or not, as before Apps were several; its
// payload then names no installation). Each goes out on its own, in
// parallel, signed with its App's secret and naming its App's
// installation, and each fails or succeeds on its own, as GitHub's
// deliveries to several Apps do.
func (s *Server) DeliverJobAll(ctx context.Context, id int64, action string) []Delivery {
	_, all := s.deliverJob(ctx, id, action)
	return all
}

// deliverJob delivers job id to every App and returns the primary App's
// entry (sent or not) and the entries of the deliveries sent.
func (s *Server) deliverJob(ctx context.Context, id int64, action string) (Delivery, []Delivery) {
	s.mu.Lock()
	apps := slices.Clone(s.apps)
	s.mu.Unlock()
	results := make([]Delivery, len(apps))
	sent := make([]bool, len(apps))
	var wg sync.WaitGroup
	for i, a := range apps {
		wg.Go(func() { results[i], sent[i] = s.deliverTo(ctx, id, action, a.id) })
	}
	wg.Wait()
	var all []Delivery
	for i := range apps {
		if sent[i] {
			all = append(all, results[i])
		}
	}
	return results[0], all
}

// deliverTo delivers job id's current state with action to App appID and
// returns its log entry and whether it was sent. It is not sent when the
// App has no webhook URL, the job does not exist, or an App other than the
// primary is not installed on the job's owner; the entry then has
// StatusCode 0 and says why.
func (s *Server) deliverTo(ctx context.Context, id int64, action string, appID int64) (Delivery, bool) {
	s.mu.Lock()
	a := s.appLocked(appID)
	var url string
	var secret []byte
	if a != nil {
		url, secret = a.hookURL, a.hookSecret
	}
	j := s.jobs[id]
	var snap Job
	if j != nil {
		snap = j.clone()
	}
	inst := s.installationOfLocked(appID, snap.Owner)
	primary := a == s.primary
	s.mu.Unlock()
	d := Delivery{Event: "workflow_job", Action: action, JobID: id, AppID: appID, InstallationID: inst, DeliveredAt: s.now().UTC()}
	switch {
	case url == "" || j == nil:
		d.Status = "no webhook configured"
		return d, false
	case inst == 0 && !primary:
		d.Status = "app not installed on " + snap.Owner
		return d, false
	}
	d.body = WorkflowJobPayload(WorkflowJobEvent{Action: action, Job: snap, InstallationID: inst, Now: s.now()})
	return s.send(ctx, d, url, secret), true
}

// send posts d's body to url signed with secret (under d.GUID, or a new
// GUID when it has none) with the hook headers of d's App, logs the
// attempt and returns its log entry.
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
		// The headers that tell a receiver which App a delivery is of.
		req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
		req.Header.Set("X-GitHub-Hook-Installation-Target-ID", strconv.FormatInt(d.AppID, 10))
		if d.AppID != s.primary.id {
			req.Header.Set("X-GitHub-Hook-ID", strconv.FormatInt(stableID("hook/"+strconv.FormatInt(d.AppID, 10)), 10))
		} else {
			req.Header.Set("X-GitHub-Hook-ID", primaryHookID)
		}
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

// deliverAsync delivers in the background to every App with a webhook, as
// GitHub's hook service does; Close waits for deliveries in flight. A
// job's deliveries to one App go out one at a time in the order they were
// made (in_progress before completed); different Apps' go out
// independently.
func (s *Server) deliverAsync(id int64, action string) {
	type target struct {
		app   int64
		order *sync.Mutex
	}
	var targets []target
	s.mu.Lock()
	for _, a := range s.apps {
		if a.hookURL == "" {
			continue
		}
		k := hookOrder{job: id, app: a.id}
		order := s.jobHooks[k]
		if order == nil {
			order = &sync.Mutex{}
			s.jobHooks[k] = order
		}
		targets = append(targets, target{app: a.id, order: order})
	}
	s.mu.Unlock()
	for _, t := range targets {
		t.order.Lock() // taken here, in call order; released by the delivery
		s.inBackground(func(ctx context.Context) {
			defer t.order.Unlock()
			s.deliverTo(ctx, id, action, t.app)
		})
	}
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

// Deliveries returns every App's deliveries, oldest first; each says its
// App (with one App, that App's delivery log). AppDeliveries has one App's
// log.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deliveries)
}

// AppDeliveries returns App appID's delivery log, oldest first: what GET
// /app/hook/deliveries lists to that App's JWT.
func (s *Server) AppDeliveries(appID int64) []Delivery {
	return s.deliveriesWhere(func(d Delivery) bool { return d.AppID == appID })
}

// JobDeliveries returns every App's deliveries of job jobID, oldest first,
// redeliveries included.
func (s *Server) JobDeliveries(jobID int64) []Delivery {
	return s.deliveriesWhere(func(d Delivery) bool { return d.JobID == jobID })
}

func (s *Server) deliveriesWhere(keep func(Delivery) bool) []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Delivery
	for _, d := range s.deliveries {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// Redeliveries counts the redeliveries asked for through
// POST /app/hook/deliveries/{id}/attempts, by all Apps.
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
// calling App's delivery log newest first, per_page (default 30, at most
// 100) at a time, continued with the cursor of the Link header's
// rel="next" (GitHub's cursor pagination).
func (s *Server) handleListDeliveries(w http.ResponseWriter, r *http.Request, _ params) {
	q := r.URL.Query()
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || perPage <= 0 {
		perPage = defaultPerPage
	}
	perPage = min(perPage, maxPerPage)
	log := s.AppDeliveries(s.callerOf(r).id)
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

// deliveryOf finds delivery p["delivery_id"] in App a's log: another
// App's delivery is not found, as on GitHub. The caller holds s.mu.
func (s *Server) deliveryOf(a *app, p params) (Delivery, bool) {
	id, err := strconv.ParseInt(p["delivery_id"], 10, 64)
	if err != nil {
		return Delivery{}, false
	}
	for _, d := range s.deliveries {
		if d.ID == id && d.AppID == a.id {
			return d, true
		}
	}
	return Delivery{}, false
}

// handleGetDelivery serves GET /app/hook/deliveries/{delivery_id}.
func (s *Server) handleGetDelivery(w http.ResponseWriter, r *http.Request, p params) {
	caller := s.callerOf(r)
	s.mu.Lock()
	d, ok := s.deliveryOf(caller, p)
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, d.render())
}

// handleRedeliver serves POST /app/hook/deliveries/{delivery_id}/attempts:
// 202, and the same payload goes out again under the same GUID to the
// calling App's current webhook, logged as a redelivery, in the
// background. Another App's delivery is 404.
func (s *Server) handleRedeliver(w http.ResponseWriter, r *http.Request, p params) {
	caller := s.callerOf(r)
	s.mu.Lock()
	d, ok := s.deliveryOf(caller, p)
	url, secret := caller.hookURL, caller.hookSecret
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

// Package redelivery brings back the webhook deliveries GitHub never
// retries. GitHub gives up on a delivery that our endpoint did not answer
// with 2xx (API Gateway throttled it, the webhook failed, a secret was being
// rotated, the network dropped it) and only records it in the App's
// delivery log. A job whose queued delivery was lost would have no record,
// so nothing else could find it.
//
// Recoverer.Run reads the log (GET /app/hook/deliveries, as the App) from
// the point the previous run reached, newest first; groups the attempts by
// delivery GUID (a redelivery keeps its GUID); and asks GitHub to redeliver
// (POST /app/hook/deliveries/{id}/attempts) every workflow_job delivery none
// of whose attempts succeeded. A run is bounded (pages read, redeliveries
// asked for); runs never overlap (a lease); and a GUID is redelivered at
// most a few times, a few minutes apart, across runs and containers (one
// conditional write per GUID). The webhook treats a redelivery like any
// duplicate delivery, so a delivery that had been processed after all
// changes nothing.
package redelivery

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jit-runners/jit-runners/runtime/githubapp"
)

// GitHub is the App's delivery log.
type GitHub interface {
	ListDeliveries(ctx context.Context, cursor string) ([]githubapp.Delivery, string, error)
	Redeliver(ctx context.Context, id int64) error
}

// Ledger keeps the recovery's state; *state.Store implements it.
type Ledger interface {
	RedeliveryMark(ctx context.Context) (time.Time, error)
	SetRedeliveryMark(ctx context.Context, t time.Time) error
	LeaseRedelivery(ctx context.Context, holder string, d time.Duration) (bool, error)
	ReleaseRedelivery(ctx context.Context, holder string) error
	ClaimRedelivery(ctx context.Context, guid string, max int, gap time.Duration) (bool, error)
}

// Options bound a run. Zero fields take the defaults.
type Options struct {
	// MaxPerRun bounds the redeliveries one run asks for (default 100).
	MaxPerRun int
	// Lookback is how far back the first run reads (default 1 hour).
	Lookback time.Duration
	// Overlap re-reads the log before the mark: entries appear only once
	// their attempt ended (GitHub waits 10 s), and a GUID's earlier
	// attempts tell whether it succeeded (default 10 minutes).
	Overlap time.Duration
	// MaxPages bounds the log pages one run reads (default 50, 5,000
	// deliveries).
	MaxPages int
	// MaxAttempts and Gap bound the redeliveries of one GUID (default 3, at
	// least 2 minutes apart).
	MaxAttempts int
	Gap         time.Duration
	// Lease is how long a run holds the lease (default 55 s, under the
	// one-minute schedule).
	Lease time.Duration
	// Holder names this run for the lease (default: a fresh value per
	// Recoverer).
	Holder string
}

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.MaxPerRun <= 0 {
		o.MaxPerRun = 100
	}
	if o.MaxPages <= 0 {
		o.MaxPages = 50
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	set(&o.Lookback, time.Hour)
	set(&o.Overlap, 10*time.Minute)
	set(&o.Gap, 2*time.Minute)
	set(&o.Lease, 55*time.Second)
	if o.Holder == "" {
		o.Holder = fmt.Sprintf("run-%d", time.Now().UnixNano())
	}
}

// Recoverer runs the recovery.
type Recoverer struct {
	gh     GitHub
	ledger Ledger
	opts   Options
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Recoverer. log may be nil (discard); now nil means time.Now.
func New(gh GitHub, ledger Ledger, opts Options, log *slog.Logger, now func() time.Time) *Recoverer {
	opts.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Recoverer{gh: gh, ledger: ledger, opts: opts, log: log, now: now}
}

// Report sums up a run.
type Report struct {
	// Leased is false when another run held the lease (nothing was done).
	Leased bool `json:"leased"`
	Pages  int  `json:"pages"`
	// Read counts the log entries read; Failed the GUIDs (workflow_job) with
	// no successful attempt among them.
	Read        int `json:"read"`
	Failed      int `json:"failed"`
	Redelivered int `json:"redelivered"`
	// Skipped counts failed GUIDs left for a later run: redelivered
	// recently or too often already, or over MaxPerRun.
	Skipped int `json:"skipped"`
	// Complete says the run read back to its start point (the mark moved).
	Complete bool      `json:"complete"`
	Mark     time.Time `json:"mark"`
}

// guid is what the log says of one delivery and its redeliveries.
type guid struct {
	ok       bool
	latestID int64
	latestAt time.Time
	event    string
	action   string
}

// Run reads the delivery log and redelivers what failed (see the package
// comment). An error reading the log or the ledger ends the run; the next
// one starts from the same mark.
func (r *Recoverer) Run(ctx context.Context) (*Report, error) {
	rep := &Report{}
	ok, err := r.ledger.LeaseRedelivery(ctx, r.opts.Holder, r.opts.Lease)
	if err != nil || !ok {
		return rep, err
	}
	rep.Leased = true
	defer func() {
		if err := r.ledger.ReleaseRedelivery(context.WithoutCancel(ctx), r.opts.Holder); err != nil {
			r.log.Warn("could not release the redelivery lease; it expires", slog.String("error", err.Error()))
		}
	}()
	now := r.now()
	mark, err := r.ledger.RedeliveryMark(ctx)
	if err != nil {
		return rep, err
	}
	from := now.Add(-r.opts.Lookback)
	if !mark.IsZero() {
		from = mark.Add(-r.opts.Overlap)
	}

	byGUID := map[string]*guid{}
	var order []string
	var newest time.Time
	cursor := ""
	for rep.Pages < r.opts.MaxPages {
		page, next, err := r.gh.ListDeliveries(ctx, cursor)
		if err != nil {
			return rep, fmt.Errorf("read the delivery log: %w", err)
		}
		rep.Pages++
		reachedStart := false
		for _, d := range page {
			if d.DeliveredAt.Before(from) {
				reachedStart = true
				continue
			}
			rep.Read++
			if d.DeliveredAt.After(newest) {
				newest = d.DeliveredAt
			}
			g := byGUID[d.GUID]
			if g == nil {
				g = &guid{}
				byGUID[d.GUID] = g
				order = append(order, d.GUID)
			}
			g.ok = g.ok || d.OK()
			if d.DeliveredAt.After(g.latestAt) || g.latestID == 0 {
				g.latestID, g.latestAt, g.event, g.action = d.ID, d.DeliveredAt, d.Event, d.Action
			}
		}
		if reachedStart || next == "" {
			rep.Complete = true
			break
		}
		cursor = next
	}

	// Oldest failures first: the log is newest first.
	for i := len(order) - 1; i >= 0; i-- {
		id := order[i]
		g := byGUID[id]
		if g.ok || g.event != "workflow_job" {
			continue
		}
		rep.Failed++
		if rep.Redelivered >= r.opts.MaxPerRun {
			rep.Skipped++
			continue
		}
		claimed, err := r.ledger.ClaimRedelivery(ctx, id, r.opts.MaxAttempts, r.opts.Gap)
		if err != nil {
			return rep, err
		}
		if !claimed {
			rep.Skipped++
			continue
		}
		log := r.log.With(slog.String("delivery_guid", id), slog.Int64("delivery_id", g.latestID), slog.String("action", g.action))
		if err := r.gh.Redeliver(ctx, g.latestID); err != nil {
			// Claimed once: the next run after the gap tries again.
			log.Warn("redelivery failed", slog.String("error", err.Error()))
			continue
		}
		rep.Redelivered++
		log.Info("failed delivery redelivered", slog.String("decision", "redelivered"))
	}

	// Move the mark only over what was read in full; a run cut short by
	// MaxPages keeps it, so the next run reads the older part again.
	if rep.Complete && !newest.IsZero() {
		if err := r.ledger.SetRedeliveryMark(ctx, newest); err != nil {
			return rep, err
		}
		rep.Mark = newest
	}
	r.log.Info("redelivery run done", slog.Any("report", rep))
	return rep, nil
}

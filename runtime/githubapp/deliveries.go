package githubapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-github/v60/github"
)

// Routes of the App's webhook delivery log.
const (
	routeListDeliveries = "GET /app/hook/deliveries"
	routeRedeliver      = "POST /app/hook/deliveries/{delivery_id}/attempts"
)

// Delivery is one attempt in the App's webhook delivery log.
type Delivery struct {
	ID          int64
	GUID        string // X-GitHub-Delivery, shared by a delivery and its redeliveries
	DeliveredAt time.Time
	Redelivery  bool
	// StatusCode is what our endpoint answered; 0 when no answer came
	// (connection refused, timed out).
	StatusCode int
	Status     string
	Event      string
	Action     string
}

// OK reports whether the endpoint answered 2xx.
func (d Delivery) OK() bool { return d.StatusCode >= 200 && d.StatusCode < 300 }

// ListDeliveries returns one page (at most 100) of the App's webhook
// delivery log, newest first, starting at cursor ("" for the newest), and
// the cursor of the next page ("" at the end). It authenticates as the App.
func (c *Client) ListDeliveries(ctx context.Context, cursor string) ([]Delivery, string, error) {
	gh, err := c.appClient()
	if err != nil {
		return nil, "", err
	}
	page, resp, err := gh.Apps.ListHookDeliveries(withRoute(ctx, routeListDeliveries), &github.ListCursorOptions{PerPage: perPage, Cursor: cursor})
	if err != nil {
		return nil, "", newAPIError("list webhook deliveries", http.MethodGet, c.path("app/hook/deliveries"), err)
	}
	out := make([]Delivery, 0, len(page))
	for _, d := range page {
		out = append(out, Delivery{
			ID: d.GetID(), GUID: d.GetGUID(), DeliveredAt: d.GetDeliveredAt().Time, Redelivery: d.GetRedelivery(),
			StatusCode: d.GetStatusCode(), Status: d.GetStatus(), Event: d.GetEvent(), Action: d.GetAction(),
		})
	}
	return out, resp.Cursor, nil
}

// Redeliver asks GitHub to deliver delivery id again (same payload, same
// GUID); GitHub answers 202 and delivers in the background.
func (c *Client) Redeliver(ctx context.Context, id int64) error {
	gh, err := c.appClient()
	if err != nil {
		return err
	}
	_, _, err = gh.Apps.RedeliverHookDelivery(withRoute(ctx, routeRedeliver), id)
	var accepted *github.AcceptedError
	if errors.As(err, &accepted) {
		err = nil // 202: the redelivery is under way
	}
	if err != nil {
		return newAPIError("redeliver webhook delivery", http.MethodPost, c.path(fmt.Sprintf("app/hook/deliveries/%d/attempts", id)), err)
	}
	return nil
}

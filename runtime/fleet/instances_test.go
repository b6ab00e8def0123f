package fleet_test

import (
	"context"
	"testing"
)

// TestListAndGet: List returns the deployment's instances that are not
// terminated, parsed from their tags; Get finds any instance by id, whatever
// its state or owner, and leaves out an id EC2 does not know instead of
// failing the whole call.
func TestListAndGet(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	l, _ := newLauncher(t, n)
	ctx := context.Background()
	prefix := "list" + n.lt[len(n.lt)-6:] // unique to this test's network
	var ids []string
	for job := int64(1); job <= 3; job++ {
		req := n.request(job)
		req.Tags["jitr:managed-by"] = prefix
		res, err := l.Launch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.InstanceID)
	}
	if err := l.Tag(ctx, ids[0], map[string]string{"Name": prefix + "-" + ids[0]}); err != nil {
		t.Fatal(err)
	}
	if err := l.Terminate(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}

	list, pages, err := l.List(ctx, prefix)
	if err != nil || pages < 1 {
		t.Fatalf("list: %v (%d pages)", err, pages)
	}
	byID := map[string]bool{}
	for _, in := range list {
		byID[in.ID] = true
		if in.ManagedBy != prefix || in.Repository != "octo/repo" || in.Profile != "default" || in.JobID < 1 || in.Zone == "" || in.InstanceType == "" {
			t.Errorf("listed %+v", in)
		}
		if in.ID == ids[0] && in.Runner != prefix+"-"+ids[0] {
			t.Errorf("Name tag not read: %+v", in)
		}
	}
	for _, in := range list {
		// The terminated one may show shutting-down for a while: listed,
		// not alive.
		if in.ID == ids[2] && in.Alive() {
			t.Errorf("a terminated instance listed as alive: %+v", in)
		}
		if (in.ID == ids[0] || in.ID == ids[1]) && !in.Alive() {
			t.Errorf("a launched instance not alive: %+v", in)
		}
	}
	if !byID[ids[0]] || !byID[ids[1]] {
		t.Errorf("list %v lacks %v", byID, ids[:2])
	}

	unknown := "i-0fffffffffffffff0"
	got, err := l.Get(ctx, ids[0], unknown, ids[2])
	if err != nil {
		t.Fatalf("get with an unknown id: %v", err)
	}
	gone := got[ids[2]]
	if _, ok := got[unknown]; ok || len(got) != 2 || got[ids[0]].JobID != 1 || gone.Alive() {
		t.Errorf("get %+v", got)
	}
}

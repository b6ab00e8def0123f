package metrics_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/metrics"
)

func TestPutWritesEMF(t *testing.T) {
	var buf bytes.Buffer
	r := metrics.New(&buf, "scaleup", "ci")
	r.Put(metrics.Launches, 1, metrics.Count, map[string]string{"Profile": "gpu", "CapacityType": "spot"})
	var doc struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Launches     float64
		Deployment   string
		Profile      string
		CapacityType string
		Function     string
	}
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &doc); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.String())
	}
	m := doc.AWS.CloudWatchMetrics
	if len(m) != 1 || m[0].Namespace != "jit-runners" || len(m[0].Dimensions) != 1 ||
		strings.Join(m[0].Dimensions[0], ",") != "CapacityType,Deployment,Profile" || m[0].Metrics[0].Name != "Launches" ||
		m[0].Metrics[0].Unit != "Count" || doc.AWS.Timestamp == 0 {
		t.Fatalf("EMF metadata = %+v", doc.AWS)
	}
	if doc.Launches != 1 || doc.Profile != "gpu" || doc.CapacityType != "spot" || doc.Function != "scaleup" || doc.Deployment != "ci" {
		t.Fatalf("EMF values = %+v", doc)
	}
}

func TestNilRecorderDiscards(t *testing.T) {
	var r *metrics.Recorder
	r.Inc(metrics.Launches, nil) // must not panic
}

// TestDeploymentCannotBeOverridden: a caller's dims cannot move a datum to
// another deployment, and a datum with no dims still carries its own.
func TestDeploymentCannotBeOverridden(t *testing.T) {
	var buf bytes.Buffer
	r := metrics.New(&buf, "webhook", "ci")
	r.Put(metrics.QueueToStartSeconds, 3, metrics.Seconds, map[string]string{metrics.Deployment: "other"})
	r.Put(metrics.WaitingJobs, 0, metrics.Count, nil)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var doc struct {
			Deployment string
			AWS        struct {
				CloudWatchMetrics []struct{ Dimensions [][]string }
			} `json:"_aws"`
		}
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Deployment != "ci" || len(doc.AWS.CloudWatchMetrics) != 1 ||
			strings.Join(doc.AWS.CloudWatchMetrics[0].Dimensions[0], ",") != metrics.Deployment {
			t.Errorf("datum %s: want only the Deployment dimension, ci", line)
		}
	}
}

package metrics_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/metrics"
)

func TestPutWritesEMF(t *testing.T) {
	var buf bytes.Buffer
	r := metrics.New(&buf, "scaleup")
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
		Profile      string
		CapacityType string
		Function     string
	}
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &doc); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.String())
	}
	m := doc.AWS.CloudWatchMetrics
	if len(m) != 1 || m[0].Namespace != "jit-runners" || len(m[0].Dimensions) != 1 ||
		len(m[0].Dimensions[0]) != 2 || m[0].Dimensions[0][0] != "CapacityType" || m[0].Metrics[0].Name != "Launches" ||
		m[0].Metrics[0].Unit != "Count" || doc.AWS.Timestamp == 0 {
		t.Fatalf("EMF metadata = %+v", doc.AWS)
	}
	if doc.Launches != 1 || doc.Profile != "gpu" || doc.CapacityType != "spot" || doc.Function != "scaleup" {
		t.Fatalf("EMF values = %+v", doc)
	}
}

func TestNilRecorderDiscards(t *testing.T) {
	var r *metrics.Recorder
	r.Inc(metrics.Launches, nil) // must not panic
}

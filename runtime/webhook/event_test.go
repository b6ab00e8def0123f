package webhook

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestDecodeGitHubsDelivery: GitHub's documented workflow_job delivery
// yields the fields the handler uses.
func TestDecodeGitHubsDelivery(t *testing.T) {
	body, err := os.ReadFile("testdata/workflow_job_queued.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := decodeWorkflowJob(body)
	if err != nil {
		t.Fatal(err)
	}
	j := p.WorkflowJob
	if p.Action != "queued" || j.ID != 2832853555 || j.RunID != 940463255 || j.Status != "queued" || j.Name != "build" ||
		j.WorkflowName != "CI" || strings.Join(j.Labels, ",") != "self-hosted,linux,x64" || j.CreatedAt != "2021-06-15T19:22:27Z" ||
		j.CompletedAt != "" || j.RunnerName != "" || p.Repository.FullName != "octo-org/example-workflow" ||
		p.Repository.Owner.Login != "octo-org" || p.Installation.ID == 0 {
		t.Errorf("decoded %+v %+v", p, j)
	}
}

// TestDecode: what GitHub may send decodes; what it never sends, or sends
// broken, is a bad payload (400) and never half-read.
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		check      func(*payload) bool // nil: must be refused
	}{
		{"minimal", `{"action":"queued","workflow_job":{"id":1,"labels":["a","b"]}}`,
			func(p *payload) bool { return p.WorkflowJob.ID == 1 && len(p.WorkflowJob.Labels) == 2 }},
		{"keys in another case", `{"ACTION":"queued","Workflow_Job":{"ID":1}}`,
			func(p *payload) bool { return p.Action == "queued" && p.WorkflowJob.ID == 1 }},
		{"escapes", `{"action":"q\u0075eued","workflow_job":{"id":1,"name":"caf\u00e9 \ud83d\ude00"}}`,
			func(p *payload) bool { return p.Action == "queued" && p.WorkflowJob.Name == "café 😀" }},
		{"owner from full_name", `{"action":"queued","workflow_job":{"id":1},"repository":{"full_name":"octo/app"}}`,
			func(p *payload) bool { return p.Repository.Owner.Login == "octo" }},
		{"runner and times", `{"action":"in_progress","workflow_job":{"id":1,"runner_id":7,"runner_name":"jitr-i-1",` +
			`"created_at":"2026-01-02T03:04:05+01:00","started_at":"2026-01-02T02:04:09Z"}}`,
			func(p *payload) bool {
				j := p.WorkflowJob
				return j.RunnerID == 7 && j.RunnerName == "jitr-i-1" && j.CreatedAt == "2026-01-02T02:04:05Z" && j.StartedAt == "2026-01-02T02:04:09Z"
			}},
		{"null parts", `{"action":"queued","workflow_job":{"id":1,"conclusion":null},"repository":null,"installation":null}`,
			func(p *payload) bool { return p.Installation.ID == 0 && p.Repository.FullName == "" }},
		{"steps are skipped", `{"action":"queued","workflow_job":{"id":1,"steps":[{"name":"x","number":1},{"anything":[1,{"a":null}]}]}}`,
			func(p *payload) bool { return p.WorkflowJob.ID == 1 }},
		{"broken steps", `{"action":"queued","workflow_job":{"id":1,"steps":[{"name":}]}}`, nil},
		{"id as a string", `{"action":"queued","workflow_job":{"id":"1"}}`, nil},
		{"labels not a list", `{"action":"queued","workflow_job":{"id":1,"labels":"x"}}`, nil},
		{"repository not an object", `{"action":"queued","workflow_job":{"id":1},"repository":"x"}`, nil},
		{"bad timestamp", `{"action":"queued","workflow_job":{"id":1,"created_at":"yesterday"}}`, nil},
		{"no job", `{"action":"queued"}`, nil},
		{"job null", `{"action":"queued","workflow_job":null}`, nil},
		{"no id", `{"action":"queued","workflow_job":{"name":"x"}}`, nil},
		{"no action", `{"workflow_job":{"id":1}}`, nil},
		{"trailing data", `{"action":"queued","workflow_job":{"id":1}} x`, nil},
		{"trailing comma", `{"action":"queued","workflow_job":{"id":1},}`, nil},
		{"leading zero", `{"action":"queued","workflow_job":{"id":01}}`, nil},
		{"control character", "{\"action\":\"queued\",\"workflow_job\":{\"id\":1,\"name\":\"\x01\"}}", nil},
		{"a list", `[]`, nil},
		{"empty", ``, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := decodeWorkflowJob([]byte(tc.body))
			if tc.check == nil {
				if err == nil || !errors.Is(err, errBadPayload) || p != nil {
					t.Fatalf("accepted %q: %+v %v", tc.body, p, err)
				}
				return
			}
			if err != nil || !tc.check(p) {
				t.Fatalf("%q: %+v %v", tc.body, p, err)
			}
		})
	}
}

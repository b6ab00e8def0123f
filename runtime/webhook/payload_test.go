package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
)

// oracle decodes with encoding/json into the same fields: the reference the
// single-pass decoder must agree with.
func oracle(body []byte) (*payload, error) {
	var p struct {
		Action      string `json:"action"`
		WorkflowJob *struct {
			ID           int64    `json:"id"`
			RunID        int64    `json:"run_id"`
			Status       string   `json:"status"`
			Conclusion   string   `json:"conclusion"`
			Labels       []string `json:"labels"`
			RunnerID     int64    `json:"runner_id"`
			RunnerName   string   `json:"runner_name"`
			CreatedAt    string   `json:"created_at"`
			StartedAt    string   `json:"started_at"`
			CompletedAt  string   `json:"completed_at"`
			Name         string   `json:"name"`
			WorkflowName string   `json:"workflow_name"`
		} `json:"workflow_job"`
		Repository struct {
			FullName string `json:"full_name"`
			Owner    struct {
				Login string `json:"login"`
			} `json:"owner"`
		} `json:"repository"`
		Installation struct {
			ID int64 `json:"id"`
		} `json:"installation"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	if p.WorkflowJob == nil || p.WorkflowJob.ID <= 0 || p.Action == "" {
		return nil, errors.New("incomplete")
	}
	out := &payload{Action: p.Action, WorkflowJob: (*workflowJob)(p.WorkflowJob)}
	out.Repository.FullName = p.Repository.FullName
	out.Repository.Owner.Login = p.Repository.Owner.Login
	out.Installation.ID = p.Installation.ID
	return out, nil
}

func agree(t *testing.T, body []byte) {
	t.Helper()
	got, gotErr := decodeWorkflowJob(body)
	want, wantErr := oracle(body)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("decode error %v; encoding/json error %v\nbody: %q", gotErr, wantErr, body)
	}
	if gotErr != nil {
		if !errors.Is(gotErr, errBadPayload) {
			t.Fatalf("error %v does not wrap errBadPayload", gotErr)
		}
		return
	}
	// The decoder fills the owner from full_name when absent; so must the oracle's view.
	if want.Repository.Owner.Login == "" && got.Repository.Owner.Login != "" {
		want.Repository.Owner.Login = got.Repository.Owner.Login
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decode = %+v %+v\nencoding/json = %+v %+v\nbody: %q", got, got.WorkflowJob, want, want.WorkflowJob, body)
	}
}

func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	fixture, err := os.ReadFile("testdata/workflow_job_queued.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{
		string(fixture),
		`{"action":"queued","workflow_job":{"id":1,"labels":["a","b"]}}`,
		`{"ACTION":"queued","Workflow_Job":{"ID":1}}`,
		`{"action":"queued","workflow_job":{"id":1},"workflow_job":{"labels":["x"]}}`,
		`{"action":"queued","workflow_job":{"id":1,"labels":[null,"x"]}}`,
		`{"action":"q\u0075eued","workflow_job":{"id":1,"name":"caf\u00e9 \ud83d\ude00","labels":["\u00fc"]}}`,
		`{"\u0061ction":"queued","workflow_job":{"id":1}}`,
		`{"action":"queued","workflow_job":{"id":1.0}}`,
		`{"action":"queued","workflow_job":{"id":1e2}}`,
		`{"action":"queued","workflow_job":{"id":-0}}`,
		`{"action":"queued","workflow_job":{"id":99999999999999999999}}`,
		`{"action":"queued","workflow_job":{"id":"1"}}`,
		`{"action":"queued","workflow_job":{"id":1,"labels":"x"}}`,
		`{"action":"queued","workflow_job":{"id":1},"repository":"x"}`,
		`{"action":"queued","workflow_job":{"id":1},"repository":null,"installation":null}`,
		`{"action":"queued","workflow_job":{"id":1}} x`,
		`{"action":"queued","workflow_job":{"id":1},}`,
		`{"action":"queued","workflow_job":{"id":01}}`,
		`{"action":"queued","workflow_job":{"id":1,"x":[1,2,{"a":[true,false,null]}]}}`,
		`{"action":"queued","workflow_job":{"id":1,"x":"\x01"}}`,
		`{"action":"queued","workflow_job":{"id":1,"x":"\q"}}`,
		` {"action":"queued","workflow_job":{"id":1}} ` + "\n",
		`[]`, `null`, `"x"`, `{`, ``, `{"a":}`, `{"a" 1}`, `{"a":1 "b":2}`, `{"a":tru}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`,
		"{\"action\":\"queued\",\"workflow_job\":{\"id\":1,\"name\":\"\xff\xfe\"}}",
		"{\"action\":\"queued\",\"\u017ftatus\":1,\"workflow_job\":{\"id\":1,\"\u017ftatus\":\"s\"}}",
	} {
		agree(t, []byte(body))
	}
}

// FuzzDecode: the single-pass decoder accepts exactly what encoding/json
// accepts and extracts the same fields.
func FuzzDecode(f *testing.F) {
	fixture, err := os.ReadFile("testdata/workflow_job_queued.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fixture)
	f.Add([]byte(`{"action":"queued","workflow_job":{"id":1,"labels":["a","b"]},"installation":{"id":2}}`))
	f.Add([]byte(`{"action":"q\u0075eued","workflow_job":{"id":1,"labels":[null]}}`))
	f.Fuzz(func(t *testing.T, body []byte) { agree(t, body) })
}

// Package policycheck validates the IAM policy documents of a plan offline,
// as strictly as that can be done without AWS: AWS's own CloudFormation
// linter (cfn-lint) checks each document's grammar, resources and actions,
// and the Service Authorization Reference (as data) checks that every
// condition key exists for the actions it conditions.
//
// Documents finds every policy in a plan: role trust policies, inline and
// managed identity policies, and resource policies. A plan input that holds
// a policy of a kind this package does not know is an error, so that a new
// kind of policy cannot go unchecked.
package policycheck

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/jit-runners/jit-runners/stack/plan"
)

// Kind is how IAM reads a document.
type Kind string

// The kinds of policy document.
const (
	Identity Kind = "identity" // attached to a role, user or group
	Trust    Kind = "trust"    // who may assume a role
	Resource Kind = "resource" // attached to a queue, secret, ...
)

// Document is one policy document of a plan.
type Document struct {
	Owner    string // the plan resource's name
	Type     string // its Pulumi type token
	Property string // the input that holds the document
	Kind     Kind
	Policy   json.RawMessage
}

// Name names the document in findings: owner.property.
func (d Document) Name() string { return d.Owner + "." + d.Property }

// policyInputs are the inputs that hold policy documents, by resource type.
var policyInputs = map[string]map[string]Kind{
	"aws:iam/role:Role":                            {"assumeRolePolicy": Trust, "inlinePolicies": Identity},
	"aws:iam/rolePolicy:RolePolicy":                {"policy": Identity},
	"aws:iam/policy:Policy":                        {"policy": Identity},
	"aws:iam/userPolicy:UserPolicy":                {"policy": Identity},
	"aws:iam/groupPolicy:GroupPolicy":              {"policy": Identity},
	"aws:sqs/queuePolicy:QueuePolicy":              {"policy": Resource},
	"aws:sqs/queue:Queue":                          {"policy": Resource},
	"aws:secretsmanager/secretPolicy:SecretPolicy": {"policy": Resource},
	"aws:secretsmanager/secret:Secret":             {"policy": Resource},
}

// Documents returns every policy document in entries, in plan order. It
// fails on a document it cannot read (unknown or secret at plan time) and on
// a policy-shaped input it does not know how IAM reads.
func Documents(entries []plan.Entry) ([]Document, error) {
	var docs []Document
	for _, e := range entries {
		inputs := policyInputs[e.Type]
		names := make([]string, 0, len(e.Inputs))
		for k := range e.Inputs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, prop := range names {
			v := e.Inputs[prop]
			kind, known := inputs[prop]
			if prop == "inlinePolicies" && known {
				if list, ok := v.([]any); ok && len(list) > 0 {
					return nil, fmt.Errorf("%s %s: inline policies in the role are not checked; use a RolePolicy", e.Type, e.Name)
				}
				continue
			}
			s, isString := v.(string)
			switch {
			case known && v == nil:
				continue
			case known && !isString:
				return nil, fmt.Errorf("%s %s.%s: policy is %T, want a JSON string", e.Type, e.Name, prop, v)
			case known && (s == plan.SecretValue || s == "[unknown]"):
				return nil, fmt.Errorf("%s %s.%s: policy is %s at plan time and cannot be checked", e.Type, e.Name, prop, s)
			case known:
				if !json.Valid([]byte(s)) {
					return nil, fmt.Errorf("%s %s.%s: policy is not JSON", e.Type, e.Name, prop)
				}
				docs = append(docs, Document{Owner: e.Name, Type: e.Type, Property: prop, Kind: kind, Policy: json.RawMessage(s)})
			case isString && looksLikePolicy(s):
				return nil, fmt.Errorf("%s %s.%s holds a policy document of a kind policycheck does not know", e.Type, e.Name, prop)
			}
		}
	}
	return docs, nil
}

// looksLikePolicy reports whether s is a JSON object with a Statement.
func looksLikePolicy(s string) bool {
	if !strings.Contains(s, "Statement") {
		return false
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal([]byte(s), &doc) != nil {
		return false
	}
	_, ok := doc["Statement"]
	return ok
}

// Finding is one problem in one document.
type Finding struct {
	Document  string // Document.Name
	Statement string // its Sid, or its index when it has none
	Rule      string // cfn-lint's rule id, or ConditionKeyRule
	Level     string // Error, Warning or Informational
	Message   string
	// Blocking findings fail the check: every error, unknown actions and
	// unknown condition keys.
	Blocking bool
}

func (f Finding) String() string {
	return fmt.Sprintf("%s statement %s: %s %s: %s", f.Document, f.Statement, f.Level, f.Rule, f.Message)
}

// Blocking returns the blocking findings.
func Blocking(findings []Finding) []Finding {
	var out []Finding
	for _, f := range findings {
		if f.Blocking {
			out = append(out, f)
		}
	}
	return out
}

// statement is the part of a statement the checks read. Action may be a
// string or a list.
type statement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Action    any                       `json:"Action"`
	Resource  any                       `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition"`
}

type document struct {
	Statement json.RawMessage `json:"Statement"`
}

// statements decodes a document's statements (a list, or one object).
func statements(policy json.RawMessage) ([]statement, error) {
	var d document
	if err := json.Unmarshal(policy, &d); err != nil {
		return nil, err
	}
	var list []statement
	if err := json.Unmarshal(d.Statement, &list); err == nil {
		return list, nil
	}
	var one statement
	if err := json.Unmarshal(d.Statement, &one); err != nil {
		return nil, err
	}
	return []statement{one}, nil
}

func (s statement) actions() []string { return stringList(s.Action) }

func (s statement) resources() []string { return stringList(s.Resource) }

// stringList reads a policy element that is one string or a list of them.
func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// roleStatements are the statements of the identity policies owned by
// owner; found is false when there is none.
func roleStatements(docs []Document, owner string) (list []statement, found bool, err error) {
	for _, d := range docs {
		if d.Kind != Identity || d.Owner != owner {
			continue
		}
		found = true
		sts, err := statements(d.Policy)
		if err != nil {
			return nil, true, err
		}
		list = append(list, sts...)
	}
	return list, found, nil
}

func statementName(s statement, i int) string {
	if s.Sid != "" {
		return s.Sid
	}
	return fmt.Sprintf("#%d", i)
}

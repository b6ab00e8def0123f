package runners

import (
	"encoding/json"
	"slices"
	"sort"
)

// PolicyDocument is an IAM policy document. The stack writes every policy
// from these types (never from string templates), and the tests parse them
// back into the same types.
type PolicyDocument struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement. Action and Resource are always
// lists; Condition maps an operator to condition keys and their values.
type Statement struct {
	Sid       string                    `json:"Sid,omitempty"`
	Effect    string                    `json:"Effect"`
	Principal map[string][]string       `json:"Principal,omitempty"`
	Action    []string                  `json:"Action"`
	Resource  []string                  `json:"Resource,omitempty"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// policy returns a document with the given statements.
func policy(statements ...Statement) PolicyDocument {
	return PolicyDocument{Version: "2012-10-17", Statement: statements}
}

// allow returns an Allow statement.
func allow(sid string, actions, resources []string, conditions ...condition) Statement {
	s := Statement{Sid: sid, Effect: "Allow", Action: actions, Resource: resources}
	for _, c := range conditions {
		if s.Condition == nil {
			s.Condition = map[string]map[string]any{}
		}
		if s.Condition[c.op] == nil {
			s.Condition[c.op] = map[string]any{}
		}
		s.Condition[c.op][c.key] = c.value
	}
	return s
}

type condition struct {
	op, key string
	value   any
}

func cond(op, key string, value any) condition { return condition{op: op, key: key, value: value} }

// assumeRole returns a trust policy letting service assume the role.
func assumeRole(service string, conditions ...condition) PolicyDocument {
	s := allow("", []string{"sts:AssumeRole"}, nil, conditions...)
	s.Principal = map[string][]string{"Service": {service}}
	return policy(s)
}

// JSON encodes the document.
func (d PolicyDocument) JSON() (string, error) {
	b, err := json.Marshal(d)
	return string(b), err
}

// unresourcedActions are the actions this stack grants on Resource "*"
// because they do not support resource-level permissions (the Service
// Authorization Reference lists no resource type for them).
var unresourcedActions = append([]string{
	"ec2:DescribeImages",
	"ec2:DescribeInstanceTypeOfferings",
	"ec2:DescribeInstanceTypes",
	"ec2:DescribeInstances",
	"ec2:DescribeLaunchTemplates",
	"ec2:DescribeSubnets",
}, sessionChannelActions...)

// UnresourcedActions returns the actions granted on Resource "*", sorted.
func UnresourcedActions() []string {
	out := slices.Clone(unresourcedActions)
	sort.Strings(out)
	return out
}

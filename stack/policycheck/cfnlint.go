package policycheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Lint runs AWS's CloudFormation linter (the cfnLint executable) over docs,
// each placed in the CloudFormation resource IAM reads it from like it reads
// ours: identity policies in an AWS::IAM::ManagedPolicy, trust policies in
// an AWS::IAM::Role, queue and secret policies in their resource policies.
// cfn-lint validates the grammar (E3510, E3512, E3530: an ARN or * as each
// resource, known condition operators) and knows every action (W3037).
//
// Every error is blocking, and so is W3037 (an unknown action); other
// warnings are returned as they are.
func Lint(ctx context.Context, cfnLint string, docs []Document) ([]Finding, error) {
	if len(docs) == 0 {
		return nil, errors.New("no policy documents to lint")
	}
	resources := map[string]any{}
	for i, d := range docs {
		r, err := cfnResource(d)
		if err != nil {
			return nil, err
		}
		resources[logicalID(i)] = r
	}
	template, err := json.MarshalIndent(map[string]any{
		"AWSTemplateFormatVersion": "2010-09-09",
		"Resources":                resources,
	}, "", " ")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "policycheck")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	path := filepath.Join(dir, "policies.json")
	if err := os.WriteFile(path, template, 0o600); err != nil {
		return nil, err
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, cfnLint, "--format", "json", "--", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	// cfn-lint's exit status is a bit mask of the levels it found (2
	// errors, 4 warnings, 8 informational); 1 means it failed itself.
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode()&1 == 1) {
		return nil, fmt.Errorf("%s: %w: %s", cfnLint, err, strings.TrimSpace(stderr.String()))
	}
	var results []struct {
		Level    string
		Message  string
		Location struct{ Path []any }
		Rule     struct{ Id string }
	}
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		return nil, fmt.Errorf("%s printed no JSON report: %w: %.200s", cfnLint, err, stdout.String())
	}
	var findings []Finding
	for _, r := range results {
		f := Finding{Rule: r.Rule.Id, Level: r.Level, Message: shorten(r.Message)}
		f.Blocking = r.Level == "Error" || r.Rule.Id == "W3037"
		f.Document, f.Statement = locate(docs, r.Location.Path)
		findings = append(findings, f)
	}
	return findings, nil
}

func logicalID(i int) string { return fmt.Sprintf("Doc%d", i) }

// cfnResource is the CloudFormation resource holding d's policy.
func cfnResource(d Document) (map[string]any, error) {
	policy := d.Policy
	switch {
	case d.Kind == Identity:
		return map[string]any{"Type": "AWS::IAM::ManagedPolicy", "Properties": map[string]any{"PolicyDocument": policy}}, nil
	case d.Kind == Trust:
		return map[string]any{"Type": "AWS::IAM::Role", "Properties": map[string]any{"AssumeRolePolicyDocument": policy}}, nil
	case strings.HasPrefix(d.Type, "aws:sqs/"):
		return map[string]any{"Type": "AWS::SQS::QueuePolicy", "Properties": map[string]any{
			"Queues": []string{"https://sqs.us-east-1.amazonaws.com/123456789012/queue"}, "PolicyDocument": policy}}, nil
	case strings.HasPrefix(d.Type, "aws:secretsmanager/"):
		return map[string]any{"Type": "AWS::SecretsManager::ResourcePolicy", "Properties": map[string]any{
			"SecretId": "secret", "ResourcePolicy": policy}}, nil
	}
	return nil, fmt.Errorf("%s (%s): no CloudFormation resource reads %s policies of this type", d.Name(), d.Type, d.Kind)
}

// locate maps a cfn-lint path (Resources, DocN, Properties, X, Statement,
// i, ...) to the document and statement it points at.
func locate(docs []Document, path []any) (doc, stmt string) {
	doc, stmt = "(template)", "-"
	if len(path) < 2 {
		return doc, stmt
	}
	id, _ := path[1].(string)
	var i int
	if _, err := fmt.Sscanf(id, "Doc%d", &i); err != nil || i < 0 || i >= len(docs) {
		return id, stmt
	}
	d := docs[i]
	doc = d.Name()
	for j := 2; j+1 < len(path); j++ {
		if path[j] != "Statement" {
			continue
		}
		n, ok := path[j+1].(float64)
		if !ok {
			break
		}
		stmt = fmt.Sprintf("#%d", int(n))
		if list, err := statements(d.Policy); err == nil && int(n) < len(list) {
			stmt = statementName(list[int(n)], int(n))
		}
		break
	}
	return doc, stmt
}

// shorten cuts cfn-lint's "is not one of [every action of the service]".
func shorten(msg string) string {
	if i := strings.Index(msg, " is not one of ["); i >= 0 {
		return msg[:i] + " is not a known action of the service"
	}
	return msg
}

package policycheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ConditionKeyRule names the findings of CheckConditionKeys (cfn-lint does
// not check condition keys).
const ConditionKeyRule = "condition-key"

// Reference is the part of AWS's Service Authorization Reference the checks
// read: per service, each action's condition keys and resource types, and
// each resource type's condition keys; and the global condition keys.
type Reference struct {
	services map[string]service
	global   []*regexp.Regexp
}

type service struct {
	actions       map[string]action   // by lower-case name
	resourceTypes map[string][]string // condition keys by resource type
}

type action struct {
	Name          string
	ConditionKeys []string `json:"conditionKeys"`
	ResourceTypes []struct {
		Name          string   `json:"name"`
		ConditionKeys []string `json:"conditionKeys"`
	} `json:"resourceTypes"`
}

// LoadReference reads the reference installed by install-reference.sh
// (`make tools`) from dir.
func LoadReference(dir string) (*Reference, error) {
	var globals []string
	if err := readJSON(filepath.Join(dir, "global-condition-keys.json"), &globals); err != nil {
		return nil, fmt.Errorf("IAM reference in %s (run `make tools`): %w", dir, err)
	}
	ref := &Reference{services: map[string]service{}}
	for _, k := range globals {
		ref.global = append(ref.global, keyPattern(k))
	}
	files, err := filepath.Glob(filepath.Join(dir, "data", "actions", "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) < 100 {
		return nil, fmt.Errorf("IAM reference in %s has %d services (run `make tools`)", dir, len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		s := service{actions: map[string]action{}, resourceTypes: map[string][]string{}}
		if err := readJSON(f, &s.actions); err != nil {
			return nil, err
		}
		var types map[string]struct {
			ConditionKeys []string `json:"conditionKeys"`
		}
		if err := readJSON(filepath.Join(dir, "data", "resourceTypes", name+".json"), &types); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for t, v := range types {
			s.resourceTypes[t] = v.ConditionKeys
		}
		ref.services[name] = s
	}
	return ref, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// keyPattern matches a reference key, whose variable parts are written
// ${TagKey}, ${...} or tag-key, case-insensitively as IAM does.
var keyVariable = regexp.MustCompile(`\$\{[^}]*\}|/tag-key$`)

func keyPattern(key string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?i)^")
	last := 0
	for _, m := range keyVariable.FindAllStringIndex(key, -1) {
		b.WriteString(regexp.QuoteMeta(key[last:m[0]]))
		if strings.HasPrefix(key[m[0]:], "/") {
			b.WriteString("/")
		}
		b.WriteString(`.+`)
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(key[last:]))
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// conditionKeys returns the service condition keys the reference lists for
// one action: its own, and those of the resource types it acts on. ok is
// false when the action is unknown.
func (r *Reference) conditionKeys(act string) (keys []string, ok bool) {
	svc, name, found := strings.Cut(act, ":")
	if !found {
		return nil, false
	}
	s, known := r.services[strings.ToLower(svc)]
	if !known {
		return nil, false
	}
	a, known := s.actions[strings.ToLower(name)]
	if !known {
		return nil, false
	}
	keys = append(keys, a.ConditionKeys...)
	for _, rt := range a.ResourceTypes {
		keys = append(keys, rt.ConditionKeys...)
		keys = append(keys, s.resourceTypes[rt.Name]...)
	}
	return keys, true
}

// CheckConditionKeys checks every condition key of docs: a global key must
// be one of AWS's global condition keys; a service key must be available
// for at least one of the statement's actions (an action's own keys and its
// resource types'). IAM accepts a policy with an unknown key and the
// condition then never matches (or, negated, always matches), so every
// finding is blocking.
func (r *Reference) CheckConditionKeys(docs []Document) ([]Finding, error) {
	var findings []Finding
	for _, d := range docs {
		list, err := statements(d.Policy)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Name(), err)
		}
		for i, s := range list {
			where := statementName(s, i)
			var available []string
			unknown := false
			for _, a := range s.actions() {
				if strings.Contains(a, "*") {
					unknown = true // a wildcard: any key of the service may apply
					continue
				}
				keys, ok := r.conditionKeys(a)
				if !ok {
					unknown = true // cfn-lint reports unknown actions
					continue
				}
				available = append(available, keys...)
			}
			for _, op := range slices.Sorted(maps.Keys(s.Condition)) {
				for _, key := range slices.Sorted(maps.Keys(s.Condition[op])) {
					if msg := r.checkKey(key, available, unknown, s.actions()); msg != "" {
						findings = append(findings, Finding{
							Document: d.Name(), Statement: where, Rule: ConditionKeyRule, Level: "Error",
							Message: fmt.Sprintf("%s %s: %s", op, key, msg), Blocking: true,
						})
					}
				}
			}
		}
	}
	return findings, nil
}

func (r *Reference) checkKey(key string, available []string, anyAction bool, actions []string) string {
	svc, _, ok := strings.Cut(key, ":")
	if !ok {
		return "not a condition key (service:name)"
	}
	if strings.EqualFold(svc, "aws") {
		for _, g := range r.global {
			if g.MatchString(key) {
				return ""
			}
		}
		return "not one of AWS's global condition keys"
	}
	for _, k := range available {
		if keyPattern(k).MatchString(key) {
			return ""
		}
	}
	if anyAction {
		return ""
	}
	return fmt.Sprintf("not a condition key of %s", strings.Join(actions, ", "))
}

package policycheck

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// ConditionCheck is the condition side of one function's sufficiency: the
// conditions of its Allow statements evaluated against the values the
// recorded calls carried (the sandbox's recorder, which reads them from
// each request as AWS puts them in the request context).
type ConditionCheck struct {
	Function string
	// Met are "Sid action key" whose every recorded value satisfies the
	// condition.
	Met []string
	// Gaps are conditions a recorded call fails, or whose key the record
	// does not show for an action it saw: each would be a denial on AWS.
	Gaps []string
	// Unseen are "Sid action" of conditioned statements whose action the
	// recorder never saw a context for.
	Unseen []string
}

// Conditions evaluates each conditioned Allow statement of each function's
// policy against facts: per function, "action" (the recorder saw a call
// authorised for it) and "action key=class" (one value the call carried
// for the key, classed as the recorder classes them). classOf classes a
// value written in a policy the same way ("" leaves it literal). The
// operators our policies use are evaluated: StringEquals, ArnEquals and
// ForAllValues:StringEquals (each value of a multivalued key); any other
// is a gap, so a new operator cannot pass unchecked.
//
// One action may be granted for calls of different shapes by different
// statements (ec2:CreateTags at launch, and on an existing instance). The
// recorder then writes the action of the other shapes as "action@shape",
// and shapes names, per "action@shape", the Sid of the one statement that
// authorises such calls: its facts are checked against that statement
// only, and that statement is left out of the check of the action's
// shapeless calls, which must meet every other conditioned statement.
func Conditions(docs []Document, policy map[string]string, facts Calls, classOf func(string) string, shapes map[string]string) ([]ConditionCheck, error) {
	for fn := range facts {
		if _, ok := policy[fn]; !ok {
			return nil, fmt.Errorf("condition facts recorded for %s, which has no policy to check them against", fn)
		}
	}
	shapeOf := map[string]string{} // Sid -> "action@shape"
	for shape, sid := range shapes {
		shapeOf[sid] = shape
	}
	var out []ConditionCheck
	for _, fn := range slices.Sorted(maps.Keys(policy)) {
		check := ConditionCheck{Function: fn}
		list, found, err := roleStatements(docs, policy[fn])
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("function %s: no identity policy owned by %s in the plan", fn, policy[fn])
		}
		groups := shapeGroups(facts[fn])
		for _, s := range list {
			if s.Effect != "Allow" || len(s.Condition) == 0 {
				continue
			}
			for _, a := range s.actions() {
				group := a
				if shape, ok := shapeOf[s.Sid]; ok {
					if base, _, _ := strings.Cut(shape, "@"); base != a {
						continue
					}
					group = shape
				}
				g := groups[group]
				if g[a] == 0 {
					check.Unseen = append(check.Unseen, s.Sid+" "+a)
					continue
				}
				met, gaps := evaluate(s, a, g, classOf)
				check.Met = append(check.Met, met...)
				check.Gaps = append(check.Gaps, gaps...)
			}
		}
		for group := range groups {
			if _, named := shapes[group]; strings.Contains(group, "@") && !named {
				check.Gaps = append(check.Gaps, group+": calls of a shape no statement is named for")
			}
		}
		sort.Strings(check.Met)
		sort.Strings(check.Gaps)
		sort.Strings(check.Unseen)
		out = append(out, check)
	}
	return out, nil
}

// shapeGroups splits facts by the shape of their action ("action" or
// "action@shape"), each group's facts written with the bare action.
func shapeGroups(facts map[string]int64) map[string]map[string]int64 {
	groups := map[string]map[string]int64{}
	for f, n := range facts {
		head, tail, hasTail := strings.Cut(f, " ")
		action, _, _ := strings.Cut(head, "@")
		g := groups[head]
		if g == nil {
			g = map[string]int64{}
			groups[head] = g
		}
		key := action
		if hasTail {
			key += " " + tail
		}
		g[key] += n
	}
	return groups
}

// evaluate checks statement s's conditions for action a.
func evaluate(s statement, a string, facts map[string]int64, classOf func(string) string) (met, gaps []string) {
	for _, op := range slices.Sorted(maps.Keys(s.Condition)) {
		for _, key := range slices.Sorted(maps.Keys(s.Condition[op])) {
			name := s.Sid + " " + a + " " + key
			switch op {
			case "StringEquals", "ArnEquals", "ForAllValues:StringEquals":
			default:
				gaps = append(gaps, name+": operator "+op+" is not evaluated")
				continue
			}
			want := map[string]bool{}
			for _, v := range stringList(s.Condition[op][key]) {
				if c := classOf(v); c != "" {
					v = c
				}
				want[v] = true
			}
			prefix := a + " " + key + "="
			seen, failed := 0, false
			for _, f := range slices.Sorted(maps.Keys(facts)) {
				class, ok := strings.CutPrefix(f, prefix)
				if !ok {
					continue
				}
				seen++
				if !want[class] {
					failed = true
					gaps = append(gaps, fmt.Sprintf("%s: %d calls carried %s, the condition wants %v", name, facts[f], class, slices.Sorted(maps.Keys(want))))
				}
			}
			switch {
			case seen == 0:
				gaps = append(gaps, name+": the record has no value of this key for the action")
			case !failed:
				met = append(met, name)
			}
		}
	}
	return met, gaps
}

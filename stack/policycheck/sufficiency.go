package policycheck

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Calls is a record of AWS requests: per function ("scaleup"), per
// operation as the sandbox's fault proxy names it ("dynamodb.UpdateItem":
// the SigV4 service, a dot, the API operation), the number of requests.
type Calls map[string]map[string]int64

// NoPermission are operations IAM never checks.
var NoPermission = map[string]string{
	"sts:GetCallerIdentity": "needs no permission (AWS STS documents that no policy can deny it)",
}

// Implied are the actions one API call is also authorised for: CreateFleet
// (type instant) authorises RunInstances for each instance it launches,
// CreateTags for its tag specifications, PassRole for the launch
// template's instance profile, and on an account's first spot or fleet
// launch CreateServiceLinkedRole.
var Implied = map[string][]string{
	"ec2:CreateFleet": {"ec2:RunInstances", "ec2:CreateTags", "iam:PassRole", "iam:CreateServiceLinkedRole"},
}

// Row is one function's sufficiency: the actions its calls need, those the
// policy does not grant (Denied), and the granted actions no call used,
// each with the reason it is still needed (Explained) or without (Unused).
type Row struct {
	Function  string
	Calls     int64
	Needed    []string // IAM actions the recorded calls need, sorted
	Denied    []string
	Explained map[string]string
	Unused    []string
}

// Action is the IAM action of an operation as the record names it.
func Action(op string) (string, error) {
	svc, name, ok := strings.Cut(op, ".")
	if !ok || svc == "" || name == "" {
		return "", fmt.Errorf("operation %q is not service.Operation", op)
	}
	return svc + ":" + name, nil
}

// Sufficiency checks calls against the identity policies in docs: policy
// maps each function to the Document.Owner of its role's policies, and
// reasons lists, per function, granted actions that the record need not
// show, with why.
func Sufficiency(docs []Document, policy map[string]string, calls Calls, reasons map[string]map[string]string) ([]Row, error) {
	var rows []Row
	for _, fn := range slices.Sorted(maps.Keys(policy)) {
		granted := map[string]string{} // lower case -> as written
		list, found, err := roleStatements(docs, policy[fn])
		if err != nil {
			return nil, err
		}
		for _, s := range list {
			if s.Effect != "Allow" {
				continue
			}
			for _, a := range s.actions() {
				granted[strings.ToLower(a)] = a
			}
		}
		if !found {
			return nil, fmt.Errorf("function %s: no identity policy owned by %s in the plan", fn, policy[fn])
		}
		row := Row{Function: fn, Explained: map[string]string{}}
		used := map[string]bool{}
		for op, n := range calls[fn] {
			row.Calls += n
			a, err := Action(op)
			if err != nil {
				return nil, err
			}
			if _, free := NoPermission[a]; free {
				continue
			}
			row.Needed = append(row.Needed, a)
			used[strings.ToLower(a)] = true
			for _, implied := range Implied[a] {
				used[strings.ToLower(implied)] = true
			}
			if _, ok := granted[strings.ToLower(a)]; !ok {
				row.Denied = append(row.Denied, a)
			}
		}
		sort.Strings(row.Needed)
		sort.Strings(row.Denied)
		for _, lower := range slices.Sorted(maps.Keys(granted)) {
			a := granted[lower]
			if used[lower] {
				continue
			}
			if why, ok := lookupFold(reasons[fn], a); ok {
				row.Explained[a] = why
				continue
			}
			row.Unused = append(row.Unused, a)
		}
		rows = append(rows, row)
	}
	for fn := range calls {
		if _, ok := policy[fn]; !ok {
			return nil, fmt.Errorf("calls recorded for %s, which has no policy to check them against", fn)
		}
	}
	return rows, nil
}

func lookupFold(m map[string]string, key string) (string, bool) {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// Table renders rows as the sufficiency table.
func Table(rows []Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %6s  %-8s %-7s %-9s %s\n", "function", "calls", "actions", "denied", "explained", "unused")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-10s %6d  %-8d %-7d %-9d %d\n", r.Function, r.Calls, len(r.Needed), len(r.Denied), len(r.Explained), len(r.Unused))
	}
	return b.String()
}

// ResourceGaps checks the resource side of a record: resources maps each
// function to "service.Operation class" counts, where class names one of
// the deployment's resources ("jobs-table", "jobs-table/index/wait-index",
// "queue", "app-key"); classOf names the resource an ARN of the plan
// denotes ("" for none of those). It returns, per function, the calls that
// no Allow statement of its policy grants on that resource (or on "*").
func ResourceGaps(docs []Document, policy map[string]string, resources Calls, classOf func(arn string) string) (map[string][]string, error) {
	gaps := map[string][]string{}
	for _, fn := range slices.Sorted(maps.Keys(resources)) {
		owner, ok := policy[fn]
		if !ok {
			return nil, fmt.Errorf("resources recorded for %s, which has no policy to check them against", fn)
		}
		list, _, err := roleStatements(docs, owner)
		if err != nil {
			return nil, err
		}
		for _, call := range slices.Sorted(maps.Keys(resources[fn])) {
			op, class, ok := strings.Cut(call, " ")
			if !ok || class == "" {
				return nil, fmt.Errorf("%s: record entry %q is not \"service.Operation resource\"", fn, call)
			}
			action, err := Action(op)
			if err != nil {
				return nil, err
			}
			if !grantsOn(list, action, class, classOf) {
				gaps[fn] = append(gaps[fn], action+" on "+class)
			}
		}
	}
	return gaps, nil
}

func grantsOn(list []statement, action, class string, classOf func(string) string) bool {
	for _, s := range list {
		if s.Effect != "Allow" || !slices.ContainsFunc(s.actions(), func(a string) bool { return strings.EqualFold(a, action) }) {
			continue
		}
		for _, r := range s.resources() {
			if r == "*" || classOf(r) == class {
				return true
			}
		}
	}
	return false
}

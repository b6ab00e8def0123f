package sandbox

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// The condition side of the IAM record. moto evaluates no IAM condition
// (with INITIAL_NO_AUTH_ACTION_COUNT it denies every statement that has
// one), so the proxy reads, from each request, the values the conditions
// of our policies look at, the way AWS puts them in the request context,
// and records them as facts:
//
//	"<action>"                  the recorder saw this action's context
//	"<action> <key>=<class>"    one value of condition key <key>
//
// where <action> is every IAM action the call is authorised for
// (CreateFleet also for ec2:RunInstances and ec2:CreateTags, as AWS
// evaluates them), and <class> names the value among the deployment's
// resources ("name-prefix", "launch-template", "subnet", "own-instance"),
// is the literal value for AWS-defined ones ("CreateFleet"), "absent" when
// the request carries none, or "other:<value>". stack/policycheck checks
// every fact against the conditions of the function's statements.

// sessionTokenPrefix starts the session token of a simulated instance's
// credentials: the rest is the instance's ARN, which AWS would put in the
// request context as ec2:SourceInstanceARN for instance-profile
// credentials.
const sessionTokenPrefix = "jitr-sandbox-instance:"

// conditionContext is what the recorder needs to class values.
type conditionContext struct {
	classes map[string]string
	// managedBy returns the jitr:managed-by tag of each instance (absent:
	// not in the map), read from the AWS endpoint directly.
	managedBy func(ctx context.Context, ids []string) (map[string]string, error)
}

var (
	tagSpecTypeRE = regexp.MustCompile(`^TagSpecification\.(\d+)\.ResourceType$`)
	instanceIDRE  = regexp.MustCompile(`^InstanceId\.\d+$`)
	resourceIDRE  = regexp.MustCompile(`^ResourceId\.\d+$`)
	templateRE    = regexp.MustCompile(`^LaunchTemplateConfigs\.\d+\.LaunchTemplateSpecification\.LaunchTemplate(Id|Name)$`)
)

// conditionFacts returns the facts of one request of function fn.
func (c *conditionContext) conditionFacts(r *http.Request, op string, form url.Values, body []byte) []string {
	if c == nil {
		return nil
	}
	switch op {
	case "ec2.CreateFleet":
		return c.createFleetFacts(form)
	case "ec2.TerminateInstances", "ec2.StartInstances", "ec2.StopInstances":
		return c.resourceTagFacts(r.Context(), "ec2:"+strings.TrimPrefix(op, "ec2."), form, instanceIDRE)
	case "ec2.CreateTags":
		return c.retagFacts(r.Context(), form)
	case "dynamodb.DeleteItem", "dynamodb.GetItem", "dynamodb.PutItem", "dynamodb.UpdateItem":
		if token := r.Header.Get("X-Amz-Security-Token"); strings.HasPrefix(token, sessionTokenPrefix) {
			return leadingKeyFacts("dynamodb:"+strings.TrimPrefix(op, "dynamodb."), strings.TrimPrefix(token, sessionTokenPrefix), body)
		}
	}
	return nil
}

func (c *conditionContext) class(v string) string {
	if cl, ok := c.classes[v]; ok {
		return cl
	}
	return "other:" + v
}

func (c *conditionContext) createFleetFacts(form url.Values) []string {
	const tagKey = "aws:RequestTag/" + tags.ManagedBy
	// The request tags of each resource type the call creates with tags.
	requestTag := map[string]string{"instance": "absent", "volume": "absent"}
	for k, v := range form {
		m := tagSpecTypeRE.FindStringSubmatch(k)
		if m == nil || len(v) == 0 {
			continue
		}
		for i := 1; ; i++ {
			prefix := "TagSpecification." + m[1] + ".Tag." + strconv.Itoa(i) + "."
			key, ok := form[prefix+"Key"]
			if !ok {
				break
			}
			if len(key) > 0 && key[0] == tags.ManagedBy {
				requestTag[v[0]] = c.class(form.Get(prefix + "Value"))
			}
		}
	}
	var templates, subnets []string
	for k, v := range form {
		switch {
		case templateRE.MatchString(k) && len(v) > 0:
			templates = append(templates, c.class(v[0]))
		case len(v) > 0 && overrideField(k) == "SubnetId":
			subnets = append(subnets, c.class(v[0]))
		}
	}
	if len(templates) == 0 {
		templates = []string{"absent"}
	}
	if len(subnets) == 0 {
		// Without an override EC2 picks the template's or the default
		// subnet, which is not one of ours.
		subnets = []string{"absent"}
	}
	facts := []string{"ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateTags", "ec2:CreateTags ec2:CreateAction=CreateFleet"}
	for _, rt := range slices.Sorted(maps.Keys(requestTag)) {
		for _, a := range []string{"ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateTags"} {
			facts = append(facts, a+" "+tagKey+"="+requestTag[rt])
		}
	}
	for _, t := range templates {
		facts = append(facts, "ec2:RunInstances ec2:LaunchTemplate="+t)
	}
	for _, s := range subnets {
		facts = append(facts, "ec2:CreateFleet ec2:Subnet="+s, "ec2:RunInstances ec2:Subnet="+s)
	}
	return facts
}

// resourceTagFacts: the jitr:managed-by tag of each instance the request
// names (by form keys matching idKey), as the instance carries it now.
func (c *conditionContext) resourceTagFacts(ctx context.Context, action string, form url.Values, idKey *regexp.Regexp) []string {
	var ids []string
	for k, v := range form {
		if idKey.MatchString(k) && len(v) > 0 {
			ids = append(ids, v[0])
		}
	}
	facts := []string{action}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	managed, err := c.managedBy(ctx, ids)
	if err != nil {
		return append(facts, action+" aws:ResourceTag/"+tags.ManagedBy+"=unread:"+err.Error())
	}
	for _, id := range ids {
		v, ok := managed[id]
		cl := "absent"
		if ok {
			cl = c.class(v)
		}
		facts = append(facts, action+" aws:ResourceTag/"+tags.ManagedBy+"="+cl)
	}
	return facts
}

// retagFacts: a CreateTags on existing instances (scaleup retags a pooled
// instance a job takes), a shape of CreateTags of its own ("@existing",
// see stack/policycheck.Conditions): the instances' jitr:managed-by tag,
// and the value the request sets for it (absent when it sets none).
func (c *conditionContext) retagFacts(ctx context.Context, form url.Values) []string {
	const action = "ec2:CreateTags@existing"
	facts := c.resourceTagFacts(ctx, action, form, resourceIDRE)
	requested := "absent"
	for i := 1; ; i++ {
		key, ok := form["Tag."+strconv.Itoa(i)+".Key"]
		if !ok {
			break
		}
		if len(key) > 0 && key[0] == tags.ManagedBy {
			requested = c.class(form.Get("Tag." + strconv.Itoa(i) + ".Value"))
		}
	}
	return append(facts, action+" aws:RequestTag/"+tags.ManagedBy+"="+requested)
}

// leadingKeyFacts: dynamodb:LeadingKeys is the partition key the request
// names; "own-instance" when it is the caller's instance ARN.
func leadingKeyFacts(action, sourceARN string, body []byte) []string {
	var req struct {
		Key  map[string]map[string]any `json:"Key"`
		Item map[string]map[string]any `json:"Item"`
	}
	_ = json.Unmarshal(body, &req)
	key := req.Key
	if key == nil {
		key = req.Item
	}
	cl := "absent"
	if v, ok := key[jitstore.AttrInstanceARN]["S"].(string); ok {
		cl = "other-instance"
		if v == sourceARN {
			cl = "own-instance"
		}
	}
	return []string{action, action + " dynamodb:LeadingKeys=" + cl}
}

// managedBy reads the jitr:managed-by tag of instances from the AWS endpoint
// itself (not through the proxy, so unrecorded).
func (s *Sandbox) managedBy(ctx context.Context, ids []string) (map[string]string, error) {
	found, err := s.instances.Get(ctx, ids...)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for id, in := range found {
		if in.ManagedBy != "" {
			out[id] = in.ManagedBy
		}
	}
	return out, nil
}

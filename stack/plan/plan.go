// Package plan runs a Pulumi program against mocks instead of AWS and
// records every resource the program registers with its inputs. It is the
// engine of `make plan` (an offline plan a user can read before `pulumi up`)
// and of the stack's tests, which inspect the same records.
//
// The Go SDK has no RunWithMocks; Run is that helper: pulumi.RunErr with
// pulumi.WithMocks and the stack configuration a real `pulumi up` would
// pass.
package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Project and Stack are the names programs run under.
const (
	Project = "jit-runners"
	Stack   = "plan"
)

// Resource is one registered resource.
type Resource struct {
	Type   string
	Name   string
	URN    string
	Parent string // the parent's URN
	Custom bool   // false for component resources
	// Dependencies are the URNs the resource depends on: explicit ones and
	// those of the resources its inputs come from.
	Dependencies []string
	ID           string
	Inputs       resource.PropertyMap
	// Outputs are the inputs plus what the mocks computed (arn, url, ...).
	Outputs resource.PropertyMap
}

// Invoke is one provider function call (a data source).
type Invoke struct {
	Token string
	Args  resource.PropertyMap
}

// Mocks implements pulumi.MockResourceMonitor with outputs shaped like
// AWS's (ARNs, queue URLs, resource ids), so programs that derive names
// and policies from outputs see realistic values.
type Mocks struct {
	Account           string
	Region            string
	Partition         string
	AvailabilityZones []string
	// Parameters are SSM parameter values by name (aws:ssm/getParameter).
	Parameters map[string]string
	// Images are AMI ids by name filter (aws:ec2/getAmi); an empty id
	// means no AMI matches. A filter not listed finds ImageID(filter).
	Images map[string]string

	mu        sync.Mutex
	resources []Resource
	invokes   []Invoke
}

// NewMocks returns mocks for account 123456789012 in eu-west-1, with the
// Amazon Linux 2023 AMI parameters set.
func NewMocks() *Mocks {
	return &Mocks{
		Account: "123456789012", Region: "eu-west-1", Partition: "aws",
		AvailabilityZones: []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"},
		Parameters: map[string]string{
			"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64": "ami-0a1b2c3d4e5f60001",
			"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64":  "ami-0a1b2c3d4e5f60002",
		},
	}
}

// Option configures Run.
type Option func(*pulumi.RunInfo)

// WithConfig passes stack configuration: full keys ("jit-runners:maxRunners")
// to values as the CLI passes them (objects and arrays as JSON). Keys in
// secret are marked secret, as `pulumi config set --secret` would.
func WithConfig(config map[string]string, secret []string) Option {
	return func(info *pulumi.RunInfo) {
		info.Config = config
		info.ConfigSecretKeys = secret
	}
}

// Run runs program against m.
func Run(program pulumi.RunFunc, m *Mocks, opts ...Option) error {
	ro := []pulumi.RunOption{pulumi.WithMocks(Project, Stack, m)}
	for _, o := range opts {
		ro = append(ro, pulumi.RunOption(o))
	}
	return pulumi.RunErr(program, ro...)
}

// Resources returns the registered resources sorted by URN.
func (m *Mocks) Resources() []Resource {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]Resource(nil), m.resources...)
	sort.Slice(out, func(i, j int) bool { return out[i].URN < out[j].URN })
	return out
}

// Invokes returns the provider function calls in the order they were made.
func (m *Mocks) Invokes() []Invoke {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Invoke(nil), m.invokes...)
}

// Call implements pulumi.MockResourceMonitor.
func (m *Mocks) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	m.mu.Lock()
	m.invokes = append(m.invokes, Invoke{Token: args.Token, Args: args.Args})
	m.mu.Unlock()
	switch args.Token {
	case "aws:index/getCallerIdentity:getCallerIdentity":
		return resource.NewPropertyMapFromMap(map[string]any{
			"accountId": m.Account, "id": m.Account, "userId": "AIDAMOCK",
			"arn": "arn:" + m.Partition + ":iam::" + m.Account + ":user/plan",
		}), nil
	case "aws:index/getPartition:getPartition":
		return resource.NewPropertyMapFromMap(map[string]any{
			"partition": m.Partition, "id": m.Partition, "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws",
		}), nil
	case "aws:index/getRegion:getRegion":
		return resource.NewPropertyMapFromMap(map[string]any{
			"name": m.Region, "id": m.Region, "description": m.Region, "endpoint": "ec2." + m.Region + ".amazonaws.com",
		}), nil
	case "aws:index/getAvailabilityZones:getAvailabilityZones":
		names := make([]any, len(m.AvailabilityZones))
		for i, z := range m.AvailabilityZones {
			names[i] = z
		}
		return resource.NewPropertyMapFromMap(map[string]any{"id": m.Region, "names": names, "zoneIds": names}), nil
	case "aws:ssm/getParameter:getParameter":
		name := args.Args["name"].StringValue()
		v, ok := m.Parameters[name]
		if !ok {
			return nil, fmt.Errorf("ssm parameter %s not found", name)
		}
		return resource.NewPropertyMapFromMap(map[string]any{
			"name": name, "value": v, "insecureValue": v, "type": "String", "id": name,
			"arn": "arn:" + m.Partition + ":ssm:" + m.Region + "::parameter" + name,
		}), nil
	case "aws:ec2/getAmi:getAmi":
		return m.image(args.Args)
	}
	return nil, fmt.Errorf("plan: no mock for %s", args.Token)
}

// image answers aws:ec2/getAmi from its name filter.
func (m *Mocks) image(args resource.PropertyMap) (resource.PropertyMap, error) {
	name, arch := "", ""
	if f, ok := args["filters"]; ok && f.IsArray() {
		for _, e := range f.ArrayValue() {
			if !e.IsObject() {
				continue
			}
			values := e.ObjectValue()["values"]
			if !values.IsArray() || len(values.ArrayValue()) == 0 || !values.ArrayValue()[0].IsString() {
				continue
			}
			switch v := values.ArrayValue()[0].StringValue(); e.ObjectValue()["name"].StringValue() {
			case "name":
				name = v
			case "architecture":
				arch = v
			}
		}
	}
	id, listed := m.Images[name]
	if !listed {
		id = ImageID(name)
	}
	if id == "" || name == "" {
		return nil, fmt.Errorf("your query returned no results (no AMI named %s)", name)
	}
	var owner any = m.Account
	if o, ok := args["owners"]; ok && o.IsArray() && len(o.ArrayValue()) > 0 && o.ArrayValue()[0].IsString() {
		owner = o.ArrayValue()[0].StringValue()
	}
	return resource.NewPropertyMapFromMap(map[string]any{
		"id": id, "imageId": id, "name": strings.ReplaceAll(name, "*", "x"), "architecture": arch,
		"ownerId": owner, "state": "available", "rootDeviceName": "/dev/xvda",
	}), nil
}

// ImageID is the AMI id the mocks find for a name filter, and, for a name
// that is a resource's, the AMI id a Packer build command prints.
func ImageID(name string) string {
	sum := sha256.Sum256([]byte("ami::" + name))
	return "ami-" + hex.EncodeToString(sum[:])[:17]
}

// NewResource implements pulumi.MockResourceMonitor.
func (m *Mocks) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	parent := ""
	if args.RegisterRPC != nil {
		parent = args.RegisterRPC.GetParent()
	}
	r := Resource{
		Type: args.TypeToken, Name: args.Name, Parent: parent, Custom: args.Custom,
		URN: urn(parent, args.TypeToken, args.Name), Inputs: args.Inputs,
	}
	if args.RegisterRPC != nil {
		r.Dependencies = args.RegisterRPC.GetDependencies()
	}
	state := args.Inputs.Copy()
	if args.Custom {
		r.ID = m.id(args.TypeToken, args.Name)
		m.outputs(args.TypeToken, args.Name, r.ID, state)
	}
	r.Outputs = state
	m.mu.Lock()
	m.resources = append(m.resources, r)
	m.mu.Unlock()
	return r.ID, state, nil
}

// urn mirrors the mock monitor's URNs.
func urn(parent, typ, name string) string {
	parentType := tokens.Type("")
	if p := resource.URN(parent); p != "" && p.QualifiedType() != resource.RootStackType {
		parentType = p.QualifiedType()
	}
	return string(resource.NewURN(Stack, Project, parentType, tokens.Type(typ), name))
}

// idPrefixes are the id formats of EC2 resources.
var idPrefixes = map[string]string{
	"aws:ec2/vpc:Vpc": "vpc-", "aws:ec2/subnet:Subnet": "subnet-", "aws:ec2/securityGroup:SecurityGroup": "sg-",
	"aws:ec2/launchTemplate:LaunchTemplate": "lt-", "aws:ec2/internetGateway:InternetGateway": "igw-",
	"aws:ec2/routeTable:RouteTable": "rtb-", "aws:ec2/natGateway:NatGateway": "nat-", "aws:ec2/eip:Eip": "eipalloc-",
	"aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc-",
}

func (m *Mocks) id(typ, name string) string {
	sum := sha256.Sum256([]byte(typ + "::" + name))
	h := hex.EncodeToString(sum[:])
	if typ == "aws:apigatewayv2/api:Api" {
		return h[:10]
	}
	if p, ok := idPrefixes[typ]; ok {
		return p + h[:17]
	}
	return name + "-id"
}

// outputs adds the computed outputs AWS would return.
func (m *Mocks) outputs(typ, name, id string, state resource.PropertyMap) {
	set := func(k string, v any) {
		if _, ok := state[resource.PropertyKey(k)]; !ok {
			state[resource.PropertyKey(k)] = resource.NewPropertyValue(v)
		}
	}
	physical := name
	if v, ok := state["name"]; ok && v.IsString() {
		physical = v.StringValue()
	} else if v, ok := state["namePrefix"]; ok && v.IsString() {
		physical = v.StringValue() + "20260101000000000000000001"
	}
	set("name", physical)
	acct, region, part := m.Account, m.Region, m.Partition
	arn := func(service, res string) string {
		return "arn:" + part + ":" + service + ":" + region + ":" + acct + ":" + res
	}
	mod := typ
	if i := strings.Index(typ, ":"); i >= 0 {
		mod = typ[i+1:]
	}
	switch typ {
	case "aws:sqs/queue:Queue":
		set("arn", arn("sqs", physical))
		set("url", "https://sqs."+region+".amazonaws.com/"+acct+"/"+physical)
	case "aws:dynamodb/table:Table":
		set("arn", arn("dynamodb", "table/"+physical))
	case "aws:iam/role:Role":
		set("arn", "arn:"+part+":iam::"+acct+":role/"+physical)
		set("uniqueId", "AROAMOCK"+strings.ToUpper(id[:4]))
	case "aws:iam/instanceProfile:InstanceProfile":
		set("arn", "arn:"+part+":iam::"+acct+":instance-profile/"+physical)
	case "aws:lambda/function:Function":
		set("arn", arn("lambda", "function:"+physical))
		set("invokeArn", "arn:"+part+":apigateway:"+region+":lambda:path/2015-03-31/functions/"+arn("lambda", "function:"+physical)+"/invocations")
	case "aws:cloudwatch/logGroup:LogGroup":
		set("arn", arn("logs", "log-group:"+physical))
	case "aws:secretsmanager/secret:Secret":
		set("arn", arn("secretsmanager", "secret:"+physical+"-AbCdEf"))
	case "aws:apigatewayv2/api:Api":
		set("apiEndpoint", "https://"+id+".execute-api."+region+".amazonaws.com")
		set("executionArn", arn("execute-api", id))
		set("arn", "arn:"+part+":apigateway:"+region+"::/apis/"+id)
	case "aws:cloudwatch/eventRule:EventRule":
		set("arn", arn("events", "rule/"+physical))
	case "aws:scheduler/schedule:Schedule":
		set("arn", arn("scheduler", "schedule/default/"+physical))
	case "aws:sns/topic:Topic":
		set("arn", arn("sns", physical))
	case "aws:ec2/launchTemplate:LaunchTemplate":
		set("arn", arn("ec2", "launch-template/"+id))
		set("latestVersion", 1)
		set("defaultVersion", 1)
	case "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/securityGroup:SecurityGroup",
		"aws:ec2/internetGateway:InternetGateway", "aws:ec2/routeTable:RouteTable", "aws:ec2/natGateway:NatGateway":
		kind := map[string]string{
			"aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet", "aws:ec2/securityGroup:SecurityGroup": "security-group",
			"aws:ec2/internetGateway:InternetGateway": "internet-gateway", "aws:ec2/routeTable:RouteTable": "route-table",
			"aws:ec2/natGateway:NatGateway": "natgateway",
		}[typ]
		set("arn", arn("ec2", kind+"/"+id))
	case "aws:cloudwatch/dashboard:Dashboard":
		set("dashboardArn", "arn:"+part+":cloudwatch::"+acct+":dashboard/"+physical)
	case "command:local:Command":
		// A Packer build prints its AMI id last (stack/runners/ami.sh).
		set("stdout", "jitr:build-id="+name+"-mock\n"+ImageID(name))
		set("stderr", "")
	default:
		set("arn", arn(strings.SplitN(mod, "/", 2)[0], physical))
	}
}

// Entry is one resource of a written plan.
type Entry struct {
	Type   string         `json:"type"`
	Name   string         `json:"name"`
	Parent string         `json:"parent"`
	Inputs map[string]any `json:"inputs"`
}

// SecretValue replaces every secret in a written plan.
const SecretValue = "[secret]"

// Entries returns the plan of resources: inputs with Pulumi's (camelCase)
// names, secrets replaced by SecretValue, unknown values by "[unknown]",
// archives by their file name (the Lambda archives are named by their
// SHA-256). Parents are URNs.
func Entries(resources []Resource) []Entry {
	out := make([]Entry, 0, len(resources))
	for _, r := range resources {
		out = append(out, Entry{Type: r.Type, Name: r.Name, Parent: r.Parent, Inputs: Plain(r.Inputs)})
	}
	return out
}

// Write writes {"resources": Entries(resources)} as indented JSON.
func Write(w io.Writer, resources []Resource) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Resources []Entry `json:"resources"`
	}{Entries(resources)})
}

// Plain converts properties to JSON-able data like Entries does.
func Plain(m resource.PropertyMap) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[string(k)] = plain(v)
	}
	return out
}

// plain converts a property value to JSON-able data.
func plain(v resource.PropertyValue) any {
	switch {
	case v.IsSecret():
		return SecretValue
	case v.IsOutput():
		o := v.OutputValue()
		switch {
		case o.Secret:
			return SecretValue
		case !o.Known:
			return "[unknown]"
		}
		return plain(o.Element)
	case v.IsComputed():
		return "[unknown]"
	case v.IsNull():
		return nil
	case v.IsBool():
		return v.BoolValue()
	case v.IsNumber():
		return v.NumberValue()
	case v.IsString():
		return v.StringValue()
	case v.IsArray():
		arr := v.ArrayValue()
		out := make([]any, len(arr))
		for i, e := range arr {
			out[i] = plain(e)
		}
		return out
	case v.IsObject():
		return Plain(v.ObjectValue())
	case v.IsArchive():
		a := v.ArchiveValue()
		switch {
		case a.Path != "":
			return map[string]any{"archive": filepath.Base(a.Path)}
		case a.URI != "":
			return map[string]any{"archive": a.URI}
		}
		return map[string]any{"archive": "assets"}
	case v.IsAsset():
		a := v.AssetValue()
		if a.Path != "" {
			return map[string]any{"asset": filepath.Base(a.Path)}
		}
		return map[string]any{"asset": a.Hash}
	case v.IsResourceReference():
		return string(v.ResourceReferenceValue().URN)
	}
	return fmt.Sprint(v.V)
}

// Package runners is the jit-runners Pulumi component: everything one
// deployment of single-use GitHub Actions runners needs in one AWS account
// and region (network, queue, tables, secrets, the three Lambdas and their
// triggers, the runner launch template and IAM, a dashboard and alarms, and
// with AMIBuild the Packer builds of the runner AMIs).
//
// The shapes that the runtime also relies on are not restated here: the
// tables come from state.JobsTable and jitstore.Table, the queue from
// queue.ScaleUp, the launch template from launchspec.Runner and
// bootstrap.Render, the tag keys from tags, the metric names from metrics, and
// the Lambdas' JITR_CONFIG is a config.Config.
package runners

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/tags"
)

// ComponentType is the Pulumi type token of Runners.
const ComponentType = "jit-runners:index:Runners"

const managedByTag = tags.ManagedBy

// Runners is one deployment. Its outputs are what an operator needs next:
// the webhook URL to enter in the GitHub App, and the names of what to watch.
type Runners struct {
	pulumi.ResourceState

	// WebhookURL is the GitHub App's webhook URL (POST).
	WebhookURL pulumi.StringOutput `pulumi:"webhookUrl"`
	// QueueURL and DeadLetterQueueURL are the scale-up queue and its DLQ.
	QueueURL           pulumi.StringOutput `pulumi:"queueUrl"`
	DeadLetterQueueURL pulumi.StringOutput `pulumi:"deadLetterQueueUrl"`
	// TableName is the job-records table.
	TableName pulumi.StringOutput `pulumi:"tableName"`
	// LaunchTemplateIDs are the runner launch templates; today one template
	// serves every profile (CreateFleet overrides image, type and volume).
	LaunchTemplateIDs pulumi.StringArrayOutput `pulumi:"launchTemplateIds"`
	// SecurityGroupID is the runners' security group.
	SecurityGroupID pulumi.StringOutput `pulumi:"securityGroupId"`
	// RunnerRoleARN is the runner instances' IAM role.
	RunnerRoleARN pulumi.StringOutput `pulumi:"runnerRoleArn"`
	// DashboardName is the CloudWatch dashboard.
	DashboardName pulumi.StringOutput `pulumi:"dashboardName"`
}

var componentNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,54}$`)

// deployment carries what the parts of NewRunners share.
type deployment struct {
	ctx       *pulumi.Context
	name      string
	args      RunnersArgs
	component *Runners

	account, region, partition string

	net      networkOut
	data     dataOut
	runner   runnerOut
	lambdas  lambdasOut
	archives map[string]Archive
}

// NewRunners creates a deployment named name. The arguments are validated
// before anything is registered, so invalid arguments fail the preview; every
// resource is a child of the component and named after it, so two
// deployments in one program do not collide.
func NewRunners(ctx *pulumi.Context, name string, args *RunnersArgs, opts ...pulumi.ResourceOption) (*Runners, error) {
	if args == nil {
		args = &RunnersArgs{}
	}
	if !componentNameRE.MatchString(name) {
		return nil, &ArgError{Key: "name", Reason: fmt.Sprintf("%q must be 1-54 of A-Z a-z 0-9 - _ (it prefixes the Lambda function names)", name)}
	}
	a, err := args.Validate()
	if err != nil {
		return nil, err
	}
	r := &Runners{}
	if err := ctx.RegisterComponentResource(ComponentType, name, r, opts...); err != nil {
		return nil, err
	}
	d := &deployment{ctx: ctx, name: name, args: a, component: r}
	for _, step := range []func() error{
		d.identity, d.buildLambdas, d.network, d.amiBuilds, d.dataStores, d.runnerResources, d.functions, d.monitoring,
	} {
		if err := step(); err != nil {
			return nil, fmt.Errorf("runners %s: %w", name, err)
		}
	}

	r.WebhookURL = d.lambdas.webhookURL
	r.QueueURL = d.data.queue.Url
	r.DeadLetterQueueURL = d.data.dlq.Url
	r.TableName = d.data.jobs.Name
	r.LaunchTemplateIDs = pulumi.StringArray{d.runner.template.ID().ToStringOutput()}.ToStringArrayOutput()
	r.SecurityGroupID = d.runner.securityGroup.ID().ToStringOutput()
	r.RunnerRoleARN = d.runner.role.Arn
	r.DashboardName = d.lambdas.dashboardName
	if err := ctx.RegisterResourceOutputs(r, pulumi.Map{
		"webhookUrl":         r.WebhookURL,
		"queueUrl":           r.QueueURL,
		"deadLetterQueueUrl": r.DeadLetterQueueURL,
		"tableName":          r.TableName,
		"launchTemplateIds":  r.LaunchTemplateIDs,
		"securityGroupId":    r.SecurityGroupID,
		"runnerRoleArn":      r.RunnerRoleARN,
		"dashboardName":      r.DashboardName,
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// identity reads the account, region and partition the ARNs in policies need.
func (d *deployment) identity() error {
	parent := pulumi.Parent(d.component)
	id, err := aws.GetCallerIdentity(d.ctx, nil, parent)
	if err != nil {
		return fmt.Errorf("aws:getCallerIdentity: %w", err)
	}
	part, err := aws.GetPartition(d.ctx, nil, parent)
	if err != nil {
		return fmt.Errorf("aws:getPartition: %w", err)
	}
	reg, err := aws.GetRegion(d.ctx, nil, parent)
	if err != nil {
		return fmt.Errorf("aws:getRegion: %w", err)
	}
	d.account, d.partition, d.region = id.AccountId, part.Partition, reg.Name
	return nil
}

// opts returns the options of every child: parented to the component.
func (d *deployment) opts(more ...pulumi.ResourceOption) []pulumi.ResourceOption {
	return append([]pulumi.ResourceOption{pulumi.Parent(d.component)}, more...)
}

// n names a child resource.
func (d *deployment) n(suffix string) string { return d.name + "-" + suffix }

// tags returns the tags of a taggable resource.
func (d *deployment) tags(extra ...string) pulumi.StringMap {
	m := pulumi.StringMap{}
	for k, v := range d.args.Tags {
		m[k] = pulumi.String(v)
	}
	m[managedByTag] = pulumi.String(d.args.NamePrefix)
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = pulumi.String(extra[i+1])
	}
	return m
}

// ec2ARN returns the ARN of an EC2 resource in this account and region.
func (d *deployment) ec2ARN(resource string) string {
	return fmt.Sprintf("arn:%s:ec2:%s:%s:%s", d.partition, d.region, d.account, resource)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}

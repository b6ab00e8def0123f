package runners

import (
	"encoding/json"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/apigatewayv2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/lambda"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/scheduler"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/functions"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// WebhookRoute is the API route GitHub posts to.
const WebhookRoute = "POST /webhook"

// SQSResponseTypes makes the event source mapping honour partial batch
// failures (scaleup returns events.SQSEventResponse).
var SQSResponseTypes = []string{"ReportBatchItemFailures"}

// EC2EventTypes are the EventBridge detail types scaledown reacts to at once
// (the schedule catches anything missed).
var EC2EventTypes = []string{"EC2 Spot Instance Interruption Warning", "EC2 Instance State-change Notification"}

// ec2EventPattern matches spot interruption warnings and the state change
// scaledown acts on: shutting-down, which every instance passes on its way
// to terminated (freeing the slot then; terminated as well would make each
// instance cost scaledown a second invocation for the same write, and a
// missed event is the sweep's to catch).
func ec2EventPattern() string {
	b, _ := json.Marshal(map[string]any{
		"source": []string{"aws.ec2"},
		"$or": []map[string]any{
			{"detail-type": []string{EC2EventTypes[0]}},
			{"detail-type": []string{EC2EventTypes[1]}, "detail": map[string]any{"state": []string{"shutting-down"}}},
		},
	})
	return string(b)
}

// webhookAPI creates the HTTP API: POST /webhook -> webhook Lambda (proxy,
// payload 2.0), stage $default with auto-deploy and throttling.
func (d *deployment) webhookAPI() error {
	fn := d.lambdas.functions[Webhook]
	api, err := apigatewayv2.NewApi(d.ctx, d.n("api"), &apigatewayv2.ApiArgs{
		ProtocolType: pulumi.String("HTTP"),
		Description:  pulumi.String("jit-runners " + d.name + ": GitHub App webhook"),
		Tags:         d.tags(),
	}, d.opts()...)
	if err != nil {
		return err
	}
	integration, err := apigatewayv2.NewIntegration(d.ctx, d.n("webhook"), &apigatewayv2.IntegrationArgs{
		ApiId:                api.ID(),
		IntegrationType:      pulumi.String("AWS_PROXY"),
		IntegrationMethod:    pulumi.String("POST"),
		IntegrationUri:       fn.Arn,
		PayloadFormatVersion: pulumi.String("2.0"),
		TimeoutMilliseconds:  pulumi.Int(webhookTimeout*1000 + 1000),
	}, d.opts()...)
	if err != nil {
		return err
	}
	if _, err := apigatewayv2.NewRoute(d.ctx, d.n("webhook"), &apigatewayv2.RouteArgs{
		ApiId:    api.ID(),
		RouteKey: pulumi.String(WebhookRoute),
		Target:   pulumi.Sprintf("integrations/%s", integration.ID()),
	}, d.opts()...); err != nil {
		return err
	}
	if _, err := apigatewayv2.NewStage(d.ctx, d.n("default"), &apigatewayv2.StageArgs{
		ApiId:      api.ID(),
		Name:       pulumi.String("$default"),
		AutoDeploy: pulumi.Bool(true),
		DefaultRouteSettings: apigatewayv2.StageDefaultRouteSettingsArgs{
			ThrottlingBurstLimit: pulumi.Int(d.args.ThrottlingBurstLimit),
			ThrottlingRateLimit:  pulumi.Float64(d.args.ThrottlingRateLimit),
		},
		Tags: d.tags(),
	}, d.opts()...); err != nil {
		return err
	}
	if _, err := lambda.NewPermission(d.ctx, d.n("webhook-api"), &lambda.PermissionArgs{
		Action:    pulumi.String("lambda:InvokeFunction"),
		Function:  fn.Name,
		Principal: pulumi.String("apigateway.amazonaws.com"),
		SourceArn: pulumi.Sprintf("%s/*/POST/webhook", api.ExecutionArn),
	}, d.opts()...); err != nil {
		return err
	}
	d.lambdas.api = api
	d.lambdas.webhookURL = pulumi.Sprintf("%s/webhook", api.ApiEndpoint)
	return nil
}

// scaleupTrigger connects the queue to scaleup with queue.ScaleUp's batch
// size and concurrency cap, reporting partial batch failures. It waits for
// the role policy: creating the mapping checks the role may read the queue.
func (d *deployment) scaleupTrigger(policy *iam.RolePolicy) error {
	spec := queue.ScaleUp
	args := &lambda.EventSourceMappingArgs{
		EventSourceArn:        d.data.queue.Arn,
		FunctionName:          d.lambdas.functions[Scaleup].Arn,
		BatchSize:             pulumi.Int(spec.BatchSize),
		FunctionResponseTypes: pulumi.ToStringArray(SQSResponseTypes),
		ScalingConfig:         lambda.EventSourceMappingScalingConfigArgs{MaximumConcurrency: pulumi.Int(spec.MaxConcurrency)},
		Tags:                  d.tags(),
	}
	if spec.MaxBatchingWindowSeconds > 0 {
		args.MaximumBatchingWindowInSeconds = pulumi.Int(spec.MaxBatchingWindowSeconds)
	}
	_, err := lambda.NewEventSourceMapping(d.ctx, d.n("scaleup"), args, d.opts(pulumi.DependsOn([]pulumi.Resource{policy}))...)
	return err
}

// scaledownTriggers runs scaledown every five minutes (EventBridge
// Scheduler, with a role that may invoke only scaledown) and on EC2 spot
// interruption and state-change events (EventBridge rule).
func (d *deployment) scaledownTriggers() error {
	fn := d.lambdas.functions[Scaledown]
	role, err := d.role("scheduler", "scheduler.amazonaws.com", cond("StringEquals", "aws:SourceAccount", d.account))
	if err != nil {
		return err
	}
	invoke := pulumi.All(fn.Arn).ApplyT(func(v []any) (string, error) {
		arn := v[0].(string)
		return policy(allow("InvokeScaledown", []string{"lambda:InvokeFunction"}, []string{arn, arn + ":*"})).JSON()
	}).(pulumi.StringOutput)
	pol, err := iam.NewRolePolicy(d.ctx, d.n("scheduler"), &iam.RolePolicyArgs{Role: role.ID(), Policy: invoke}, d.opts()...)
	if err != nil {
		return err
	}
	if _, err := scheduler.NewSchedule(d.ctx, d.n("scaledown"), &scheduler.ScheduleArgs{
		Description:        pulumi.String("jit-runners " + d.name + ": reconcile runners"),
		ScheduleExpression: pulumi.String(scaledownScheduleRate),
		FlexibleTimeWindow: scheduler.ScheduleFlexibleTimeWindowArgs{Mode: pulumi.String("OFF")},
		Target: scheduler.ScheduleTargetArgs{
			Arn:         fn.Arn,
			RoleArn:     role.Arn,
			RetryPolicy: scheduler.ScheduleTargetRetryPolicyArgs{MaximumRetryAttempts: pulumi.Int(0)},
		},
	}, d.opts(pulumi.DependsOn([]pulumi.Resource{pol}))...); err != nil {
		return err
	}
	if d.args.Redelivery.On() {
		if _, err := scheduler.NewSchedule(d.ctx, d.n("redelivery"), &scheduler.ScheduleArgs{
			Description:        pulumi.String("jit-runners " + d.name + ": redeliver failed webhook deliveries"),
			ScheduleExpression: pulumi.String(functions.RedeliverySchedule),
			FlexibleTimeWindow: scheduler.ScheduleFlexibleTimeWindowArgs{Mode: pulumi.String("OFF")},
			Target: scheduler.ScheduleTargetArgs{
				Arn:         fn.Arn,
				RoleArn:     role.Arn,
				Input:       pulumi.String(functions.RedeliveryEvent),
				RetryPolicy: scheduler.ScheduleTargetRetryPolicyArgs{MaximumRetryAttempts: pulumi.Int(0)},
			},
		}, d.opts(pulumi.DependsOn([]pulumi.Resource{pol}))...); err != nil {
			return err
		}
	}

	rule, err := cloudwatch.NewEventRule(d.ctx, d.n("ec2-events"), &cloudwatch.EventRuleArgs{
		Description:  pulumi.String("jit-runners " + d.name + ": spot interruptions and instance terminations"),
		EventPattern: pulumi.String(ec2EventPattern()),
		Tags:         d.tags(),
	}, d.opts()...)
	if err != nil {
		return err
	}
	if _, err := cloudwatch.NewEventTarget(d.ctx, d.n("ec2-events"), &cloudwatch.EventTargetArgs{
		Rule: rule.Name, Arn: fn.Arn,
	}, d.opts()...); err != nil {
		return err
	}
	_, err = lambda.NewPermission(d.ctx, d.n("ec2-events"), &lambda.PermissionArgs{
		Action:    pulumi.String("lambda:InvokeFunction"),
		Function:  fn.Name,
		Principal: pulumi.String("events.amazonaws.com"),
		SourceArn: rule.Arn,
	}, d.opts()...)
	return err
}

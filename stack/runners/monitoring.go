package runners

import (
	"encoding/json"
	"fmt"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/apigatewayv2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sns"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/metrics"
)

// Alarm thresholds (5-minute periods).
const (
	alarmPeriod = 300
	// LaunchErrorThreshold launch errors in three consecutive periods:
	// single capacity errors are routine (scaleup falls back to another
	// type, zone or on-demand), a steady stream is not.
	launchErrorThreshold = 5
)

// monitoring creates the dashboard, the alarms and, when an e-mail address
// is configured, the SNS topic they notify.
func (d *deployment) monitoring() error {
	var actions pulumi.Array
	if d.args.AlarmEmail != "" {
		// Not encrypted with the aws/sns key: CloudWatch alarms cannot
		// publish to topics encrypted with that AWS-managed key.
		topic, err := sns.NewTopic(d.ctx, d.n("alarms"), &sns.TopicArgs{Tags: d.tags()}, d.opts()...)
		if err != nil {
			return err
		}
		if _, err := sns.NewTopicSubscription(d.ctx, d.n("alarms-email"), &sns.TopicSubscriptionArgs{
			Topic: topic.Arn, Protocol: pulumi.String("email"), Endpoint: pulumi.String(d.args.AlarmEmail),
		}, d.opts()...); err != nil {
			return err
		}
		actions = pulumi.Array{topic.Arn}
	}

	api := d.lambdas.api
	alarms := []struct {
		suffix string
		args   *cloudwatch.MetricAlarmArgs
	}{
		{"dlq-not-empty", &cloudwatch.MetricAlarmArgs{
			AlarmDescription:   pulumi.String("Scale-up messages reached the dead-letter queue: jobs that never got a runner. Inspect and redrive."),
			Namespace:          pulumi.String("AWS/SQS"),
			MetricName:         pulumi.String("ApproximateNumberOfMessagesVisible"),
			Dimensions:         pulumi.StringMap{"QueueName": d.data.dlq.Name},
			Statistic:          pulumi.String("Maximum"),
			Period:             pulumi.Int(alarmPeriod),
			EvaluationPeriods:  pulumi.Int(1),
			Threshold:          pulumi.Float64(0),
			ComparisonOperator: pulumi.String("GreaterThanThreshold"),
			TreatMissingData:   pulumi.String("notBreaching"),
		}},
		{"launch-errors", &cloudwatch.MetricAlarmArgs{
			AlarmDescription: pulumi.String(fmt.Sprintf("At least %d runner launch errors in each of three 5-minute periods.", launchErrorThreshold)),
			MetricQueries: cloudwatch.MetricAlarmMetricQueryArray{cloudwatch.MetricAlarmMetricQueryArgs{
				Id: pulumi.String("errors"),
				// Metrics Insights: LaunchErrors carries a Code dimension,
				// and an alarm cannot use SEARCH over it.
				Expression: pulumi.String(fmt.Sprintf(`SELECT SUM(%s) FROM "%s" WHERE %s = '%s'`,
					metrics.LaunchErrors, metrics.Namespace, metrics.Deployment, d.args.NamePrefix)),
				Period:     pulumi.Int(alarmPeriod),
				ReturnData: pulumi.Bool(true),
			}},
			EvaluationPeriods:  pulumi.Int(3),
			Threshold:          pulumi.Float64(launchErrorThreshold),
			ComparisonOperator: pulumi.String("GreaterThanOrEqualToThreshold"),
			TreatMissingData:   pulumi.String("notBreaching"),
		}},
		{"webhook-4xx", stageAlarm(api, "4xx", "The webhook stage answered 4xx: 429 when throttled (raise api.throttlingRateLimit / throttlingBurstLimit), "+
			"401 for a signature that matched no secret (a rotation half done, or requests not from GitHub). GitHub does not retry them; "+
			"the redelivery schedule brings GitHub's back.")},
		{"webhook-5xx", stageAlarm(api, "5xx",
			"The webhook answered GitHub with 5xx: those deliveries failed (the redelivery schedule brings them back; see its log).")},
	}
	for _, a := range alarms {
		a.args.Tags = d.tags()
		if actions != nil {
			a.args.AlarmActions = actions
			a.args.OkActions = actions
		}
		if _, err := cloudwatch.NewMetricAlarm(d.ctx, d.n(a.suffix), a.args, d.opts()...); err != nil {
			return err
		}
	}

	name := fmt.Sprintf("%s-%s-%s", d.args.NamePrefix, d.name, d.region)
	body := pulumi.All(d.data.queue.Name, d.data.dlq.Name, api.ID(),
		d.lambdas.functions[Webhook].Name, d.lambdas.functions[Scaleup].Name, d.lambdas.functions[Scaledown].Name,
	).ApplyT(func(v []any) (string, error) {
		return dashboardBody(d.region, d.args.NamePrefix, v[0].(string), v[1].(string), string(v[2].(pulumi.ID)),
			[]string{v[3].(string), v[4].(string), v[5].(string)})
	}).(pulumi.StringOutput)
	dash, err := cloudwatch.NewDashboard(d.ctx, d.n("dashboard"), &cloudwatch.DashboardArgs{
		DashboardName: pulumi.String(name), DashboardBody: body,
	}, d.opts()...)
	if err != nil {
		return err
	}
	d.lambdas.dashboardName = dash.DashboardName
	return nil
}

// dashboardBody returns the dashboard: the queue, launches and their
// latency, errors, and the Lambdas' health. Our metrics are this
// deployment's only (the Deployment dimension).
func dashboardBody(region, deployment, queueName, dlqName, apiID string, functions []string) (string, error) {
	ns := metrics.Namespace
	dep := metrics.Deployment
	search := func(dims, metric, stat string) map[string]any {
		return map[string]any{"expression": fmt.Sprintf(`SEARCH('{%s,%s%s} %s="%s" MetricName="%s"', '%s', 300)`,
			ns, dep, dims, dep, deployment, metric, stat)}
	}
	widget := func(x, y int, title string, series []any, extra map[string]any) map[string]any {
		props := map[string]any{"title": title, "region": region, "view": "timeSeries", "stat": "Sum", "period": 300, "metrics": series}
		for k, v := range extra {
			props[k] = v
		}
		return map[string]any{"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": props}
	}
	var lambdaErrors, lambdaThrottles []any
	for _, fn := range functions {
		lambdaErrors = append(lambdaErrors, []any{"AWS/Lambda", "Errors", "FunctionName", fn})
		lambdaThrottles = append(lambdaThrottles, []any{"AWS/Lambda", "Throttles", "FunctionName", fn})
	}
	widgets := []any{
		widget(0, 0, "Scale-up queue: depth and dead letters", []any{
			[]any{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queueName, map[string]any{"stat": "Maximum", "label": "queued"}},
			[]any{"AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", queueName, map[string]any{"stat": "Maximum", "label": "in flight"}},
			[]any{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dlqName, map[string]any{"stat": "Maximum", "label": "dead letters"}},
		}, nil),
		widget(12, 0, "Age of the oldest queued job (s)", []any{
			[]any{"AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queueName, map[string]any{"stat": "Maximum"}},
		}, nil),
		widget(0, 6, "Launches by capacity type", []any{search(",CapacityType,Profile", metrics.Launches, "Sum")}, nil),
		widget(12, 6, "Spot fallbacks to on-demand, limit reached", []any{
			search(",Profile", metrics.SpotFallbacks, "Sum"), search(",Profile", metrics.LimitReached, "Sum"),
		}, nil),
		widget(0, 12, "Queue to launch (s, p50 and p90)", []any{
			search(",Profile", metrics.QueueToLaunchSeconds, "p50"), search(",Profile", metrics.QueueToLaunchSeconds, "p90"),
		}, nil),
		widget(12, 12, "Queue to job start (s, p50 and p90)", []any{
			[]any{ns, metrics.QueueToStartSeconds, dep, deployment, map[string]any{"stat": "p50"}},
			[]any{ns, metrics.QueueToStartSeconds, dep, deployment, map[string]any{"stat": "p90"}},
		}, nil),
		widget(0, 18, "Launch errors by code, skipped jobs", []any{
			search(",Code", metrics.LaunchErrors, "Sum"), search(",Reason", metrics.JobsSkipped, "Sum"),
		}, nil),
		widget(12, 18, "Scaledown decisions", []any{search(",Action,Rule", metrics.ScaleDownDecisions, "Sum")}, nil),
		widget(0, 24, "Lambda errors", lambdaErrors, nil),
		widget(12, 24, "Lambda throttles", lambdaThrottles, nil),
		widget(0, 30, "Webhook responses", []any{
			[]any{"AWS/ApiGateway", "Count", "ApiId", apiID, "Stage", "$default"},
			[]any{"AWS/ApiGateway", "4xx", "ApiId", apiID, "Stage", "$default"},
			[]any{"AWS/ApiGateway", "5xx", "ApiId", apiID, "Stage", "$default"},
		}, nil),
		widget(12, 30, "GitHub rate limit remaining", []any{
			[]any{ns, metrics.GitHubRateRemaining, dep, deployment, map[string]any{"stat": "Minimum"}},
		}, nil),
		// Warm pools: hits (a job took a pooled instance) against misses
		// (it launched), refills and retirements, and the pooled instances
		// each sweep saw; their hourly average is the idle instance-hours
		// per hour that docs/cost.md prices.
		widget(0, 36, "Warm pools: hits and misses", []any{
			search(",Pool,Profile", metrics.PoolHits, "Sum"), search(",Profile", metrics.PoolMisses, "Sum"),
		}, nil),
		widget(12, 36, "Warm pools: launched and retired", []any{
			search(",Pool,Profile", metrics.PoolLaunches, "Sum"), search(",Pool,Profile,Reason", metrics.PoolRetired, "Sum"),
		}, nil),
		widget(0, 42, "Pooled instances (hourly average = idle instance-hours per hour)", []any{
			map[string]any{"expression": fmt.Sprintf(`SEARCH('{%s,%s,Pool,Profile,State} %s="%s" MetricName="%s"', 'Average', 3600)`,
				ns, dep, dep, deployment, metrics.PoolInstances)},
		}, map[string]any{"stat": "Average", "period": 3600}),
		// Machine shapes from job labels: the types jobs landed on, the
		// types each launch offered EC2, and the jobs refused (malformed,
		// beyond the bounds, no type fits).
		widget(12, 42, "Machine shapes: launches by type, refusals by reason", []any{
			search(",InstanceType,Profile", metrics.ShapeLaunches, "Sum"), search(",Reason", metrics.ShapeRefusals, "Sum"),
		}, nil),
		widget(0, 48, "Machine shapes: candidate types per launch (minimum, average)", []any{
			search(",Profile", metrics.ShapeCandidates, "Minimum"), search(",Profile", metrics.ShapeCandidates, "Average"),
		}, nil),
	}
	b, err := json.Marshal(map[string]any{"widgets": widgets})
	return string(b), err
}

// stageAlarm fires when the webhook stage answers any response of class
// code ("4xx", "5xx") in a period.
func stageAlarm(api *apigatewayv2.Api, code, description string) *cloudwatch.MetricAlarmArgs {
	return &cloudwatch.MetricAlarmArgs{
		AlarmDescription:   pulumi.String(description),
		Namespace:          pulumi.String("AWS/ApiGateway"),
		MetricName:         pulumi.String(code),
		Dimensions:         pulumi.StringMap{"ApiId": api.ID(), "Stage": pulumi.String("$default")},
		Statistic:          pulumi.String("Sum"),
		Period:             pulumi.Int(alarmPeriod),
		EvaluationPeriods:  pulumi.Int(1),
		Threshold:          pulumi.Float64(0),
		ComparisonOperator: pulumi.String("GreaterThanThreshold"),
		TreatMissingData:   pulumi.String("notBreaching"),
	}
}

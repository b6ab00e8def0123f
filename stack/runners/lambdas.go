package runners

import (
	"context"
	"fmt"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/apigatewayv2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/lambda"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/queue"
)

// Lambda names; each is also the last element of its main package's import
// path under LambdaPackage.
const (
	Webhook   = "webhook"
	Scaleup   = "scaleup"
	Scaledown = "scaledown"
)

// Lambdas lists the functions in the order they are built and created.
var Lambdas = []string{Webhook, Scaleup, Scaledown}

// lambdasOut holds what other parts and the outputs need.
type lambdasOut struct {
	functions     map[string]*lambda.Function
	logGroups     map[string]*cloudwatch.LogGroup
	api           *apigatewayv2.Api
	webhookURL    pulumi.StringOutput
	dashboardName pulumi.StringOutput
}

// buildLambdas builds the three deployment archives before any resource
// that needs them is registered, so a build failure fails the preview.
func (d *deployment) buildLambdas() error {
	b := d.args.Builder
	if b == nil {
		b = GoBuilder{}
	}
	d.archives = map[string]Archive{}
	ctx := d.ctx.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	for _, fn := range Lambdas {
		a, err := b.Build(ctx, LambdaPackage+"/"+fn)
		if err != nil {
			return fmt.Errorf("build Lambda %s: %w", fn, err)
		}
		d.archives[fn] = a
	}
	return nil
}

// resolved are the ARNs and names every policy and JITR_CONFIG is built from.
type resolved struct {
	queueARN, dlqARN, jobsARN, jitARN, templateARN, securityGroupARN string
	runnerRoleARN, privateKeyARN, webhookSecretARN                   string
	subnetARNs, imageARNs                                            []string
}

// resolve waits for the values policies need (and more) and calls f.
func (d *deployment) resolve(f func(r resolved, more []any) (string, error), more ...any) pulumi.StringOutput {
	inputs := []any{
		d.data.queue.Arn, d.data.dlq.Arn, d.data.jobs.Arn, d.data.jit.Arn, d.runner.template.Arn,
		d.runner.securityGroup.Arn, d.runner.role.Arn, d.data.privateKeyARN, d.data.webhookSecretARN,
		d.net.subnetARNs, d.runner.imageARNs,
	}
	const fixed = 11
	return pulumi.All(append(inputs, more...)...).ApplyT(func(v []any) (string, error) {
		s := func(i int) string { return v[i].(string) }
		return f(resolved{
			queueARN: s(0), dlqARN: s(1), jobsARN: s(2), jitARN: s(3), templateARN: s(4),
			securityGroupARN: s(5), runnerRoleARN: s(6), privateKeyARN: s(7), webhookSecretARN: s(8),
			subnetARNs: v[9].([]string), imageARNs: v[10].([]string),
		}, v[fixed:])
	}).(pulumi.StringOutput)
}

// runtimeConfigJSON is JITR_CONFIG: built from config.Config with the
// resources' real names, validated and encoded like the runtime decodes it.
func (d *deployment) runtimeConfigJSON() pulumi.StringOutput {
	images := pulumi.StringMap{}
	for name, p := range d.args.Profiles {
		images[name] = p.ImageID
	}
	return pulumi.All(
		d.data.queue.Url, d.data.jobs.Name, d.data.jit.Name, d.runner.template.ID(),
		d.data.privateKeyARN, d.data.webhookSecretARN, d.net.subnetIDs, images,
	).ApplyT(func(v []any) (string, error) {
		c := d.args.runtimeConfig(createdValues{
			queueURL: v[0].(string), tableName: v[1].(string), jitTableName: v[2].(string),
			launchTemplateID: string(v[3].(pulumi.ID)), privateKeySecretARN: v[4].(string),
			webhookSecretARN: v[5].(string), subnetIDs: v[6].([]string), imageIDs: v[7].(map[string]string),
		})
		if err := c.Validate(); err != nil {
			return "", fmt.Errorf("%s: %w", config.EnvVar, err)
		}
		b, err := c.Marshal()
		return string(b), err
	}).(pulumi.StringOutput)
}

// role creates an IAM role that service may assume.
func (d *deployment) role(suffix, service string, conditions ...condition) (*iam.Role, error) {
	doc, err := assumeRole(service, conditions...).JSON()
	if err != nil {
		return nil, err
	}
	return iam.NewRole(d.ctx, d.n(suffix), &iam.RoleArgs{
		AssumeRolePolicy: pulumi.String(doc),
		Description:      pulumi.String("jit-runners " + d.name + " " + suffix),
		Tags:             d.tags(),
	}, d.opts()...)
}

// lambdaSpec is one function's settings.
type lambdaSpec struct {
	memoryMB, timeout, reserved int
	policy                      func(r resolved, logGroupARN string) PolicyDocument
}

// functions creates the three Lambdas with their roles, logs and triggers.
func (d *deployment) functions() error {
	specs := map[string]lambdaSpec{
		Webhook:   {memoryMB: webhookMemoryMB, timeout: webhookTimeout, policy: d.webhookPolicy},
		Scaleup:   {memoryMB: scaleupMemoryMB, timeout: queue.ScaleUp.ScaleupTimeoutSeconds, policy: d.scaleupPolicy},
		Scaledown: {memoryMB: scaledownMemoryMB, timeout: scaledownTimeout, reserved: scaledownConcurrency, policy: d.scaledownPolicy},
	}
	cfg := d.runtimeConfigJSON()
	d.lambdas.functions = map[string]*lambda.Function{}
	d.lambdas.logGroups = map[string]*cloudwatch.LogGroup{}
	policies := map[string]*iam.RolePolicy{}
	for _, fn := range Lambdas {
		spec := specs[fn]
		// Functions and log groups have fixed names, so operators find
		// /aws/lambda/<name>-<fn> without looking them up; the component's
		// name keeps two deployments apart (like namePrefix must).
		functionName := d.n(fn)
		lg, err := cloudwatch.NewLogGroup(d.ctx, d.n(fn), &cloudwatch.LogGroupArgs{
			Name:            pulumi.String("/aws/lambda/" + functionName),
			RetentionInDays: pulumi.Int(d.args.LogRetentionDays),
			Tags:            d.tags(),
		}, d.opts()...)
		if err != nil {
			return err
		}
		role, err := d.role(fn, "lambda.amazonaws.com")
		if err != nil {
			return err
		}
		policy := spec.policy
		pol, err := iam.NewRolePolicy(d.ctx, d.n(fn), &iam.RolePolicyArgs{
			Role: role.ID(),
			Policy: d.resolve(func(r resolved, more []any) (string, error) {
				return policy(r, more[0].(string)).JSON()
			}, lg.Arn),
		}, d.opts()...)
		if err != nil {
			return err
		}
		policies[fn] = pol
		archive := d.archives[fn]
		args := &lambda.FunctionArgs{
			Name:          pulumi.String(functionName),
			Description:   pulumi.String("jit-runners " + d.name + " " + fn),
			Role:          role.Arn,
			Runtime:       pulumi.String("provided.al2023"),
			Handler:       pulumi.String("bootstrap"),
			Architectures: pulumi.StringArray{pulumi.String("arm64")},
			Code:          pulumi.NewFileArchive(archive.Path),
			// The hash of a byte-identical archive does not change, so
			// unchanged code is no diff.
			SourceCodeHash: pulumi.String(archive.SourceCodeHash()),
			MemorySize:     pulumi.Int(spec.memoryMB),
			Timeout:        pulumi.Int(spec.timeout),
			Environment:    lambda.FunctionEnvironmentArgs{Variables: pulumi.StringMap{config.EnvVar: cfg}},
			LoggingConfig:  lambda.FunctionLoggingConfigArgs{LogFormat: pulumi.String("Text"), LogGroup: lg.Name},
			Tags:           d.tags(),
		}
		if spec.reserved > 0 {
			args.ReservedConcurrentExecutions = pulumi.Int(spec.reserved)
		}
		deps := append([]pulumi.Resource{pol}, d.data.secretValues...)
		f, err := lambda.NewFunction(d.ctx, d.n(fn), args, d.opts(pulumi.DependsOn(deps))...)
		if err != nil {
			return err
		}
		d.lambdas.functions[fn] = f
		d.lambdas.logGroups[fn] = lg
	}
	if err := d.webhookAPI(); err != nil {
		return err
	}
	if err := d.scaleupTrigger(policies[Scaleup]); err != nil {
		return err
	}
	return d.scaledownTriggers()
}

package runners

import (
	"github.com/jit-runners/jit-runners/runtime/state"
)

// The Lambdas' policies. Every action is named (no wildcards in actions);
// resources are this deployment's ARNs, except the Describe actions that
// support no resource-level permissions (unresourcedActions). docs/security.md
// explains each statement.

// logStatement lets a function write to its own log group.
func logStatement(logGroupARN string) Statement {
	return allow("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"}, []string{logGroupARN + ":*"})
}

func (d *deployment) webhookPolicy(r resolved, logGroupARN string) PolicyDocument {
	secrets := []string{r.webhookSecretARN}
	if prev := d.args.GitHub.PreviousWebhookSecretARN; prev != "" {
		secrets = append(secrets, prev)
	}
	return policy(
		logStatement(logGroupARN),
		allow("RecordJobs", []string{"dynamodb:PutItem", "dynamodb:UpdateItem"}, []string{r.jobsARN}),
		allow("FindWaitingJobs", []string{"dynamodb:Query"}, []string{indexARN(r.jobsARN, state.WaitIndex)}),
		allow("EnqueueJobs", []string{"sqs:SendMessage"}, []string{r.queueARN}),
		allow("ReadWebhookSecret", []string{"secretsmanager:GetSecretValue"}, secrets),
	)
}

func (d *deployment) scaledownPolicy(r resolved, logGroupARN string) PolicyDocument {
	return policy(
		logStatement(logGroupARN),
		allow("DescribeInstances", []string{"ec2:DescribeInstances"}, []string{"*"}),
		allow("TerminateManagedInstances", []string{"ec2:TerminateInstances"}, []string{d.ec2ARN("instance/*")},
			cond("StringEquals", "aws:ResourceTag/"+managedByTag, d.args.NamePrefix)),
		allow("ReconcileJobs", []string{"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"},
			[]string{r.jobsARN, indexARN(r.jobsARN, state.LiveIndex), indexARN(r.jobsARN, state.SlotIndex),
				indexARN(r.jobsARN, state.WaitIndex)}),
		allow("RequeueJobs", []string{"sqs:SendMessage"}, []string{r.queueARN}),
		allow("ReadAppKey", []string{"secretsmanager:GetSecretValue"}, []string{r.privateKeyARN}),
	)
}

// launchActions are the actions one CreateFleet (type instant) authorises:
// ec2:CreateFleet, and ec2:RunInstances for the instances it launches.
var launchActions = []string{"ec2:CreateFleet", "ec2:RunInstances"}

func (d *deployment) scaleupPolicy(r resolved, logGroupARN string) PolicyDocument {
	prefix := d.args.NamePrefix
	managedRequest := cond("StringEquals", "aws:RequestTag/"+managedByTag, prefix)
	managedResource := cond("StringEquals", "aws:ResourceTag/"+managedByTag, prefix)

	// What a launch uses: only this deployment's template, subnets,
	// security group and AMIs (and the AMIs' snapshots, which may belong to
	// the AMI's owner, hence no account in the ARN). These exist before the
	// request, so request tags cannot scope them; their ARNs do.
	uses := []string{r.templateARN, r.securityGroupARN}
	uses = append(uses, r.subnetARNs...)
	uses = append(uses, r.imageARNs...)
	uses = append(uses, "arn:"+d.partition+":ec2:"+d.region+"::snapshot/*")

	return policy(
		logStatement(logGroupARN),
		// Instances and volumes only with our tag, and (the RunInstances
		// that CreateFleet makes for us included) only from our launch
		// template: ec2:LaunchTemplate is in RunInstances' context, not in
		// CreateFleet's, hence two statements.
		allow("FleetTaggedInstances", []string{"ec2:CreateFleet"},
			[]string{d.ec2ARN("instance/*"), d.ec2ARN("volume/*")}, managedRequest),
		allow("RunTaggedInstancesFromOurTemplate", []string{"ec2:RunInstances"},
			[]string{d.ec2ARN("instance/*"), d.ec2ARN("volume/*")}, managedRequest,
			cond("ArnEquals", "ec2:LaunchTemplate", r.templateARN)),
		// The fleet, the spot request and the network interface are created
		// by the same call but not tagged by it (the launcher tags instances
		// and volumes only), so a tag condition would deny every launch. The
		// interface is confined to this deployment's subnets.
		allow("LaunchUntaggedParts", launchActions,
			[]string{d.ec2ARN("fleet/*"), d.ec2ARN("spot-instances-request/*")}),
		allow("LaunchNetworkInterfaces", launchActions, []string{d.ec2ARN("network-interface/*")},
			cond("ArnEquals", "ec2:Subnet", r.subnetARNs)),
		allow("LaunchFromThisDeployment", launchActions, uses),
		allow("TagAtLaunch", []string{"ec2:CreateTags"}, []string{d.ec2ARN("instance/*"), d.ec2ARN("volume/*")},
			cond("StringEquals", "ec2:CreateAction", []string{"CreateFleet", "RunInstances"}), managedRequest),
		allow("TerminateManagedInstances", []string{"ec2:TerminateInstances"}, []string{d.ec2ARN("instance/*")}, managedResource),
		allow("DescribeSubnets", []string{"ec2:DescribeSubnets"}, []string{"*"}),
		// The root device name of each profile's AMI (once per AMI).
		allow("DescribeImages", []string{"ec2:DescribeImages"}, []string{"*"}),
		allow("PassRunnerRole", []string{"iam:PassRole"}, []string{r.runnerRoleARN},
			cond("StringEquals", "iam:PassedToService", "ec2.amazonaws.com")),
		// EC2 creates its spot and fleet service-linked roles on first use
		// when the caller may; nothing else can be created this way.
		allow("CreateLaunchServiceLinkedRoles", []string{"iam:CreateServiceLinkedRole"},
			[]string{
				"arn:" + d.partition + ":iam::" + d.account + ":role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
				"arn:" + d.partition + ":iam::" + d.account + ":role/aws-service-role/ec2fleet.amazonaws.com/AWSServiceRoleForEC2Fleet",
			},
			cond("StringEquals", "iam:AWSServiceName", []string{"spot.amazonaws.com", "ec2fleet.amazonaws.com"})),
		allow("ClaimAndRecordJobs", []string{"dynamodb:GetItem", "dynamodb:UpdateItem"}, []string{r.jobsARN}),
		allow("CountSlots", []string{"dynamodb:Query"},
			[]string{r.jobsARN, indexARN(r.jobsARN, state.LiveIndex), indexARN(r.jobsARN, state.SlotIndex),
				indexARN(r.jobsARN, state.WaitIndex)}),
		allow("WakeWaitingJobs", []string{"sqs:SendMessage"}, []string{r.queueARN}),
		allow("HandOverJITConfigs", []string{"dynamodb:PutItem", "dynamodb:DeleteItem"}, []string{r.jitARN}),
		allow("ConsumeQueue", []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"},
			[]string{r.queueARN}),
		allow("ReadAppKey", []string{"secretsmanager:GetSecretValue"}, []string{r.privateKeyARN}),
	)
}

func indexARN(tableARN, index string) string { return tableARN + "/index/" + index }

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
	statements := []Statement{
		logStatement(logGroupARN),
		allow("DescribeInstances", []string{"ec2:DescribeInstances"}, []string{"*"}),
		allow("TerminateManagedInstances", []string{"ec2:TerminateInstances"}, []string{d.ec2ARN("instance/*")},
			cond("StringEquals", "aws:ResourceTag/"+managedByTag, d.args.NamePrefix)),
		allow("ReconcileJobs", []string{"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"},
			[]string{r.jobsARN, indexARN(r.jobsARN, state.LiveIndex), indexARN(r.jobsARN, state.SlotIndex),
				indexARN(r.jobsARN, state.WaitIndex)}),
		allow("RequeueJobs", []string{"sqs:SendMessage"}, []string{r.queueARN}),
		allow("ReadAppKey", []string{"secretsmanager:GetSecretValue"}, []string{r.privateKeyARN}),
	}
	// Warm pools: the sweep tops them up (the launch statements), stops a
	// stopped-pool instance once prepared, records pooled instances with
	// their pool markers and drops them (retired, gone), and reads which
	// markers the instances' bootstraps consumed.
	statements = append(statements, d.launchStatements(r)...)
	statements = append(statements,
		allow("StopPreparedPoolInstances", []string{"ec2:StopInstances"}, []string{d.ec2ARN("instance/*")},
			cond("StringEquals", "aws:ResourceTag/"+managedByTag, d.args.NamePrefix)),
		allow("RecordPooledInstances", []string{"dynamodb:PutItem", "dynamodb:DeleteItem"}, []string{r.jobsARN}),
		allow("WriteAndReadPoolMarkers", []string{"dynamodb:PutItem", "dynamodb:BatchGetItem"}, []string{r.jitARN}),
		// The sweep keeps the shared instance-type catalogue fresh (an item
		// of the jobs table: RecordPooledInstances' PutItem writes it).
		catalogueStatement(),
	)
	return policy(statements...)
}

// catalogueStatement lets a function read EC2's instance-type catalogue,
// which machine shapes choose from: scaleup when the shared copy is missing
// or stale, scaledown to keep it fresh.
func catalogueStatement() Statement {
	return allow("ReadInstanceTypeCatalogue", []string{"ec2:DescribeInstanceTypes", "ec2:DescribeInstanceTypeOfferings"}, []string{"*"})
}

// launchActions are the actions one CreateFleet (type instant) authorises:
// ec2:CreateFleet, and ec2:RunInstances for the instances it launches.
var launchActions = []string{"ec2:CreateFleet", "ec2:RunInstances"}

// launchStatements let a function launch runner instances (scaleup for
// jobs and pool replacements, scaledown to refill pools).
func (d *deployment) launchStatements(r resolved) []Statement {
	prefix := d.args.NamePrefix
	managedRequest := cond("StringEquals", "aws:RequestTag/"+managedByTag, prefix)

	// What a launch uses: only this deployment's template, subnets,
	// security group and AMIs (and the AMIs' snapshots, which may belong to
	// the AMI's owner, hence no account in the ARN). These exist before the
	// request, so request tags cannot scope them; their ARNs do.
	uses := []string{r.templateARN, r.securityGroupARN}
	uses = append(uses, r.subnetARNs...)
	uses = append(uses, r.imageARNs...)
	uses = append(uses, "arn:"+d.partition+":ec2:"+d.region+"::snapshot/*")

	return []Statement{
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
		allow("DescribeSubnets", []string{"ec2:DescribeSubnets"}, []string{"*"}),
		// The root device name of each profile's AMI (once per AMI).
		allow("DescribeImages", []string{"ec2:DescribeImages"}, []string{"*"}),
		// The launch template's latest version dates each pooled instance
		// (one of an older version is replaced).
		allow("DescribeLaunchTemplates", []string{"ec2:DescribeLaunchTemplates"}, []string{"*"}),
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
	}
}

func (d *deployment) scaleupPolicy(r resolved, logGroupARN string) PolicyDocument {
	prefix := d.args.NamePrefix
	managedRequest := cond("StringEquals", "aws:RequestTag/"+managedByTag, prefix)
	managedResource := cond("StringEquals", "aws:ResourceTag/"+managedByTag, prefix)
	statements := []Statement{logStatement(logGroupARN)}
	statements = append(statements, d.launchStatements(r)...)
	statements = append(statements,
		allow("TerminateManagedInstances", []string{"ec2:TerminateInstances"}, []string{d.ec2ARN("instance/*")}, managedResource),
		// A pooled instance a job takes becomes that job's launch: its tags
		// are rewritten (job id, repository, its runner's name), only on an
		// instance of this deployment and keeping it one; a stopped one is
		// started.
		allow("RetagTakenPooledInstances", []string{"ec2:CreateTags"}, []string{d.ec2ARN("instance/*")}, managedResource, managedRequest),
		allow("StartPooledInstances", []string{"ec2:StartInstances"}, []string{d.ec2ARN("instance/*")}, managedResource),
		// A job's shape labels (cpu=4, ram=16) choose its instance types
		// from EC2's catalogue of the types offered in the subnets' zones:
		// the shared copy scaledown keeps fresh, else read from EC2.
		catalogueStatement(),
		// Claims, launch records and the hand-over of pooled instances (the
		// pool item is deleted in the launch's transaction; a replacement
		// is recorded with a put).
		allow("ClaimAndRecordJobs", []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}, []string{r.jobsARN}),
		allow("CountSlots", []string{"dynamodb:Query"},
			[]string{r.jobsARN, indexARN(r.jobsARN, state.LiveIndex), indexARN(r.jobsARN, state.SlotIndex),
				indexARN(r.jobsARN, state.WaitIndex), indexARN(r.jobsARN, state.PoolIndex)}),
		allow("WakeWaitingJobs", []string{"sqs:SendMessage"}, []string{r.queueARN}),
		allow("HandOverJITConfigs", []string{"dynamodb:PutItem", "dynamodb:DeleteItem"}, []string{r.jitARN}),
		allow("ConsumeQueue", []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"},
			[]string{r.queueARN}),
		allow("ReadAppKey", []string{"secretsmanager:GetSecretValue"}, []string{r.privateKeyARN}),
	)
	return policy(statements...)
}

func indexARN(tableARN, index string) string { return tableARN + "/index/" + index }

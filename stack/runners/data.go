package runners

import (
	"sort"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/dynamodb"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/secretsmanager"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sqs"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// dataOut holds the queue, the tables and the secrets.
type dataOut struct {
	queue, dlq *sqs.Queue
	jobs, jit  *dynamodb.Table

	privateKeyARN, webhookSecretARN pulumi.StringOutput
	// secretValues are the secret versions the stack wrote; the Lambdas
	// depend on them, since they read the secrets when they start.
	secretValues []pulumi.Resource
}

// dataStores creates the secrets (or takes existing ones), the scale-up
// queue with its dead-letter queue, and the two tables.
func (d *deployment) dataStores() error {
	g := d.args.GitHub
	var err error
	if d.data.privateKeyARN, err = d.secret("app-key", "GitHub App private key (PEM) of jit-runners "+d.name, g.PrivateKey, g.PrivateKeySecretARN); err != nil {
		return err
	}
	if d.data.webhookSecretARN, err = d.secret("webhook-secret", "GitHub webhook secret of jit-runners "+d.name, g.WebhookSecret, g.WebhookSecretARN); err != nil {
		return err
	}

	spec := queue.ScaleUp
	if d.data.dlq, err = sqs.NewQueue(d.ctx, d.n("dlq"), &sqs.QueueArgs{
		MessageRetentionSeconds: pulumi.Int(spec.DeadLetterRetentionSeconds),
		SqsManagedSseEnabled:    pulumi.Bool(true),
		Tags:                    d.tags(),
	}, d.opts()...); err != nil {
		return err
	}
	if d.data.queue, err = sqs.NewQueue(d.ctx, d.n("queue"), &sqs.QueueArgs{
		// AWS recommends at least six times the function timeout for an
		// SQS event source; Validate checks queue.ScaleUp keeps to it.
		VisibilityTimeoutSeconds: pulumi.Int(max(spec.VisibilityTimeoutSeconds, 6*spec.ScaleupTimeoutSeconds)),
		MessageRetentionSeconds:  pulumi.Int(spec.MessageRetentionSeconds),
		RedrivePolicy:            d.data.dlq.Arn.ApplyT(spec.RedrivePolicy).(pulumi.StringOutput),
		SqsManagedSseEnabled:     pulumi.Bool(true),
		Tags:                     d.tags(),
	}, d.opts()...); err != nil {
		return err
	}

	if d.data.jobs, err = d.table("jobs", state.JobsTable); err != nil {
		return err
	}
	d.data.jit, err = d.table("jit", jitstore.Table)
	return err
}

// secret returns the ARN of an existing secret, or creates one holding value.
func (d *deployment) secret(suffix, description string, value, arn pulumi.StringInput) (pulumi.StringOutput, error) {
	if arn != nil {
		return arn.ToStringOutput(), nil
	}
	s, err := secretsmanager.NewSecret(d.ctx, d.n(suffix), &secretsmanager.SecretArgs{
		Description: pulumi.String(description),
		Tags:        d.tags(),
	}, d.opts()...)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	v, err := secretsmanager.NewSecretVersion(d.ctx, d.n(suffix), &secretsmanager.SecretVersionArgs{
		SecretId:     s.ID(),
		SecretString: pulumi.ToSecret(value.ToStringOutput()).(pulumi.StringOutput),
	}, d.opts()...)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	d.data.secretValues = append(d.data.secretValues, v)
	return s.Arn, nil
}

// table creates a DynamoDB table of shape t: on-demand, encrypted with the
// AWS-managed key, TTL, point-in-time recovery and deletion protection as t
// says.
func (d *deployment) table(suffix string, t state.Table) (*dynamodb.Table, error) {
	names := make([]string, 0, len(t.Attributes))
	for n := range t.Attributes {
		names = append(names, n)
	}
	sort.Strings(names)
	attrs := dynamodb.TableAttributeArray{}
	for _, n := range names {
		attrs = append(attrs, dynamodb.TableAttributeArgs{Name: pulumi.String(n), Type: pulumi.String(t.Attributes[n])})
	}
	hash, rng := keyNames(t.Keys)
	args := &dynamodb.TableArgs{
		BillingMode:          pulumi.String("PAY_PER_REQUEST"),
		Attributes:           attrs,
		HashKey:              pulumi.String(hash),
		PointInTimeRecovery:  dynamodb.TablePointInTimeRecoveryArgs{Enabled: pulumi.Bool(t.PointInTimeRecovery)},
		ServerSideEncryption: dynamodb.TableServerSideEncryptionArgs{Enabled: pulumi.Bool(true)},
		Tags:                 d.tags(),
	}
	if t.DeletionProtection {
		args.DeletionProtectionEnabled = pulumi.Bool(true)
	}
	if rng != "" {
		args.RangeKey = pulumi.String(rng)
	}
	if t.TTLAttribute != "" {
		args.Ttl = dynamodb.TableTtlArgs{AttributeName: pulumi.String(t.TTLAttribute), Enabled: pulumi.Bool(true)}
	}
	var gsis dynamodb.TableGlobalSecondaryIndexArray
	for _, ix := range t.Indexes {
		h, r := keyNames(ix.Keys)
		gsi := dynamodb.TableGlobalSecondaryIndexArgs{
			Name: pulumi.String(ix.Name), HashKey: pulumi.String(h), ProjectionType: pulumi.String("ALL"),
		}
		if r != "" {
			gsi.RangeKey = pulumi.String(r)
		}
		gsis = append(gsis, gsi)
	}
	if len(gsis) > 0 {
		args.GlobalSecondaryIndexes = gsis
	}
	return dynamodb.NewTable(d.ctx, d.n(suffix), args, d.opts()...)
}

func keyNames(keys []state.Key) (hash, rng string) {
	for _, k := range keys {
		switch k.Type {
		case "HASH":
			hash = k.Name
		case "RANGE":
			rng = k.Name
		}
	}
	return hash, rng
}

package fleet

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Start starts a stopped instance (a stopped pooled instance taken by a
// job). The SDK retries throttling (RequestLimitExceeded) with backoff; an
// instance that is not stopped (still stopping, or gone) is an error the
// caller handles: the job then goes back to the queue.
func (l *Launcher) Start(ctx context.Context, instanceID string) error {
	if instanceID == "" {
		return fmt.Errorf("%w: start: no instance id", ErrInvalidRequest)
	}
	if _, err := l.api.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{instanceID}}); err != nil {
		return fmt.Errorf("start instance %s: %w", instanceID, err)
	}
	l.log.InfoContext(ctx, "started instance", "instance_id", instanceID)
	return nil
}

// Stop stops a running instance (a stopped-pool instance once it is
// prepared). Its EBS volumes stay; its next boot runs the bootstrap again.
func (l *Launcher) Stop(ctx context.Context, instanceID string) error {
	if instanceID == "" {
		return fmt.Errorf("%w: stop: no instance id", ErrInvalidRequest)
	}
	if _, err := l.api.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{instanceID}}); err != nil {
		return fmt.Errorf("stop instance %s: %w", instanceID, err)
	}
	l.log.InfoContext(ctx, "stopped instance", "instance_id", instanceID)
	return nil
}

// TemplateVersion returns the latest version of a launch template, the one
// launches use ($Latest): a pooled instance launched from an older version
// (an older bootstrap or runner version) is replaced.
func (l *Launcher) TemplateVersion(ctx context.Context, templateID string) (int64, error) {
	out, err := l.api.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{templateID}})
	if err != nil {
		return 0, fmt.Errorf("describe launch template %s: %w", templateID, err)
	}
	if len(out.LaunchTemplates) != 1 {
		return 0, fmt.Errorf("describe launch template %s: %d templates found", templateID, len(out.LaunchTemplates))
	}
	return aws.ToInt64(out.LaunchTemplates[0].LatestVersionNumber), nil
}

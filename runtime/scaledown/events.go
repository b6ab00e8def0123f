package scaledown

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/tags"
)

// lookup describes one instance and reports whether it is ours.
func (r *Reconciler) lookup(ctx context.Context, id string) (*instance, bool, error) {
	if id == "" {
		return nil, false, nil
	}
	out, err := r.d.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return nil, false, fmt.Errorf("describe %s: %w", id, err)
	}
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			if managedBy(in) == r.cfg.NamePrefix {
				return toInstance(in), true, nil
			}
		}
	}
	return nil, false, nil
}

func managedBy(in types.Instance) string {
	for _, t := range in.Tags {
		if t.Key != nil && *t.Key == tags.ManagedBy && t.Value != nil {
			return *t.Value
		}
	}
	return ""
}

// onInterruption marks the job of an interrupted spot instance (so a failed
// job is re-run once) and shares the interrupted pool with scaleup, which
// avoids it for InterruptedOfferingTTL.
func (r *Reconciler) onInterruption(ctx context.Context, id string) error {
	inst, ours, err := r.lookup(ctx, id)
	if err != nil || !ours {
		return err
	}
	log := r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.jobID))
	offering := fleet.CapacityTypeSpot + ":" + inst.instanceType + ":" + inst.az
	if err := r.d.Jobs.MarkOfferingUnavailable(ctx, offering, r.now().Add(InterruptedOfferingTTL)); err != nil {
		log.Error("could not share the interrupted offering", slog.String("error", err.Error()))
	}
	if _, err := r.d.Jobs.MarkInterrupted(ctx, inst.jobID, id); err != nil {
		return err
	}
	r.decide(log, "spot-interruption", "marked", slog.String("offering", offering))
	return nil
}

// onStateChange frees the runner slot of a job whose instance terminated,
// without waiting for the next sweep.
func (r *Reconciler) onStateChange(ctx context.Context, id, st string) error {
	if st != "shutting-down" && st != "terminated" {
		return nil
	}
	inst, ours, err := r.lookup(ctx, id)
	if err != nil || !ours {
		return err
	}
	if err := r.d.Jobs.MarkInstanceGone(ctx, inst.jobID, id); err != nil {
		return err
	}
	r.decide(r.log.With(slog.String("instance_id", id), slog.Int64("job_id", inst.jobID)), "state-change", "instance-gone", slog.String("state", st))
	return nil
}

// Package tags names the EC2 tags jit-runners puts on every runner instance
// and its volumes. Scaledown finds instances by them and the stack's IAM
// policies are conditioned on them, so they are defined once, here.
package tags

import (
	"strconv"
	"strings"
)

// Tag keys (a contract: see DESIGN.md).
const (
	ManagedBy  = "jitr:managed-by" // value: the deployment's namePrefix
	JobID      = "jitr:job-id"
	Repository = "jitr:repository"
	Profile    = "jitr:profile"
	Name       = "Name" // value: the runner name, <namePrefix>-<instance-id>
)

// RunnerName returns the runner name of an instance.
func RunnerName(namePrefix, instanceID string) string { return namePrefix + "-" + instanceID }

// ForLaunch returns the tags an instance and its volumes carry from launch.
// Name is added right after launch, once the instance id is known.
func ForLaunch(namePrefix string, jobID int64, repository, profile string) map[string]string {
	return map[string]string{
		ManagedBy:  namePrefix,
		JobID:      strconv.FormatInt(jobID, 10),
		Repository: repository,
		Profile:    profile,
	}
}

// InstanceOfRunner returns the instance id of a runner name of this
// deployment (<namePrefix>-<instance-id>), and whether name is one.
func InstanceOfRunner(namePrefix, name string) (string, bool) {
	id, ok := strings.CutPrefix(name, namePrefix+"-")
	if !ok || !strings.HasPrefix(id, "i-") || len(id) < 3 {
		return "", false
	}
	return id, true
}

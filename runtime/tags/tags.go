// Package tags names the EC2 tags jit-runners puts on every runner instance
// and its volumes, and the names of its runners. Scaledown finds instances
// by them and the stack's IAM policies are conditioned on them, so they are
// defined once, here.
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
	Name       = "Name" // value: the instance's runner name (RunnerName)
	// Pool marks an instance launched into a warm pool (value: its kind,
	// hot or stopped). A job that takes it retags it (ForLaunch): job id,
	// repository and Name then say what they say of any launch.
	Pool = "jitr:pool"
)

// RunnerName returns the name of the runner launched for job jobID on its
// attempt-th launch: <namePrefix>-j<jobID>-<attempt>, at most 46 characters
// (GitHub allows 64). It is fixed before the instance exists: scaleup
// generates the JIT config first and launches only once GitHub registered
// the runner (see docs/architecture.md, "JIT config before launch"). It names
// the launching job, not the job the runner will run: GitHub gives a queued
// job to any idle runner whose labels match.
func RunnerName(namePrefix string, jobID, attempt int64) string {
	return namePrefix + "-j" + strconv.FormatInt(jobID, 10) + "-" + strconv.FormatInt(attempt, 10)
}

// RunnerJob returns the job a runner of this deployment was launched for,
// and whether name is such a runner's name (see RunnerName).
func RunnerJob(namePrefix, name string) (jobID int64, ok bool) {
	rest, ok := strings.CutPrefix(name, namePrefix+"-j")
	if !ok {
		return 0, false
	}
	job, attempt, ok := strings.Cut(rest, "-")
	if !ok || !digits(job) || !digits(attempt) {
		return 0, false
	}
	id, err := strconv.ParseInt(job, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

func digits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ForLaunch returns the tags an instance and its volumes carry from launch,
// its runner's name among them.
func ForLaunch(namePrefix string, jobID int64, repository, profile, runnerName string) map[string]string {
	return map[string]string{
		ManagedBy:  namePrefix,
		JobID:      strconv.FormatInt(jobID, 10),
		Repository: repository,
		Profile:    profile,
		Name:       runnerName,
	}
}

// PoolName is the Name tag of a pooled instance no job has taken: it has
// no runner yet (RunnerJob does not take it for one).
func PoolName(namePrefix, kind string) string { return namePrefix + "-pool-" + kind }

// ForPool returns the tags a pooled instance and its volumes carry from
// launch, before any job takes it.
func ForPool(namePrefix, profile, kind string) map[string]string {
	return map[string]string{
		ManagedBy: namePrefix,
		Profile:   profile,
		Pool:      kind,
		Name:      PoolName(namePrefix, kind),
	}
}

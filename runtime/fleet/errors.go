package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// Error classification. Every decision is made from an EC2 error code (a
// CreateFleet per-override ErrorCode, or smithy.APIError.ErrorCode() for an
// API-level error), never from message text. A code in none of the sets below
// is treated as an authorization or validation problem: no on-demand
// fallback, not retryable, because repeating a misconfigured request only
// burns queue receives and API quota.
var (
	// capacityCodes mean this offering (capacity type, instance type, zone)
	// has no capacity for us right now. They put the offering in the
	// unavailable-offerings cache, let a spot request fall back to on-demand
	// in the same Launch, and are retryable.
	//
	// MaxSpotInstanceCountExceeded is the spot quota; on-demand has its own
	// quota, so falling back can succeed. SpotMaxPriceTooLow only exists for
	// spot. InsufficientFreeAddressesInSubnet clears as instances terminate,
	// and a pool in another zone may still have addresses. Unsupported is EC2
	// saying this instance type is not offered in this zone (or not as spot),
	// which karpenter also treats as an unavailable offering.
	capacityCodes = codeSet(
		"InsufficientInstanceCapacity",
		"InsufficientCapacity",
		"InsufficientHostCapacity",
		"InsufficientReservedInstanceCapacity",
		"InsufficientFreeAddressesInSubnet",
		"UnfulfillableCapacity",
		"MaxSpotInstanceCountExceeded",
		"SpotMaxPriceTooLow",
		"Unsupported",
	)

	// quotaCodes are the on-demand instance and vCPU quotas of the account.
	// They are not capacity errors: an on-demand fallback would hit the same
	// quota (and a spot request reports its own quota as
	// MaxSpotInstanceCountExceeded), and the offering is not out of capacity,
	// so nothing is cached. They are retryable: the quota frees up as other
	// runners terminate.
	quotaCodes = codeSet(
		"InstanceLimitExceeded",
		"VcpuLimitExceeded",
	)

	// transientCodes are throttling and server-side faults: retryable, no
	// fallback (the on-demand request would meet the same throttle), nothing
	// cached. The SDK has already retried them a few times with backoff by the
	// time Launch sees them.
	transientCodes = codeSet(
		"RequestLimitExceeded",
		"RequestResourceCountExceeded",
		"Throttling",
		"ThrottlingException",
		"RequestThrottled",
		"RequestThrottledException",
		"EC2ThrottledException",
		"InternalError",
		"InternalFailure",
		"ServiceUnavailable",
		"Unavailable",
		"RequestTimeout",
		"RequestTimeoutException",
	)

	// notFoundInstanceCodes make Terminate a no-op: the instance is already
	// gone (or never existed), which is what the caller wanted.
	notFoundInstanceCodes = codeSet("InvalidInstanceID.NotFound")
)

func codeSet(codes ...string) map[string]struct{} {
	s := make(map[string]struct{}, len(codes))
	for _, c := range codes {
		s[c] = struct{}{}
	}
	return s
}

func has(set map[string]struct{}, code string) bool {
	_, ok := set[code]
	return ok
}

// IsCapacityError reports whether an EC2 error code means the requested
// offering has no capacity right now (see capacityCodes). Only these codes
// make a spot launch fall back to on-demand.
func IsCapacityError(code string) bool { return has(capacityCodes, code) }

// isRetryableCode reports whether a launch that failed with code can succeed
// later without a change of configuration.
func isRetryableCode(code string) bool {
	return has(capacityCodes, code) || has(quotaCodes, code) || has(transientCodes, code)
}

// IsRetryable reports whether err (from Launch, Tag or Terminate, wrapped or
// not) is worth retrying later, e.g. by letting the queue redeliver the job:
// capacity, quota, throttling and server-side errors are; authorization and
// validation errors are not. A *LaunchFailure is retryable only if every
// error in it is.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if lf, ok := errors.AsType[*LaunchFailure](err); ok {
		return lf.retryable()
	}
	return isRetryableCause(err)
}

// isRetryableCause classifies an error returned by an SDK call.
func isRetryableCause(err error) bool {
	if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
		if isRetryableCode(apiErr.ErrorCode()) {
			return true
		}
		// An unknown code: retryable only if the SDK's rules say so (a 5xx
		// or 429 response), otherwise it is a request to fix.
		return sdkRetryable(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// The invocation ran out of time, not the request out of luck.
		return true
	}
	return sdkRetryable(err)
}

// sdkRetryable asks the SDK's own retry rules: connection errors, 5xx and
// 429 responses and the SDK's throttling codes.
func sdkRetryable(err error) bool {
	return retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary
}

// LaunchError is one error EC2 reported for a launch: either one override
// (instance type, subnet, zone) of a CreateFleet response, or, with those
// fields empty, the CreateFleet call itself.
type LaunchError struct {
	Code             string
	Message          string
	InstanceType     string
	SubnetID         string
	AvailabilityZone string
	CapacityType     string // "spot" or "on-demand": the request that reported it
}

func (e LaunchError) String() string {
	var b strings.Builder
	b.WriteString(e.CapacityType)
	if e.InstanceType != "" || e.AvailabilityZone != "" {
		fmt.Fprintf(&b, " %s in %s", e.InstanceType, e.AvailabilityZone)
		if e.SubnetID != "" {
			fmt.Fprintf(&b, " (%s)", e.SubnetID)
		}
	}
	fmt.Fprintf(&b, ": %s: %s", e.Code, e.Message)
	return b.String()
}

// LaunchFailure is the error Launch returns when no instance came back. It
// lists every error of every request made (spot, then on-demand after a
// fallback). Use errors.As to get it and IsRetryable to decide what to do.
type LaunchFailure struct {
	Errors []LaunchError
	// Err is the API-level error when a CreateFleet call itself failed
	// (its code is also the last entry of Errors); nil when EC2 answered with
	// per-override errors only.
	Err error
}

func (f *LaunchFailure) Error() string {
	var b strings.Builder
	b.WriteString("launch failed")
	if len(f.Errors) == 0 && f.Err != nil {
		fmt.Fprintf(&b, ": %v", f.Err)
		return b.String()
	}
	for i, e := range f.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(e.String())
	}
	return b.String()
}

// Unwrap returns the API-level error, if any, so errors.As finds the
// smithy.APIError.
func (f *LaunchFailure) Unwrap() error { return f.Err }

func (f *LaunchFailure) retryable() bool {
	apiCode := ""
	if apiErr, ok := errors.AsType[smithy.APIError](f.Err); ok {
		apiCode = apiErr.ErrorCode()
	}
	for _, e := range f.Errors {
		if f.Err != nil && e.Code == apiCode && e.InstanceType == "" {
			continue // judged below, with its HTTP status
		}
		if !isRetryableCode(e.Code) {
			return false
		}
	}
	if f.Err != nil {
		return isRetryableCause(f.Err)
	}
	return len(f.Errors) > 0
}

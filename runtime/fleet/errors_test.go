package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/jit-runners/jit-runners/runtime/fleet"
)

func TestIsCapacityError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code string
		want bool
	}{
		{"InsufficientInstanceCapacity", true},
		{"InsufficientCapacity", true},
		{"InsufficientHostCapacity", true},
		{"InsufficientReservedInstanceCapacity", true},
		{"InsufficientFreeAddressesInSubnet", true},
		{"UnfulfillableCapacity", true},
		{"MaxSpotInstanceCountExceeded", true},
		{"SpotMaxPriceTooLow", true},
		{"Unsupported", true},
		// Quotas shared with on-demand: no fallback.
		{"InstanceLimitExceeded", false},
		{"VcpuLimitExceeded", false},
		// Throttling and faults.
		{"RequestLimitExceeded", false},
		{"InternalError", false},
		// Authorization and validation.
		{"UnauthorizedOperation", false},
		{"AuthFailure", false},
		{"InvalidParameterValue", false},
		{"InvalidParameterCombination", false},
		{"InvalidLaunchTemplateId.NotFound", false},
		{"InvalidLaunchTemplateId.Malformed", false},
		{"InvalidAMIID.NotFound", false},
		{"InvalidSubnetID.NotFound", false},
		{"", false},
		{"insufficientinstancecapacity", false}, // codes are exact
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			if got := fleet.IsCapacityError(tc.code); got != tc.want {
				t.Errorf("IsCapacityError(%q) = %v; want %v", tc.code, got, tc.want)
			}
		})
	}
}

func apiError(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: "message text is never read: InsufficientInstanceCapacity"}
}

// responseError is an API error as the SDK returns it, with its HTTP status.
func responseError(status int, code string) error {
	return &smithy.OperationError{ServiceID: "EC2", OperationName: "CreateFleet", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      apiError(code),
		},
		RequestID: "req-1",
	}}
}

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	failure := func(err error, codes ...string) error {
		f := &fleet.LaunchFailure{Err: err}
		for _, c := range codes {
			f.Errors = append(f.Errors, fleet.LaunchError{Code: c, InstanceType: "t3.large", AvailabilityZone: "us-east-1a", CapacityType: "spot"})
		}
		if apiErr, ok := errors.AsType[smithy.APIError](err); ok {
			f.Errors = append(f.Errors, fleet.LaunchError{Code: apiErr.ErrorCode(), CapacityType: "spot"})
		}
		return fmt.Errorf("launch job 1: %w", f)
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("boom"), false},
		{"invalid request", fmt.Errorf("%w: no subnets", fleet.ErrInvalidRequest), false},
		{"API throttling", apiError("RequestLimitExceeded"), true},
		{"wrapped API throttling", fmt.Errorf("create fleet: %w", apiError("RequestLimitExceeded")), true},
		{"API internal error", apiError("InternalError"), true},
		{"API capacity", apiError("InsufficientInstanceCapacity"), true},
		{"API quota", apiError("VcpuLimitExceeded"), true},
		{"API UnauthorizedOperation", apiError("UnauthorizedOperation"), false},
		{"API InvalidParameterValue", apiError("InvalidParameterValue"), false},
		{"unknown code, HTTP 503", responseError(503, "SomethingNew"), true},
		{"unknown code, HTTP 400", responseError(400, "SomethingNew"), false},
		{"UnauthorizedOperation, HTTP 403", responseError(403, "UnauthorizedOperation"), false},
		{"deadline", fmt.Errorf("create fleet: %w", context.DeadlineExceeded), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"failure: capacity", failure(nil, "InsufficientInstanceCapacity", "MaxSpotInstanceCountExceeded"), true},
		{"failure: capacity then on-demand quota", failure(nil, "InsufficientInstanceCapacity", "VcpuLimitExceeded"), true},
		{"failure: capacity and validation", failure(nil, "InsufficientInstanceCapacity", "InvalidParameterValue"), false},
		{"failure: unknown code", failure(nil, "SomethingNew"), false},
		{"failure: capacity then API throttling", failure(apiError("RequestLimitExceeded"), "InsufficientInstanceCapacity"), true},
		{"failure: capacity then API auth", failure(apiError("UnauthorizedOperation"), "InsufficientInstanceCapacity"), false},
		{"failure: API 5xx with unknown code", failure(responseError(500, "SomethingNew")), true},
		{"failure: empty", &fleet.LaunchFailure{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := fleet.IsRetryable(tc.err); got != tc.want {
				t.Errorf("IsRetryable(%v) = %v; want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestLaunchFailureError(t *testing.T) {
	t.Parallel()
	f := &fleet.LaunchFailure{Errors: []fleet.LaunchError{
		{Code: "InsufficientInstanceCapacity", Message: "no capacity", InstanceType: "t3.large", SubnetID: "subnet-1", AvailabilityZone: "us-east-1a", CapacityType: "spot"},
		{Code: "UnauthorizedOperation", Message: "denied", CapacityType: "on-demand"},
	}}
	want := "launch failed: spot t3.large in us-east-1a (subnet-1): InsufficientInstanceCapacity: no capacity; on-demand: UnauthorizedOperation: denied"
	if got := f.Error(); got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

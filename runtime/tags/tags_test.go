package tags

import "testing"

func TestRunnerNameRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix  string
		job     int64
		attempt int64
	}{
		{"jitr", 1, 1},
		{"a", 9223372036854775807, 42},
		{"ci-runners-2026-x64z", 1796411791662092, 3}, // 20 characters
	} {
		name := RunnerName(tc.prefix, tc.job, tc.attempt)
		if len(name) > 64 {
			t.Errorf("%s: %d characters; GitHub allows 64", name, len(name))
		}
		if got, ok := RunnerJob(tc.prefix, name); !ok || got != tc.job {
			t.Errorf("RunnerJob(%q, %q) = %d, %v; want %d", tc.prefix, name, got, ok, tc.job)
		}
	}
}

func TestRunnerJobRefusesOtherNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"", "jitr", "jitr-", "jitr-j", "jitr-j-1", "jitr-j12", "jitr-j12-", "jitr-j12-x", "jitr-jx-1",
		"jitr-i-0123456789abcdef0", // the old instance-id names
		"jitr-x-j12-1",             // a deployment prefixed "jitr-x"
		"JITR-j12-1", "build-box-7", "jitr-j0-1", "jitr-j-5-1", "jitr-j12-1-2",
		"jitr-j99999999999999999999-1", // overflows int64
	} {
		if id, ok := RunnerJob("jitr", name); ok {
			t.Errorf("RunnerJob(jitr, %q) = %d, true; want not ours", name, id)
		}
	}
}

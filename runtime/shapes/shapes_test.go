package shapes_test

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// familyRE is the grammar's family pattern, restated so the fuzz test checks
// the package rather than itself.
var familyRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,15}$`)

func ptr(b bool) *bool { return &b }

type goodCase struct {
	labels []string
	want   shapes.Shape
	rest   []string
}

var goodCases = []goodCase{
	{[]string{"self-hosted", "linux"}, shapes.Shape{}, []string{"self-hosted", "linux"}},
	{[]string{"self-hosted", "linux", "cpu=4", "ram=16", "family=c7i+m7i"},
		shapes.Shape{CPU: shapes.Range{Min: 4, Max: 4}, RAMGiB: shapes.Range{Min: 16, Max: 16}, Families: []string{"c7i", "m7i"}},
		[]string{"self-hosted", "linux"}},
	{[]string{"cpu=1"}, shapes.Shape{CPU: shapes.Range{Min: 1, Max: 1}}, nil},
	{[]string{"cpu=448"}, shapes.Shape{CPU: shapes.Range{Min: 448, Max: 448}}, nil},
	{[]string{"cpu=4-8"}, shapes.Shape{CPU: shapes.Range{Min: 4, Max: 8}}, nil},
	{[]string{"cpu=4-4"}, shapes.Shape{CPU: shapes.Range{Min: 4, Max: 4}}, nil},
	{[]string{"cpu=4+"}, shapes.Shape{CPU: shapes.Range{Min: 4}}, nil},
	{[]string{"CPU=16"}, shapes.Shape{CPU: shapes.Range{Min: 16, Max: 16}}, nil},
	{[]string{"ram=1"}, shapes.Shape{RAMGiB: shapes.Range{Min: 1, Max: 1}}, nil},
	{[]string{"ram=24576"}, shapes.Shape{RAMGiB: shapes.Range{Min: 24576, Max: 24576}}, nil},
	{[]string{"Ram=8-32"}, shapes.Shape{RAMGiB: shapes.Range{Min: 8, Max: 32}}, nil},
	{[]string{"ram=64+"}, shapes.Shape{RAMGiB: shapes.Range{Min: 64}}, nil},
	{[]string{"family=c7g"}, shapes.Shape{Families: []string{"c7g"}}, nil},
	{[]string{"FAMILY=M7GD+Inf2+g5"}, shapes.Shape{Families: []string{"m7gd", "inf2", "g5"}}, nil},
	{[]string{"family=m7i+c7i+m7i+c7i"}, shapes.Shape{Families: []string{"m7i", "c7i"}}, nil},
	{[]string{"family=a+b+c+d+e+f+g+h+i+j"}, shapes.Shape{Families: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}}, nil},
	{[]string{"family=abcdefghijklmnop"}, shapes.Shape{Families: []string{"abcdefghijklmnop"}}, nil},
	{[]string{"family=u-6tb1"}, shapes.Shape{Families: []string{"u-6tb1"}}, nil},
	{[]string{"arch=x64"}, shapes.Shape{Arch: "x64"}, nil},
	{[]string{"arch=AMD64"}, shapes.Shape{Arch: "x64"}, nil},
	{[]string{"arch=arm64"}, shapes.Shape{Arch: "arm64"}, nil},
	{[]string{"Arch=aarch64"}, shapes.Shape{Arch: "arm64"}, nil},
	{[]string{"gpu=0"}, shapes.Shape{NoGPU: true}, nil},
	{[]string{"gpu=0-0"}, shapes.Shape{NoGPU: true}, nil},
	{[]string{"gpu=0+"}, shapes.Shape{}, nil},
	{[]string{"gpu=1"}, shapes.Shape{GPU: shapes.Range{Min: 1, Max: 1}}, nil},
	{[]string{"gpu=0-2"}, shapes.Shape{GPU: shapes.Range{Min: 0, Max: 2}}, nil},
	{[]string{"gpu=16"}, shapes.Shape{GPU: shapes.Range{Min: 16, Max: 16}}, nil},
	{[]string{"GPU=2+"}, shapes.Shape{GPU: shapes.Range{Min: 2}}, nil},
	{[]string{"disk=8"}, shapes.Shape{DiskGiB: 8}, nil},
	{[]string{"DISK=16384"}, shapes.Shape{DiskGiB: 16384}, nil},
	{[]string{"spot=false"}, shapes.Shape{Spot: ptr(false)}, nil},
	{[]string{"Spot=TRUE"}, shapes.Shape{Spot: ptr(true)}, nil},
	{[]string{"Self-Hosted", "cpu=2", "GPU", "c7i.large", "spot=false", "my profile"},
		shapes.Shape{CPU: shapes.Range{Min: 2, Max: 2}, Spot: ptr(false)},
		[]string{"Self-Hosted", "GPU", "c7i.large", "my profile"}},
	{[]string{"self-hosted", "cpu=8-16", "ram=32+", "family=c7g", "arch=arm64", "gpu=0", "disk=100", "spot=true"},
		shapes.Shape{CPU: shapes.Range{Min: 8, Max: 16}, RAMGiB: shapes.Range{Min: 32}, Families: []string{"c7g"},
			Arch: "arm64", NoGPU: true, DiskGiB: 100, Spot: ptr(true)},
		[]string{"self-hosted"}},
	{[]string{strings.Repeat("x", 256)}, shapes.Shape{}, []string{strings.Repeat("x", 256)}},
	{make([]string, 64), shapes.Shape{}, make([]string, 64)},
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range goodCases {
		t.Run(strings.Join(tc.labels, ","), func(t *testing.T) {
			t.Parallel()
			got, rest, err := shapes.Parse(tc.labels)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.labels, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.labels, got, tc.want)
			}
			if !reflect.DeepEqual(rest, tc.rest) {
				t.Errorf("Parse(%q) rest = %q, want %q", tc.labels, rest, tc.rest)
			}
			if got.IsZero() != reflect.DeepEqual(tc.want, shapes.Shape{}) {
				t.Errorf("Parse(%q).IsZero() = %v", tc.labels, got.IsZero())
			}
		})
	}
}

type badCase struct {
	labels []string
	label  string // the label the error names
	reason string // a fragment of the reason
}

const (
	numberForm = "the value must be a whole number or a range like 4-8 or 4+"
	familyForm = "each family must be a prefix like c7i"
)

var (
	long    = "family=" + strings.Repeat("c", 293)
	tooMany = append(make([]string, 64), "cpu=4")
)

var badCases = []badCase{
	{[]string{"cpu="}, "cpu=", "the value is empty"},
	{[]string{"self-hosted", "ram="}, "ram=", "the value is empty"},
	{[]string{"cpu=0"}, "cpu=0", "0 is outside 1..448"},
	{[]string{"cpu=449"}, "cpu=449", "449 is outside 1..448"},
	{[]string{"cpu=0+"}, "cpu=0+", "0+ is outside 1..448"},
	{[]string{"cpu=8-4"}, "cpu=8-4", "the range 8-4 is reversed"},
	{[]string{"cpu=4-500"}, "cpu=4-500", "4-500 is outside 1..448"},
	{[]string{"cpu=1.5"}, "cpu=1.5", numberForm},
	{[]string{"cpu=-1"}, "cpu=-1", numberForm},
	{[]string{"cpu=+4"}, "cpu=+4", numberForm},
	{[]string{"cpu=4-"}, "cpu=4-", numberForm},
	{[]string{"cpu=4++"}, "cpu=4++", numberForm},
	{[]string{"cpu=4-8+"}, "cpu=4-8+", numberForm},
	{[]string{"cpu=x"}, "cpu=x", numberForm + ", within 1..448"},
	{[]string{"cpu=４"}, "cpu=４", numberForm},
	{[]string{"ram=0.5"}, "ram=0.5", numberForm + ", within 1..24576"},
	{[]string{"ram=24577"}, "ram=24577", "24577 is outside 1..24576"},
	{[]string{"ram=99999999999999999999"}, "ram=99999999999999999999", numberForm},
	{[]string{"ram=16GiB"}, "ram=16GiB", numberForm},
	{[]string{"cpu=0000000004"}, "cpu=0000000004", numberForm}, // more than 9 digits
	{[]string{"family="}, "family=", "the value is empty"},
	{[]string{"family=c7i++m7i"}, "family=c7i++m7i", familyForm},
	{[]string{"family=c7i+"}, "family=c7i+", familyForm},
	{[]string{"family=C7I.large"}, "family=C7I.large", familyForm},
	{[]string{"family=7i"}, "family=7i", familyForm},
	{[]string{"family=abcdefghijklmnopq"}, "family=abcdefghijklmnopq", familyForm},
	{[]string{"family=c7i*"}, "family=c7i*", familyForm},
	{[]string{"family=a+b+c+d+e+f+g+h+i+j+k"}, "family=a+b+c+d+e+f+g+h+i+j+k", "more than 10 families"},
	{[]string{"arch=x86"}, "arch=x86", "the value must be x64 (or amd64) or arm64 (or aarch64)"},
	{[]string{"arch=arm"}, "arch=arm", "the value must be x64"},
	{[]string{"gpu=17"}, "gpu=17", "17 is outside 0..16"},
	{[]string{"gpu=2-1"}, "gpu=2-1", "the range 2-1 is reversed"},
	{[]string{"disk=7"}, "disk=7", "7 is outside 8..16384"},
	{[]string{"disk=16385"}, "disk=16385", "16385 is outside 8..16384"},
	{[]string{"disk=8-16"}, "disk=8-16", "the value must be a whole number of GiB"},
	{[]string{"spot=maybe"}, "spot=maybe", "the value must be true or false"},
	{[]string{"spot=1"}, "spot=1", "the value must be true or false"},
	{[]string{"self-hosted", "cores=4"}, "cores=4", "unknown key"},
	{[]string{"=4"}, "=4", "unknown key"},
	{[]string{" cpu=4"}, " cpu=4", "unknown key"},
	{[]string{"cpu=4", "cpu=4"}, "cpu=4", "the key cpu is given twice"},
	{[]string{"CPU=4", "cpu=8"}, "cpu=8", "the key cpu is given twice"},
	{[]string{"spot=true", "ram=4", "Spot=false"}, "Spot=false", "the key spot is given twice"},
	{[]string{"cpu=$(reboot)"}, "cpu=$(reboot)", numberForm},
	{[]string{"ram=16; rm -rf /"}, "ram=16; rm -rf /", numberForm},
	{[]string{"family=c7i\n"}, "family=c7i\n", familyForm},
	{[]string{"family=с7i"}, "family=с7i", familyForm}, // Cyrillic с
	{[]string{"arch=x64\x00"}, "arch=x64\x00", "the value must be x64"},
	{[]string{"spot='true'"}, "spot='true'", "the value must be true or false"},
	{[]string{"cpu=4 "}, "cpu=4 ", numberForm},
	{[]string{"family=c7i\u200b"}, "family=c7i\u200b", familyForm},
	{[]string{"cpu\xff=4"}, "cpu\xff=4", "unknown key"},
	{[]string{"self-hosted", long}, long, "longer than 256 bytes"},
	{[]string{strings.Repeat("y", 257)}, strings.Repeat("y", 257), "longer than 256 bytes"},
	{tooMany, "cpu=4", "more than 64 labels"},
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range badCases {
		t.Run(fmt.Sprintf("%q", tc.labels), func(t *testing.T) {
			t.Parallel()
			got, rest, err := shapes.Parse(tc.labels)
			var e *shapes.Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) = %+v, %q, %v; want a *shapes.Error", tc.labels, got, rest, err)
			}
			if e.Label != tc.label {
				t.Errorf("Parse(%q): error label %q, want %q", tc.labels, e.Label, tc.label)
			}
			if !strings.Contains(e.Reason, tc.reason) {
				t.Errorf("Parse(%q): reason %q, want it to contain %q", tc.labels, e.Reason, tc.reason)
			}
			if want := fmt.Sprintf("shape label %q: %s", tc.label, e.Reason); err.Error() != want {
				t.Errorf("Parse(%q): error %q, want %q", tc.labels, err.Error(), want)
			}
			if !reflect.DeepEqual(got, shapes.Shape{}) || rest != nil {
				t.Errorf("Parse(%q) with an error returned %+v, %q", tc.labels, got, rest)
			}
		})
	}
}

// TestErrorText pins the message format given in the issue.
func TestErrorText(t *testing.T) {
	t.Parallel()
	_, _, err := shapes.Parse([]string{"cpu=x"})
	want := `shape label "cpu=x": the value must be a whole number or a range like 4-8 or 4+, within 1..448`
	if err == nil || err.Error() != want {
		t.Errorf("Parse(cpu=x) error = %v, want %s", err, want)
	}
	_, _, err = shapes.Parse([]string{"family=c7i\n"})
	if err == nil || !strings.Contains(err.Error(), `"family=c7i\n"`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Parse(family=c7i\\n) error = %q, want the label escaped and no raw newline", err)
	}
}

func TestRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		r    shapes.Range
		n    int
		in   bool
		zero bool
	}{
		{shapes.Range{}, 0, true, true},
		{shapes.Range{}, 1000, true, true},
		{shapes.Range{Min: 4, Max: 4}, 4, true, false},
		{shapes.Range{Min: 4, Max: 4}, 3, false, false},
		{shapes.Range{Min: 4, Max: 4}, 5, false, false},
		{shapes.Range{Min: 4, Max: 8}, 8, true, false},
		{shapes.Range{Min: 4, Max: 8}, 9, false, false},
		{shapes.Range{Min: 4}, 4096, true, false},
		{shapes.Range{Min: 4}, 3, false, false},
		{shapes.Range{Max: 2}, 0, true, false},
		{shapes.Range{Max: 2}, 3, false, false},
	}
	for _, tc := range tests {
		if got := tc.r.Contains(tc.n); got != tc.in {
			t.Errorf("%+v.Contains(%d) = %v, want %v", tc.r, tc.n, got, tc.in)
		}
		if got := tc.r.IsZero(); got != tc.zero {
			t.Errorf("%+v.IsZero() = %v, want %v", tc.r, got, tc.zero)
		}
	}
}

func TestShapeIsZero(t *testing.T) {
	t.Parallel()
	if !(shapes.Shape{}).IsZero() {
		t.Error("Shape{}.IsZero() = false")
	}
	for _, s := range []shapes.Shape{
		{CPU: shapes.Range{Min: 1}}, {RAMGiB: shapes.Range{Max: 2}}, {Families: []string{"c7i"}}, {Arch: "x64"},
		{GPU: shapes.Range{Min: 1}}, {NoGPU: true}, {DiskGiB: 8}, {Spot: ptr(false)},
	} {
		if s.IsZero() {
			t.Errorf("%+v.IsZero() = true", s)
		}
	}
}

// FuzzParse checks that Parse never panics, that an error names one of the
// labels and quotes it, and that a success keeps the labels without '=' in
// order and returns values within the grammar's bounds. The input is the
// labels joined by ','.
func FuzzParse(f *testing.F) {
	for _, tc := range goodCases {
		f.Add(strings.Join(tc.labels, ","))
	}
	for _, tc := range badCases {
		f.Add(strings.Join(tc.labels, ","))
	}
	f.Fuzz(func(t *testing.T, in string) {
		labels := strings.Split(in, ",")
		s, rest, err := shapes.Parse(labels)
		if err != nil {
			var e *shapes.Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q): %v is not a *shapes.Error", labels, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", e.Label)) {
				t.Fatalf("Parse(%q): %q does not quote the label %q", labels, err.Error(), e.Label)
			}
			found := false
			for _, l := range labels {
				found = found || l == e.Label
			}
			if !found {
				t.Fatalf("Parse(%q): error names %q, not one of the labels", labels, e.Label)
			}
			return
		}
		var want []string
		for _, l := range labels {
			if !strings.Contains(l, "=") {
				want = append(want, l)
			}
		}
		if !reflect.DeepEqual(rest, want) {
			t.Fatalf("Parse(%q) rest = %q, want %q", labels, rest, want)
		}
		checkRange(t, "cpu", s.CPU, 1, 448)
		checkRange(t, "ram", s.RAMGiB, 1, 24576)
		checkRange(t, "gpu", s.GPU, 0, 16)
		if s.DiskGiB != 0 && (s.DiskGiB < 8 || s.DiskGiB > 16384) {
			t.Fatalf("Parse(%q) disk %d", labels, s.DiskGiB)
		}
		if s.Arch != "" && s.Arch != "x64" && s.Arch != "arm64" {
			t.Fatalf("Parse(%q) arch %q", labels, s.Arch)
		}
		if len(s.Families) > 10 {
			t.Fatalf("Parse(%q) %d families", labels, len(s.Families))
		}
		for _, fam := range s.Families {
			if !familyRE.MatchString(fam) {
				t.Fatalf("Parse(%q) family %q", labels, fam)
			}
		}
	})
}

func checkRange(t *testing.T, key string, r shapes.Range, lo, hi int) {
	t.Helper()
	if r.IsZero() {
		return
	}
	if r.Min < lo || r.Min > hi || r.Max < 0 || r.Max > hi || (r.Max != 0 && r.Max < r.Min) {
		t.Fatalf("%s range %+v outside %d..%d", key, r, lo, hi)
	}
}

// Package shapes reads the machine-shape labels of a job's runs-on list
// (Parse), checks them against the platform team's bounds (Shape.Within,
// config.Shapes) and chooses the instance types that serve them from EC2's
// catalogue (Select). The label matcher (runtime/labels) parses and bounds a
// job's shape; scaleup selects its types at launch.
//
// A shape label is a label holding '=': a key, '=', a value. Keys and values
// are case-insensitive (ASCII letters only are folded). The keys are:
//
//	cpu=N | cpu=MIN-MAX | cpu=N+      vCPUs, whole numbers 1..448, MIN <= MAX
//	ram=N | ram=MIN-MAX | ram=N+      memory in whole GiB, 1..24576, MIN <= MAX
//	                                  (no fractions: ram=0.5 is an error)
//	family=P1+P2+...                  1..10 instance-family prefixes joined by
//	                                  '+', each a letter then up to 15 letters,
//	                                  digits or '-' (c7i, m7gd, g5, inf2; no
//	                                  dots, so no instance sizes); duplicates
//	                                  are dropped, the first order kept
//	arch=x64 | arch=arm64             also amd64 (read as x64) and aarch64
//	                                  (read as arm64)
//	gpu=N | gpu=MIN-MAX | gpu=N+      GPUs, 0..16; gpu=0 (or gpu=0-0) asks for
//	                                  no GPU at all, gpu=0+ asks nothing
//	disk=N                            root volume in GiB, 8..16384
//	spot=true | spot=false            overrides the profile's spot preference
//
// N+ means at least N. Numbers are ASCII digits only (no sign, point, unit or
// space; at most 9 digits). Each key may appear once. Examples:
//
//	runs-on: [self-hosted, linux, cpu=4, ram=16, family=c7i+m7i]
//	runs-on: [self-hosted, cpu=8-16, ram=32+, arch=arm64, spot=false]
//	runs-on: [self-hosted, gpu, gpu=1, disk=200]
//
// A label without '=' is not a shape label and is returned untouched. A label
// with '=' whose key is not one of the seven, a malformed or out-of-range
// value, or a key given twice is an *Error. Values are data: they are only
// compared with the patterns above, and an error quotes its label with %q, so
// it is safe to log. As runtime/labels does, Parse refuses more than 64 labels
// or a label longer than 256 bytes.
package shapes

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jit-runners/jit-runners/runtime/config"
)

// MaxLabels and MaxLabelLen bound a job's labels: at most 64 labels, each
// at most 256 bytes (GitHub's limit on a label). runtime/labels applies the
// same limits, from here.
const (
	MaxLabels   = 64
	MaxLabelLen = 256
)

// The bounds of each key's values.
const (
	MinCPU, MaxCPU         = 1, config.MaxShapeCPU
	MinRAMGiB, MaxRAMGiB   = 1, config.MaxShapeRAMGiB
	MinGPU, MaxGPU         = 0, config.MaxShapeGPU
	MinDiskGiB, MaxDiskGiB = config.MinShapeDiskGiB, config.MaxShapeDiskGiB
	MaxFamilies            = 10
)

// The shape keys.
const (
	KeyCPU    = "cpu"
	KeyRAM    = "ram"
	KeyFamily = "family"
	KeyArch   = "arch"
	KeyGPU    = "gpu"
	KeyDisk   = "disk"
	KeySpot   = "spot"
)

// Shape is what a job's shape labels ask for; zero fields ask nothing.
type Shape struct {
	// CPU is the number of vCPUs.
	CPU Range
	// RAMGiB is the memory in GiB.
	RAMGiB Range
	// Families are instance-family prefixes such as "c7i", "m7i", "c7g":
	// lower case, de-duplicated, in the order given.
	Families []string
	// Arch is "", config.ArchX64 or config.ArchARM64.
	Arch string
	// GPU is the number of GPUs; a zero range asks nothing (see NoGPU).
	GPU Range
	// NoGPU is set by gpu=0 (or gpu=0-0): exactly no GPU. A Range cannot say
	// this, since its Max 0 means no upper bound.
	NoGPU bool
	// DiskGiB is the root volume size; 0 keeps the profile's.
	DiskGiB int
	// Spot overrides the profile's spot preference; nil keeps it.
	Spot *bool
}

// IsZero reports whether s asks for nothing.
func (s Shape) IsZero() bool {
	return s.CPU.IsZero() && s.RAMGiB.IsZero() && len(s.Families) == 0 && s.Arch == "" &&
		s.GPU.IsZero() && !s.NoGPU && s.DiskGiB == 0 && s.Spot == nil
}

// Range is a span of whole numbers. Max 0 means no upper bound; Min == Max is
// an exact value.
type Range struct{ Min, Max int }

// IsZero reports whether r asks nothing.
func (r Range) IsZero() bool { return r.Min == 0 && r.Max == 0 }

// Contains reports whether n lies in r.
func (r Range) Contains(n int) bool { return n >= r.Min && (r.Max == 0 || n <= r.Max) }

// Error says which shape label is wrong and why.
type Error struct{ Label, Reason string }

func (e *Error) Error() string { return fmt.Sprintf("shape label %q: %s", e.Label, e.Reason) }

// Parse reads the shape labels among labels and returns the shape and the
// other labels, untouched and in order. See the package doc for the grammar.
// Every error is an *Error.
func Parse(labels []string) (Shape, []string, error) {
	if len(labels) > MaxLabels {
		return Shape{}, nil, &Error{Label: labels[MaxLabels],
			Reason: fmt.Sprintf("more than %d labels", MaxLabels)}
	}
	var (
		s    Shape
		rest []string
		seen = map[string]bool{}
	)
	for _, l := range labels {
		if len(l) > MaxLabelLen {
			return Shape{}, nil, &Error{Label: l, Reason: fmt.Sprintf("longer than %d bytes", MaxLabelLen)}
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			rest = append(rest, l)
			continue
		}
		k, v = asciiLower(k), asciiLower(v)
		bad := func(format string, args ...any) (Shape, []string, error) {
			return Shape{}, nil, &Error{Label: l, Reason: fmt.Sprintf(format, args...)}
		}
		switch k {
		case KeyCPU, KeyRAM, KeyFamily, KeyArch, KeyGPU, KeyDisk, KeySpot:
		default:
			return bad("unknown key; the shape keys are cpu, ram, family, arch, gpu, disk and spot")
		}
		if seen[k] {
			return bad("the key %s is given twice", k)
		}
		seen[k] = true
		if v == "" {
			return bad("the value is empty")
		}
		var reason string
		switch k {
		case KeyCPU:
			s.CPU, reason = parseRange(v, MinCPU, MaxCPU)
		case KeyRAM:
			s.RAMGiB, reason = parseRange(v, MinRAMGiB, MaxRAMGiB)
		case KeyGPU:
			var r Range
			if r, reason = parseRange(v, MinGPU, MaxGPU); reason == "" {
				if r.IsZero() && !strings.HasSuffix(v, "+") {
					s.NoGPU = true
				} else {
					s.GPU = r
				}
			}
		case KeyDisk:
			var n int
			if n, ok = number(v); !ok {
				reason = "the value must be a whole number of GiB"
			} else if n < MinDiskGiB || n > MaxDiskGiB {
				reason = fmt.Sprintf("%d is outside %d..%d", n, MinDiskGiB, MaxDiskGiB)
			} else {
				s.DiskGiB = n
			}
		case KeyFamily:
			s.Families, reason = parseFamilies(v)
		case KeyArch:
			switch v {
			case "x64", "amd64":
				s.Arch = config.ArchX64
			case "arm64", "aarch64":
				s.Arch = config.ArchARM64
			default:
				reason = "the value must be x64 (or amd64) or arm64 (or aarch64)"
			}
		case KeySpot:
			switch v {
			case "true", "false":
				b := v == "true"
				s.Spot = &b
			default:
				reason = "the value must be true or false"
			}
		}
		if reason != "" {
			return bad("%s", reason)
		}
	}
	return s, rest, nil
}

// parseRange reads N, MIN-MAX or N+ with every number in lo..hi; it returns
// a reason when v is malformed.
func parseRange(v string, lo, hi int) (Range, string) {
	form := fmt.Sprintf("the value must be a whole number or a range like 4-8 or 4+, within %d..%d", lo, hi)
	var r Range
	if n, ok := strings.CutSuffix(v, "+"); ok {
		m, ok := number(n)
		if !ok {
			return Range{}, form
		}
		r = Range{Min: m}
	} else if a, b, ok := strings.Cut(v, "-"); ok {
		m, ok1 := number(a)
		n, ok2 := number(b)
		if !ok1 || !ok2 {
			return Range{}, form
		}
		if m > n {
			return Range{}, fmt.Sprintf("the range %d-%d is reversed (MIN must be at most MAX)", m, n)
		}
		r = Range{Min: m, Max: n}
	} else {
		n, ok := number(v)
		if !ok {
			return Range{}, form
		}
		r = Range{Min: n, Max: n}
	}
	if r.Min < lo || r.Min > hi || r.Max > hi {
		return Range{}, fmt.Sprintf("%s is outside %d..%d", v, lo, hi)
	}
	return r, ""
}

// number reads a whole number written in ASCII digits only (no sign, no
// point); long digit strings, which could overflow, are refused.
func number(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// parseFamilies reads P1+P2+..., dropping duplicates.
func parseFamilies(v string) ([]string, string) {
	parts := strings.Split(v, "+")
	if len(parts) > MaxFamilies {
		return nil, fmt.Sprintf("more than %d families", MaxFamilies)
	}
	var out []string
	for _, p := range parts {
		if !config.IsFamilyPrefix(p) {
			return nil, "each family must be a prefix like c7i or m7gd (a letter, then up to 15 letters, digits or '-'), joined by '+'"
		}
		dup := false
		for _, o := range out {
			dup = dup || o == p
		}
		if !dup {
			out = append(out, p)
		}
	}
	return out, ""
}

// asciiLower lower-cases ASCII letters only, so that no other character can
// fold into one the grammar accepts.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
}

package shapes

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jit-runners/jit-runners/runtime/config"
)

// MaxCandidates is the most instance types one shape's launch offers EC2:
// enough for the spot allocation strategy to find capacity (the issue asks
// for at least 6 where the shape allows them), few enough that types x
// subnets stays far below EC2 Fleet's 300 overrides.
const MaxCandidates = 12

// InstanceType is one entry of EC2's instance-type catalogue
// (DescribeInstanceTypes), as far as choosing a type for a shape goes.
type InstanceType struct {
	Name      string // "c7i.2xlarge"
	VCPUs     int
	MemoryMiB int
	// Arch is config.ArchX64 or config.ArchARM64 (ArchFromEC2); "" for
	// types no runner of ours runs on (Mac, 32-bit only).
	Arch              string
	GPUs              int
	Spot              bool // offered as spot
	OnDemand          bool // offered on demand
	CurrentGeneration bool
	BareMetal         bool
}

// ArchFromEC2 maps a type's ProcessorInfo.SupportedArchitectures to the
// runner's architecture: "x86_64" is x64, "arm64" is arm64; Mac and
// 32-bit-only types give "".
func ArchFromEC2(supported []string) string {
	for _, a := range supported {
		switch a {
		case "x86_64":
			return config.ArchX64
		case "arm64":
			return config.ArchARM64
		}
	}
	return ""
}

// Family returns an instance type's family, the part before the dot.
func Family(instanceType string) string {
	f, _, _ := strings.Cut(instanceType, ".")
	return f
}

// defaultClasses are the instance classes a shape that names no family
// (and whose platform team allow-lists none) chooses from: general purpose,
// compute and memory optimised, and burstable; with a GPU asked, the GPU
// classes too. Storage-dense, high-memory, accelerator and Mac types are
// there for a job that names their family.
var (
	defaultClasses = []string{"c", "m", "r", "t"}
	gpuClasses     = []string{"g", "p"}
)

// NarrowsTypes reports whether s says which instance types serve it (cpu,
// ram, family, gpu); arch, disk and spot alone keep the profile's types.
func (s Shape) NarrowsTypes() bool {
	return !s.CPU.IsZero() || !s.RAMGiB.IsZero() || len(s.Families) > 0 || !s.GPU.IsZero() || s.NoGPU
}

// Within reports why s is beyond the platform team's bounds b, or "" when
// it is within them. A range only partly beyond a bound is within: the
// bound narrows it (Select applies it).
func (s Shape) Within(b config.Shapes) string {
	switch {
	case b.MaxCPU > 0 && s.CPU.Min > b.MaxCPU:
		return fmt.Sprintf("cpu=%s asks for more than shapes.maxCpu (%d vCPUs)", s.CPU, b.MaxCPU)
	case b.MaxRAMGiB > 0 && s.RAMGiB.Min > b.MaxRAMGiB:
		return fmt.Sprintf("ram=%s asks for more than shapes.maxRamGiB (%d GiB)", s.RAMGiB, b.MaxRAMGiB)
	case b.MaxDiskGiB > 0 && s.DiskGiB > b.MaxDiskGiB:
		return fmt.Sprintf("disk=%d asks for more than shapes.maxDiskGiB (%d GiB)", s.DiskGiB, b.MaxDiskGiB)
	case !b.GPUAllowed() && s.GPU.Min > 0:
		return fmt.Sprintf("gpu=%s asks for a GPU and shapes.gpu is false", s.GPU)
	}
	if len(b.Families) > 0 {
		for _, f := range s.Families {
			if !slices.ContainsFunc(b.Families, func(a string) bool { return overlap(f, a) }) {
				return fmt.Sprintf("family %s is outside shapes.families (%s)", f, strings.Join(b.Families, ", "))
			}
		}
	}
	return ""
}

// overlap reports whether the families with prefix a and those with
// prefix b can meet: one prefix extends the other.
func overlap(a, b string) bool { return strings.HasPrefix(a, b) || strings.HasPrefix(b, a) }

// Select returns the instance types of catalogue that serve shape s for a
// runner of arch within the bounds b, cheapest-looking first, at most
// MaxCandidates. spot says the launch asks for spot first: types not
// offered as spot are then left out, since a spot request for one fails
// and would stop the on-demand fallback. Every type returned:
//
//   - is of arch, of the current generation, not bare metal, offered on
//     demand;
//   - has the vCPUs, memory (whole GiB: ram=16 is 16384 MiB exactly) and
//     GPU count s asks for, and no GPU unless s asks for one;
//   - belongs to a family s names (as a prefix), else to one b allow-lists,
//     else to the classes c, m, r and t (and g and p when s asks for a GPU);
//     and also to one b allow-lists when b lists any;
//   - is within b's vCPU and memory caps.
//
// The order approximates price: fewest vCPUs, then least memory, then the
// fewest extra-feature letters (local disk d, network n, high frequency z,
// extra memory e, block storage b, -flex), then the newest generation,
// then the name. Spot's price-capacity-optimized strategy and on-demand's
// lowest-price choose among them by real prices; the order only decides
// which types make the cut.
func Select(catalogue []InstanceType, s Shape, b config.Shapes, arch string, spot bool) []string {
	prefixes := s.Families
	if len(prefixes) == 0 {
		prefixes = b.Families
	}
	askGPU := !s.GPU.IsZero()
	classes := defaultClasses
	if askGPU {
		classes = append(slices.Clip(classes), gpuClasses...)
	}
	var fit []InstanceType
	for _, t := range catalogue {
		family := Family(t.Name)
		switch {
		case t.Arch != arch || !t.CurrentGeneration || t.BareMetal || !t.OnDemand || (spot && !t.Spot):
		case !s.CPU.Contains(t.VCPUs) || (b.MaxCPU > 0 && t.VCPUs > b.MaxCPU):
		case !mibIn(s.RAMGiB, t.MemoryMiB) || (b.MaxRAMGiB > 0 && t.MemoryMiB > b.MaxRAMGiB*1024):
		case askGPU && !s.GPU.Contains(t.GPUs), !askGPU && t.GPUs > 0, !b.GPUAllowed() && t.GPUs > 0:
		case len(prefixes) > 0 && !hasPrefix(family, prefixes):
		case len(prefixes) == 0 && !slices.Contains(classes, class(family)):
		case len(b.Families) > 0 && !hasPrefix(family, b.Families):
		default:
			fit = append(fit, t)
		}
	}
	slices.SortFunc(fit, func(x, y InstanceType) int {
		fx, fy := Family(x.Name), Family(y.Name)
		return cmp.Or(
			cmp.Compare(x.VCPUs, y.VCPUs),
			cmp.Compare(x.MemoryMiB, y.MemoryMiB),
			cmp.Compare(extras(fx), extras(fy)),
			-cmp.Compare(generation(fx), generation(fy)),
			strings.Compare(x.Name, y.Name),
		)
	})
	out := make([]string, 0, min(len(fit), MaxCandidates))
	for _, t := range fit[:min(len(fit), MaxCandidates)] {
		out = append(out, t.Name)
	}
	return out
}

// mibIn reports whether mib lies in r read as whole GiB.
func mibIn(r Range, mib int) bool {
	return mib >= r.Min*1024 && (r.Max == 0 || mib <= r.Max*1024)
}

func hasPrefix(family string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(family, p) })
}

// class is a family's leading letters ("c" of c7i, "inf" of inf2, "u-" of
// u-6tb1 reads "u"), the family's generation its digits after them, and its
// attributes the rest ("i" of c7i, "gd" of m7gd).
func class(family string) string {
	i := strings.IndexFunc(family, func(r rune) bool { return r < 'a' || r > 'z' })
	if i < 0 {
		return family
	}
	return family[:i]
}

func generation(family string) int {
	rest := family[len(class(family)):]
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	n, _ := strconv.Atoi(rest[:end])
	return n
}

// extras counts a family's extra-feature attributes, which cost more than
// the plain type of its size.
func extras(family string) int {
	rest := family[len(class(family)):]
	rest = strings.TrimLeft(rest, "0123456789")
	n := 0
	if r, ok := strings.CutSuffix(rest, "-flex"); ok {
		rest = r
		n++
	}
	for _, c := range rest {
		if strings.ContainsRune("dnzeb", c) {
			n++
		}
	}
	return n
}

// String renders a range as a label writes it: 8, 8-16 or 8+.
func (r Range) String() string {
	switch {
	case r.Min == r.Max:
		return strconv.Itoa(r.Min)
	case r.Max == 0:
		return strconv.Itoa(r.Min) + "+"
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// String renders s as its canonical labels, space-separated, for logs and
// reasons ("cpu=4 ram=16 family=c7i+m7i").
func (s Shape) String() string {
	var parts []string
	add := func(k, v string) { parts = append(parts, k+"="+v) }
	if !s.CPU.IsZero() {
		add(KeyCPU, s.CPU.String())
	}
	if !s.RAMGiB.IsZero() {
		add(KeyRAM, s.RAMGiB.String())
	}
	if len(s.Families) > 0 {
		add(KeyFamily, strings.Join(s.Families, "+"))
	}
	if s.Arch != "" {
		add(KeyArch, s.Arch)
	}
	switch {
	case s.NoGPU:
		add(KeyGPU, "0")
	case !s.GPU.IsZero():
		add(KeyGPU, s.GPU.String())
	}
	if s.DiskGiB > 0 {
		add(KeyDisk, strconv.Itoa(s.DiskGiB))
	}
	if s.Spot != nil {
		add(KeySpot, strconv.FormatBool(*s.Spot))
	}
	return strings.Join(parts, " ")
}

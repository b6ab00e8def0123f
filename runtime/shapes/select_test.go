package shapes_test

import (
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// catalogue is a small hand-written catalogue: what each case expects is
// read off it by hand, not computed.
func catalogue() []shapes.InstanceType {
	x, a := config.ArchX64, config.ArchARM64
	t := func(name string, cpu, gib int, arch string, gpus int) shapes.InstanceType {
		return shapes.InstanceType{Name: name, VCPUs: cpu, MemoryMiB: gib * 1024, Arch: arch, GPUs: gpus,
			Spot: true, OnDemand: true, CurrentGeneration: true}
	}
	old := t("c4.xlarge", 4, 8, x, 0)
	old.CurrentGeneration = false
	metal := t("c7i.metal-24xl", 96, 192, x, 0)
	metal.BareMetal = true
	noSpot := t("m7i.xlarge", 4, 16, x, 0)
	noSpot.Spot = false
	mac := t("mac2.metal", 12, 16, "", 0)
	mac.BareMetal = true
	odd := t("i3.large", 2, 0, x, 0)
	odd.MemoryMiB = 15616 // 15.25 GiB
	return []shapes.InstanceType{
		t("c7i.large", 2, 4, x, 0), t("c7i.xlarge", 4, 8, x, 0), t("c7i.2xlarge", 8, 16, x, 0), t("c7i.4xlarge", 16, 32, x, 0),
		t("c7id.xlarge", 4, 8, x, 0), t("c6i.xlarge", 4, 8, x, 0), t("c7a.xlarge", 4, 8, x, 0), t("c7i-flex.xlarge", 4, 8, x, 0),
		t("m7i.large", 2, 8, x, 0), noSpot, t("m7i.2xlarge", 8, 32, x, 0), t("m6i.xlarge", 4, 16, x, 0),
		t("r7i.xlarge", 4, 32, x, 0), t("t3.xlarge", 4, 16, x, 0),
		t("c7g.xlarge", 4, 8, a, 0), t("m7g.xlarge", 4, 16, a, 0), t("c7gd.xlarge", 4, 8, a, 0),
		t("g5.xlarge", 4, 16, x, 1), t("g5.12xlarge", 48, 192, x, 4), t("p3.2xlarge", 8, 61, x, 1), t("g5g.xlarge", 4, 8, a, 1),
		t("inf2.xlarge", 4, 16, x, 0), t("x2iedn.xlarge", 4, 128, x, 0), t("trn1.2xlarge", 8, 32, x, 0),
		old, metal, mac, odd,
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	shape := func(labels ...string) shapes.Shape {
		s, rest, err := shapes.Parse(labels)
		if err != nil || len(rest) > 0 {
			t.Fatalf("Parse(%v): %v, rest %v", labels, err, rest)
		}
		return s
	}
	yes, no := true, false
	tests := []struct {
		name   string
		shape  shapes.Shape
		bounds config.Shapes
		arch   string
		spot   bool
		want   string
	}{
		// cpu=4 on x64, spot: the 4-vCPU types of the classes c, m, r, t,
		// least memory first, plain before extras (c7id, -flex), newer
		// generation first; not m7i.xlarge (no spot), nor inf2 or x2iedn
		// (not the default classes), nor g5 (a GPU), nor Graviton.
		{"cpu", shape("cpu=4"), config.Shapes{}, config.ArchX64, true,
			"c7a.xlarge,c7i.xlarge,c6i.xlarge,c7i-flex.xlarge,c7id.xlarge,m6i.xlarge,t3.xlarge,r7i.xlarge"},
		// On demand only, m7i.xlarge is back.
		{"cpu on demand", shape("cpu=4", "ram=16"), config.Shapes{}, config.ArchX64, false, "m7i.xlarge,m6i.xlarge,t3.xlarge"},
		{"ram exact", shape("ram=16"), config.Shapes{}, config.ArchX64, true, "m6i.xlarge,t3.xlarge,c7i.2xlarge"},
		{"ram whole GiB", shape("ram=15-16", "cpu=2"), config.Shapes{}, config.ArchX64, true, ""}, // i3 is not a default class
		{"family prefix", shape("family=i3"), config.Shapes{}, config.ArchX64, true, "i3.large"},
		{"families", shape("cpu=4", "family=m7+c7g"), config.Shapes{}, config.ArchARM64, true, "c7g.xlarge,c7gd.xlarge,m7g.xlarge"},
		{"range", shape("cpu=4-8", "family=c7i"), config.Shapes{}, config.ArchX64, true, "c7i.xlarge,c7i-flex.xlarge,c7id.xlarge,c7i.2xlarge"},
		{"at least", shape("cpu=8+", "family=c7i"), config.Shapes{}, config.ArchX64, true, "c7i.2xlarge,c7i.4xlarge"},
		{"gpu", shape("gpu=1"), config.Shapes{}, config.ArchX64, true, "g5.xlarge,p3.2xlarge"},
		{"gpu range", shape("gpu=1+", "cpu=40+"), config.Shapes{}, config.ArchX64, true, "g5.12xlarge"},
		{"gpu arm", shape("gpu=1"), config.Shapes{}, config.ArchARM64, true, "g5g.xlarge"},
		{"accelerator family named", shape("family=inf2+trn"), config.Shapes{}, config.ArchX64, true, "inf2.xlarge,trn1.2xlarge"},
		{"no gpu", shape("gpu=0", "cpu=4", "family=g5+c7a"), config.Shapes{}, config.ArchX64, true, "c7a.xlarge"},
		// Bounds narrow: maxCpu 8 cuts c7i.4xlarge; families allow-list
		// only c7i; gpu false drops every GPU type even within a range.
		{"maxCpu", shape("cpu=8+", "family=c7i"), config.Shapes{MaxCPU: 8}, config.ArchX64, true, "c7i.2xlarge"},
		{"maxRam", shape("cpu=4"), config.Shapes{MaxRAMGiB: 8}, config.ArchX64, true, "c7a.xlarge,c7i.xlarge,c6i.xlarge,c7i-flex.xlarge,c7id.xlarge"},
		{"allow-list", shape("cpu=4"), config.Shapes{Families: []string{"c7i"}}, config.ArchX64, true, "c7i.xlarge,c7i-flex.xlarge,c7id.xlarge"},
		{"allow-list and job", shape("cpu=4", "family=c7"), config.Shapes{Families: []string{"c7i", "m7"}}, config.ArchX64, true, "c7i.xlarge,c7i-flex.xlarge,c7id.xlarge"},
		{"gpu not allowed", shape("gpu=0-4", "cpu=4", "family=g5+c7a"), config.Shapes{GPU: &no}, config.ArchX64, true, "c7a.xlarge"},
		{"gpu allowed", shape("gpu=0-4", "cpu=4", "family=g5+c7a"), config.Shapes{GPU: &yes}, config.ArchX64, true, "c7a.xlarge,g5.xlarge"},
		{"nothing fits", shape("cpu=3"), config.Shapes{}, config.ArchX64, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := strings.Join(shapes.Select(catalogue(), tc.shape, tc.bounds, tc.arch, tc.spot), ",")
			if got != tc.want {
				t.Fatalf("Select(%s) = %s; want %s", tc.shape, got, tc.want)
			}
		})
	}
}

// At most MaxCandidates types, the smallest first.
func TestSelectCaps(t *testing.T) {
	t.Parallel()
	var cat []shapes.InstanceType
	for cpu := 40; cpu > 0; cpu-- {
		cat = append(cat, shapes.InstanceType{Name: "c7i.s" + strings.Repeat("x", cpu), VCPUs: cpu, MemoryMiB: 2048 * cpu,
			Arch: config.ArchX64, Spot: true, OnDemand: true, CurrentGeneration: true})
	}
	s, _, _ := shapes.Parse([]string{"cpu=2+"})
	got := shapes.Select(cat, s, config.Shapes{}, config.ArchX64, true)
	if len(got) != shapes.MaxCandidates || got[0] != "c7i.sxx" || got[len(got)-1] != "c7i.s"+strings.Repeat("x", shapes.MaxCandidates+1) {
		t.Fatalf("Select = %v; want the %d smallest from 2 vCPUs", got, shapes.MaxCandidates)
	}
}

func TestWithin(t *testing.T) {
	t.Parallel()
	no := false
	b := config.Shapes{MaxCPU: 16, MaxRAMGiB: 64, MaxDiskGiB: 100, Families: []string{"c7", "m7i"}, GPU: &no}
	for labels, want := range map[string]string{
		"cpu=16":          "",
		"cpu=8-64":        "",
		"cpu=17":          "cpu=17 asks for more than shapes.maxCpu (16 vCPUs)",
		"cpu=20+":         "cpu=20+ asks for more than shapes.maxCpu (16 vCPUs)",
		"ram=65-70":       "ram=65-70 asks for more than shapes.maxRamGiB (64 GiB)",
		"disk=100":        "",
		"disk=101":        "disk=101 asks for more than shapes.maxDiskGiB (100 GiB)",
		"gpu=1":           "gpu=1 asks for a GPU and shapes.gpu is false",
		"gpu=0":           "",
		"family=c7i+c":    "",
		"family=m7i-flex": "",
		"family=m7":       "",
		"family=c7i+m6i":  "family m6i is outside shapes.families (c7, m7i)",
	} {
		s, _, err := shapes.Parse(strings.Split(labels, ","))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Within(b); got != want {
			t.Errorf("%s: Within = %q; want %q", labels, got, want)
		}
		if got := s.Within(config.Shapes{}); got != "" {
			t.Errorf("%s: Within(no bounds) = %q; want nothing", labels, got)
		}
	}
}

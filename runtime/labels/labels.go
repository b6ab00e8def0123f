// Package labels decides whether a job's runs-on labels belong to this
// deployment and, if so, which launch profile serves it.
//
// A job is ours when its labels include "self-hosted" and every other label is
// a profile name, an instance type allowed by the configuration (listed by a
// profile or matching allowedInstanceTypes), one of the OS/arch labels
// "linux", "x64" and "arm64", or a machine-shape label (cpu=4, ram=16,
// family=c7i+m7i: runtime/shapes) within the configuration's shapes bounds.
// Matching is case-insensitive.
//
// Precedence: the profile (named, else the default profile of the job's
// architecture) gives the image, network, volume, spot preference and
// limits; shape labels then replace its instance types by the catalogue's
// types that fit (chosen at launch, by scaleup), and disk= and spot= replace
// its volume size and spot preference. A job names an instance type or
// shape labels, not both.
package labels

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/shapes"
)

// Labels every runner of ours carries.
const (
	SelfHosted = "self-hosted"
	Linux      = "linux"
)

// maxLabels bounds the work a hostile payload can cause; GitHub itself
// accepts far fewer labels per job. maxLabelLen is GitHub's limit on a
// runner label's length. Both are defined once, with the shape labels'
// grammar.
const (
	maxLabels   = shapes.MaxLabels
	maxLabelLen = shapes.MaxLabelLen
)

// Match is the launch decision for a job whose labels are ours.
type Match struct {
	// Profile is the profile the instance is launched from (its image,
	// volume, spot preference and limits).
	Profile string
	// InstanceTypes are the types to launch, in preference order: the
	// profile's, or the one type the job named. Empty when Shape narrows the
	// types: scaleup picks them from EC2's catalogue (shapes.Select).
	InstanceTypes []string
	// Shape is what the job's shape labels ask for (zero without any).
	Shape shapes.Shape
	// Spot and VolumeGiB are the launch's: the profile's, unless the shape
	// says spot= or disk=.
	Spot      bool
	VolumeGiB int
	// Arch is the runner architecture, "x64" or "arm64".
	Arch string
	// Labels are the job's labels, lower-cased and de-duplicated in their
	// original order; the runner registers with exactly these.
	Labels []string
}

// NotOursError says why a job's labels do not belong to this deployment.
type NotOursError struct {
	Reason string
	// Shape is set when the job's shape labels are why: ShapeMalformed,
	// ShapeBounds or ShapeConflict (for the ShapeRefusals metric).
	Shape string
}

// Why a job's shape labels make it not ours.
const (
	ShapeMalformed = "malformed" // a shape label breaks the grammar
	ShapeBounds    = "bounds"    // beyond the configuration's shapes bounds
	ShapeConflict  = "conflict"  // at odds with the job's other labels
)

func (e *NotOursError) Error() string { return "labels not ours: " + e.Reason }

// Matcher resolves labels against one configuration. It is safe for
// concurrent use.
type Matcher struct {
	cfg      *config.Config
	patterns []string
}

// NewMatcher returns a Matcher for cfg, which must be valid.
func NewMatcher(cfg *config.Config) *Matcher {
	m := &Matcher{cfg: cfg}
	for _, p := range cfg.AllowedInstanceTypes {
		m.patterns = append(m.patterns, strings.ToLower(p))
	}
	return m
}

// Resolve returns the launch decision for labels, or a *NotOursError.
func (m *Matcher) Resolve(labels []string) (Match, error) {
	if len(labels) > maxLabels {
		return Match{}, notOurs("%d labels (at most %d)", len(labels), maxLabels)
	}
	var (
		out          Match
		selfHosted   bool
		profile      string
		instanceType string
		archLabel    string
		shapeLabels  []string
	)
	seen := make(map[string]bool, len(labels))
	for _, raw := range labels {
		l := strings.ToLower(strings.TrimSpace(raw))
		if l == "" || len(l) > maxLabelLen {
			return Match{}, notOurs("empty or over-long label")
		}
		if seen[l] {
			continue
		}
		seen[l] = true
		out.Labels = append(out.Labels, l)
		switch {
		case l == SelfHosted:
			selfHosted = true
		case strings.Contains(l, "="):
			shapeLabels = append(shapeLabels, l)
		case l == Linux:
		case l == config.ArchX64 || l == config.ArchARM64:
			if archLabel != "" {
				return Match{}, notOurs("labels ask for both x64 and arm64")
			}
			archLabel = l
		case m.isProfile(l):
			if profile != "" {
				return Match{}, notOurs("labels name two profiles (%s, %s)", profile, l)
			}
			profile = l
		case m.isAllowedInstanceType(l):
			if instanceType != "" {
				return Match{}, notOurs("labels name two instance types (%s, %s)", instanceType, l)
			}
			instanceType = l
		default:
			return Match{}, notOurs("label %s is not a profile, an allowed instance type, an OS/arch label or a shape label", quoteLabel(l))
		}
	}
	if !selfHosted {
		return Match{}, notOurs("no self-hosted label")
	}
	shape, _, err := shapes.Parse(shapeLabels)
	if err != nil {
		return Match{}, shapeNotOurs(ShapeMalformed, "%s", err.Error())
	}
	if !shape.IsZero() {
		if instanceType != "" {
			return Match{}, shapeNotOurs(ShapeConflict, "labels name instance type %s and shape labels (%s); use one or the other", instanceType, shape)
		}
		if reason := shape.Within(m.cfg.Shapes); reason != "" {
			return Match{}, shapeNotOurs(ShapeBounds, "%s", reason)
		}
		arch := shape.Arch
		if arch == "" && profile == "" {
			arch = familiesArch(shape.Families)
		}
		if arch != "" {
			if archLabel != "" && archLabel != arch {
				return Match{}, shapeNotOurs(ShapeConflict, "labels ask for both %s and %s", archLabel, arch)
			}
			archLabel = arch
		}
	}
	out.Shape = shape

	switch {
	case profile != "":
		p := m.cfg.Profiles[profile]
		if archLabel != "" && archLabel != p.Arch {
			return Match{}, notOurs("profile %s is %s but the labels ask for %s", profile, p.Arch, archLabel)
		}
		out.Profile, out.Arch, out.InstanceTypes = profile, p.Arch, p.InstanceTypes
		if instanceType != "" {
			if a := m.archOfType(instanceType); a != p.Arch {
				return Match{}, notOurs("instance type %s is %s but profile %s is %s", instanceType, a, profile, p.Arch)
			}
			out.InstanceTypes = []string{instanceType}
		}
	case instanceType != "":
		arch := m.archOfType(instanceType)
		if archLabel != "" && archLabel != arch {
			return Match{}, notOurs("instance type %s is %s but the labels ask for %s", instanceType, arch, archLabel)
		}
		base, ok := m.profileListing(instanceType)
		if !ok {
			base, ok = m.profileForArch(arch)
		}
		if !ok {
			return Match{}, notOurs("no profile has arch %s to serve instance type %s", arch, instanceType)
		}
		out.Profile, out.Arch, out.InstanceTypes = base, arch, []string{instanceType}
	default:
		arch := archLabel
		if arch == "" {
			arch = m.cfg.Profiles[m.cfg.DefaultProfile].Arch
		}
		base, ok := m.profileForArch(arch)
		if !ok {
			return Match{}, notOurs("no profile has arch %s", arch)
		}
		p := m.cfg.Profiles[base]
		out.Profile, out.Arch, out.InstanceTypes = base, arch, p.InstanceTypes
	}
	p := m.cfg.Profiles[out.Profile]
	out.Spot, out.VolumeGiB = p.UseSpot(), p.VolumeGiB
	if shape.Spot != nil {
		out.Spot = *shape.Spot
	}
	if shape.DiskGiB > 0 {
		out.VolumeGiB = shape.DiskGiB
	}
	if shape.NarrowsTypes() {
		out.InstanceTypes = nil
	}
	return out, nil
}

// familiesArch is arm64 when every family names Graviton types (c7g,
// m7gd; ArchOf's rule), else "": the profile's architecture applies.
func familiesArch(families []string) string {
	if len(families) == 0 {
		return ""
	}
	for _, f := range families {
		if ArchOf(f+".x") != config.ArchARM64 {
			return ""
		}
	}
	return config.ArchARM64
}

func (m *Matcher) isProfile(l string) bool {
	_, ok := m.cfg.Profiles[l]
	return ok
}

// isAllowedInstanceType reports whether l names an instance type that the
// configuration allows: one a profile lists, or one matching a pattern of
// allowedInstanceTypes.
func (m *Matcher) isAllowedInstanceType(l string) bool {
	if !strings.Contains(l, ".") {
		return false
	}
	if _, ok := m.profileListing(l); ok {
		return true
	}
	for _, p := range m.patterns {
		if ok, _ := path.Match(p, l); ok {
			return true
		}
	}
	return false
}

// profileForArch returns the default profile when it has arch, else the first
// profile (by name) that has it.
func (m *Matcher) profileForArch(arch string) (string, bool) {
	if m.cfg.Profiles[m.cfg.DefaultProfile].Arch == arch {
		return m.cfg.DefaultProfile, true
	}
	for _, n := range m.cfg.ProfileNames() {
		if m.cfg.Profiles[n].Arch == arch {
			return n, true
		}
	}
	return "", false
}

// profileListing returns the first profile (by name) whose instance types
// include t.
func (m *Matcher) profileListing(t string) (string, bool) {
	for _, n := range m.cfg.ProfileNames() {
		for _, pt := range m.cfg.Profiles[n].InstanceTypes {
			if strings.EqualFold(pt, t) {
				return n, true
			}
		}
	}
	return "", false
}

// archOfType returns the architecture of an instance type: the arch of a
// profile that lists it, else ArchOf's rule.
func (m *Matcher) archOfType(t string) string {
	if n, ok := m.profileListing(t); ok {
		return m.cfg.Profiles[n].Arch
	}
	return ArchOf(t)
}

var familyRE = regexp.MustCompile(`^([a-z]+)([0-9]+)([a-z-]*)$`)

// ArchOf returns "arm64" for AWS Graviton instance types and "x64" for the
// rest: the a1 family, and families whose attribute letters after the
// generation number contain "g" (c7g, m6gd, t4g, c6gn, im4gn, g5g, hpc7g).
func ArchOf(instanceType string) string {
	family, _, _ := strings.Cut(strings.ToLower(instanceType), ".")
	if family == "a1" {
		return config.ArchARM64
	}
	if m := familyRE.FindStringSubmatch(family); m != nil && strings.Contains(m[3], "g") {
		return config.ArchARM64
	}
	return config.ArchX64
}

func notOurs(format string, args ...any) *NotOursError {
	return &NotOursError{Reason: fmt.Sprintf(format, args...)}
}

func shapeNotOurs(why, format string, args ...any) *NotOursError {
	return &NotOursError{Reason: fmt.Sprintf(format, args...), Shape: why}
}

// quoteLabel renders a label from a job for a log line or reason: quoted,
// control characters escaped, long values cut.
func quoteLabel(l string) string {
	const max = 64
	if len(l) > max {
		l = l[:max] + "..."
	}
	return fmt.Sprintf("%q", l)
}

package config

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
)

// KeyError reports a problem with one key; Key is the dotted path of the key
// in the JSON document (e.g. "profiles.gpu.instanceTypes[0]").
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Reason) }

var (
	namePrefixRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,19}$`)
	profileNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	runnerVersionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)
	instanceTypeRE  = regexp.MustCompile(`^[a-z0-9-]+\.[a-z0-9-]+$`)
	typePatternRE   = regexp.MustCompile(`^[a-z0-9*?-]+\.[a-z0-9*?-]+$`)
	ownerRE         = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
)

// IsNamePrefix reports whether s is a valid namePrefix: 1-20 characters of
// a-z, 0-9 and '-', starting with a letter (it names resources, tags and
// runners).
func IsNamePrefix(s string) bool { return namePrefixRE.MatchString(s) }

// IsRunnerVersion reports whether s is a runner release number (2.332.0).
func IsRunnerVersion(s string) bool { return runnerVersionRE.MatchString(s) }

// Validate fills defaults and checks every key. It returns every problem at
// once, joined, each a *KeyError naming its key, in document order.
func (c *Config) Validate() error {
	c.applyDefaults()
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}

	g := &c.GitHub
	if u, err := url.Parse(g.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("github.apiUrl", "must be an http(s) URL, got %q", g.APIURL)
	}
	if g.AppID <= 0 {
		add("github.appId", "is required and must be a positive integer")
	}
	requireARN(add, "github.privateKeySecretArn", g.PrivateKeySecretARN)
	requireARN(add, "github.webhookSecretArn", g.WebhookSecretARN)
	if g.PreviousWebhookSecretARN != "" {
		requireARN(add, "github.previousWebhookSecretArn", g.PreviousWebhookSecretARN)
	}
	switch g.Scope {
	case ScopeRepo, ScopeOrg:
	case "":
		add("github.scope", "is required (%q or %q)", ScopeRepo, ScopeOrg)
	default:
		add("github.scope", "must be %q or %q, got %q", ScopeRepo, ScopeOrg, g.Scope)
	}
	if strings.TrimSpace(g.RunnerGroup) == "" {
		add("github.runnerGroup", "must not be blank")
	}
	for i, o := range g.AllowedOwners {
		if !ownerRE.MatchString(o) {
			add(fmt.Sprintf("github.allowedOwners[%d]", i), "is not a GitHub owner name: %q", o)
		}
	}

	if c.QueueURL == "" {
		add("queueUrl", "is required")
	} else if u, err := url.Parse(c.QueueURL); err != nil || u.Scheme == "" || u.Host == "" {
		add("queueUrl", "must be an SQS queue URL, got %q", c.QueueURL)
	}
	if c.TableName == "" {
		add("tableName", "is required")
	}
	if !namePrefixRE.MatchString(c.NamePrefix) {
		add("namePrefix", "must be 1-20 characters of a-z, 0-9 and '-', starting with a letter; got %q", c.NamePrefix)
	}
	if c.RunnerVersion == "" {
		add("runnerVersion", "is required (e.g. \"2.332.0\")")
	} else if !runnerVersionRE.MatchString(c.RunnerVersion) {
		add("runnerVersion", "must look like 2.332.0, got %q", c.RunnerVersion)
	}
	if c.MaxRunners <= 0 {
		add("maxRunners", "is required and must be a positive integer")
	}

	if c.Launch.LaunchTemplateID == "" {
		add("launch.launchTemplateId", "is required")
	}
	if len(c.Launch.SubnetIDs) == 0 {
		add("launch.subnetIds", "is required (at least one subnet id)")
	}
	for i, s := range c.Launch.SubnetIDs {
		if !strings.HasPrefix(s, "subnet-") {
			add(fmt.Sprintf("launch.subnetIds[%d]", i), "must be a subnet id (subnet-...), got %q", s)
		}
	}

	c.validateScaleDown(add)
	c.validateProfiles(add)

	c.validateShapes(add)

	for i, p := range c.AllowedInstanceTypes {
		if !typePatternRE.MatchString(p) {
			add(fmt.Sprintf("allowedInstanceTypes[%d]", i), "must be an instance type or pattern like \"c6i.*\", got %q", p)
		} else if _, err := path.Match(p, ""); err != nil {
			add(fmt.Sprintf("allowedInstanceTypes[%d]", i), "invalid pattern %q: %v", p, err)
		}
	}
	if c.QueueDelaySeconds < 0 || c.QueueDelaySeconds > 900 {
		add("queueDelaySeconds", "must be between 0 and 900 (the SQS limit), got %d", c.QueueDelaySeconds)
	}
	if c.ScaleUp.ClaimLeaseSeconds < 30 || c.ScaleUp.ClaimLeaseSeconds > 3600 {
		add("scaleUp.claimLeaseSeconds", "must be between 30 and 3600, got %d", c.ScaleUp.ClaimLeaseSeconds)
	}
	if c.ScaleUp.LimitRetrySeconds < 1 || c.ScaleUp.LimitRetrySeconds > 900 {
		add("scaleUp.limitRetrySeconds", "must be between 1 and 900, got %d", c.ScaleUp.LimitRetrySeconds)
	}
	if r := c.Redelivery; r.MaxPerRun < 1 || r.MaxPerRun > 1000 {
		add("redelivery.maxPerRun", "must be between 1 and 1000, got %d", r.MaxPerRun)
	}
	if r := c.Redelivery; r.LookbackMinutes < 1 || r.LookbackMinutes > 3*24*60 {
		add("redelivery.lookbackMinutes", "must be between 1 and 4320 (GitHub keeps three days of deliveries), got %d", r.LookbackMinutes)
	}
	if c.RecordRetentionSeconds < 3600 {
		add("recordRetentionSeconds", "must be at least 3600, got %d", c.RecordRetentionSeconds)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("logLevel", "must be one of debug, info, warn, error; got %q", c.LogLevel)
	}
	return errors.Join(errs...)
}

func requireARN(add func(string, string, ...any), key, v string) {
	switch {
	case v == "":
		add(key, "is required (a Secrets Manager secret ARN)")
	case !strings.HasPrefix(v, "arn:"):
		add(key, "must be a Secrets Manager ARN (arn:...), got a value that is not an ARN")
	}
}

func (c *Config) validateScaleDown(add func(string, string, ...any)) {
	s := c.ScaleDown
	for _, f := range []struct {
		key string
		v   int
	}{
		{"scaleDown.completedGraceSeconds", s.CompletedGraceSeconds},
		{"scaleDown.bootTimeoutSeconds", s.BootTimeoutSeconds},
		{"scaleDown.orphanGraceSeconds", s.OrphanGraceSeconds},
		{"scaleDown.maxRuntimeSeconds", s.MaxRuntimeSeconds},
		{"scaleDown.queuedTimeoutSeconds", s.QueuedTimeoutSeconds},
	} {
		if f.v < 0 {
			add(f.key, "must not be negative, got %d", f.v)
		}
	}
	if s.MaxRuntimeSeconds > 0 && s.MaxRuntimeSeconds < s.BootTimeoutSeconds {
		add("scaleDown.maxRuntimeSeconds", "must be at least scaleDown.bootTimeoutSeconds (%d), got %d", s.BootTimeoutSeconds, s.MaxRuntimeSeconds)
	}
}

func (c *Config) validateProfiles(add func(string, string, ...any)) {
	if len(c.Profiles) == 0 {
		add("profiles", "is required (at least one profile)")
		return
	}
	pooled := 0        // the most instances all pools hold at once
	var pools []string // "default 8" for the message
	for _, name := range c.ProfileNames() {
		p := c.Profiles[name]
		key := "profiles." + name
		if !profileNameRE.MatchString(name) {
			add(key, "profile names must be lower-case letters, digits, '.', '_' or '-' (they are matched against job labels)")
		}
		if isReservedLabel(name) {
			add(key, "%q is a label every runner carries and cannot name a profile", name)
		}
		if len(p.InstanceTypes) == 0 {
			add(key+".instanceTypes", "is required (at least one instance type)")
		}
		for i, t := range p.InstanceTypes {
			if !instanceTypeRE.MatchString(t) {
				add(fmt.Sprintf("%s.instanceTypes[%d]", key, i), "is not an instance type: %q", t)
			}
		}
		if p.ImageID == "" {
			add(key+".imageId", "is required (an AMI id)")
		} else if !strings.HasPrefix(p.ImageID, "ami-") {
			add(key+".imageId", "must be an AMI id (ami-...), got %q", p.ImageID)
		}
		if p.Arch != ArchX64 && p.Arch != ArchARM64 {
			add(key+".arch", "must be %q or %q, got %q", ArchX64, ArchARM64, p.Arch)
		}
		if p.VolumeGiB < 8 || p.VolumeGiB > 16384 {
			add(key+".volumeGiB", "must be between 8 and 16384, got %d", p.VolumeGiB)
		}
		if p.MaxRunners < 0 {
			add(key+".maxRunners", "must not be negative, got %d", p.MaxRunners)
		}
		if p.Pool != nil {
			n := validatePool(add, key+".pool", p)
			pooled += n
			pools = append(pools, fmt.Sprintf("%s %d", name, n))
		}
	}
	// The pools together leave at least one slot: jobs of a profile
	// without a pool (or whose pool is empty) would otherwise wait behind
	// idle pooled instances until their maximum age.
	if c.MaxRunners > 0 && pooled >= c.MaxRunners {
		add("maxRunners", "is %d, not more than the %d instances the pools hold at most (%s): "+
			"pooled instances hold runner slots, and at least one must stay free for other launches", c.MaxRunners, pooled, strings.Join(pools, ", "))
	}
	if _, ok := c.Profiles[c.DefaultProfile]; !ok {
		add("defaultProfile", "names no profile: %q (profiles: %s)", c.DefaultProfile, strings.Join(c.ProfileNames(), ", "))
	}
}

// validatePool checks the pool at key (profiles.<name>.pool) and returns the
// most instances it holds at once: in or off hours, whichever is larger, hot
// and stopped together.
func validatePool(add func(string, string, ...any), key string, p Profile) int {
	pl := p.Pool
	if pl.Hot == nil && pl.Stopped == nil {
		add(key, "needs hot, stopped or both (leave the pool out for none)")
	}
	if pl.MaxAgeMinutes < 30 || pl.MaxAgeMinutes > 7*24*60 {
		add(key+".maxAgeMinutes", "must be between 30 and 10080 (a week), got %d", pl.MaxAgeMinutes)
	}
	n := 0
	for _, s := range []struct {
		name string
		spec *PoolSpec
	}{{"hot", pl.Hot}, {"stopped", pl.Stopped}} {
		if s.spec != nil {
			validatePoolSpec(add, key+"."+s.name, s.spec)
			n += s.spec.maxSize()
		}
	}
	if p.MaxRunners > 0 && n > p.MaxRunners {
		add(key, "holds up to %d instances, more than the profile's maxRunners (%d): "+
			"pooled instances hold runner slots; jobs would wait behind idle instances", n, p.MaxRunners)
	}
	return n
}

// validatePoolSpec checks profiles.<name>.pool.hot or .stopped. The
// strings are only parsed and compared (the time zone's name is checked
// for its shape before it names a file of the zone database).
func validatePoolSpec(add func(string, string, ...any), key string, s *PoolSpec) {
	size := func(k string, v int) {
		if v < 0 || v > MaxPoolSize {
			add(k, "must be between 0 and %d, got %d", MaxPoolSize, v)
		}
	}
	size(key+".size", s.Size)
	if len(s.Schedules) == 0 {
		if s.OffHoursSize != 0 {
			add(key+".offHoursSize", "is the size outside the schedules, and there are none: set schedules or leave it out")
		}
		if s.TimeZone != "" {
			add(key+".timeZone", "is the time zone of the schedules, and there are none: set schedules or leave it out")
		}
		return
	}
	size(key+".offHoursSize", s.OffHoursSize)
	if _, err := loadLocation(s.TimeZone); err != nil {
		add(key+".timeZone", "%v", err)
	}
	for i, sc := range s.Schedules {
		k := fmt.Sprintf("%s.schedules[%d]", key, i)
		if _, err := parseDays(sc.Days); err != nil {
			add(k+".days", "%v", err)
		}
		from, errFrom := parseClock(sc.From, false)
		if errFrom != nil {
			add(k+".from", "%v", errFrom)
		}
		to, errTo := parseClock(sc.To, true)
		if errTo != nil {
			add(k+".to", "%v", errTo)
		}
		if errFrom == nil && errTo == nil && from == to {
			add(k+".to", "equals from (%s), an empty window: use 00:00 to 24:00 for a whole day", sc.From)
		}
	}
}

// ProfileNames returns the profile names in sorted order.
func (c *Config) ProfileNames() []string {
	names := make([]string, 0, len(c.Profiles))
	for n := range c.Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// isReservedLabel reports labels that GitHub or the OS/arch rule already give a meaning.
func isReservedLabel(l string) bool {
	switch strings.ToLower(l) {
	case "self-hosted", "linux", "x64", "arm64":
		return true
	}
	return false
}

func (c *Config) applyDefaults() {
	if c.GitHub.APIURL == "" {
		c.GitHub.APIURL = DefaultAPIURL
	}
	c.GitHub.APIURL = strings.TrimRight(c.GitHub.APIURL, "/")
	if c.GitHub.RunnerGroup == "" {
		c.GitHub.RunnerGroup = DefaultRunnerGroup
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.DefaultProfile == "" {
		c.DefaultProfile = DefaultProfileName
	}
	s := &c.ScaleDown
	setDefault(&s.CompletedGraceSeconds, DefaultCompletedGraceSeconds)
	setDefault(&s.BootTimeoutSeconds, DefaultBootTimeoutSeconds)
	setDefault(&s.OrphanGraceSeconds, DefaultOrphanGraceSeconds)
	setDefault(&s.MaxRuntimeSeconds, DefaultMaxRuntimeSeconds)
	setDefault(&s.QueuedTimeoutSeconds, DefaultQueuedTimeoutSeconds)
	setDefault(&c.RecordRetentionSeconds, DefaultRecordRetentionSeconds)
	setDefault(&c.ScaleUp.ClaimLeaseSeconds, DefaultClaimLeaseSeconds)
	setDefault(&c.ScaleUp.LimitRetrySeconds, DefaultLimitRetrySeconds)
	setDefault(&c.Redelivery.MaxPerRun, DefaultRedeliveryMaxPerRun)
	setDefault(&c.Redelivery.LookbackMinutes, DefaultRedeliveryLookback)
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	for name, p := range c.Profiles {
		if len(p.InstanceTypes) == 0 && name == c.DefaultProfile {
			p.InstanceTypes = []string{DefaultInstanceType}
		}
		if p.Arch == "" {
			p.Arch = ArchX64
		}
		setDefault(&p.VolumeGiB, DefaultVolumeGiB)
		if p.Pool != nil { // copies: the caller's pool is left as it was
			pool := *p.Pool
			setDefault(&pool.MaxAgeMinutes, DefaultPoolMaxAgeMinutes)
			pool.Hot = poolSpecDefaults(pool.Hot)
			pool.Stopped = poolSpecDefaults(pool.Stopped)
			p.Pool = &pool
		}
		c.Profiles[name] = p
	}
}

// poolSpecDefaults returns a copy of s with its defaults (nil for nil). The
// time zone is set only where there are schedules: without them it is an
// error, and Marshal's output must parse again.
func poolSpecDefaults(s *PoolSpec) *PoolSpec {
	if s == nil {
		return nil
	}
	c := *s
	if len(c.Schedules) > 0 && c.TimeZone == "" {
		c.TimeZone = DefaultPoolTimeZone
	}
	return &c
}

func setDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func (c *Config) validateShapes(add func(key, format string, args ...any)) {
	s := c.Shapes
	if s.MaxCPU < 0 || s.MaxCPU > MaxShapeCPU {
		add("shapes.maxCpu", "must be between 1 and %d (or unset), got %d", MaxShapeCPU, s.MaxCPU)
	}
	if s.MaxRAMGiB < 0 || s.MaxRAMGiB > MaxShapeRAMGiB {
		add("shapes.maxRamGiB", "must be between 1 and %d (or unset), got %d", MaxShapeRAMGiB, s.MaxRAMGiB)
	}
	if s.MaxDiskGiB != 0 && (s.MaxDiskGiB < MinShapeDiskGiB || s.MaxDiskGiB > MaxShapeDiskGiB) {
		add("shapes.maxDiskGiB", "must be between %d and %d (or unset), got %d", MinShapeDiskGiB, MaxShapeDiskGiB, s.MaxDiskGiB)
	}
	seen := map[string]bool{}
	for i, f := range s.Families {
		key := fmt.Sprintf("shapes.families[%d]", i)
		switch {
		case !IsFamilyPrefix(f):
			add(key, "must be an instance-family prefix like \"c7i\" or \"m7\" (lower case, no size), got %q", f)
		case seen[f]:
			add(key, "%q is listed twice", f)
		}
		seen[f] = true
	}
}

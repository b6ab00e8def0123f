// Package config defines the one JSON document every jit-runners Lambda reads
// from the environment variable JITR_CONFIG. The Pulumi stack builds the same
// document from this type, so the stack and the runtime cannot drift apart.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	// Pool schedules name IANA time zones. Lambda's OS-only runtime images
	// are minimal and need not carry /usr/share/zoneinfo, so the database is
	// embedded: about 400 KB (under 4%) per Lambda binary, measured on the
	// linux/arm64 builds. time.LoadLocation uses it only when the system has
	// no zone database.
	_ "time/tzdata"
)

// EnvVar is the environment variable that carries the configuration document.
const EnvVar = "JITR_CONFIG"

// Defaults for optional keys. docs/configuration.md documents each of them.
const (
	DefaultAPIURL                 = "https://api.github.com"
	DefaultRunnerGroup            = "Default"
	DefaultNamePrefix             = "jitr"
	DefaultProfileName            = "default" // the profile of jobs that name none
	DefaultInstanceType           = "t3.large"
	DefaultVolumeGiB              = 30
	DefaultCompletedGraceSeconds  = 120
	DefaultBootTimeoutSeconds     = 600
	DefaultOrphanGraceSeconds     = 300
	DefaultMaxRuntimeSeconds      = 86400
	DefaultQueuedTimeoutSeconds   = 900
	DefaultRecordRetentionSeconds = 7 * 24 * 3600
	DefaultIdleTimeoutSeconds     = 600
	DefaultClaimLeaseSeconds      = 120
	DefaultLimitRetrySeconds      = 30
	DefaultRedeliveryMaxPerRun    = 100
	DefaultRedeliveryLookback     = 60 // minutes
	DefaultPoolMaxAgeMinutes      = 1440
	DefaultPoolTimeZone           = "UTC"
	MaxPoolSize                   = 500 // per pool spec, in and off hours
	// DefaultRunnerVersion is the actions/runner version a deployment pins
	// unless it says otherwise; the Packer template's runner_version default
	// is checked against it (packer/packer_test.go), so the pre-baked AMI's
	// marker and the bootstrap's comparison come from this one setting.
	DefaultRunnerVersion = "2.332.0"
	// DefaultRunnerSHA256X64 and DefaultRunnerSHA256ARM64 are the published
	// sha256 digests of actions-runner-linux-{x64,arm64}-2.332.0.tar.gz; the
	// stock-AMI bootstrap verifies the download against them and the Packer
	// template's defaults must equal them (packer/packer_test.go).
	DefaultRunnerSHA256X64   = "f2094522a6b9afeab07ffb586d1eb3f190b6457074282796c497ce7dce9e0f2a"
	DefaultRunnerSHA256ARM64 = "b72f0599cdbd99dd9513ab64fcb59e424fc7359c93b849e8f5efdd5a72f743a6"
)

// Scope values for GitHub.Scope.
const (
	ScopeRepo = "repo"
	ScopeOrg  = "org"
)

// Architecture values for Profile.Arch; they match the runner's own names.
const (
	ArchX64   = "x64"
	ArchARM64 = "arm64"
)

// Config is the whole runtime configuration of one deployment.
type Config struct {
	GitHub         GitHub             `json:"github"`
	QueueURL       string             `json:"queueUrl"`
	TableName      string             `json:"tableName"`
	NamePrefix     string             `json:"namePrefix"`
	RunnerVersion  string             `json:"runnerVersion"`
	MaxRunners     int                `json:"maxRunners"`
	Launch         Launch             `json:"launch"`
	DefaultProfile string             `json:"defaultProfile"`
	ScaleDown      ScaleDown          `json:"scaleDown"`
	Profiles       map[string]Profile `json:"profiles"`

	// ScaleUp tunes the scaleup Lambda; every key is optional.
	ScaleUp ScaleUp `json:"scaleUp,omitempty"`
	// Redelivery recovers webhook deliveries that failed: GitHub never
	// retries one by itself. Every key is optional.
	Redelivery Redelivery `json:"redelivery,omitempty"`

	// Shapes bounds the machine shapes jobs ask for with labels such as
	// cpu=8 or family=c7i (runtime/shapes); every bound is off unless set.
	Shapes Shapes `json:"shapes,omitempty"`

	// AllowedInstanceTypes lists patterns ("c6i.*", "m7g.large") of instance
	// types a job may name directly in runs-on. Empty: none.
	AllowedInstanceTypes []string `json:"allowedInstanceTypes,omitempty"`
	// QueueDelaySeconds delays each scale-up message (0..900). Default 0.
	QueueDelaySeconds int `json:"queueDelaySeconds,omitempty"`
	// RecordRetentionSeconds is how long a job record lives after its last
	// update before DynamoDB TTL removes it. Default 7 days.
	RecordRetentionSeconds int `json:"recordRetentionSeconds,omitempty"`
	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string `json:"logLevel,omitempty"`
}

// GitHub describes the GitHub App and where its API lives.
type GitHub struct {
	APIURL              string `json:"apiUrl"`
	AppID               int64  `json:"appId"`
	PrivateKeySecretARN string `json:"privateKeySecretArn"`
	WebhookSecretARN    string `json:"webhookSecretArn"`
	// PreviousWebhookSecretARN is accepted besides WebhookSecretARN while
	// a rotation is under way (docs/operations.md). Optional.
	PreviousWebhookSecretARN string `json:"previousWebhookSecretArn,omitempty"`
	Scope                    string `json:"scope"`
	RunnerGroup              string `json:"runnerGroup"`
	// AllowedOwners limits the organisations or users whose jobs are served
	// (case-insensitive). Empty: every owner the App is installed on.
	AllowedOwners []string `json:"allowedOwners,omitempty"`
}

// Launch holds what every launch shares.
type Launch struct {
	LaunchTemplateID string   `json:"launchTemplateId"`
	SubnetIDs        []string `json:"subnetIds"`
	// JITConfigTableName is the DynamoDB table that hands each instance its
	// JIT runner configuration. Required by scaleup only.
	JITConfigTableName string `json:"jitConfigTableName,omitempty"`
	// AssociatePublicIP gives runners a public IPv4 address (public subnets
	// without NAT). Default false.
	AssociatePublicIP bool `json:"associatePublicIp,omitempty"`
}

// ScaleDown holds the reconciler's thresholds; every key is optional.
type ScaleDown struct {
	CompletedGraceSeconds int `json:"completedGraceSeconds,omitempty"`
	BootTimeoutSeconds    int `json:"bootTimeoutSeconds,omitempty"`
	OrphanGraceSeconds    int `json:"orphanGraceSeconds,omitempty"`
	MaxRuntimeSeconds     int `json:"maxRuntimeSeconds,omitempty"`
	// QueuedTimeoutSeconds: a job recorded as queued that has not launched
	// after this long is re-queued if GitHub still shows it queued.
	QueuedTimeoutSeconds int `json:"queuedTimeoutSeconds,omitempty"`
	// RerunInterruptedJobs re-runs, once, a job that failed after its spot
	// instance was interrupted (default true; the GitHub App then needs
	// Actions: read & write).
	RerunInterruptedJobs *bool `json:"rerunInterruptedJobs,omitempty"`
}

// Redelivery configures the recovery of failed webhook deliveries from the
// App's delivery log (scaledown, on its own schedule).
type Redelivery struct {
	// Enabled turns the recovery on (default true; the App's delivery log
	// needs no permission beyond the App's own JWT).
	Enabled *bool `json:"enabled,omitempty"`
	// MaxPerRun bounds the redeliveries one run asks for (default 100).
	MaxPerRun int `json:"maxPerRun,omitempty"`
	// LookbackMinutes is how far back the first run reads the log (default
	// 60; GitHub keeps three days of it).
	LookbackMinutes int `json:"lookbackMinutes,omitempty"`
}

// On reports whether failed deliveries are recovered.
func (r Redelivery) On() bool { return r.Enabled == nil || *r.Enabled }

// RerunInterrupted reports whether interrupted jobs are re-run.
func (s ScaleDown) RerunInterrupted() bool {
	return s.RerunInterruptedJobs == nil || *s.RerunInterruptedJobs
}

// ScaleUp holds the scaleup Lambda's options.
type ScaleUp struct {
	// CheckStillQueued asks GitHub whether a job is still queued before
	// launching for it. Default: on when queueDelaySeconds > 0 (a delayed
	// job may have been taken or cancelled meanwhile), else off (it would
	// cost a GitHub call per job for little gain).
	CheckStillQueued *bool `json:"checkStillQueued,omitempty"`
	// ClaimLeaseSeconds is how long a claim holds a job before another
	// invocation may take it over (default 120: twice the scaleup timeout,
	// well under the queue's visibility timeout).
	ClaimLeaseSeconds int `json:"claimLeaseSeconds,omitempty"`
	// LimitRetrySeconds is when a waiting job whose launch failed is tried
	// again (default 30). Jobs held by maxRunners wait in the table until a
	// slot frees, not for this delay.
	LimitRetrySeconds int `json:"limitRetrySeconds,omitempty"`
}

// CheckQueued reports whether scaleup asks GitHub if a job is still queued.
func (c *Config) CheckQueued() bool {
	if c.ScaleUp.CheckStillQueued != nil {
		return *c.ScaleUp.CheckStillQueued
	}
	return c.QueueDelaySeconds > 0
}

// Shapes holds the platform team's bounds on the machine shapes a job may
// ask for by label. Each bound is off unless set; a job asking beyond one is
// not served (its record says why).
type Shapes struct {
	// MaxCPU caps the vCPUs of any instance a shape may choose
	// (1..MaxShapeCPU).
	MaxCPU int `json:"maxCpu,omitempty"`
	// MaxRAMGiB caps its memory in GiB (1..MaxShapeRAMGiB).
	MaxRAMGiB int `json:"maxRamGiB,omitempty"`
	// MaxDiskGiB caps the root volume a job may ask for with disk=
	// (MinShapeDiskGiB..MaxShapeDiskGiB).
	MaxDiskGiB int `json:"maxDiskGiB,omitempty"`
	// Families allow-lists instance-family prefixes ("c7i", "m7", "c"):
	// every type a shape chooses belongs to one of them.
	Families []string `json:"families,omitempty"`
	// GPU allows GPU instances (gpu=1 and the like); default true.
	GPU *bool `json:"gpu,omitempty"`
}

// GPUAllowed reports whether jobs may ask for GPU instances.
func (s Shapes) GPUAllowed() bool { return s.GPU == nil || *s.GPU }

// The ranges of machine-shape values, for the shape labels (runtime/shapes)
// and for the bounds above.
const (
	MaxShapeCPU     = 448
	MaxShapeRAMGiB  = 24576
	MaxShapeGPU     = 16
	MinShapeDiskGiB = 8
	MaxShapeDiskGiB = 16384
)

var familyPrefixRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,15}$`)

// IsFamilyPrefix reports whether s is an instance-family prefix as shape
// labels and shapes.families write it: lower case, a letter, then up to 15
// letters, digits or '-' ("c7i", "m7gd", "g5", "inf2"; no dot, so no size).
func IsFamilyPrefix(s string) bool { return familyPrefixRE.MatchString(s) }

// Profile is one kind of runner a job can ask for by label.
type Profile struct {
	InstanceTypes []string `json:"instanceTypes"`
	ImageID       string   `json:"imageId"`
	Arch          string   `json:"arch"`
	// Spot requests spot capacity first (default true).
	Spot      *bool `json:"spot,omitempty"`
	VolumeGiB int   `json:"volumeGiB"`
	// MaxRunners caps this profile's concurrent runners. 0: only the
	// deployment-wide maxRunners applies.
	MaxRunners int `json:"maxRunners,omitempty"`
	// Pool keeps instances of this profile ready before jobs come (optional).
	Pool *Pool `json:"pool,omitempty"`
}

// UseSpot reports whether the profile asks for spot capacity first.
func (p Profile) UseSpot() bool { return p.Spot == nil || *p.Spot }

// Pool is a profile's warm pool: instances launched ahead of jobs. Each
// pooled instance still serves exactly one job and is then terminated, and
// each holds a runner slot (maxRunners, and the profile's maxRunners) while
// it waits.
type Pool struct {
	// Hot instances are running, the runner installed, waiting for a job's
	// JIT config.
	Hot *PoolSpec `json:"hot,omitempty"`
	// Stopped instances were booted once, prepared and stopped (EBS only).
	// Always on-demand: AWS cannot stop a one-time spot instance.
	Stopped *PoolSpec `json:"stopped,omitempty"`
	// MaxAgeMinutes: a pooled instance older than this is replaced.
	// Default DefaultPoolMaxAgeMinutes, 30..10080.
	MaxAgeMinutes int `json:"maxAgeMinutes,omitempty"`
}

// PoolSpec is the target size of one kind of pool, optionally by schedule.
type PoolSpec struct {
	// Size is the number of instances kept ready, 0..MaxPoolSize (inside
	// the schedules when there are any).
	Size int `json:"size"`
	// Schedules: when set, Size applies while any window is open and
	// OffHoursSize otherwise (default 0).
	Schedules    []PoolSchedule `json:"schedules,omitempty"`
	OffHoursSize int            `json:"offHoursSize,omitempty"`
	// TimeZone of the schedules, an IANA name (default "UTC" when there
	// are schedules).
	TimeZone string `json:"timeZone,omitempty"`
}

// PoolSchedule is a weekly window of local (TimeZone) wall-clock time.
type PoolSchedule struct {
	// Days the window starts on: "mon-fri", "sat,sun", "mon,wed-fri",
	// "sat-mon" (ranges wrap), "daily"; lower-case three-letter names.
	Days string `json:"days"`
	// From is when the window opens, "07:00" (HH:MM, 24 h, 00:00-23:59).
	From string `json:"from"`
	// To is when it closes, "19:00" (00:00-24:00; "24:00" is the end of
	// the day). To earlier than From spans midnight: the window belongs to
	// the day it starts. To equal to From is an error (00:00-24:00 is a
	// whole day).
	To string `json:"to"`
}

// The kinds of pool, as the pool's keys name them (Pool.Hot, Pool.Stopped).
const (
	PoolHot     = "hot"
	PoolStopped = "stopped"
)

// PoolKinds lists the profile's pools, hot first (none without a pool).
func (p Profile) PoolKinds() []string {
	var kinds []string
	for _, k := range []string{PoolHot, PoolStopped} {
		if p.PoolSpec(k) != nil {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// PoolSpec returns the spec of the profile's pool of kind (PoolHot or
// PoolStopped), nil when it has none.
func (p Profile) PoolSpec(kind string) *PoolSpec {
	switch {
	case p.Pool == nil:
		return nil
	case kind == PoolHot:
		return p.Pool.Hot
	case kind == PoolStopped:
		return p.Pool.Stopped
	}
	return nil
}

// PooledProfiles returns the sorted names of the profiles that have a pool.
func (c *Config) PooledProfiles() []string {
	var names []string
	for name, p := range c.Profiles {
		if p.Pool != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// SizeAt returns the spec's target size at instant t: Size without
// schedules; with schedules, Size while any window is open and OffHoursSize
// otherwise.
//
// Windows are read on the wall clock of TimeZone. A window opens at the
// first instant the clock reads From on one of its days and closes at the
// first instant it then reads To; where a daylight-saving jump skips the
// reading (02:30 on a spring-forward night), at the jump. A window is
// therefore one interval even on the night the clock goes back and repeats
// an hour. Validate rejects what SizeAt would otherwise have to guess; on a
// spec it did not check, a window that does not parse is never open and an
// unknown time zone is read as UTC.
func (s PoolSpec) SizeAt(t time.Time) int {
	if len(s.Schedules) == 0 {
		return s.Size
	}
	loc, err := loadLocation(s.TimeZone)
	if err != nil {
		loc = time.UTC
	}
	for _, sc := range s.Schedules {
		w, err := parseWindow(sc)
		if err == nil && w.open(t, loc) {
			return s.Size
		}
	}
	return s.OffHoursSize
}

// maxSize is the most instances the spec asks for at any time (sizes out of
// range clamped; Validate reports them).
func (s PoolSpec) maxSize() int {
	n := s.Size
	if len(s.Schedules) > 0 {
		n = max(n, s.OffHoursSize)
	}
	return min(max(n, 0), MaxPoolSize)
}

// window is a parsed PoolSchedule.
type window struct {
	days     [7]bool // by time.Weekday: the days the window starts on
	from, to int     // minutes after midnight; to may be 1440
}

// dayNames are the weekday names of PoolSchedule.Days, by time.Weekday.
var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func parseWindow(sc PoolSchedule) (window, error) {
	var w window
	var err error
	if w.days, err = parseDays(sc.Days); err != nil {
		return w, err
	}
	if w.from, err = parseClock(sc.From, false); err != nil {
		return w, err
	}
	if w.to, err = parseClock(sc.To, true); err != nil {
		return w, err
	}
	if w.from == w.to {
		return w, errors.New("empty window")
	}
	return w, nil
}

// parseDays parses "mon-fri", "sat,sun", "mon,wed-fri", "sat-mon", "daily".
func parseDays(s string) ([7]bool, error) {
	var days [7]bool
	if s == "daily" {
		for i := range days {
			days[i] = true
		}
		return days, nil
	}
	if s == "" {
		return days, errors.New(`is required: "mon-fri", "sat,sun", "mon,wed-fri" or "daily"`)
	}
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		first, err := parseDay(a)
		if err != nil {
			return days, err
		}
		last := first
		if isRange {
			if last, err = parseDay(b); err != nil {
				return days, err
			}
		}
		for d := first; ; d = (d + 1) % 7 { // a range wraps: sat-mon
			days[d] = true
			if d == last {
				break
			}
		}
	}
	return days, nil
}

func parseDay(s string) (int, error) {
	for i, n := range dayNames {
		if s == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf(`has an unknown day %q: days are mon, tue, wed, thu, fri, sat, sun (lower case), `+
		`joined into ranges ("mon-fri") and lists ("sat,sun"), or "daily"`, s)
}

// parseClock parses "HH:MM" (24 h) into minutes after midnight; end allows
// "24:00".
func parseClock(s string, end bool) (int, error) {
	bad := func() (int, error) {
		if end {
			return 0, fmt.Errorf("must be a time HH:MM between 00:00 and 24:00, got %q", s)
		}
		return 0, fmt.Errorf("must be a time HH:MM between 00:00 and 23:59, got %q", s)
	}
	if len(s) != 5 || s[2] != ':' {
		return bad()
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return bad()
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	switch {
	case end && h == 24 && m == 0:
		return 24 * 60, nil
	case h > 23 || m > 59:
		return bad()
	}
	return h*60 + m, nil
}

// open reports whether the window is open at t, in loc. Only a window that
// starts on t's local date or the day before can be open at t.
func (w window) open(t time.Time, loc *time.Location) bool {
	y, m, d := t.In(loc).Date()
	for back := range 2 {
		day := time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC) // a civil date
		if !w.days[day.Weekday()] {
			continue
		}
		endDay := day
		if w.to <= w.from {
			endDay = day.AddDate(0, 0, 1)
		}
		if !t.Before(wallInstant(day, w.from, loc)) && t.Before(wallInstant(endDay, w.to, loc)) {
			return true
		}
	}
	return false
}

// wallInstant returns the first instant at which loc's clock reads the
// civil date day (a UTC midnight) plus minutes; where a daylight-saving jump
// skips that reading, the instant of the jump. It assumes at most one
// offset change within 36 hours of the reading, true of every zone today.
func wallInstant(day time.Time, minutes int, loc *time.Location) time.Time {
	naive := day.Add(time.Duration(minutes) * time.Minute).Unix() // the reading, as if loc were UTC
	const span = 36 * 3600
	var first time.Time
	for _, probe := range []int64{naive - span, naive + span} {
		_, off := time.Unix(probe, 0).In(loc).Zone()
		c := time.Unix(naive-int64(off), 0).In(loc)
		if _, o := c.Zone(); o == off && (first.IsZero() || c.Before(first)) {
			first = c // the clock reads the time here: in the overlap the clock goes back over, the earlier one wins
		}
	}
	if !first.IsZero() {
		return first
	}
	// A gap: under the offset before the jump the reading falls after it,
	// in the period that starts at the jump.
	_, before := time.Unix(naive-span, 0).In(loc).Zone()
	start, _ := time.Unix(naive-int64(before), 0).In(loc).ZoneBounds()
	return start
}

// locations caches time zones that loaded (time.LoadLocation reads and
// parses the zone on every call).
var locations sync.Map // name -> *time.Location

// tzNameRE is the shape of an IANA zone name ("UTC", "Europe/Berlin",
// "America/Argentina/Buenos_Aires", "Etc/GMT+5"). Checked before the name
// reaches time.LoadLocation, which opens files by it.
var tzNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]{0,29}(?:/[A-Za-z0-9][A-Za-z0-9_+-]{0,29}){0,2}$`)

// loadLocation returns the IANA time zone name ("" is UTC).
func loadLocation(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if v, ok := locations.Load(name); ok {
		return v.(*time.Location), nil
	}
	if !tzNameRE.MatchString(name) || name == "Local" {
		return nil, fmt.Errorf("must be an IANA time zone name such as \"Europe/Berlin\" or \"UTC\", got %q", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("is not a known IANA time zone: %q", name)
	}
	locations.Store(name, loc)
	return loc, nil
}

// Parse decodes and validates a configuration document. Unknown keys are an
// error; so is anything Validate rejects. Defaults are filled in.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("config: empty document")
	}
	// Keys first, on the generic document: an unknown or misspelt key is
	// reported with its whole path (scaleDown.bogus), which encoding/json's
	// "unknown field" does not give.
	if err := strictKeys(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", describeDecodeError(err, data))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: trailing data after the JSON document")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// FromEnv reads and parses the document in JITR_CONFIG.
func FromEnv() (*Config, error) {
	v, ok := os.LookupEnv(EnvVar)
	if !ok {
		return nil, fmt.Errorf("config: environment variable %s is not set", EnvVar)
	}
	return Parse([]byte(v))
}

// describeDecodeError turns encoding/json's messages into ones that name the
// key in the document's own spelling.
func describeDecodeError(err error, data []byte) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// encoding/json leaves map keys out of Field ("profiles.volumeGiB");
		// the generic walk has the whole path.
		key := typeErr.Field
		if p := kindProblems(data); len(p) > 0 {
			key = p[0].Key
		}
		return fmt.Errorf("key %q: expected %s, got JSON %s", key, typeErr.Type, typeErr.Value)
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return fmt.Errorf("invalid JSON at byte %d: %w", syntaxErr.Offset, err)
	}
	// "json: unknown field \"x\"" already names the key.
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// Marshal encodes the configuration the way the stack writes it into JITR_CONFIG.
func (c *Config) Marshal() ([]byte, error) { return json.Marshal(c) }

package packer

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
)

const (
	templateFile  = "jit-runner.pkr.hcl"
	variablesFile = "variables.pkr.hcl"
	runnerScript  = "scripts/50-runner.sh"
	markerPath    = "/opt/jit-runner-prebaked"
)

func readEmbedded(t *testing.T, name string) string {
	t.Helper()
	b, err := FS.ReadFile(name)
	if err != nil {
		t.Fatalf("embedded %s: %v", name, err)
	}
	return string(b)
}

// allHCL is every embedded *.pkr.hcl file, concatenated: Packer reads them as
// one configuration.
func allHCL(t *testing.T) string {
	t.Helper()
	names, err := fs.Glob(FS, "*.pkr.hcl")
	if err != nil || len(names) == 0 {
		t.Fatalf("no embedded *.pkr.hcl (err %v)", err)
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(readEmbedded(t, n))
		b.WriteString("\n")
	}
	return b.String()
}

// hclBlocks returns the bodies of the blocks `<kind> "<label>" {...}` in src,
// by label. Braces inside strings and comments do not count.
func hclBlocks(t *testing.T, src, kind string) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(kind) + `\s+"([^"]+)"\s*\{`)
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatchIndex(src, -1) {
		label := src[m[2]:m[3]]
		end := matchBrace(src, m[1]-1)
		if end < 0 {
			t.Fatalf("%s %q: unbalanced braces", kind, label)
		}
		if _, dup := out[label]; dup {
			t.Fatalf("%s %q defined twice", kind, label)
		}
		out[label] = src[m[1]:end]
	}
	return out
}

// matchBrace returns the index of the brace closing the one at open, or -1.
func matchBrace(s string, open int) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case c == '#' || (c == '/' && i+1 < len(s) && s[i+1] == '/'):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

var stringDefaultRE = regexp.MustCompile(`(?m)^\s*default\s*=\s*"([^"]*)"`)

// variableDefault returns the string default of variable name.
func variableDefault(t *testing.T, name string) string {
	t.Helper()
	body, ok := hclBlocks(t, allHCL(t), "variable")[name]
	if !ok {
		t.Fatalf("no variable %q in the embedded template", name)
	}
	m := stringDefaultRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("variable %q has no string default", name)
	}
	return m[1]
}

// THE contract of the pre-baked AMI: the runner version its scripts write into
// the marker is the version the bootstrap compares against by default.
// The runner digests the AMI verifies are the ones the bootstrap pins.
func TestRunnerChecksumsAreTheProjectDefaults(t *testing.T) {
	for name, want := range map[string]string{
		"runner_sha256_x64":   config.DefaultRunnerSHA256X64,
		"runner_sha256_arm64": config.DefaultRunnerSHA256ARM64,
	} {
		if got := variableDefault(t, name); got != want {
			t.Errorf("variable %s default = %q; want %q", name, got, want)
		}
	}
}

func TestRunnerVersionDefaultIsTheProjectDefault(t *testing.T) {
	if got, want := variableDefault(t, "runner_version"), config.DefaultRunnerVersion; got != want {
		t.Fatalf("variable runner_version default = %q; want config.DefaultRunnerVersion %q", got, want)
	}
}

func TestMarkerIsWrittenFromTheRunnerVersionVariable(t *testing.T) {
	tmpl := readEmbedded(t, templateFile)

	// The template hands var.runner_version to the scripts as RUNNER_VERSION,
	// and nothing else sets RUNNER_VERSION.
	const wiring = `"RUNNER_VERSION=${var.runner_version}"`
	if n := strings.Count(tmpl, wiring); n != 1 {
		t.Fatalf("%s has %d occurrences of %s; want 1", templateFile, n, wiring)
	}
	if n := strings.Count(tmpl, "RUNNER_VERSION="); n != 1 {
		t.Fatalf("%s sets RUNNER_VERSION %d times; want only from var.runner_version", templateFile, n)
	}

	// The provisioner that runs 50-runner.sh gets that environment.
	var runnerProv string
	for _, body := range provisionerBodies(t, tmpl, "shell") {
		if strings.Contains(body, `"${path.root}/`+runnerScript+`"`) {
			runnerProv = body
		}
	}
	if runnerProv == "" {
		t.Fatalf("no shell provisioner runs %s", runnerScript)
	}
	if !regexp.MustCompile(`(?m)^\s*environment_vars\s*=\s*local\.provision_env\s*$`).MatchString(runnerProv) {
		t.Fatalf("the provisioner running %s does not pass local.provision_env:\n%s", runnerScript, runnerProv)
	}
	env := hclList(t, tmpl, "provision_env")
	if !contains(env, strings.Trim(wiring, `"`)) {
		t.Fatalf("local.provision_env lacks %s: %v", wiring, env)
	}

	// The script writes the marker from RUNNER_VERSION and nothing else, and
	// no script assigns RUNNER_VERSION itself.
	script := readEmbedded(t, runnerScript)
	markerLine := regexp.MustCompile(`(?m)^printf '%s\\n' "\$RUNNER_VERSION" >` + regexp.QuoteMeta(markerPath) + `$`)
	if !markerLine.MatchString(script) {
		t.Fatalf("%s does not write the marker with printf '%%s\\n' \"$RUNNER_VERSION\" >%s", runnerScript, markerPath)
	}
	assign := regexp.MustCompile(`(^|[^A-Za-z0-9_$])(export\s+|declare\s+[-a-z]*\s*|readonly\s+|local\s+)?RUNNER_VERSION=|read\b[^\n]*\bRUNNER_VERSION\b`)
	writesMarker := regexp.MustCompile(`>>?\s*"?` + regexp.QuoteMeta(markerPath))
	scripts, _ := fs.Glob(FS, "scripts/*.sh")
	for _, s := range scripts {
		body := readEmbedded(t, s)
		if loc := assign.FindStringIndex(body); loc != nil {
			t.Errorf("%s assigns RUNNER_VERSION (%q); it must come only from the template", s, body[loc[0]:loc[1]])
		}
		if n := len(writesMarker.FindAllString(body, -1)); s == runnerScript && n != 1 || s != runnerScript && n != 0 {
			t.Errorf("%s writes %s %d times", s, markerPath, n)
		}
	}

	// Run that very line as Packer would (RUNNER_VERSION from the variable's
	// default) and read the result the way the bootstrap does.
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the marker line")
	}
	marker := filepath.Join(t.TempDir(), "jit-runner-prebaked")
	line := strings.Replace(markerLine.FindString(script), markerPath, `"$MARKER"`, 1)
	cmd := exec.Command(bash, "-euo", "pipefail", "-c", line)
	cmd.Env = append(os.Environ(), "RUNNER_VERSION="+variableDefault(t, "runner_version"), "MARKER="+marker)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("running %q: %v\n%s", line, err, out)
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(b)), ""); got != config.DefaultRunnerVersion {
		t.Fatalf("marker holds %q (whitespace stripped); want %q", got, config.DefaultRunnerVersion)
	}
}

// The bootstrap checks the same marker path the AMI writes, and renders the
// version it compares from its parameter.
func TestBootstrapReadsTheSameMarker(t *testing.T) {
	script, err := bootstrap.Render(bootstrap.Params{
		RunnerVersion:     config.DefaultRunnerVersion,
		NamePrefix:        "jitr",
		JITTable:          "jit-configs",
		RunnerSHA256X64:   strings.Repeat("0", 64),
		RunnerSHA256ARM64: strings.Repeat("0", 64),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{markerPath, "readonly RUNNER_VERSION='" + config.DefaultRunnerVersion + "'"} {
		if !strings.Contains(script, want) {
			t.Errorf("rendered bootstrap lacks %q", want)
		}
	}
}

func provisionerBodies(t *testing.T, tmpl, kind string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*provisioner\s+"` + regexp.QuoteMeta(kind) + `"\s*\{`)
	var out []string
	for _, m := range re.FindAllStringIndex(tmpl, -1) {
		end := matchBrace(tmpl, m[1]-1)
		if end < 0 {
			t.Fatal("unbalanced provisioner block")
		}
		out = append(out, tmpl[m[1]:end])
	}
	return out
}

// hclList returns the string items of the list local/attribute name = [...].
func hclList(t *testing.T, src, name string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s*=\s*\[`).FindStringIndex(src)
	if m == nil {
		t.Fatalf("no list %s", name)
	}
	end := strings.Index(src[m[1]:], "]")
	if end < 0 {
		t.Fatalf("list %s is not closed", name)
	}
	var items []string
	for _, q := range regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(src[m[1]:m[1]+end], -1) {
		items = append(items, q[1])
	}
	return items
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestEveryVariableHasADefault(t *testing.T) {
	vars := hclBlocks(t, allHCL(t), "variable")
	if len(vars) < 10 {
		t.Fatalf("found only %d variables", len(vars))
	}
	hasDefault := regexp.MustCompile(`(?m)^\s*default\s*=`)
	for name, body := range vars {
		if !hasDefault.MatchString(body) {
			t.Errorf("variable %q has no default", name)
		}
	}
}

// Every pinned download has a SHA-256 per architecture, and the scripts get
// exactly the digests the template declares.
func TestChecksumVariablesAreWired(t *testing.T) {
	src := allHCL(t)
	vars := hclBlocks(t, src, "variable")
	env := hclList(t, readEmbedded(t, templateFile), "provision_env")
	sha := regexp.MustCompile(`^[0-9a-f]{64}$`)
	tools := 0
	for name := range vars {
		if !strings.HasSuffix(name, "_sha256_x64") {
			continue
		}
		tools++
		base := strings.TrimSuffix(name, "_sha256_x64")
		for _, arch := range []string{"x64", "arm64"} {
			v := base + "_sha256_" + arch
			if _, ok := vars[v]; !ok {
				t.Errorf("variable %s has no %s twin", name, v)
				continue
			}
			if d := variableDefault(t, v); !sha.MatchString(d) {
				t.Errorf("variable %s default %q is not a SHA-256", v, d)
			}
			wire := strings.ToUpper(v) + "=${var." + v + "}"
			if !contains(env, wire) {
				t.Errorf("local.provision_env lacks %s", wire)
			}
		}
	}
	if tools < 10 {
		t.Errorf("found %d checksummed downloads; want every downloaded binary pinned", tools)
	}

	// Every variable a script reads through per_arch or require is passed.
	perArch := regexp.MustCompile(`per_arch ([A-Z0-9_]+) ([A-Z0-9_]+)`)
	require := regexp.MustCompile(`(?m)^require ([A-Z0-9_ ]+)$`)
	scripts, _ := fs.Glob(FS, "scripts/*.sh")
	for _, s := range scripts {
		if s == "scripts/lib.sh" { // defines per_arch and require
			continue
		}
		body := readEmbedded(t, s)
		var names []string
		for _, m := range perArch.FindAllStringSubmatch(body, -1) {
			names = append(names, m[1], m[2])
		}
		for _, m := range require.FindAllStringSubmatch(body, -1) {
			names = append(names, strings.Fields(m[1])...)
		}
		for _, n := range names {
			wire := n + "=${var." + strings.ToLower(n) + "}"
			if !contains(env, wire) {
				t.Errorf("%s reads %s, but local.provision_env lacks %s", s, n, wire)
			}
		}
	}
}

func TestScriptsAreStrictAndAllUsed(t *testing.T) {
	tmpl := readEmbedded(t, templateFile)
	scripts, _ := fs.Glob(FS, "scripts/*.sh")
	for _, s := range scripts {
		body := readEmbedded(t, s)
		if s == "scripts/lib.sh" {
			if !strings.Contains(tmpl, `"${path.root}/scripts/lib.sh"`) {
				t.Errorf("%s is not uploaded by the template", s)
			}
			continue
		}
		if !strings.HasPrefix(body, "#!/usr/bin/env bash\n") {
			t.Errorf("%s does not start with #!/usr/bin/env bash", s)
		}
		if !regexp.MustCompile(`(?m)^set -euo pipefail$`).MatchString(body) {
			t.Errorf("%s lacks set -euo pipefail", s)
		}
		if !strings.Contains(tmpl, `"${path.root}/`+s+`"`) {
			t.Errorf("%s is not run by the template", s)
		}
	}
	for _, m := range regexp.MustCompile(`"\$\{path\.root\}/([^"]+)"`).FindAllStringSubmatch(tmpl, -1) {
		if _, err := fs.Stat(FS, m[1]); err != nil {
			t.Errorf("the template uses %s, which is not embedded: %v", m[1], err)
		}
	}
}

func TestAmazonPluginConstraintAcceptsV180(t *testing.T) {
	tmpl := readEmbedded(t, templateFile)
	m := regexp.MustCompile(`(?s)amazon\s*=\s*\{[^}]*source\s*=\s*"github\.com/hashicorp/amazon"[^}]*version\s*=\s*"([^"]+)"`).FindStringSubmatch(tmpl)
	if m == nil {
		t.Fatal("no required_plugins amazon entry with source github.com/hashicorp/amazon and a version")
	}
	if !constraintAccepts(t, m[1], "1.8.0") {
		t.Fatalf("amazon plugin constraint %q does not accept v1.8.0", m[1])
	}
}

// constraintAccepts evaluates a HashiCorp version constraint ("op version"
// terms joined by commas) for version v; it knows the operators Packer does.
func constraintAccepts(t *testing.T, constraint, v string) bool {
	t.Helper()
	parse := func(s string) []int {
		var out []int
		for _, p := range strings.Split(strings.TrimPrefix(s, "v"), ".") {
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("version %q: %v", s, err)
			}
			out = append(out, n)
		}
		for len(out) < 3 {
			out = append(out, 0)
		}
		return out
	}
	cmp := func(a, b []int) int {
		for i := range a {
			if a[i] != b[i] {
				if a[i] < b[i] {
					return -1
				}
				return 1
			}
		}
		return 0
	}
	have := parse(v)
	term := regexp.MustCompile(`^\s*(>=|<=|!=|~>|>|<|=)?\s*(v?[0-9][0-9.]*)\s*$`)
	for _, part := range strings.Split(constraint, ",") {
		m := term.FindStringSubmatch(part)
		if m == nil {
			t.Fatalf("cannot parse constraint term %q", part)
		}
		want, c := parse(m[2]), 0
		c = cmp(have, want)
		ok := false
		switch m[1] {
		case ">=":
			ok = c >= 0
		case "<=":
			ok = c <= 0
		case ">":
			ok = c > 0
		case "<":
			ok = c < 0
		case "!=":
			ok = c != 0
		case "", "=":
			ok = c == 0
		case "~>":
			segs := len(strings.Split(strings.TrimPrefix(m[2], "v"), "."))
			upper := append([]int(nil), want...)
			if segs <= 1 {
				upper = []int{want[0] + 1, 0, 0}
			} else {
				upper[segs-2]++
				for i := segs - 1; i < 3; i++ {
					upper[i] = 0
				}
			}
			ok = c >= 0 && cmp(have, upper) < 0
		}
		if !ok {
			return false
		}
	}
	return true
}

func TestHashIsStable(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"runner_version": "2.332.0", "region": "eu-west-1"}
	a, err := Hash(vars)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Hash(map[string]string{"region": "eu-west-1", "runner_version": "2.332.0"})
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("Hash differs for equal inputs: %s, %s", a, b)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) {
		t.Fatalf("Hash = %q; want 64 hex digits", a)
	}
	empty, _ := Hash(nil)
	if also, _ := Hash(map[string]string{}); empty != also {
		t.Fatalf("Hash(nil) = %s; Hash(empty map) = %s; want equal", empty, also)
	}
}

func TestHashChangesWithVariables(t *testing.T) {
	t.Parallel()
	base := map[string]string{"runner_version": "2.332.0", "region": "eu-west-1"}
	want, err := Hash(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		vars map[string]string
	}{
		{"value changed", map[string]string{"runner_version": "2.333.0", "region": "eu-west-1"}},
		{"variable added", map[string]string{"runner_version": "2.332.0", "region": "eu-west-1", "ami_public": "false"}},
		{"variable removed", map[string]string{"runner_version": "2.332.0"}},
		{"name changed", map[string]string{"runner_version": "2.332.0", "regions": "eu-west-1"}},
		{"empty value added", map[string]string{"runner_version": "2.332.0", "region": "eu-west-1", "subnet_id": ""}},
		{"boundary moved", map[string]string{"runner_version": "2.332.0", "region=eu": "west-1"}},
		{"no variables", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Hash(tc.vars)
			if err != nil {
				t.Fatal(err)
			}
			if got == want {
				t.Fatalf("Hash(%v) = Hash(%v) = %s; want different", tc.vars, base, got)
			}
		})
	}
}

func TestHashChangesWithFiles(t *testing.T) {
	t.Parallel()
	copyFS := func() fstest.MapFS {
		m := fstest.MapFS{}
		paths, err := files(FS)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			b, err := FS.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m[p] = &fstest.MapFile{Data: b}
		}
		return m
	}
	vars := map[string]string{"runner_version": "2.332.0"}
	want, err := Hash(vars)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := hashFS(copyFS(), vars); err != nil || got != want {
		t.Fatalf("hash of a copy of FS = %s, %v; want %s", got, err, want)
	}
	for _, tc := range []struct {
		name   string
		change func(fstest.MapFS)
	}{
		{"script edited", func(m fstest.MapFS) { m[runnerScript].Data = append(m[runnerScript].Data, '\n') }},
		{"template edited", func(m fstest.MapFS) {
			m[templateFile].Data = bytes.Replace(m[templateFile].Data, []byte(`"gp3"`), []byte(`"gp2"`), 1)
		}},
		{"variable default edited", func(m fstest.MapFS) {
			m[variablesFile].Data = bytes.Replace(m[variablesFile].Data, []byte("t3.large"), []byte("t3.xlarge"), 1)
		}},
		{"file added", func(m fstest.MapFS) { m["scripts/70-more.sh"] = &fstest.MapFile{Data: []byte("#!/usr/bin/env bash\n")} }},
		{"file removed", func(m fstest.MapFS) { delete(m, "scripts/60-no-extra.sh") }},
		{"file renamed", func(m fstest.MapFS) {
			m["scripts/61-no-extra.sh"] = m["scripts/60-no-extra.sh"]
			delete(m, "scripts/60-no-extra.sh")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := copyFS()
			tc.change(m)
			got, err := hashFS(m, vars)
			if err != nil {
				t.Fatal(err)
			}
			if got == want {
				t.Fatalf("hash unchanged after %s", tc.name)
			}
		})
	}
}

func TestWriteToRoundTrips(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Twice: WriteTo overwrites what it wrote before.
	for i := 0; i < 2; i++ {
		if err := WriteTo(dir); err != nil {
			t.Fatalf("WriteTo (run %d): %v", i+1, err)
		}
	}
	want, err := files(FS)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		got = append(got, rel)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		orig, err := FS.ReadFile(rel)
		if err != nil {
			t.Errorf("WriteTo wrote %s, which is not embedded", rel)
			return nil
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("%s differs from the embedded file", rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, ".sh") && info.Mode().Perm()&0o100 == 0 {
			t.Errorf("%s is not executable: %v", rel, info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("WriteTo wrote %v; want %v", got, want)
	}
	for _, must := range []string{templateFile, variablesFile, runnerScript, "scripts/lib.sh"} {
		if !contains(got, must) {
			t.Errorf("WriteTo did not write %s", must)
		}
	}
}

// What WriteTo extracts is a valid configuration for the real packer and
// amazon plugin (make ami.tools installs both; make test puts them on PATH).
func TestWrittenTemplateValidates(t *testing.T) {
	bin, err := exec.LookPath("packer")
	if err != nil {
		t.Skip("packer is not on PATH (make ami.tools)")
	}
	dir := t.TempDir()
	if err := WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"validate", "."},
		{"validate", "-var", "ami_public=false", "-var", "distribute=false", "-var", "subnet_id=subnet-0123456789abcdef0", "."},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
		out, err := cmd.CombinedOutput()
		if err != nil && bytes.Contains(out, []byte("Missing plugins")) {
			t.Skipf("the amazon plugin is not installed for %s (make ami.tools):\n%s", bin, out)
		}
		if err != nil {
			t.Fatalf("packer %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestWriteToFailsOnAFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteTo(file); err == nil {
		t.Fatal("WriteTo into a regular file succeeded; want an error")
	}
}

func TestAMINameAndTags(t *testing.T) {
	tmpl := readEmbedded(t, templateFile)
	for _, want := range []string{
		`ami_name  = "jit-runner-${var.jit_runners_version}-runner${var.runner_version}-${local.timestamp}"`,
		`"jitr:runner-version" = var.runner_version`,
		`"jitr:version"        = var.jit_runners_version`,
		`"jitr:managed-by"     = "jit-runners"`,
		`"jitr:arch" = "` + config.ArchX64 + `"`,
		`"jitr:arch" = "` + config.ArchARM64 + `"`,
		`http_tokens                 = "required"`,
		`ami_groups  = var.ami_public ? ["all"] : []`,
	} {
		if !strings.Contains(tmpl, want) {
			t.Errorf("%s lacks %s", templateFile, want)
		}
	}
}

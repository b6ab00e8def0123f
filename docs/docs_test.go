// Package docs holds the project's documentation. Its test keeps the
// documentation honest: every make target, configuration key and file path
// the docs name exists, every configuration key is documented, and every
// relative link resolves; the architecture map matches the imports.
package docs

import (
	"bufio"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/config"
)

// documents are the files checked: README.md and docs/*.md (plus the
// READMEs next to code).
func documents(t *testing.T) map[string]string {
	t.Helper()
	paths := []string{"../README.md", "../packer/README.md"}
	more, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, more...)
	docs := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		docs[p] = string(b)
	}
	if len(docs) < 3 {
		t.Fatalf("found only %d documents", len(docs))
	}
	return docs
}

// makeTargets parses the Makefile's targets.
func makeTargets(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	targets := map[string]bool{}
	re := regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*)\s*:([^=]|$)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			targets[m[1]] = true
		}
	}
	return targets
}

var makeRef = regexp.MustCompile("`(?:[A-Z_]+=\\S+ )*make ((?:[a-z][a-z0-9._-]*\\s?)+)")

func TestMakeTargetsExist(t *testing.T) {
	targets := makeTargets(t)
	for _, need := range []string{"tools", "build", "test", "lint", "bench", "sandbox"} {
		if !targets[need] {
			t.Errorf("Makefile has no %q target", need)
		}
	}
	for path, text := range documents(t) {
		for _, m := range makeRef.FindAllStringSubmatch(text, -1) {
			for _, target := range strings.Fields(m[1]) {
				if !targets[target] {
					t.Errorf("%s names `make %s`, which the Makefile does not define", path, target)
				}
			}
		}
	}
}

// configKeys lists every key of the JITR_CONFIG document as a dotted path,
// with map keys written as <name>.
func configKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
				if name == "" || name == "-" {
					continue
				}
				walk(t.Field(i).Type, prefix+name+".")
			}
		case reflect.Map:
			walk(t.Elem(), prefix+"<name>.")
		default:
			keys = append(keys, strings.TrimSuffix(prefix, "."))
		}
	}
	walk(reflect.TypeOf(config.Config{}), "")
	sort.Strings(keys)
	return keys
}

var tableKey = regexp.MustCompile("(?m)^\\| `([a-zA-Z0-9.<>]+)` \\|")

// Every configuration key is documented in configuration.md, and every key
// configuration.md documents exists: a renamed key fails here.
func TestConfigKeysDocumented(t *testing.T) {
	b, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range tableKey.FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	real := map[string]bool{}
	for _, k := range configKeys() {
		real[k] = true
		if !documented[k] {
			t.Errorf("config key %s is not documented in docs/configuration.md", k)
		}
	}
	for k := range documented {
		if !real[k] {
			t.Errorf("docs/configuration.md documents %s, which is not a config key", k)
		}
	}
}

// Every stack configuration key in Pulumi.yaml is documented in stack.md.
func TestStackConfigDocumented(t *testing.T) {
	y, err := os.ReadFile("../Pulumi.yaml")
	if os.IsNotExist(err) {
		t.Skip("no Pulumi.yaml yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	stack, err := os.ReadFile("stack.md")
	if err != nil {
		t.Fatal(err)
	}
	keyRE := regexp.MustCompile(`(?m)^\s{2}(?:jit-runners:)?([A-Za-z][A-Za-z0-9.]*):\s*$`)
	inConfig := false
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(y)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "config:") {
			inConfig = true
			continue
		}
		if inConfig && line != "" && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "#") {
			inConfig = false
		}
		if !inConfig {
			continue
		}
		if m := keyRE.FindStringSubmatch(line); m != nil {
			n++
			if !strings.Contains(string(stack), m[1]) {
				t.Errorf("Pulumi.yaml config key %s is not documented in docs/stack.md", m[1])
			}
		}
	}
	if n == 0 {
		t.Error("no config keys found in Pulumi.yaml")
	}
}

var (
	pathRef = regexp.MustCompile("`((?:runtime|docs|packer|stack|\\.github|\\.ci)/[A-Za-z0-9_./*<>-]*|Makefile|Pulumi\\.yaml|Pulumi\\.dev\\.yaml|go\\.mod|README\\.md)`")
	linkRef = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	goIdent = regexp.MustCompile(`\.[A-Z][A-Za-z0-9]*$`)
)

// Every repository path the docs name in code spans exists (a glob must
// match something), and every relative link resolves.
func TestPathsAndLinksResolve(t *testing.T) {
	for path, text := range documents(t) {
		dir := filepath.Dir(path)
		for _, m := range pathRef.FindAllStringSubmatch(text, -1) {
			p := strings.TrimSuffix(m[1], "/")
			if strings.ContainsAny(p, "<>") {
				continue // a pattern such as runtime/cmd/<fn>
			}
			p = goIdent.ReplaceAllString(p, "") // runtime/config.Config names package runtime/config
			matches, err := filepath.Glob(filepath.Join("..", p))
			if err != nil || len(matches) == 0 {
				t.Errorf("%s names %s, which does not exist", path, m[1])
			}
		}
		for _, m := range linkRef.FindAllStringSubmatch(text, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "#") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			link, _, _ = strings.Cut(link, "#")
			if _, err := os.Stat(filepath.Join(dir, link)); err != nil {
				t.Errorf("%s links to %s, which does not resolve", path, m[1])
			}
		}
	}
}

// TestArchitectureMap: the map in architecture.md names every package of
// the module (runtime/internal aside, whose rows summarise), and each row
// that names one package lists exactly what it imports from the module.
func TestArchitectureMap(t *testing.T) {
	b, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "## Map\n")
	if start < 0 {
		t.Fatal("architecture.md has no Map section")
	}
	section := doc[start:]
	section = section[:strings.Index(section[1:], "\n## ")+1]
	rows := map[string]string{} // package -> imports cell
	row := regexp.MustCompile("(?m)^\\| `([^`]+)`(?:, `([^`]+)`)? \\| [^|]+ \\| ([^|]+) \\|$")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, pkg := range m[1:3] {
			if pkg != "" {
				rows[pkg] = strings.TrimSpace(m[3])
			}
		}
	}
	const module = "github.com/jit-runners/jit-runners/"
	fset := token.NewFileSet()
	imports := map[string]map[string]bool{} // package -> what it imports from the module
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		if d.IsDir() {
			if (rel != "." && strings.HasPrefix(d.Name(), ".")) || rel == "runtime/internal" || rel == "bin" || rel == "out" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		pkg := filepath.Dir(rel)
		if !strings.HasPrefix(pkg, "runtime/") && !strings.HasPrefix(pkg, "stack/") {
			return nil
		}
		if strings.HasPrefix(pkg, "runtime/cmd/") || pkg == "stack/cmd/plan" {
			return nil // mains: one summary row
		}
		if _, ok := rows[pkg]; !ok {
			t.Errorf("package %s is not in the map", pkg)
			return nil
		}
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if !strings.HasPrefix(p, module) {
				continue
			}
			imports[pkg][strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(p, module), "runtime/"), "stack/")] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg, got := range imports {
		want := strings.Split(rows[pkg], ", ")
		if rows[pkg] == "none" {
			want = nil
		}
		if have := slices.Sorted(maps.Keys(got)); !slices.Equal(have, slices.Sorted(slices.Values(want))) {
			t.Errorf("map: %s imports %v; its row says %q", pkg, have, rows[pkg])
		}
	}
	if len(imports) < 20 {
		t.Errorf("found only %d packages", len(imports))
	}
}

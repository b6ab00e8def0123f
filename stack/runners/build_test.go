package runners_test

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/stack/runners"
)

func TestZipIsDeterministic(t *testing.T) {
	t.Parallel()
	code := []byte("\x7fELF not really")
	a, err := runners.ZipBootstrap(code)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a zip stamping the time would differ now
	b, err := runners.ZipBootstrap(code)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two zips of the same code differ")
	}
	checkZip(t, a, code)

	dir := t.TempDir()
	first, err := runners.WriteArchive(dir, a)
	if err != nil {
		t.Fatal(err)
	}
	second, err := runners.WriteArchive(dir, b)
	if err != nil {
		t.Fatal(err)
	}
	if first != second || filepath.Base(first.Path) != first.SHA256+".zip" {
		t.Errorf("archives %+v and %+v", first, second)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("cache holds %d files, want 1", len(entries))
	}
}

// TestBuildLambdasTwice really cross-compiles the three Lambdas twice, into
// two caches, and requires byte-identical archives: unchanged code must
// never show a diff.
func TestBuildLambdasTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Lambdas")
	}
	ctx := context.Background()
	first, second := runners.GoBuilder{CacheDir: t.TempDir()}, runners.GoBuilder{CacheDir: t.TempDir()}
	for _, fn := range runners.Lambdas {
		a, err := first.Build(ctx, runners.LambdaPackage+"/"+fn)
		if err != nil {
			t.Fatal(err)
		}
		b, err := second.Build(ctx, runners.LambdaPackage+"/"+fn)
		if err != nil {
			t.Fatal(err)
		}
		za, _ := os.ReadFile(a.Path)
		zb, _ := os.ReadFile(b.Path)
		if a.SHA256 != b.SHA256 || !bytes.Equal(za, zb) || len(za) == 0 {
			t.Errorf("%s: two builds differ: %s vs %s", fn, a.SHA256, b.SHA256)
		}
		bin := checkZip(t, za, nil)
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: bootstrap is not ELF: %v", fn, err)
		}
		if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 {
			t.Errorf("%s: built for %v %v, want arm64", fn, f.Machine, f.Class)
		}
		if s := f.Section(".note.go.buildid"); s != nil {
			t.Errorf("%s: has a Go build id section", fn)
		}
	}
}

func TestBuildErrorNamesModule(t *testing.T) {
	t.Parallel()
	_, err := runners.GoBuilder{Dir: t.TempDir(), CacheDir: t.TempDir()}.Build(context.Background(), "example.com/not/a/module/cmd/x")
	if err == nil {
		t.Fatal("built a package that does not exist")
	}
}

// checkZip checks the archive holds exactly "bootstrap", executable, with
// the fixed time, and returns its content (compared with want when set).
func checkZip(t *testing.T, z, want []byte) []byte {
	t.Helper()
	r, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.File) != 1 || r.File[0].Name != "bootstrap" {
		t.Fatalf("archive entries %v, want bootstrap", r.File)
	}
	f := r.File[0]
	if f.Mode().Perm() != 0o755 || !f.Modified.Equal(time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("bootstrap mode %v time %v", f.Mode(), f.Modified)
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if want != nil && !bytes.Equal(got, want) {
		t.Error("archive content differs from the code")
	}
	return got
}

package runners

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// LambdaPackage is the import path of the Lambda mains; each function is
// LambdaPackage + "/" + its name.
const LambdaPackage = "github.com/jit-runners/jit-runners/runtime/cmd"

// Archive is a Lambda deployment package on disk.
type Archive struct {
	// Path is the zip file.
	Path string
	// SHA256 is the hex SHA-256 of the zip file.
	SHA256 string
}

// SourceCodeHash returns the base64 SHA-256 AWS Lambda reports for the zip.
func (a Archive) SourceCodeHash() string {
	b, err := hex.DecodeString(a.SHA256)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Builder builds the deployment archive of the Lambda whose main package is
// importPath.
type Builder interface {
	Build(ctx context.Context, importPath string) (Archive, error)
}

// BuilderFunc adapts a function to Builder.
type BuilderFunc func(ctx context.Context, importPath string) (Archive, error)

// Build calls f.
func (f BuilderFunc) Build(ctx context.Context, importPath string) (Archive, error) {
	return f(ctx, importPath)
}

// GoBuilder cross-compiles a Lambda for provided.al2023 on arm64 with
// `go build <importPath>` and zips the binary as "bootstrap".
//
// The build runs in Dir (default: the working directory, which for `pulumi
// up` is the program's directory), so it resolves importPath in that
// directory's module: a program in another module that imports
// stack/runners builds the Lambdas of the jit-runners version it requires.
// The flags make the binary reproducible (-trimpath, no build id, no VCS
// stamp), and the zip has one entry with a fixed time and mode, so unchanged
// code gives a byte-identical archive and no diff.
type GoBuilder struct {
	// Dir is where `go build` runs; empty: the working directory.
	Dir string
	// CacheDir holds the archives, named by their SHA-256; empty:
	// <os.UserCacheDir()>/jit-runners/lambda.
	CacheDir string
	// Go is the go command; empty: "go".
	Go string
}

// BuildFlags are the `go build` flags of every Lambda.
var BuildFlags = []string{"-trimpath", "-tags", "lambda.norpc", "-ldflags", "-s -w -buildid="}

// BuildEnv is the environment every Lambda is built with, on top of the
// caller's; BuildGOFLAGS is added to the caller's GOFLAGS (which may hold
// -mod=vendor or -mod=mod, so it is extended, not replaced).
var (
	BuildEnv     = []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"}
	BuildGOFLAGS = "-buildvcs=false"
)

// buildEnv returns the caller's environment with BuildEnv and BuildGOFLAGS.
func buildEnv() []string {
	env := os.Environ()
	flags := BuildGOFLAGS
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "GOFLAGS="); ok {
			if strings.TrimSpace(v) != "" {
				flags = v + " " + BuildGOFLAGS
			}
			break
		}
	}
	return append(append(env, BuildEnv...), "GOFLAGS="+flags)
}

// Build implements Builder.
func (b GoBuilder) Build(ctx context.Context, importPath string) (Archive, error) {
	tmp, err := os.MkdirTemp("", "jitr-lambda-")
	if err != nil {
		return Archive{}, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	goCmd := b.Go
	if goCmd == "" {
		goCmd = "go"
	}
	bin := filepath.Join(tmp, "bootstrap")
	args := append([]string{"build"}, BuildFlags...)
	args = append(args, "-o", bin, importPath)
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = b.Dir
	cmd.Env = buildEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return Archive{}, fmt.Errorf("go build %s: %w\n%s%s", importPath, err, stderr.String(), moduleHint(stderr.String()))
	}
	code, err := os.ReadFile(bin)
	if err != nil {
		return Archive{}, err
	}
	zipped, err := ZipBootstrap(code)
	if err != nil {
		return Archive{}, err
	}
	dir := b.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return Archive{}, fmt.Errorf("lambda archive cache: %w", err)
		}
		dir = filepath.Join(base, "jit-runners", "lambda")
	}
	return WriteArchive(dir, zipped)
}

func moduleHint(stderr string) string {
	if strings.Contains(stderr, "no required module provides package") || strings.Contains(stderr, "is not in std") {
		return "(the program's module must require github.com/jit-runners/jit-runners, which provides the Lambdas; see docs/stack.md)"
	}
	return ""
}

// zipTime is the modification time of every archive entry: the earliest a
// zip can hold, so it never depends on the build.
var zipTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// ZipBootstrap returns a zip holding one executable entry, "bootstrap",
// with a fixed time and mode: the same code always gives the same bytes.
func ZipBootstrap(code []byte) ([]byte, error) {
	return zipFiles(map[string][]byte{"bootstrap": code})
}

// zipFiles zips files in name order with fixed times and 0755 modes.
func zipFiles(files map[string][]byte) ([]byte, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, n := range names {
		h := &zip.FileHeader{Name: n, Method: zip.Deflate, Modified: zipTime}
		h.SetMode(0o755)
		f, err := w.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := f.Write(files[n]); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive stores zipped in dir as <sha256>.zip (unless it is there
// already) and returns it.
func WriteArchive(dir string, zipped []byte) (Archive, error) {
	sum := sha256.Sum256(zipped)
	a := Archive{SHA256: hex.EncodeToString(sum[:])}
	a.Path = filepath.Join(dir, a.SHA256+".zip")
	if existing, err := os.ReadFile(a.Path); err == nil && bytes.Equal(existing, zipped) {
		return a, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Archive{}, err
	}
	f, err := os.CreateTemp(dir, ".tmp-*.zip")
	if err != nil {
		return Archive{}, err
	}
	_, werr := f.Write(zipped)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		_ = os.Remove(f.Name())
		return Archive{}, fmt.Errorf("write %s: %w", a.Path, firstErr(werr, cerr))
	}
	if err := os.Rename(f.Name(), a.Path); err != nil {
		_ = os.Remove(f.Name())
		return Archive{}, err
	}
	return a, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Package packer holds the Packer template of the pre-baked runner AMI and its
// provisioning scripts, embedded so the stack can build the AMI as a dependent
// resource: Hash gives the trigger that changes whenever the template, a
// script or a variable changes, and WriteTo puts the files where `packer
// build` reads them.
package packer

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// FS holds the template (*.pkr.hcl) and the provisioning scripts
// (scripts/*.sh), at the same relative paths as in the repository.
//
//go:embed *.pkr.hcl scripts/*.sh
var FS embed.FS

// files returns the paths of every file in fsys, sorted.
func files(fsys fs.FS) ([]string, error) {
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("packer: listing files: %w", err)
	}
	sort.Strings(paths)
	return paths, nil
}

// Hash returns the hex SHA-256 of every embedded file (path and contents, in
// path order) and of vars (name and value, in name order), the Packer
// variables a build is run with. Equal inputs give equal hashes; a change to
// any file, variable name or value gives a different one. Each field is
// length-prefixed, so no two different inputs encode the same.
func Hash(vars map[string]string) (string, error) {
	return hashFS(FS, vars)
}

func hashFS(fsys fs.FS, vars map[string]string) (string, error) {
	paths, err := files(fsys)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s;", len(s), s) }
	for _, p := range paths {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return "", fmt.Errorf("packer: reading %s: %w", p, err)
		}
		field("file")
		field(p)
		field(string(b))
	}
	names := make([]string, 0, len(vars))
	for name := range vars {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		field("var")
		field(name)
		field(vars[name])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteTo writes every embedded file under dir at its relative path (dir and
// subdirectories are created as needed; existing files are overwritten, other
// files are left alone), so that `packer build dir` builds the AMI. Scripts
// are made executable.
func WriteTo(dir string) error {
	paths, err := files(FS)
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := writeFile(dir, p); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dir, p string) error {
	src, err := FS.Open(p)
	if err != nil {
		return fmt.Errorf("packer: opening embedded %s: %w", p, err)
	}
	defer func() { _ = src.Close() }() // read-only: nothing to lose
	dst := filepath.Join(dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	mode := os.FileMode(0o644)
	if strings.HasSuffix(path.Base(p), ".sh") {
		mode = 0o755
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		_ = f.Close() // the copy error is the one to report
		return fmt.Errorf("packer: writing %s: %w", dst, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("packer: writing %s: %w", dst, err)
	}
	// OpenFile applies the mode only to new files (and through the umask).
	if err := os.Chmod(dst, mode); err != nil {
		return fmt.Errorf("packer: %w", err)
	}
	return nil
}

package sandbox

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// secretSet holds the secret values the sandbox knows of, to check that no
// process logged one.
type secretSet struct {
	mu     sync.Mutex
	values map[string]bool
}

func newSecretSet() *secretSet { return &secretSet{values: map[string]bool{}} }

func (s *secretSet) add(v string) {
	if len(v) < 8 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[v] = true
}

// addPEM adds a PEM key and each line of its body, so a key logged in
// pieces is found too.
func (s *secretSet) addPEM(pem []byte) {
	s.add(strings.TrimSpace(string(pem)))
	for _, line := range strings.Split(string(pem), "\n") {
		if line = strings.TrimSpace(line); len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			s.add(line)
		}
	}
}

func (s *secretSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.values))
	for v := range s.values {
		out = append(out, v)
	}
	return out
}

// secretPatterns find credentials the sandbox never sees: installation
// tokens, App JWTs (RS256 header) and private key blocks.
var secretPatterns = regexp.MustCompile(`ghs_[A-Za-z0-9]{30,}|eyJhbGciOiJSUzI1NiIs[A-Za-z0-9_-]*|-----BEGIN [A-Z ]*PRIVATE KEY-----`)

// Leak is a secret found in a log line.
type Leak struct {
	File string `json:"file"`
	Line int    `json:"line"`
	What string `json:"what"`
}

// FindLeaks scans text line by line for the secrets and the credential
// patterns. skip, when set, exempts lines (the ready line, which prints a
// generated webhook secret by design).
func FindLeaks(name, text string, secrets []string, skip func(line string) bool) []Leak {
	var out []Leak
	for i, line := range strings.Split(text, "\n") {
		if skip != nil && skip(line) {
			continue
		}
		if m := secretPatterns.FindString(line); m != "" {
			out = append(out, Leak{File: name, Line: i + 1, What: "credential pattern " + m[:min(len(m), 12)] + "..."})
			continue
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				out = append(out, Leak{File: name, Line: i + 1, What: "a known secret value"})
				break
			}
		}
	}
	return out
}

// ScanLogs scans every file in the log dir (the Lambdas', moto's) for
// secrets.
func (s *Sandbox) ScanLogs() []Leak {
	secrets := s.secrets.list()
	var out []Leak
	_ = filepath.WalkDir(s.logDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(s.logDir, path)
		out = append(out, FindLeaks(rel, string(b), secrets, nil)...)
		return nil
	})
	return out
}

package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/config"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"
)

// StackConfig returns the configuration a `pulumi up` of the stack file at
// stackPath would pass to the program of the project at projectPath: the
// stack's values (plaintext only: a sample stack file holds no encrypted
// values), then the project's defaults for every key the stack leaves out.
// Keys the project declares `secret: true` are returned in secret, as the
// CLI marks values set with --secret.
func StackConfig(projectPath, stackPath string) (map[string]string, []string, error) {
	proj, err := workspace.LoadProject(projectPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", projectPath, err)
	}
	st, err := workspace.LoadProjectStack(diag.DefaultSink(io.Discard, io.Discard, diag.FormatOptions{Color: colors.Never}), proj, stackPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", stackPath, err)
	}
	values, err := st.Config.Decrypt(config.NopDecrypter)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w (a sample stack file holds plaintext values only)", stackPath, err)
	}
	out := map[string]string{}
	for k, v := range values {
		out[k.String()] = v
	}
	var secret []string
	for name, t := range proj.Config {
		key, err := config.ParseKey(proj.Name.String() + ":" + name)
		if err != nil {
			return nil, nil, err
		}
		if t.Secret {
			secret = append(secret, key.String())
		}
		if _, set := out[key.String()]; set || t.Default == nil {
			continue
		}
		v, err := defaultValue(t.Default)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: default of %s: %w", projectPath, key, err)
		}
		out[key.String()] = v
	}
	sort.Strings(secret)
	return out, secret, nil
}

// defaultValue encodes a project default like the CLI: scalars as text,
// lists and objects as JSON.
func defaultValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool, int, int64, float64:
		return fmt.Sprint(v), nil
	}
	s, err := workspace.SimplifyMarshalledValue(v)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(s)
	return string(b), err
}

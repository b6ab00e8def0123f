package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
)

// KeyCheck tunes CheckKeys.
type KeyCheck struct {
	// Kinds also checks each value's kind against its field's type: an
	// object, a list, a string, an integer, a number, true or false.
	Kinds bool
	// NumberAsString reports the string types that may hold a whole number
	// (an account id that YAML reads as a number); nil: none.
	NumberAsString func(reflect.Type) bool
}

// CheckKeys walks doc (a document decoded generically, from JSON or YAML)
// against t and returns every problem in key order, each a *KeyError naming
// its key by path ("profiles.gpu.instanceTypes[0]"). Every key must be a
// field's JSON name exactly: encoding/json matches names without regard to
// case, so DisallowUnknownFields alone would accept "appID" for "appId".
// The runtime's JITR_CONFIG and the stack's configuration are both checked
// with it.
func CheckKeys(doc any, t reflect.Type, path string, c KeyCheck) []*KeyError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if doc == nil {
		return nil
	}
	kindErr := func(want string) []*KeyError {
		if !c.Kinds {
			return nil // the typed decode reports it
		}
		return []*KeyError{{Key: path, Reason: fmt.Sprintf("must be %s, got %s", want, describe(doc))}}
	}
	var out []*KeyError
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return kindErr("an object")
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			if name := JSONName(t.Field(i)); name != "" && name != "-" {
				fields[name] = t.Field(i).Type
			}
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			ft, ok := fields[k]
			if !ok {
				out = append(out, &KeyError{Key: KeyPath(path, k), Reason: "unknown key" + Suggest(k, fields)})
				continue
			}
			out = append(out, CheckKeys(obj[k], ft, KeyPath(path, k), c)...)
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return kindErr("an object")
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			out = append(out, CheckKeys(obj[k], t.Elem(), KeyPath(path, k), c)...)
		}
	case reflect.Slice:
		arr, ok := doc.([]any)
		if !ok {
			return kindErr("a list")
		}
		for i, v := range arr {
			out = append(out, CheckKeys(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), c)...)
		}
	case reflect.String:
		if n, ok := number(doc); ok && c.NumberAsString != nil && c.NumberAsString(t) && n == math.Trunc(n) && n >= 0 && n < 1e12 {
			return nil
		}
		if _, ok := doc.(string); !ok {
			return kindErr("a string (set numbers and booleans with --type string)")
		}
	case reflect.Int, reflect.Int64:
		if n, ok := number(doc); !ok || n != math.Trunc(n) {
			return kindErr("an integer")
		}
	case reflect.Float64:
		if _, ok := number(doc); !ok {
			return kindErr("a number")
		}
	case reflect.Bool:
		if _, ok := doc.(bool); !ok {
			return kindErr("true or false")
		}
	}
	return out
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	}
	return 0, false
}

func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprintf("%t", v)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprint(v)
}

// JSONName is the key a struct field has in a document (its json tag's
// name).
func JSONName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// KeyPath names key inside path the way KeyError and `pulumi config set
// --path` do ("profiles.gpu").
func KeyPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Suggest returns " (did you mean "X"?)" when fields (JSON names) holds k
// spelled with other letter cases, else "".
func Suggest(k string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return ""
}

// strictKeys decodes data generically and checks its keys against Config;
// it reports the first unknown key (kinds are the typed decode's to
// report, with the document's own spelling).
func strictKeys(data []byte) error {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil // the typed decode reports syntax errors with context
	}
	if problems := CheckKeys(doc, reflect.TypeOf(Config{}), "", KeyCheck{}); len(problems) > 0 {
		return problems[0]
	}
	return nil
}

// kindProblems decodes data generically and returns the values whose kind
// does not fit Config, each named by its whole path.
func kindProblems(data []byte) []*KeyError {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil
	}
	return CheckKeys(doc, reflect.TypeOf(Config{}), "", KeyCheck{Kinds: true})
}

package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// checkKeys walks the decoded document against t and reports the first key
// that t does not define. encoding/json matches field names without regard to
// case, so DisallowUnknownFields alone would accept "appID" for "appId"; this
// check is exact and names the key by its path.
func checkKeys(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil // type errors are reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				return &KeyError{Key: KeyPath(path, k), Reason: "unknown key" + Suggest(k, fields)}
			}
			if err := checkKeys(obj[k], ft, KeyPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := checkKeys(obj[k], t.Elem(), KeyPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		arr, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, v := range arr {
			if err := checkKeys(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
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

// strictKeys decodes data generically and checks its keys against Config.
func strictKeys(data []byte) error {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil // the typed decode reports syntax errors with context
	}
	return checkKeys(doc, reflect.TypeOf(Config{}), "")
}

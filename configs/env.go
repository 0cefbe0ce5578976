package configs

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// envPrefix starts the name of every environment variable Load reads.
const envPrefix = "PARLEY_"

// isDuration reports whether t is time.Duration.
func isDuration(t reflect.Type) bool {
	return t == reflect.TypeFor[time.Duration]()
}

// envField is one scalar Config field reachable from the environment.
type envField struct {
	name  string        // environment variable, e.g. PARLEY_NATS_URL
	value reflect.Value // settable field inside the Config
}

// envFields lists, in declaration order, every string, int, bool and
// time.Duration field of cfg and its nested structs with the environment
// variable that sets it: envPrefix plus the YAML path upper-cased and joined
// with "_". Slices (Widgets) and pointers are not reachable.
func envFields(cfg *Config) []envField {
	var out []envField
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" || !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			env := prefix + strings.ToUpper(name)
			switch {
			case isDuration(f.Type):
				out = append(out, envField{env, fv})
			case f.Type.Kind() == reflect.Struct:
				walk(fv, env+"_")
			case f.Type.Kind() == reflect.String, f.Type.Kind() == reflect.Int, f.Type.Kind() == reflect.Int64,
				f.Type.Kind() == reflect.Float64, f.Type.Kind() == reflect.Bool:
				out = append(out, envField{env, fv})
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), envPrefix)
	return out
}

// yamlName returns the YAML key of a struct field, or "" when the field is
// not decoded from YAML.
func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch tag {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return tag
}

// applyEnv overrides cfg's fields from the PARLEY_* variables that getenv
// reports as set. A set but empty variable clears a string field; for other
// types it is an error. All bad variables are reported together.
func applyEnv(cfg *Config, getenv func(string) (string, bool)) error {
	var errs []error
	for _, f := range envFields(cfg) {
		raw, ok := getenv(f.name)
		if !ok {
			continue
		}
		if err := setScalar(f.value, raw); err != nil {
			errs = append(errs, fmt.Errorf("%w %s=%q: %s", ErrEnv, f.name, raw, err))
		}
	}
	return errors.Join(errs...)
}

// setScalar parses s into the string, int, bool or time.Duration value v.
// Strings are stored exactly as given; surrounding spaces are ignored for
// the other types.
func setScalar(v reflect.Value, s string) error {
	if v.Kind() != reflect.String {
		s = strings.TrimSpace(s)
	}
	if tu, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return tu.UnmarshalText([]byte(s))
	}
	switch {
	case isDuration(v.Type()):
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("want a duration such as 500ms, 2s, 20m or 24h")
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int, v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return errors.New("want an integer")
		}
		v.SetInt(n)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return errors.New("want a number")
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported field type %s", v.Type())
	}
	return nil
}

package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzLoadYAML(f *testing.F) {
	if example, err := os.ReadFile("parley.example.yaml"); err == nil {
		f.Add(example)
	}
	for _, seed := range []string{
		"",
		"listen: 127.0.0.1:1\n",
		"nats: {bogus: 1}\n",
		"nats: {replicas: many}\n",
		"widgets: [{public_key: pk_x, allowed_origins: ['https://A.example:*']}]\n",
		"widgets:\n",
		"a: &a [*a, *a]\nb: *a\n",
		"listen: a\n---\nlisten: b\n",
		"sessions: {ttl: -5h}\n",
		"? [a]\n: b\n",
		"!!binary aGVsbG8=\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadWith(path, nil, nil)
		if err != nil {
			if !errors.Is(err, ErrFile) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load returned a config that does not validate: %v", err)
		}
	})
}

func FuzzCheckOrigin(f *testing.F) {
	for _, seed := range []string{
		"http://localhost:*", "https://example.com:8443", "http://[::1]:3000",
		"https://example.com/", "https://*.example.com", "javascript:x", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, origin string) {
		if checkOrigin(origin) != "" {
			return
		}
		// An accepted origin is a bare scheme://host[:port|:*].
		lower := strings.ToLower(origin)
		rest, ok := strings.CutPrefix(lower, "https://")
		if !ok {
			rest, ok = strings.CutPrefix(lower, "http://")
		}
		if !ok || rest == "" || strings.ContainsAny(rest, "/?#@ %\\") {
			t.Fatalf("accepted %q", origin)
		}
	})
}

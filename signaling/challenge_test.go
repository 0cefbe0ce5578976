package signaling

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	testSigningKey = []byte("0123456789abcdef0123456789abcdef")
	testNow        = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

const (
	testWidget = "pk_live_1"
	testOrigin = "https://shop.example"
	testIP     = "198.51.100.7"
	testTTL    = 2 * time.Minute
)

// claimsOf decodes the payload of a token without checking it.
func claimsOf(t *testing.T, token string) challengeClaims {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", token, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var cl challengeClaims
	if err := json.Unmarshal(raw, &cl); err != nil {
		t.Fatal(err)
	}
	return cl
}

// encodeClaims builds the payload part for claims.
func encodeClaims(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestChallengeMintVerify(t *testing.T) {
	t.Parallel()
	c := newChallenger(testSigningKey, testTTL)
	token := c.mint(testWidget, testOrigin, testIP, testNow)
	if !strings.HasPrefix(token, "v1.") || strings.Count(token, ".") != 2 {
		t.Fatalf("token %q is not v1.<payload>.<mac>", token)
	}
	cl := claimsOf(t, token)
	if cl.Widget != testWidget || cl.Origin != testOrigin || cl.Expires != testNow.Add(testTTL).Unix() {
		t.Fatalf("claims %+v", cl)
	}
	if nonce, err := base64.RawURLEncoding.DecodeString(cl.Nonce); err != nil || len(nonce) != 16 {
		t.Fatalf("nonce %q: %v", cl.Nonce, err)
	}
	for _, at := range []time.Time{testNow, testNow.Add(time.Second), testNow.Add(testTTL), testNow.Add(testTTL + 999*time.Millisecond)} {
		nonce, err := c.verify(token, testWidget, testOrigin, testIP, at)
		if err != nil {
			t.Fatalf("verify at %v: %v", at.Sub(testNow), err)
		}
		if nonce != cl.Nonce {
			t.Fatalf("nonce %q, want %q", nonce, cl.Nonce)
		}
	}
	// Every mint has its own nonce (single use is the broker's job).
	other := c.mint(testWidget, testOrigin, testIP, testNow)
	if other == token || claimsOf(t, other).Nonce == cl.Nonce {
		t.Fatal("two mints share a nonce")
	}
}

func TestChallengeVerifyRejects(t *testing.T) {
	t.Parallel()
	c := newChallenger(testSigningKey, testTTL)
	token := c.mint(testWidget, testOrigin, testIP, testNow)
	parts := strings.Split(token, ".")
	payload, mac := parts[0+1], parts[2]
	cl := claimsOf(t, token)

	// signed builds a token with a valid MAC around any payload.
	signed := func(payload string) string { return "v1." + payload + "." + c.mac(payload) }
	withClaims := func(f func(*challengeClaims)) string {
		cl := cl
		f(&cl)
		return signed(encodeClaims(t, cl))
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	otherKey := newChallenger([]byte("another signing key of 32 bytes!"), testTTL)

	tests := []struct {
		name           string
		token          string
		widget, origin string
		now            time.Time
		reason         string
	}{
		{"tampered payload", "v1." + encodeClaims(t, challengeClaims{Widget: "pk_other", Origin: testOrigin, Nonce: cl.Nonce, Expires: cl.Expires}) + "." + mac,
			"pk_other", testOrigin, testNow, "bad signature"},
		{"payload later expiry", "v1." + encodeClaims(t, challengeClaims{Widget: testWidget, Origin: testOrigin, Nonce: cl.Nonce, Expires: cl.Expires + 3600}) + "." + mac,
			testWidget, testOrigin, testNow, "bad signature"},
		{"payload byte flipped", "v1." + flip(payload, 5) + "." + mac, testWidget, testOrigin, testNow, "bad signature"},
		{"mac byte flipped", "v1." + payload + "." + flip(mac, 0), testWidget, testOrigin, testNow, "bad signature"},
		{"mac last byte flipped", "v1." + payload + "." + flip(mac, len(mac)-1), testWidget, testOrigin, testNow, "bad signature"},
		{"mac truncated", "v1." + payload + "." + mac[:len(mac)-1], testWidget, testOrigin, testNow, "bad signature"},
		{"mac empty", "v1." + payload + ".", testWidget, testOrigin, testNow, "bad signature"},
		{"mac padded", token + "=", testWidget, testOrigin, testNow, "bad signature"},
		{"mac of another key", "v1." + payload + "." + otherKey.mac(payload), testWidget, testOrigin, testNow, "bad signature"},
		{"minted under another key", otherKey.mint(testWidget, testOrigin, testIP, testNow), testWidget, testOrigin, testNow, "bad signature"},
		{"wrong version", "v2." + payload + "." + mac, testWidget, testOrigin, testNow, "malformed"},
		{"upper case version", "V1." + payload + "." + mac, testWidget, testOrigin, testNow, "malformed"},
		{"no version", payload + "." + mac, testWidget, testOrigin, testNow, "malformed"},
		{"other widget", token, "pk_other", testOrigin, testNow, "another widget"},
		{"empty widget", token, "", testOrigin, testNow, "another widget"},
		{"other origin", token, testWidget, "https://evil.example", testNow, "another origin"},
		{"other origin port", token, testWidget, testOrigin + ":443", testNow, "another origin"},
		{"origin case", token, testWidget, strings.ToUpper(testOrigin), testNow, "another origin"},
		{"other client IP", withClaims(func(c *challengeClaims) { c.IP = "203.0.113.9" }), testWidget, testOrigin, testNow, "another client address"},
		{"expired", token, testWidget, testOrigin, testNow.Add(testTTL + time.Second), "expired"},
		{"long expired", token, testWidget, testOrigin, testNow.Add(24 * time.Hour), "expired"},
		{"minted in the past", c.mint(testWidget, testOrigin, testIP, testNow.Add(-testTTL-time.Minute)), testWidget, testOrigin, testNow, "expired"},
		{"empty", "", testWidget, testOrigin, testNow, "malformed"},
		{"one part", "v1", testWidget, testOrigin, testNow, "malformed"},
		{"two parts", "v1." + payload, testWidget, testOrigin, testNow, "malformed"},
		{"four parts", token + ".x", testWidget, testOrigin, testNow, "malformed"},
		{"dots only", "..", testWidget, testOrigin, testNow, "malformed"},
		{"signed non-base64", signed("!!!not base64!!!"), testWidget, testOrigin, testNow, "malformed"},
		{"signed padded base64", signed(base64.URLEncoding.EncodeToString([]byte(`{"w":"xy"}`))), testWidget, testOrigin, testNow, "malformed"},
		{"signed non-JSON", signed(base64.RawURLEncoding.EncodeToString([]byte("not json"))), testWidget, testOrigin, testNow, "malformed"},
		{"signed JSON array", signed(base64.RawURLEncoding.EncodeToString([]byte(`[1,2]`))), testWidget, testOrigin, testNow, "malformed"},
		{"signed empty payload", signed(""), testWidget, testOrigin, testNow, "malformed"},
		{"signed without nonce", withClaims(func(c *challengeClaims) { c.Nonce = "" }), testWidget, testOrigin, testNow, "malformed"},
		{"signed without expiry", withClaims(func(c *challengeClaims) { c.Expires = 0 }), testWidget, testOrigin, testNow, "expired"},
		{"over-long", "v1." + strings.Repeat("A", 1100) + "." + mac, testWidget, testOrigin, testNow, "too long"},
		{"over-long but signed", c.mint(strings.Repeat("w", 1000), testOrigin, testIP, testNow), strings.Repeat("w", 1000), testOrigin, testNow, "too long"},
	}
	for _, tt := range tests {
		nonce, err := c.verify(tt.token, tt.widget, tt.origin, testIP, tt.now)
		if !errors.Is(err, ErrChallengeInvalid) {
			t.Errorf("%s: verify = %q, %v; want ErrChallengeInvalid", tt.name, nonce, err)
			continue
		}
		if nonce != "" {
			t.Errorf("%s: nonce %q returned with an error", tt.name, nonce)
		}
		if !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: error %q, want %q", tt.name, err, tt.reason)
		}
	}
}

func TestChallengeKeysAreIndependent(t *testing.T) {
	t.Parallel()
	keys := [][]byte{testSigningKey, []byte("k2"), {}, []byte("0123456789abcdef0123456789abcdeF")}
	for i, ki := range keys {
		ci := newChallenger(ki, testTTL)
		token := ci.mint(testWidget, testOrigin, testIP, testNow)
		for j, kj := range keys {
			_, err := newChallenger(kj, testTTL).verify(token, testWidget, testOrigin, testIP, testNow)
			if i == j && err != nil {
				t.Errorf("key %d does not verify its own token: %v", i, err)
			}
			if i != j && !errors.Is(err, ErrChallengeInvalid) {
				t.Errorf("key %d verifies a token of key %d", j, i)
			}
		}
	}
}

func FuzzChallengeVerify(f *testing.F) {
	c := newChallenger(testSigningKey, testTTL)
	good := c.mint(testWidget, testOrigin, testIP, testNow)
	f.Add(good)
	f.Add(c.mint(testWidget, testOrigin, testIP, testNow.Add(-time.Hour)))
	f.Add(c.mint("pk_other", testOrigin, testIP, testNow))
	f.Add(newChallenger([]byte("other"), testTTL).mint(testWidget, testOrigin, testIP, testNow))
	f.Add("")
	f.Add("v1..")
	f.Add("v1.e30.")
	f.Add(strings.Replace(good, "v1.", "v2.", 1))
	f.Add(good + good)
	f.Fuzz(func(t *testing.T, token string) {
		nonce, err := c.verify(token, testWidget, testOrigin, testIP, testNow)
		if err != nil {
			if !errors.Is(err, ErrChallengeInvalid) || nonce != "" {
				t.Fatalf("verify = %q, %v", nonce, err)
			}
			return
		}
		// Accepted: it must be exactly what mint produces for its claims
		// under this key (no forgery, no alternative encodings).
		parts := strings.Split(token, ".")
		raw, derr := base64.RawURLEncoding.DecodeString(parts[1])
		if derr != nil {
			t.Fatalf("accepted %q with an undecodable payload", token)
		}
		var cl challengeClaims
		if err := json.Unmarshal(raw, &cl); err != nil {
			t.Fatalf("accepted %q with bad claims", token)
		}
		canonical, _ := json.Marshal(cl)
		payload := base64.RawURLEncoding.EncodeToString(canonical)
		if token != challengeVersion+"."+payload+"."+c.mac(payload) {
			t.Fatalf("accepted %q, which mint would not produce", token)
		}
		if cl.Widget != testWidget || cl.Origin != testOrigin || cl.Nonce != nonce || cl.Expires < testNow.Unix() {
			t.Fatalf("accepted %q with claims %+v", token, cl)
		}
	})
}

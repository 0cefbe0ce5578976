package signaling

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
)

var (
	idSecret  = []byte("0123456789abcdef0123456789abcdef") // a widget's identity secret
	idSigning = []byte("broker signing key, 32+ bytes long!!")
	idNow     = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) // unix 1748779200
)

const (
	idSkew   = 30 * time.Second
	idWidget = "wdg_shop"
)

// b64 is base64url without padding, as in JWS.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// SignJWT signs claims with method and key, the way a site's server does.
// It is exported (from a test file) so that the external tests of
// signaling_test sign with the same helper.
func SignJWT(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// secretOr is a test case's identity secret: idSecret unless the case sets
// one (an empty one included).
func secretOr(secret []byte) []byte {
	if secret == nil {
		return idSecret
	}
	return secret
}

// visitorClaims are valid claims of a site-signed visitor JWT, with changes
// (a nil value deletes the claim).
func visitorClaims(changes jwt.MapClaims) jwt.MapClaims {
	return withChanges(jwt.MapClaims{
		"sub":   "user-42",
		"email": "ada@example.com",
		"name":  "Ada Lovelace",
		"iat":   idNow.Unix(),
		"exp":   idNow.Add(5 * time.Minute).Unix(),
	}, changes)
}

// withChanges returns claims c with changes made: a nil value deletes the
// claim, any other sets it.
func withChanges(c jwt.MapClaims, changes map[string]any) jwt.MapClaims {
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// rawJWT builds header.payload.signature from JSON texts, signing with
// HS256 under key when key is set.
func rawJWT(header, payload string, key []byte) string {
	signing := b64(header) + "." + b64(payload)
	if key == nil {
		return signing + "."
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestVisitorJWTInterop(t *testing.T) {
	t.Parallel()
	// Minted outside Go (Python hmac + base64), as a site would with
	// jsonwebtoken: {"alg":"HS256","typ":"JWT"}, sub/email/name/iat/exp.
	const token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwiZW1haWwiOiJhZGFAZXhhbXBsZS5jb20iLCJuYW1lIjoiQWRhIiwiaWF0IjoxNzQ4Nzc5MjAwLCJleHAiOjE3NDg3Nzk1MDB9.6r9RomqSW-cZy_H-IozddGkk8XrMK9Zv_b4kSeAbyRo"
	c, err := verifyVisitorJWT(token, idSecret, idNow, idSkew)
	if err != nil {
		t.Fatal(err)
	}
	want := VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada", Method: "jwt"}
	if c != want {
		t.Fatalf("claims %+v, want %+v", c, want)
	}
	if _, err := verifyVisitorJWT(token, idSecret, idNow.Add(5*time.Minute), idSkew); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at exp: %v", err)
	}
}

func TestVisitorJWT(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hs := func(changes jwt.MapClaims) string {
		return SignJWT(t, jwt.SigningMethodHS256, visitorClaims(changes), idSecret)
	}
	valid := hs(nil)
	parts := strings.Split(valid, ".")
	validPayload, _ := base64.RawURLEncoding.DecodeString(parts[1])

	// The same signature bytes in a non-canonical base64 spelling (the
	// unused low bits of the last character set).
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	sig := parts[2]
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	malleable := parts[0] + "." + parts[1] + "." + sig[:len(sig)-1] + string(alphabet[last^1])

	tests := []struct {
		name   string
		token  string
		secret []byte
		want   error  // nil: accepted
		reason string // in the error
		claims VisitorClaims
	}{
		{name: "valid", token: valid, claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "sub and exp only", token: hs(jwt.MapClaims{"email": nil, "name": nil, "iat": nil}), claims: VisitorClaims{Subject: "user-42", Method: "jwt"}},
		{name: "all three contacts", token: hs(jwt.MapClaims{"phone": "+1 (555) 010-9999"}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Phone: "+1 (555) 010-9999", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "extra claims ignored", token: hs(jwt.MapClaims{"emailAddress": "x@evil.example", "phoneNumber": "123", "Email": "y@evil.example",
			"role": "admin", "method": "user_hash", "aud": "anything", "iss": "whoever", "jti": "j"}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "null and empty contacts are absent", token: hs(jwt.MapClaims{"email": "", "name": json.RawMessage("null")}),
			claims: VisitorClaims{Subject: "user-42", Method: "jwt"}},
		{name: "sub of 256 characters", token: hs(jwt.MapClaims{"sub": strings.Repeat("é", 256)}),
			claims: VisitorClaims{Subject: strings.Repeat("é", 256), Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "iat 29s ahead", token: hs(jwt.MapClaims{"iat": idNow.Add(29 * time.Second).Unix()}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "iat 30s ahead", token: hs(jwt.MapClaims{"iat": idNow.Add(30 * time.Second).Unix()}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "iat long ago", token: hs(jwt.MapClaims{"iat": idNow.Add(-24 * time.Hour).Unix()}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "nbf now", token: hs(jwt.MapClaims{"nbf": idNow.Unix()}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},
		{name: "fractional times", token: hs(jwt.MapClaims{"exp": float64(idNow.Unix()) + 1.5, "iat": float64(idNow.Unix()) + 30.9}),
			claims: VisitorClaims{Subject: "user-42", Email: "ada@example.com", Name: "Ada Lovelace", Method: "jwt"}},

		// Required claims.
		{name: "sub missing", token: hs(jwt.MapClaims{"sub": nil}), want: ErrInvalidVisitorToken, reason: "sub missing"},
		{name: "sub empty", token: hs(jwt.MapClaims{"sub": ""}), want: ErrInvalidVisitorToken, reason: "sub missing"},
		{name: "sub a number", token: hs(jwt.MapClaims{"sub": 42}), want: ErrInvalidVisitorToken, reason: "sub is not a string"},
		{name: "sub of 257 characters", token: hs(jwt.MapClaims{"sub": strings.Repeat("x", 257)}), want: ErrInvalidVisitorToken, reason: "sub must be at most 256"},
		{name: "sub with a newline", token: hs(jwt.MapClaims{"sub": "u\n42"}), want: ErrInvalidVisitorToken, reason: "control"},
		{name: "exp missing", token: hs(jwt.MapClaims{"exp": nil}), want: ErrInvalidVisitorToken, reason: "exp missing"},
		{name: "exp a string", token: hs(jwt.MapClaims{"exp": "tomorrow"}), want: ErrInvalidVisitorToken, reason: "not a number"},

		// Time.
		{name: "expired", token: hs(jwt.MapClaims{"exp": idNow.Add(-time.Second).Unix()}), want: ErrTokenExpired},
		{name: "exp now", token: hs(jwt.MapClaims{"exp": idNow.Unix()}), want: ErrTokenExpired},
		{name: "fractional exp truncates", token: hs(jwt.MapClaims{"exp": float64(idNow.Unix()) + 0.5}), want: ErrTokenExpired},
		{name: "expired, other secret", token: SignJWT(t, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"exp": idNow.Add(-time.Hour).Unix()}), []byte("another secret, 32 bytes long..!")),
			want: ErrInvalidVisitorToken, reason: "signature"},
		{name: "iat 31s ahead", token: hs(jwt.MapClaims{"iat": idNow.Add(31 * time.Second).Unix()}), want: ErrInvalidVisitorToken, reason: "iat is in the future"},
		{name: "iat a string", token: hs(jwt.MapClaims{"iat": "now"}), want: ErrInvalidVisitorToken, reason: "iat is not a number"},
		{name: "nbf ahead", token: hs(jwt.MapClaims{"nbf": idNow.Add(10 * time.Second).Unix()}), want: ErrInvalidVisitorToken, reason: "nbf"},

		// Algorithms and keys: HS256 under the widget secret, nothing else.
		{name: "alg none", token: rawJWT(`{"alg":"none","typ":"JWT"}`, string(validPayload), nil), want: ErrInvalidVisitorToken, reason: "alg none not allowed"},
		{name: "alg none with a signature", token: b64(`{"alg":"none"}`) + "." + parts[1] + "." + parts[2], want: ErrInvalidVisitorToken, reason: "alg none not allowed"},
		{name: "alg None", token: rawJWT(`{"alg":"None"}`, string(validPayload), nil), want: ErrInvalidVisitorToken, reason: "alg missing or unknown"},
		{name: "alg missing", token: rawJWT(`{"typ":"JWT"}`, string(validPayload), idSecret), want: ErrInvalidVisitorToken, reason: "alg missing"},
		{name: "RS256", token: SignJWT(t, jwt.SigningMethodRS256, visitorClaims(nil), rsaKey), want: ErrInvalidVisitorToken, reason: "alg RS256 not allowed"},
		{name: "ES256", token: SignJWT(t, jwt.SigningMethodES256, visitorClaims(nil), ecKey), want: ErrInvalidVisitorToken, reason: "alg ES256 not allowed"},
		{name: "HS512", token: SignJWT(t, jwt.SigningMethodHS512, visitorClaims(nil), idSecret), want: ErrInvalidVisitorToken, reason: "alg HS512 not allowed"},
		{name: "HS384", token: SignJWT(t, jwt.SigningMethodHS384, visitorClaims(nil), idSecret), want: ErrInvalidVisitorToken, reason: "alg HS384 not allowed"},
		{name: "wrong secret", token: SignJWT(t, jwt.SigningMethodHS256, visitorClaims(nil), []byte("another secret, 32 bytes long..!")), want: ErrInvalidVisitorToken, reason: "signature"},
		{name: "no secret configured", token: valid, secret: []byte{}, want: ErrInvalidVisitorToken, reason: "not enabled"},
		{name: "tampered payload", token: parts[0] + "." + b64(strings.Replace(string(validPayload), "user-42", "admin-1", 1)) + "." + parts[2], want: ErrInvalidVisitorToken, reason: "signature"},
		{name: "signature stripped", token: parts[0] + "." + parts[1] + ".", want: ErrInvalidVisitorToken, reason: "signature"},
		{name: "non-canonical signature encoding", token: malleable, want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "crit header", token: rawJWT(`{"alg":"HS256","crit":["exp"]}`, string(validPayload), idSecret), want: ErrInvalidVisitorToken, reason: "crit"},

		// Contacts: validated, never silently dropped.
		{name: "email without @", token: hs(jwt.MapClaims{"email": "ada.example.com"}), want: ErrInvalidVisitorToken, reason: "email must contain exactly one @"},
		{name: "email with two @", token: hs(jwt.MapClaims{"email": "ada@x@example.com"}), want: ErrInvalidVisitorToken, reason: "email"},
		{name: "email without local part", token: hs(jwt.MapClaims{"email": "@example.com"}), want: ErrInvalidVisitorToken, reason: "email"},
		{name: "email with a space", token: hs(jwt.MapClaims{"email": "ada @example.com"}), want: ErrInvalidVisitorToken, reason: "email"},
		{name: "email of 255 bytes", token: hs(jwt.MapClaims{"email": strings.Repeat("a", 243) + "@example.com"}), want: ErrInvalidVisitorToken, reason: "email must be at most 254"},
		{name: "email a number", token: hs(jwt.MapClaims{"email": 7}), want: ErrInvalidVisitorToken, reason: "email is not a string"},
		{name: "phone with letters", token: hs(jwt.MapClaims{"phone": "+1 555 CALL NOW"}), want: ErrInvalidVisitorToken, reason: "phone"},
		{name: "phone of 33 characters", token: hs(jwt.MapClaims{"phone": strings.Repeat("1", 33)}), want: ErrInvalidVisitorToken, reason: "phone must be at most 32"},
		{name: "phone without digits", token: hs(jwt.MapClaims{"phone": "()-+"}), want: ErrInvalidVisitorToken, reason: "phone"},
		{name: "name of 101 characters", token: hs(jwt.MapClaims{"name": strings.Repeat("n", 101)}), want: ErrInvalidVisitorToken, reason: "name must be at most 100"},
		{name: "name with a control character", token: hs(jwt.MapClaims{"name": "Ada\x1b[31m"}), want: ErrInvalidVisitorToken, reason: "name"},
		{name: "name with a right-to-left override", token: hs(jwt.MapClaims{"name": "Ada \u202eecalevol"}), want: ErrInvalidVisitorToken, reason: "name"},
		{name: "sub with a zero-width space", token: hs(jwt.MapClaims{"sub": "u\u200b42"}), want: ErrInvalidVisitorToken, reason: "format"},
		{name: "name with a line separator", token: hs(jwt.MapClaims{"name": "Ada\u2028Lovelace"}), want: ErrInvalidVisitorToken, reason: "name"},
		{name: "name an object", token: hs(jwt.MapClaims{"name": map[string]any{"first": "Ada"}}), want: ErrInvalidVisitorToken, reason: "name is not a string"},

		// Size and garbage.
		{name: "oversize", token: hs(jwt.MapClaims{"pad": strings.Repeat("p", 4096)}), want: ErrInvalidVisitorToken, reason: "over 4096 bytes"},
		{name: "empty", token: "", want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "one part", token: "abc", want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "two parts", token: parts[0] + "." + parts[1], want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "four parts", token: valid + ".x", want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "header not JSON", token: b64("hello") + "." + parts[1] + "." + parts[2], want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "payload an array", token: rawJWT(`{"alg":"HS256"}`, `[1,2]`, idSecret), want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "padded base64", token: parts[0] + "=." + parts[1] + "." + parts[2], want: ErrInvalidVisitorToken, reason: "malformed"},
		{name: "spaces", token: " " + valid, want: ErrInvalidVisitorToken, reason: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := verifyVisitorJWT(tt.token, secretOr(tt.secret), idNow, idSkew)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c != tt.claims {
					t.Fatalf("claims %+v, want %+v", c, tt.claims)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == ErrInvalidVisitorToken && errors.Is(err, ErrTokenExpired) {
				t.Fatalf("err = %v is both invalid and expired", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %q, want reason %q", err, tt.reason)
			}
			if c != (VisitorClaims{}) {
				t.Fatalf("claims %+v returned with an error", c)
			}
			if len(tt.token) > 20 && strings.Contains(err.Error(), tt.token[len(tt.token)-20:]) {
				t.Fatalf("error echoes the token: %v", err)
			}
		})
	}
}

func TestVisitorJWTSkew(t *testing.T) {
	t.Parallel()
	token := SignJWT(t, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"iat": idNow.Add(10 * time.Second).Unix()}), idSecret)
	for _, tt := range []struct {
		skew time.Duration
		ok   bool
	}{{0, false}, {-time.Minute, false}, {9 * time.Second, false}, {10 * time.Second, true}, {time.Minute, true}} {
		_, err := verifyVisitorJWT(token, idSecret, idNow, tt.skew)
		if (err == nil) != tt.ok {
			t.Errorf("skew %v: err = %v, want ok = %v", tt.skew, err, tt.ok)
		}
	}
	// Skew is for iat only: exp and nbf get no leeway.
	exp := SignJWT(t, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"exp": idNow.Add(-time.Second).Unix()}), idSecret)
	if _, err := verifyVisitorJWT(exp, idSecret, idNow, time.Hour); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("exp with a large skew: %v", err)
	}
	nbf := SignJWT(t, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"nbf": idNow.Add(time.Second).Unix()}), idSecret)
	if _, err := verifyVisitorJWT(nbf, idSecret, idNow, time.Hour); !errors.Is(err, ErrInvalidVisitorToken) {
		t.Errorf("nbf with a large skew: %v", err)
	}
}

func TestIdentityClaimsMap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		c    VisitorClaims
		want map[string]any
	}{
		{VisitorClaims{Subject: "u", Method: "jwt"}, map[string]any{"sub": "u", "method": "jwt"}},
		{VisitorClaims{Subject: "u", Email: "a@b.c", Phone: "+1 555", Name: "Ada", Method: "user_token"},
			map[string]any{"sub": "u", "email": "a@b.c", "phone": "+1 555", "name": "Ada", "method": "user_token"}},
		{VisitorClaims{Subject: "u", Name: "Ada", Method: "bootstrap"}, map[string]any{"sub": "u", "name": "Ada", "method": "bootstrap"}},
	}
	for _, tt := range tests {
		if got := tt.c.Map(); !maps.Equal(got, tt.want) {
			t.Errorf("%+v.Map() = %v, want %v", tt.c, got, tt.want)
		}
	}
	// The JSON form the session response carries.
	raw, _ := json.Marshal(VisitorClaims{Subject: "u", Method: "jwt"})
	if string(raw) != `{"sub":"u","method":"jwt"}` {
		t.Errorf("JSON %s", raw)
	}
}

func TestIdentityClaimsValidate(t *testing.T) {
	t.Parallel()
	if err := (VisitorClaims{Subject: "u", Email: "a@b.c", Phone: "+44 20 7946 0000", Name: "Ada"}).validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []VisitorClaims{{}, {Subject: "u", Email: "nope"}, {Subject: "u", Phone: "x"}, {Subject: "u", Name: "\x00"}, {Subject: "\xff"}} {
		if err := c.validate(); !errors.Is(err, broker.ErrValidation) {
			t.Errorf("%+v: err = %v, want ErrValidation", c, err)
		}
	}
}

func TestUserHash(t *testing.T) {
	t.Parallel()
	// Computed outside Go: hmac.new(secret, b"user-42", sha256).hexdigest().
	const known = "d6f70521973278294ce7b05519c3131f25d1710102d6c7e2842e84faa1ca1b01"
	other := hmac.New(sha256.New, idSecret)
	other.Write([]byte("user-43"))
	tests := []struct {
		name, userID, hash string
		secret             []byte
		reason             string // "" = accepted
	}{
		{name: "valid", userID: "user-42", hash: known},
		{name: "upper-case hex", userID: "user-42", hash: strings.ToUpper(known)},
		{name: "mixed-case hex", userID: "user-42", hash: strings.ToUpper(known[:10]) + known[10:]},
		{name: "another user's hash", userID: "user-42", hash: hex.EncodeToString(other.Sum(nil)), reason: "does not match"},
		{name: "user id differs in case", userID: "USER-42", hash: known, reason: "does not match"},
		{name: "one bit off", userID: "user-42", hash: known[:63] + "0", reason: "does not match"},
		{name: "other secret", userID: "user-42", hash: known, secret: []byte("another secret, 32 bytes long..!"), reason: "does not match"},
		{name: "too short", userID: "user-42", hash: known[:62], reason: "64 hex"},
		{name: "too long", userID: "user-42", hash: known + "00", reason: "64 hex"},
		{name: "odd length", userID: "user-42", hash: known[:63], reason: "64 hex"},
		{name: "not hex", userID: "user-42", hash: "zz" + known[2:], reason: "64 hex"},
		{name: "empty hash", userID: "user-42", hash: "", reason: "64 hex"},
		{name: "base64 of the MAC", userID: "user-42", hash: base64.StdEncoding.EncodeToString(mustHex(known)), reason: "64 hex"},
		{name: "empty user id", userID: "", hash: known, reason: "user_id missing"},
		{name: "user id of 257 characters", userID: strings.Repeat("u", 257), hash: known, reason: "at most 256"},
		{name: "user id with a control character", userID: "user-42\r\n", hash: known, reason: "control"},
		{name: "no secret configured", userID: "user-42", hash: known, secret: []byte{}, reason: "not enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := verifyUserHash(tt.userID, tt.hash, secretOr(tt.secret))
			if tt.reason == "" {
				if err != nil || c != (VisitorClaims{Subject: tt.userID, Method: "user_hash"}) {
					t.Fatalf("= %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidVisitorToken) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v, want ErrInvalidVisitorToken: …%s…", err, tt.reason)
			}
			if c != (VisitorClaims{}) {
				t.Fatalf("claims %+v with an error", c)
			}
		})
	}
	// Any user id up to 256 characters round-trips.
	long := strings.Repeat("ü", 256)
	m := hmac.New(sha256.New, idSecret)
	m.Write([]byte(long))
	if _, err := verifyUserHash(long, hex.EncodeToString(m.Sum(nil)), idSecret); err != nil {
		t.Fatal(err)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestTokenIssuerUserToken(t *testing.T) {
	t.Parallel()
	ti := newTokenIssuer(idSigning, 5*time.Minute, 10*time.Minute)
	in := VisitorClaims{Subject: "user-42", Email: "ada@example.com", Phone: "+1 555 0100", Name: "Ada", Method: "ignored"}
	token, exp, err := ti.mintUserToken(idWidget, in, idNow)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(idNow.Add(5 * time.Minute)) {
		t.Fatalf("exp %v", exp)
	}
	want := in
	want.Method = "user_token"
	for _, at := range []time.Time{idNow, idNow.Add(4*time.Minute + 59*time.Second)} {
		c, err := ti.verifyUserToken(token, idWidget, at)
		if err != nil || c != want {
			t.Fatalf("at +%v: %+v, %v", at.Sub(idNow), c, err)
		}
	}
	// The payload says what it is.
	var cl map[string]any
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err := json.Unmarshal(payload, &cl); err != nil {
		t.Fatal(err)
	}
	if cl["iss"] != "parley" || cl["typ"] != "user" || cl["sub"] != "user-42" {
		t.Fatalf("claims %v", cl)
	}
	if aud, _ := cl["aud"].([]any); len(aud) != 1 || aud[0] != idWidget {
		t.Fatalf("aud %v", cl["aud"])
	}

	refused := []struct {
		name   string
		token  string
		widget string
		at     time.Time
		want   error
		reason string
	}{
		{"expired", token, idWidget, idNow.Add(5 * time.Minute), ErrTokenExpired, "exp"},
		{"another widget", token, "wdg_other", idNow, ErrInvalidVisitorToken, "another widget"},
		{"no widget", token, "", idNow, ErrInvalidVisitorToken, "no widget"},
		{"another signing key", mustMintUser(t, newTokenIssuer([]byte("another broker's signing key!!!!!"), 0, 0), in), idWidget, idNow, ErrInvalidVisitorToken, "signature"},
		{"tampered payload", tamper(t, token, func(m map[string]any) { m["sub"] = "admin" }), idWidget, idNow, ErrInvalidVisitorToken, "signature"},
		{"tampered audience", tamper(t, token, func(m map[string]any) { m["aud"] = []string{"wdg_other"} }), "wdg_other", idNow, ErrInvalidVisitorToken, "signature"},
		{"a bootstrap token", mustMintBootstrap(t, ti, "", &in), idWidget, idNow, ErrInvalidVisitorToken, "signature"},
		{"kind mismatch under the right key", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u",
			"typ": "bootstrap", "exp": idNow.Add(time.Minute).Unix()}, ti.userKey), idWidget, idNow, ErrInvalidVisitorToken, "not a user token"},
		{"typ missing", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u",
			"exp": idNow.Add(time.Minute).Unix()}, ti.userKey), idWidget, idNow, ErrInvalidVisitorToken, "not a user token"},
		{"another issuer", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "evil", "aud": idWidget, "sub": "u", "typ": "user",
			"exp": idNow.Add(time.Minute).Unix()}, ti.userKey), idWidget, idNow, ErrInvalidVisitorToken, "issuer"},
		{"no exp", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u", "typ": "user"}, ti.userKey),
			idWidget, idNow, ErrInvalidVisitorToken, "exp missing"},
		{"invalid claims under the right key", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u",
			"typ": "user", "email": "bad", "exp": idNow.Add(time.Minute).Unix()}, ti.userKey), idWidget, idNow, ErrInvalidVisitorToken, "email"},
		{"signed with the signing key itself", SignJWT(t, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u",
			"typ": "user", "exp": idNow.Add(time.Minute).Unix()}, idSigning), idWidget, idNow, ErrInvalidVisitorToken, "signature"},
		{"site-signed visitor JWT", SignJWT(t, jwt.SigningMethodHS256, visitorClaims(nil), idSecret), idWidget, idNow, ErrInvalidVisitorToken, "signature"},
		{"alg none", rawJWT(`{"alg":"none"}`, `{"iss":"parley","aud":"`+idWidget+`","sub":"u","typ":"user","exp":9999999999}`, nil),
			idWidget, idNow, ErrInvalidVisitorToken, "alg none"},
		{"HS512 under the right key", SignJWT(t, jwt.SigningMethodHS512, jwt.MapClaims{"iss": "parley", "aud": idWidget, "sub": "u",
			"typ": "user", "exp": idNow.Add(time.Minute).Unix()}, ti.userKey), idWidget, idNow, ErrInvalidVisitorToken, "alg HS512"},
		{"oversize", strings.Repeat("a", 9000), idWidget, idNow, ErrInvalidVisitorToken, "over"},
		{"garbage", "not a token", idWidget, idNow, ErrInvalidVisitorToken, "malformed"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ti.verifyUserToken(tt.token, tt.widget, tt.at)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) || c != (VisitorClaims{}) {
				t.Fatalf("= %+v, %v; want %v (%s)", c, err, tt.want, tt.reason)
			}
			if tt.want == ErrInvalidVisitorToken && errors.Is(err, ErrTokenExpired) {
				t.Fatalf("err = %v is both invalid and expired", err)
			}
		})
	}
	// A user token is not a site-signed visitor JWT under any key we hold.
	for _, key := range [][]byte{idSigning, ti.bootstrapKey, idSecret} {
		if _, err := verifyVisitorJWT(token, key, idNow, idSkew); !errors.Is(err, ErrInvalidVisitorToken) {
			t.Errorf("user token accepted as a visitor JWT: %v", err)
		}
	}
}

func TestTokenIssuerMintValidation(t *testing.T) {
	t.Parallel()
	ti := newTokenIssuer(idSigning, 0, 0)
	if _, _, err := ti.mintUserToken("", VisitorClaims{Subject: "u"}, idNow); !errors.Is(err, broker.ErrValidation) {
		t.Errorf("no widget: %v", err)
	}
	for _, c := range []VisitorClaims{{}, {Subject: "u", Email: "no-at"}, {Subject: "u", Phone: "call me"}, {Subject: strings.Repeat("u", 257)}} {
		if _, _, err := ti.mintUserToken(idWidget, c, idNow); !errors.Is(err, broker.ErrValidation) {
			t.Errorf("user token for %+v: %v", c, err)
		}
		if _, _, _, err := ti.mintBootstrapToken(idWidget, "", &c, idNow); !errors.Is(err, broker.ErrValidation) {
			t.Errorf("bootstrap token for %+v: %v", c, err)
		}
	}
	if _, _, _, err := ti.mintBootstrapToken("", "", nil, idNow); !errors.Is(err, broker.ErrValidation) {
		t.Errorf("no widget: %v", err)
	}
	if _, _, _, err := ti.mintBootstrapToken(idWidget, "https://"+strings.Repeat("a", 600)+".example", nil, idNow); !errors.Is(err, broker.ErrValidation) {
		t.Errorf("long origin: %v", err)
	}
	// Default TTLs.
	_, exp, _ := ti.mintUserToken(idWidget, VisitorClaims{Subject: "u"}, idNow)
	_, _, bexp, _ := ti.mintBootstrapToken(idWidget, "", nil, idNow)
	if !exp.Equal(idNow.Add(5*time.Minute)) || !bexp.Equal(idNow.Add(10*time.Minute)) {
		t.Errorf("default TTLs: %v, %v", exp.Sub(idNow), bexp.Sub(idNow))
	}
	// The largest claims still make a token the verifier takes.
	big := VisitorClaims{Subject: strings.Repeat("<", 256), Email: strings.Repeat("<", 240) + "@example.com",
		Phone: strings.Repeat("(", 31) + "1", Name: strings.Repeat("\u2603", 100)} // 3 bytes each (U+2028, refused now, was 3 too)
	token, _, err := ti.mintUserToken(idWidget, big, idNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ti.verifyUserToken(token, idWidget, idNow); err != nil {
		t.Fatalf("largest user token (%d bytes): %v", len(token), err)
	}
	btoken, _, _, err := ti.mintBootstrapToken(idWidget, "https://"+strings.Repeat("a", 400)+".example", &big, idNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := ti.verifyBootstrapToken(btoken, idNow); err != nil {
		t.Fatalf("largest bootstrap token (%d bytes): %v", len(btoken), err)
	}
}

func TestTokenIssuerBootstrapToken(t *testing.T) {
	t.Parallel()
	ti := newTokenIssuer(idSigning, 5*time.Minute, 2*time.Minute)
	visitor := &VisitorClaims{Subject: "user-42", Email: "ada@example.com", Method: "user_token"}
	tests := []struct {
		name   string
		origin string
		c      *VisitorClaims
		want   *VisitorClaims
	}{
		{"guest, any origin", "", nil, nil},
		{"guest, one origin", "https://shop.example", nil, nil},
		{"visitor, any origin", "", visitor, &VisitorClaims{Subject: "user-42", Email: "ada@example.com", Method: "bootstrap"}},
		{"visitor, one origin", "https://shop.example:8443", visitor, &VisitorClaims{Subject: "user-42", Email: "ada@example.com", Method: "bootstrap"}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		token, jti, exp, err := ti.mintBootstrapToken(idWidget, tt.origin, tt.c, idNow)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if jti == "" || seen[jti] || !exp.Equal(idNow.Add(2*time.Minute)) {
			t.Fatalf("%s: jti %q (seen %v), exp %v", tt.name, jti, seen[jti], exp)
		}
		seen[jti] = true
		for _, at := range []time.Time{idNow, exp.Add(-time.Second)} {
			w, o, j, c, err := ti.verifyBootstrapToken(token, at)
			if err != nil {
				t.Fatalf("%s at +%v: %v", tt.name, at.Sub(idNow), err)
			}
			if w != idWidget || o != tt.origin || j != jti || (c == nil) != (tt.want == nil) || c != nil && *c != *tt.want {
				t.Fatalf("%s: %q %q %q %+v", tt.name, w, o, j, c)
			}
		}
		if _, _, _, _, err := ti.verifyBootstrapToken(token, exp); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("%s at exp: %v", tt.name, err)
		}
		// A bootstrap token is not a user token.
		if _, err := ti.verifyUserToken(token, idWidget, idNow); !errors.Is(err, ErrInvalidVisitorToken) {
			t.Fatalf("%s as a user token: %v", tt.name, err)
		}
	}
	if visitor.Method != "user_token" {
		t.Fatal("mint changed the caller's claims")
	}

	good, _, _, _ := ti.mintBootstrapToken(idWidget, "https://shop.example", nil, idNow)
	userToken, _, _ := ti.mintUserToken(idWidget, *visitor, idNow)
	claims := func(changes map[string]any) jwt.MapClaims {
		return withChanges(jwt.MapClaims{"iss": "parley", "aud": []string{idWidget}, "typ": "bootstrap", "jti": "j1", "exp": idNow.Add(time.Minute).Unix()}, changes)
	}
	refused := []struct {
		name   string
		token  string
		want   error
		reason string
	}{
		{"a user token", userToken, ErrBootstrapTokenInvalid, "signature"},
		{"another signing key", mustMintBootstrap(t, newTokenIssuer([]byte("another broker's signing key!!!!!"), 0, 0), "", nil), ErrBootstrapTokenInvalid, "signature"},
		{"tampered origin", tamper(t, good, func(m map[string]any) { m["origin"] = "https://evil.example" }), ErrBootstrapTokenInvalid, "signature"},
		{"tampered widget", tamper(t, good, func(m map[string]any) { m["aud"] = []string{"wdg_other"} }), ErrBootstrapTokenInvalid, "signature"},
		{"visitor added", tamper(t, good, func(m map[string]any) { m["sub"] = "admin" }), ErrBootstrapTokenInvalid, "signature"},
		{"kind mismatch under the right key", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"typ": "user"}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "not a bootstrap token"},
		{"jti missing", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"jti": nil}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "jti missing"},
		{"aud missing", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"aud": nil}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "aud"},
		{"two audiences", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"aud": []string{idWidget, "wdg_b"}}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "aud"},
		{"contacts without sub", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"email": "a@b.c"}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "sub missing"},
		{"nbf ahead", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"nbf": idNow.Add(time.Minute).Unix()}), ti.bootstrapKey), ErrBootstrapTokenInvalid, "nbf"},
		{"alg none", rawJWT(`{"alg":"none"}`, `{"iss":"parley","aud":"`+idWidget+`","typ":"bootstrap","jti":"j","exp":9999999999}`, nil), ErrBootstrapTokenInvalid, "alg none"},
		{"site-signed visitor JWT", SignJWT(t, jwt.SigningMethodHS256, visitorClaims(nil), idSecret), ErrBootstrapTokenInvalid, "signature"},
		{"empty", "", ErrBootstrapTokenInvalid, "malformed"},
		{"oversize", good + strings.Repeat("A", 9000), ErrBootstrapTokenInvalid, "over"},
		{"expired", SignJWT(t, jwt.SigningMethodHS256, claims(map[string]any{"exp": idNow.Add(-time.Second).Unix()}), ti.bootstrapKey), ErrTokenExpired, "exp"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, o, j, c, err := ti.verifyBootstrapToken(tt.token, idNow)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) || w != "" || o != "" || j != "" || c != nil {
				t.Fatalf("= %q %q %q %+v, %v; want %v (%s)", w, o, j, c, err, tt.want, tt.reason)
			}
			if tt.want == ErrBootstrapTokenInvalid && errors.Is(err, ErrTokenExpired) {
				t.Fatalf("err = %v is both invalid and expired", err)
			}
		})
	}
}

func mustMintUser(t testing.TB, ti *tokenIssuer, c VisitorClaims) string {
	t.Helper()
	token, _, err := ti.mintUserToken(idWidget, c, idNow)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func mustMintBootstrap(t testing.TB, ti *tokenIssuer, origin string, c *VisitorClaims) string {
	t.Helper()
	token, _, _, err := ti.mintBootstrapToken(idWidget, origin, c, idNow)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// tamper rewrites a token's payload and keeps its signature.
func tamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + parts[2]
}

// hs256Signed reports whether token is header.payload.sig with alg HS256
// and sig the canonical HMAC-SHA256 under key: an independent check of
// what the verifiers accept.
func hs256Signed(token string, key []byte) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	rawHeader, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return false
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(rawHeader, &header) != nil || header.Alg != "HS256" {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(parts[0] + "." + parts[1]))
	return parts[2] == base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func FuzzVisitorJWT(f *testing.F) {
	f.Add(SignJWT(f, jwt.SigningMethodHS256, visitorClaims(nil), idSecret))
	f.Add(SignJWT(f, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"exp": idNow.Add(-time.Hour).Unix()}), idSecret))
	f.Add(SignJWT(f, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"phone": "+1 555", "sub": 7}), idSecret))
	f.Add(SignJWT(f, jwt.SigningMethodHS512, visitorClaims(nil), idSecret))
	f.Add(SignJWT(f, jwt.SigningMethodHS256, visitorClaims(nil), []byte("wrong")))
	f.Add(rawJWT(`{"alg":"none"}`, `{"sub":"u","exp":9999999999}`, nil))
	f.Add(rawJWT(`{"alg":"HS256"}`, `{"sub":"u","exp":1e300,"iat":-1e300,"nbf":"x"}`, idSecret))
	f.Add(rawJWT(`{"alg":"HS256","crit":[]}`, `{"sub":"u","exp":9999999999}`, idSecret))
	f.Add("")
	f.Add("..")
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := verifyVisitorJWT(token, idSecret, idNow, idSkew)
		if err != nil {
			if !errors.Is(err, ErrInvalidVisitorToken) && !errors.Is(err, ErrTokenExpired) || c != (VisitorClaims{}) {
				t.Fatalf("verify(%q) = %+v, %v", token, c, err)
			}
			return
		}
		if !hs256Signed(token, idSecret) {
			t.Fatalf("accepted %q, which is not HS256-signed with the secret", token)
		}
		if len(token) > maxVisitorJWTBytes || c.Method != "jwt" || c.check() != nil {
			t.Fatalf("accepted %q with claims %+v", token, c)
		}
	})
}

func FuzzUserHash(f *testing.F) {
	f.Add("user-42", "d6f70521973278294ce7b05519c3131f25d1710102d6c7e2842e84faa1ca1b01")
	f.Add("user-42", "D6F70521973278294CE7B05519C3131F25D1710102D6C7E2842E84FAA1CA1B01")
	f.Add("", "")
	f.Add("u", "zz")
	f.Add(strings.Repeat("é", 257), "00")
	f.Fuzz(func(t *testing.T, userID, hash string) {
		c, err := verifyUserHash(userID, hash, idSecret)
		m := hmac.New(sha256.New, idSecret)
		m.Write([]byte(userID))
		want := hex.EncodeToString(m.Sum(nil))
		shouldAccept := strings.EqualFold(hash, want) && checkSubject(userID) == nil
		if shouldAccept != (err == nil) {
			t.Fatalf("verify(%q, %q) = %v, want accepted = %v", userID, hash, err, shouldAccept)
		}
		if err == nil && c != (VisitorClaims{Subject: userID, Method: "user_hash"}) {
			t.Fatalf("claims %+v", c)
		}
		if err != nil && (!errors.Is(err, ErrInvalidVisitorToken) || c != (VisitorClaims{})) {
			t.Fatalf("verify(%q, %q) = %+v, %v", userID, hash, c, err)
		}
	})
}

func FuzzBootstrapToken(f *testing.F) {
	ti := newTokenIssuer(idSigning, 0, 0)
	f.Add(mustMintBootstrap(f, ti, "https://shop.example", &VisitorClaims{Subject: "u", Name: "Ada"}))
	f.Add(mustMintBootstrap(f, ti, "", nil))
	f.Add(mustMintUser(f, ti, VisitorClaims{Subject: "u"}))
	f.Add(SignJWT(f, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "parley", "aud": "w", "typ": "bootstrap", "exp": 9999999999}, ti.bootstrapKey))
	f.Add(rawJWT(`{"alg":"none"}`, `{"iss":"parley","aud":"w","typ":"bootstrap","jti":"j","exp":9999999999}`, nil))
	f.Add("")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		w, o, j, c, err := ti.verifyBootstrapToken(token, idNow)
		if err != nil {
			if !errors.Is(err, ErrBootstrapTokenInvalid) && !errors.Is(err, ErrTokenExpired) || w != "" || o != "" || j != "" || c != nil {
				t.Fatalf("verify(%q) = %q %q %q %+v, %v", token, w, o, j, c, err)
			}
			return
		}
		if !hs256Signed(token, ti.bootstrapKey) {
			t.Fatalf("accepted %q, which is not signed with the bootstrap key", token)
		}
		if w == "" || j == "" || c != nil && (c.Method != "bootstrap" || c.check() != nil) {
			t.Fatalf("accepted %q: %q %q %q %+v", token, w, o, j, c)
		}
		if _, err := ti.verifyUserToken(token, w, idNow); err == nil {
			t.Fatalf("%q passes as both kinds", token)
		}
	})
}

func BenchmarkVerifyVisitorJWT(b *testing.B) {
	token := SignJWT(b, jwt.SigningMethodHS256, visitorClaims(jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}), idSecret)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyVisitorJWT(token, idSecret, time.Now(), idSkew); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUserHash(b *testing.B) {
	const hash = "d6f70521973278294ce7b05519c3131f25d1710102d6c7e2842e84faa1ca1b01"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifyUserHash("user-42", hash, idSecret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUserToken(b *testing.B) {
	ti := newTokenIssuer(idSigning, time.Hour, 0)
	token, _, err := ti.mintUserToken(idWidget, VisitorClaims{Subject: "user-42", Email: "ada@example.com"}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ti.verifyUserToken(token, idWidget, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The session challenge proves that POST /v1/sessions follows a resolve
// made from the same origin for the same widget, shortly before. It is
// "v1.<payload>.<mac>": base64url JSON claims and their HMAC-SHA256 under a
// key derived from the broker's signing key. Single use is enforced by the
// broker's nonce store.

const challengeVersion = "v1"

type challengeClaims struct {
	Widget  string `json:"w"`
	Origin  string `json:"o"`
	IP      string `json:"i"`
	Nonce   string `json:"n"`
	Expires int64  `json:"e"` // unix seconds
}

// challenger mints and verifies challenges.
type challenger struct {
	key []byte
	ttl time.Duration
}

func newChallenger(signingKey []byte, ttl time.Duration) *challenger {
	m := hmac.New(sha256.New, signingKey)
	m.Write([]byte("parley session challenge v1"))
	return &challenger{key: m.Sum(nil), ttl: ttl}
}

func (c *challenger) mac(payload string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(challengeVersion + "." + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// mint returns a challenge for widget, origin and client IP, valid for the
// TTL.
func (c *challenger) mint(widget, origin, ip string, now time.Time) string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce) // crypto/rand.Read does not fail on supported platforms
	claims := challengeClaims{Widget: widget, Origin: origin, IP: ip,
		Nonce: base64.RawURLEncoding.EncodeToString(nonce), Expires: now.Add(c.ttl).Unix()}
	raw, _ := json.Marshal(claims)
	payload := base64.RawURLEncoding.EncodeToString(raw)
	return challengeVersion + "." + payload + "." + c.mac(payload)
}

// verify checks a challenge's signature, binding (widget, origin, client
// IP) and expiry and returns its nonce, which the caller must then consume.
func (c *challenger) verify(token, widget, origin, ip string, now time.Time) (string, error) {
	if len(token) > 1024 {
		return "", fmt.Errorf("%w: too long", ErrChallengeInvalid)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != challengeVersion {
		return "", fmt.Errorf("%w: malformed", ErrChallengeInvalid)
	}
	if !hmac.Equal([]byte(c.mac(parts[1])), []byte(parts[2])) {
		return "", fmt.Errorf("%w: bad signature", ErrChallengeInvalid)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("%w: malformed", ErrChallengeInvalid)
	}
	var cl challengeClaims
	if err := json.Unmarshal(raw, &cl); err != nil {
		return "", fmt.Errorf("%w: malformed", ErrChallengeInvalid)
	}
	switch {
	case cl.Widget != widget:
		return "", fmt.Errorf("%w: issued for another widget", ErrChallengeInvalid)
	case cl.Origin != origin:
		return "", fmt.Errorf("%w: issued for another origin", ErrChallengeInvalid)
	case cl.IP != ip:
		return "", fmt.Errorf("%w: issued to another client address", ErrChallengeInvalid)
	case now.Unix() > cl.Expires:
		return "", fmt.Errorf("%w: expired", ErrChallengeInvalid)
	case cl.Nonce == "":
		return "", fmt.Errorf("%w: malformed", ErrChallengeInvalid)
	}
	return cl.Nonce, nil
}

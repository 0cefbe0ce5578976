package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/broker"
)

// Visitor identity: a site proves who its logged-in visitor is in one of
// four ways, and Parley keeps only what it verified.
//
//   - "jwt": an HS256 JWT the site signs with the widget's identity secret
//     (RFC 7519, RFC 7515; the rules of seed 001 §5).
//   - "user_hash": user_id plus hex(HMAC-SHA256(identity secret, user_id))
//     (seed 003).
//   - "user_token": a 5-minute token from POST /v1/user-tokens, which the
//     site's server calls with its secret key (seed 004).
//   - "bootstrap": the claims inside a bootstrap token from POST /v1/tokens.
//
// User and bootstrap tokens are HS256 JWTs minted here, each kind under its
// own key derived from the broker's signing key, so one kind can never pass
// as the other, nor as a site-signed visitor JWT.

// Identity methods, the Method of VisitorClaims.
const (
	methodJWT       = "jwt"
	methodUserHash  = "user_hash"
	methodUserToken = "user_token"
	methodBootstrap = "bootstrap"
)

// Bounds of identity input.
const (
	maxVisitorJWTBytes = 4 << 10 // a site-signed visitor JWT
	maxServerJWTBytes  = 8 << 10 // a user or bootstrap token (claims JSON-escaped at worst)
	maxSubjectChars    = 256
	maxEmailBytes      = 254 // RFC 5321 path limit
	maxPhoneChars      = 32
	maxNameChars       = 100
	maxTokenOrigin     = 512
	userHashHexLen     = 2 * sha256.Size
)

// VisitorClaims are verified facts about a visitor; never taken from the
// browser unverified.
type VisitorClaims struct {
	// Subject is the site's user id, 1..256 characters.
	Subject string `json:"sub"`
	// Email pre-fills the email capture; one '@', at most 254 bytes.
	Email string `json:"email,omitempty"`
	// Phone pre-fills the phone capture; at most 32 of "+0123456789 ()-".
	Phone string `json:"phone,omitempty"`
	// Name is for personalisation; at most 100 characters.
	Name string `json:"name,omitempty"`
	// Method is how the claims were verified: "jwt", "user_hash",
	// "user_token" or "bootstrap".
	Method string `json:"method"`
}

// Map returns the claims for the broker's session and agent dispatch: sub
// and method always, email, phone and name when set.
func (c VisitorClaims) Map() map[string]any {
	m := map[string]any{"sub": c.Subject, "method": c.Method}
	if c.Email != "" {
		m["email"] = c.Email
	}
	if c.Phone != "" {
		m["phone"] = c.Phone
	}
	if c.Name != "" {
		m["name"] = c.Name
	}
	return m
}

// validate checks claims a site's server sends (POST /v1/tokens, POST
// /v1/user-tokens): a broker.ErrValidation (422) naming the claim and rule.
func (c VisitorClaims) validate() error {
	if err := c.check(); err != nil {
		return fmt.Errorf("%w: %w", broker.ErrValidation, err)
	}
	return nil
}

// check validates the claims' values (not Method); the error names the
// claim and the rule.
func (c VisitorClaims) check() error {
	if err := checkSubject(c.Subject); err != nil {
		return fmt.Errorf("sub %w", err)
	}
	if c.Email != "" {
		if err := checkEmail(c.Email); err != nil {
			return fmt.Errorf("email %w", err)
		}
	}
	if c.Phone != "" {
		if err := checkPhone(c.Phone); err != nil {
			return fmt.Errorf("phone %w", err)
		}
	}
	if c.Name != "" {
		if err := checkText(c.Name, maxNameChars); err != nil {
			return fmt.Errorf("name %w", err)
		}
	}
	return nil
}

// checkSubject: 1..256 characters of UTF-8 text without control characters.
func checkSubject(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	return checkText(s, maxSubjectChars)
}

// checkText: valid UTF-8, at most maxChars characters, no control or
// format characters (broker.SafeName: they have no place in an id or a
// name, and would forge lines or reverse text in logs and dashboards).
func checkText(s string, maxChars int) error {
	if len(s) > 4*maxChars || !utf8.ValidString(s) {
		return fmt.Errorf("must be at most %d characters of UTF-8 text", maxChars)
	}
	if utf8.RuneCountInString(s) > maxChars {
		return fmt.Errorf("must be at most %d characters", maxChars)
	}
	if !broker.SafeName(s) {
		return errors.New("must not contain control or format characters")
	}
	return nil
}

// checkEmail is deliberately light: one '@' with text on both sides, at
// most 254 bytes, no spaces or control characters.
func checkEmail(s string) error {
	local, domain, ok := strings.Cut(s, "@")
	switch {
	case len(s) > maxEmailBytes:
		return fmt.Errorf("must be at most %d bytes", maxEmailBytes)
	case !ok || local == "" || domain == "" || strings.Contains(domain, "@"):
		return errors.New("must contain exactly one @ between a local part and a domain")
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return errors.New("must not contain spaces or control characters")
	}
	return nil
}

// checkPhone: at most 32 characters of "+0123456789 ()-", one digit at
// least.
func checkPhone(s string) error {
	if len(s) > maxPhoneChars {
		return fmt.Errorf("must be at most %d characters", maxPhoneChars)
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '+' || c == ' ' || c == '(' || c == ')' || c == '-':
		default:
			return errors.New(`must contain only digits, spaces and "+()-"`)
		}
	}
	if digits == 0 {
		return errors.New("must contain digits")
	}
	return nil
}

// verifyVisitorJWT verifies a site-signed visitor JWT (seed 001 §5): HS256
// only, under the widget's identity secret; sub (1..256 characters) and exp
// required, exp in the future and nbf in the past with no leeway, iat at
// most skew in the future. Of the other claims only email, phone and name
// are read, and one that is present but invalid makes the token invalid;
// null or "" counts as absent. Expired (and otherwise valid): ErrTokenExpired;
// anything else: ErrInvalidVisitorToken with the reason.
func verifyVisitorJWT(token string, secret []byte, now time.Time, skew time.Duration) (VisitorClaims, error) {
	if len(secret) == 0 {
		return VisitorClaims{}, fmt.Errorf("%w: visitor identity is not enabled for this widget", ErrInvalidVisitorToken)
	}
	if len(token) > maxVisitorJWTBytes {
		return VisitorClaims{}, fmt.Errorf("%w: over %d bytes", ErrInvalidVisitorToken, maxVisitorJWTBytes)
	}
	mc := jwt.MapClaims{}
	tok, err := hs256Parser(now).ParseWithClaims(token, mc, keyOf(secret))
	if err != nil {
		return VisitorClaims{}, jwtError(err, tok, ErrInvalidVisitorToken)
	}
	iat, err := mc.GetIssuedAt()
	switch {
	case err != nil:
		return VisitorClaims{}, fmt.Errorf("%w: iat is not a number", ErrInvalidVisitorToken)
	case iat != nil && iat.After(now.Add(max(skew, 0))):
		return VisitorClaims{}, fmt.Errorf("%w: iat is in the future", ErrInvalidVisitorToken)
	}
	var c VisitorClaims
	for _, f := range []struct {
		name string
		dst  *string
	}{{"sub", &c.Subject}, {"email", &c.Email}, {"phone", &c.Phone}, {"name", &c.Name}} {
		switch v := mc[f.name].(type) {
		case nil:
		case string:
			*f.dst = v
		default:
			return VisitorClaims{}, fmt.Errorf("%w: %s is not a string", ErrInvalidVisitorToken, f.name)
		}
	}
	if err := c.check(); err != nil {
		return VisitorClaims{}, fmt.Errorf("%w: %w", ErrInvalidVisitorToken, err)
	}
	c.Method = methodJWT
	return c, nil
}

// hs256Parser accepts HS256 only, requires exp, and judges time at now
// with no leeway (callers check iat themselves where they allow skew).
// Strict base64 refuses alternative encodings of the same signature.
func hs256Parser(now time.Time, opts ...jwt.ParserOption) *jwt.Parser {
	return jwt.NewParser(append([]jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	}, opts...)...)
}

// errCritical refuses JWS "crit" headers (RFC 7515 §4.1.11): no extension
// is understood here.
var errCritical = errors.New("crit header not supported")

// keyOf returns a key function giving key; it refuses "crit" headers.
func keyOf(key []byte) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errCritical
		}
		return key, nil
	}
}

// jwtError turns a jwt parse error into ErrTokenExpired (only reached once
// the signature verified) or invalid, the sentinel for everything else,
// with a reason that never echoes the token.
func jwtError(err error, tok *jwt.Token, invalid error) error {
	var reason string
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: exp is in the past", ErrTokenExpired)
	case errors.Is(err, jwt.ErrTokenMalformed):
		reason = "malformed"
	case errors.Is(err, errCritical):
		reason = "crit header not supported"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		reason = "alg missing or unknown"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		reason = "signature"
		if tok != nil && tok.Method != nil && tok.Method.Alg() != jwt.SigningMethodHS256.Alg() {
			reason = "alg " + tok.Method.Alg() + " not allowed (HS256 only)" // a registered name: safe to show
		}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		reason = "exp missing"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = "nbf is in the future"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		reason = "issued for another widget"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		reason = "issuer"
	case errors.Is(err, jwt.ErrInvalidType):
		reason = "a time claim is not a number"
	default:
		reason = "invalid"
	}
	return fmt.Errorf("%w: %s", invalid, reason)
}

// verifyUserHash verifies seed 003's user_hash = hex(HMAC-SHA256(key =
// identity secret, msg = user_id)), in constant time; upper- and lower-case
// hex are both accepted. user_id is 1..256 characters.
func verifyUserHash(userID, userHash string, secret []byte) (VisitorClaims, error) {
	if len(secret) == 0 {
		return VisitorClaims{}, fmt.Errorf("%w: visitor identity is not enabled for this widget", ErrInvalidVisitorToken)
	}
	if err := checkSubject(userID); err != nil {
		return VisitorClaims{}, fmt.Errorf("%w: user_id %w", ErrInvalidVisitorToken, err)
	}
	var got [sha256.Size]byte
	if len(userHash) != userHashHexLen {
		return VisitorClaims{}, fmt.Errorf("%w: user_hash must be %d hex characters", ErrInvalidVisitorToken, userHashHexLen)
	}
	if _, err := hex.Decode(got[:], []byte(userHash)); err != nil {
		return VisitorClaims{}, fmt.Errorf("%w: user_hash must be %d hex characters", ErrInvalidVisitorToken, userHashHexLen)
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(userID))
	if !hmac.Equal(m.Sum(nil), got[:]) {
		return VisitorClaims{}, fmt.Errorf("%w: user_hash does not match user_id", ErrInvalidVisitorToken)
	}
	return VisitorClaims{Subject: userID, Method: methodUserHash}, nil
}

// Server-minted tokens.
const (
	tokenIssuerName    = "parley"
	tokenTypeUser      = "user"
	tokenTypeBootstrap = "bootstrap"
	defaultUserTTL     = 5 * time.Minute
	defaultBootTTL     = 10 * time.Minute
)

// serverClaims are the claims of user and bootstrap tokens. Sub, email,
// phone and name are the visitor's (a bootstrap token may have none);
// origin binds a bootstrap token to one page origin.
type serverClaims struct {
	jwt.RegisteredClaims
	Type   string `json:"typ"`
	Email  string `json:"email,omitempty"`
	Phone  string `json:"phone,omitempty"`
	Name   string `json:"name,omitempty"`
	Origin string `json:"origin,omitempty"`
}

// tokenIssuer mints and verifies user tokens and bootstrap tokens: HS256
// JWTs with iss "parley" and aud the widget id, a "typ" claim naming the
// kind, each kind under its own key derived from the signing key.
type tokenIssuer struct {
	userKey, bootstrapKey []byte
	userTTL, bootstrapTTL time.Duration
}

// newTokenIssuer derives the two keys from signingKey; a TTL ≤ 0 takes the
// default (5 minutes for user tokens, 10 for bootstrap tokens).
func newTokenIssuer(signingKey []byte, userTTL, bootstrapTTL time.Duration) *tokenIssuer {
	if userTTL <= 0 {
		userTTL = defaultUserTTL
	}
	if bootstrapTTL <= 0 {
		bootstrapTTL = defaultBootTTL
	}
	return &tokenIssuer{
		userKey:      deriveKey(signingKey, "parley user token v1"),
		bootstrapKey: deriveKey(signingKey, "parley bootstrap token v1"),
		userTTL:      userTTL,
		bootstrapTTL: bootstrapTTL,
	}
}

// deriveKey is HMAC-SHA256(signingKey, purpose): one key per purpose.
func deriveKey(signingKey []byte, purpose string) []byte {
	m := hmac.New(sha256.New, signingKey)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// mintUserToken returns a user token for widgetID carrying c (POST
// /v1/user-tokens, seed 004), to be exchanged at session creation. Invalid
// claims are a broker.ErrValidation.
func (ti *tokenIssuer) mintUserToken(widgetID string, c VisitorClaims, now time.Time) (token string, exp time.Time, err error) {
	if widgetID == "" {
		return "", time.Time{}, fmt.Errorf("%w: widget id required", broker.ErrValidation)
	}
	if err := c.validate(); err != nil {
		return "", time.Time{}, err
	}
	exp = now.Add(ti.userTTL).Truncate(time.Second)
	cl := serverClaims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: tokenIssuerName, Audience: jwt.ClaimStrings{widgetID},
			Subject: c.Subject, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp)},
		Type: tokenTypeUser, Email: c.Email, Phone: c.Phone, Name: c.Name,
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, cl).SignedString(ti.userKey)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signaling: sign user token: %w", err)
	}
	return token, exp, nil
}

// verifyUserToken verifies a user token for widgetID and returns its
// claims with Method "user_token". Expired: ErrTokenExpired; anything else:
// ErrInvalidVisitorToken.
func (ti *tokenIssuer) verifyUserToken(token, widgetID string, now time.Time) (VisitorClaims, error) {
	if widgetID == "" {
		return VisitorClaims{}, fmt.Errorf("%w: no widget", ErrInvalidVisitorToken)
	}
	cl, err := ti.parse(token, ti.userKey, tokenTypeUser, now, ErrInvalidVisitorToken, jwt.WithAudience(widgetID))
	if err != nil {
		return VisitorClaims{}, err
	}
	c := VisitorClaims{Subject: cl.Subject, Email: cl.Email, Phone: cl.Phone, Name: cl.Name}
	if err := c.check(); err != nil {
		return VisitorClaims{}, fmt.Errorf("%w: %w", ErrInvalidVisitorToken, err)
	}
	c.Method = methodUserToken
	return c, nil
}

// mintBootstrapToken returns a bootstrap token for widgetID (POST
// /v1/tokens, seed 000), accepted by POST /v1/sessions instead of widget
// key and challenge. origin binds it to one page origin ("" = any allowed
// origin); c carries a verified visitor (nil = guest). The caller enforces
// single use with jti.
func (ti *tokenIssuer) mintBootstrapToken(widgetID string, origin string, c *VisitorClaims, now time.Time) (token string, jti string, exp time.Time, err error) {
	if widgetID == "" {
		return "", "", time.Time{}, fmt.Errorf("%w: widget id required", broker.ErrValidation)
	}
	if len(origin) > maxTokenOrigin || strings.ContainsFunc(origin, unicode.IsControl) {
		return "", "", time.Time{}, fmt.Errorf("%w: origin must be at most %d bytes", broker.ErrValidation, maxTokenOrigin)
	}
	jti = rand.Text()
	exp = now.Add(ti.bootstrapTTL).Truncate(time.Second)
	cl := serverClaims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: tokenIssuerName, Audience: jwt.ClaimStrings{widgetID},
			ID: jti, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp)},
		Type: tokenTypeBootstrap, Origin: origin,
	}
	if c != nil {
		if err := c.validate(); err != nil {
			return "", "", time.Time{}, err
		}
		cl.Subject, cl.Email, cl.Phone, cl.Name = c.Subject, c.Email, c.Phone, c.Name
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, cl).SignedString(ti.bootstrapKey)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("signaling: sign bootstrap token: %w", err)
	}
	return token, jti, exp, nil
}

// verifyBootstrapToken verifies a bootstrap token and returns what it
// binds: the widget, the origin ("" = any allowed origin), the jti to
// consume, and the visitor (nil = guest; Method "bootstrap"). The caller
// checks the widget and origin. Expired: ErrTokenExpired; anything else:
// ErrBootstrapTokenInvalid.
func (ti *tokenIssuer) verifyBootstrapToken(token string, now time.Time) (widgetID, origin, jti string, c *VisitorClaims, err error) {
	cl, err := ti.parse(token, ti.bootstrapKey, tokenTypeBootstrap, now, ErrBootstrapTokenInvalid)
	if err != nil {
		return "", "", "", nil, err
	}
	switch {
	case len(cl.Audience) != 1 || cl.Audience[0] == "":
		return "", "", "", nil, fmt.Errorf("%w: aud must name one widget", ErrBootstrapTokenInvalid)
	case cl.ID == "":
		return "", "", "", nil, fmt.Errorf("%w: jti missing", ErrBootstrapTokenInvalid)
	}
	if cl.Subject != "" || cl.Email != "" || cl.Phone != "" || cl.Name != "" {
		vc := VisitorClaims{Subject: cl.Subject, Email: cl.Email, Phone: cl.Phone, Name: cl.Name}
		if err := vc.check(); err != nil {
			return "", "", "", nil, fmt.Errorf("%w: %w", ErrBootstrapTokenInvalid, err)
		}
		vc.Method = methodBootstrap
		c = &vc
	}
	return cl.Audience[0], cl.Origin, cl.ID, c, nil
}

// parse verifies a server-minted token of kind typ under key: HS256, iss
// "parley", exp required and in the future, nbf honoured.
func (ti *tokenIssuer) parse(token string, key []byte, typ string, now time.Time, invalid error, opts ...jwt.ParserOption) (*serverClaims, error) {
	if len(token) > maxServerJWTBytes {
		return nil, fmt.Errorf("%w: over %d bytes", invalid, maxServerJWTBytes)
	}
	var cl serverClaims
	tok, err := hs256Parser(now, append(opts, jwt.WithIssuer(tokenIssuerName))...).ParseWithClaims(token, &cl, keyOf(key))
	if err != nil {
		return nil, jwtError(err, tok, invalid)
	}
	if cl.Type != typ {
		return nil, fmt.Errorf("%w: not a %s token", invalid, typ)
	}
	return &cl, nil
}

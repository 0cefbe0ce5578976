package signaling

import "errors"

// Sentinel errors of visitor identity, server-minted tokens and rate
// limits. Their wire codes are in the wireErrors table of errors.go.
var (
	// ErrRateLimited: the client IP or the widget made too many requests
	// of one kind; the response carries Retry-After.
	ErrRateLimited = errors.New("rate limited")
	// ErrInvalidVisitorToken: a visitor identity proof (site-signed JWT,
	// user_hash or user token) is malformed, forged, signed with another
	// algorithm or key, not yet valid, or carries an invalid claim.
	ErrInvalidVisitorToken = errors.New("invalid visitor token")
	// ErrTokenExpired: a correctly signed visitor JWT, user token or
	// bootstrap token is past its expiry.
	ErrTokenExpired = errors.New("token expired")
	// ErrBootstrapTokenInvalid: a bootstrap token from POST /v1/tokens is
	// malformed, forged, of another kind, or not yet valid.
	ErrBootstrapTokenInvalid = errors.New("bootstrap token invalid")
	// ErrSessionLimit: the session is at one of its limits.per_session
	// caps (live WebSockets).
	ErrSessionLimit = errors.New("session limit reached")
	// ErrIdentityResumeRefused: resume_identity was asked with an identity
	// the widget's identity_resume policy does not let resume.
	ErrIdentityResumeRefused = errors.New("this identity may not resume a conversation on this widget")
)

package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

const signingKeyName = "challenge_signing_key"

// loadSigningKey takes the configured key, or the one kept in KV, creating
// it once; brokers sharing a NATS cluster share it.
func (b *Broker) loadSigningKey(ctx context.Context) error {
	if k := b.cfg.Security.SigningKey; k != "" {
		b.signingKey = []byte(k)
		return nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return fmt.Errorf("broker: random: %w", err)
	}
	_, err := b.secrets.Create(ctx, signingKeyName, fresh)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: signing key: %w", ErrStore, err)
	}
	e, err := b.secrets.Get(ctx, signingKeyName)
	if err != nil {
		return fmt.Errorf("%w: signing key: %w", ErrStore, err)
	}
	b.signingKey = e.Value()
	return nil
}

// SigningKey returns the HMAC key used to sign challenges. It is a secret:
// never log or send it.
func (b *Broker) SigningKey() []byte { return b.signingKey }

// UseNonce records a single-use nonce; a second use returns ErrNonceUsed.
// Nonces are forgotten after twice the challenge lifetime.
func (b *Broker) UseNonce(ctx context.Context, nonce string) error {
	if nonce == "" || len(nonce) > 128 {
		return fmt.Errorf("%w: nonce", ErrValidation)
	}
	_, err := b.nonces.Create(ctx, hashHex(nonce), []byte{1})
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return ErrNonceUsed
	case err != nil:
		return fmt.Errorf("%w: nonce: %w", ErrStore, err)
	}
	return nil
}

// newSecret returns a random URL-safe secret of n bytes of entropy.
func newSecret(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(buf)
}

// newID returns prefix + 20 random URL-safe characters usable as a subject
// token (base64url has no '.', '*' or '>').
func newID(prefix string) string { return prefix + newSecret(15) }

// hashHex is the hex SHA-256 of a secret, the only form secrets are stored in.
func hashHex(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// hashEqual compares a secret with a stored hash in constant time.
func hashEqual(secret, storedHash string) bool {
	h := hashHex(secret)
	return subtle.ConstantTimeCompare([]byte(h), []byte(storedHash)) == 1
}

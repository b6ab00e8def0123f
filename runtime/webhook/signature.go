package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// SignatureHeader is GitHub's HMAC-SHA256 signature header.
const SignatureHeader = "X-Hub-Signature-256"

const signaturePrefix = "sha256="

// Signature problems. Every one of them is answered with 401.
var (
	ErrSignatureMissing   = errors.New("missing " + SignatureHeader + " header")
	ErrSignatureMalformed = errors.New("malformed " + SignatureHeader + " header")
	ErrSignatureMismatch  = errors.New("signature does not match the body")
	ErrSHA1Only           = errors.New("only the SHA-1 X-Hub-Signature header was sent; " + SignatureHeader + " is required")
)

// Sign returns the X-Hub-Signature-256 value GitHub sends for body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return signaturePrefix + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks header, the X-Hub-Signature-256 value, against body in
// constant time.
func Verify(secret, body []byte, header string) error {
	if header == "" {
		return ErrSignatureMissing
	}
	hexSig, ok := strings.CutPrefix(header, signaturePrefix)
	if !ok || len(hexSig) != 2*sha256.Size {
		return ErrSignatureMalformed
	}
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], []byte(hexSig)); err != nil {
		return ErrSignatureMalformed
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	var got [sha256.Size]byte
	if !hmac.Equal(mac.Sum(got[:0]), want[:]) {
		return ErrSignatureMismatch
	}
	return nil
}

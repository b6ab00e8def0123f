package ghfake

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GitHub's messages for rejected App JWTs.
const (
	msgJWTDecode       = "A JSON web token could not be decoded"
	msgJWTIssuer       = "'Issuer' claim ('iss') must be an Integer"
	msgJWTIssuedAt     = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
	msgJWTExpiry       = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	msgJWTExpiryTooFar = "'Expiration time' claim ('exp') is too far in the future"
	maxJWTLifetime     = 10 * time.Minute
)

// installToken is what the fake remembers of an issued installation token.
// The token itself is not kept: the map key is its SHA-256.
type installToken struct {
	installationID int64
	expiresAt      time.Time
}

// PrivateKeyPEM returns the App's private key as PKCS#1 PEM ("RSA PRIVATE
// KEY"), the format GitHub hands out and ghinstallation reads.
func (s *Server) PrivateKeyPEM() []byte { return bytes.Clone(s.keyPEM) }

// PrivateKey returns the App's private key.
func (s *Server) PrivateKey() *rsa.PrivateKey { return s.key }

func encodeKeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// AddInstallation registers installation id of the App on owner (an
// organization or user login). Its tokens are accepted only for paths of
// that owner (compared case-insensitively). Adding an id again changes its
// owner.
func (s *Server) AddInstallation(id int64, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installations[id] = owner
}

// jwtError is a rejected JWT; its text is GitHub's message.
type jwtError string

func (e jwtError) Error() string { return string(e) }

// verifyJWT checks an App JWT the way GitHub does: RS256 signed by the App's
// key, iss the App id, integer iat and exp, exp in the future and at most 10
// minutes after iat.
func (s *Server) verifyJWT(raw string) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return jwtError(msgJWTDecode)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "RS256" {
		return jwtError(msgJWTDecode)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return jwtError(msgJWTDecode)
	}
	claims := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return jwtError(msgJWTDecode)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return jwtError(msgJWTDecode)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&s.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return jwtError(msgJWTDecode)
	}

	var iss int64
	switch v := claims["iss"].(type) {
	case json.Number:
		iss, err = v.Int64()
	case string:
		iss, err = strconv.ParseInt(v, 10, 64)
	default:
		err = errors.New("missing")
	}
	if err != nil {
		return jwtError(msgJWTIssuer)
	}
	if iss != s.appID {
		return jwtError(msgJWTDecode)
	}
	iat, ok := intClaim(claims["iat"])
	if !ok {
		return jwtError(msgJWTIssuedAt)
	}
	exp, ok := intClaim(claims["exp"])
	if !ok || exp <= s.now().Unix() {
		return jwtError(msgJWTExpiry)
	}
	if exp-iat > int64(maxJWTLifetime/time.Second) {
		return jwtError(msgJWTExpiryTooFar)
	}
	return nil
}

// intClaim reads a NumericDate claim; GitHub rejects fractional ones.
func intClaim(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

// installationOwner reports the owner of installation id ("" means any owner)
// and whether it exists. The caller holds s.mu.
func (s *Server) installationOwner(id int64) (string, bool) {
	if owner, ok := s.installations[id]; ok {
		return owner, true
	}
	return "", s.anyInst
}

// checkToken validates an installation token for a path of owner and returns
// its rate-limit budget key.
func (s *Server) checkToken(tok, owner string) (string, bool) {
	if tok == "" {
		return "", false
	}
	h := hashSecret(tok)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.tokens[h]
	if !ok || !now.Before(it.expiresAt) {
		return "", false
	}
	instOwner, ok := s.installationOwner(it.installationID)
	if !ok || (instOwner != "" && !strings.EqualFold(instOwner, owner)) {
		return "", false
	}
	return tokenBudgetKey(h), true
}

// accessTokenRequest is the optional body of the access_tokens call.
type accessTokenRequest struct {
	Repositories  []string          `json:"repositories"`
	RepositoryIDs []int64           `json:"repository_ids"`
	Permissions   map[string]string `json:"permissions"`
}

type accessTokenResponse struct {
	Token               string            `json:"token"`
	ExpiresAt           string            `json:"expires_at"`
	Permissions         map[string]string `json:"permissions"`
	RepositorySelection string            `json:"repository_selection"`
	Repositories        []tokenRepository `json:"repositories,omitempty"`
}

type tokenRepository struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	FullName string `json:"full_name"`
}

// handleAccessToken issues an installation token (POST
// /app/installations/{installation_id}/access_tokens).
func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request, p params) {
	id, err := strconv.ParseInt(p["installation_id"], 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	var req accessTokenRequest
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &req) != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}

	tok := "ghs_" + randomAlnum(36)
	now := s.now()
	expires := now.Add(s.tokenTTL).UTC().Truncate(time.Second)
	s.mu.Lock()
	owner, ok := s.installationOwner(id)
	if ok {
		s.tokens[hashSecret(tok)] = installToken{installationID: id, expiresAt: expires}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}

	resp := accessTokenResponse{
		Token:               tok,
		ExpiresAt:           expires.Format(time.RFC3339),
		Permissions:         req.Permissions,
		RepositorySelection: "all",
	}
	if len(resp.Permissions) == 0 {
		resp.Permissions = map[string]string{
			"actions":                          "write",
			"administration":                   "write",
			"metadata":                         "read",
			"organization_self_hosted_runners": "write",
		}
	}
	if len(req.Repositories) > 0 || len(req.RepositoryIDs) > 0 {
		resp.RepositorySelection = "selected"
		for _, name := range req.Repositories {
			resp.Repositories = append(resp.Repositories, tokenRepository{ID: stableID(owner + "/" + name), Name: name, FullName: owner + "/" + name})
		}
		for _, rid := range req.RepositoryIDs {
			resp.Repositories = append(resp.Repositories, tokenRepository{ID: rid})
		}
	}
	writeJSON(w, http.StatusCreated, resp)
}

// hashSecret is the map key for a secret the fake must recognise later.
func hashSecret(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n characters from crypto/rand, like GitHub's tokens.
func randomAlnum(n int) string {
	var b strings.Builder
	max := big.NewInt(int64(len(alnum)))
	for range n {
		i, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("ghfake: crypto/rand: " + err.Error())
		}
		b.WriteByte(alnum[i.Int64()])
	}
	return b.String()
}

// handleRepoInstallation serves GET /repos/{owner}/{repo}/installation (App
// JWT): the installation whose account owns the repository, or 404 when the
// App is not installed there. With WithAnyInstallation an owner without an
// added installation gets a stable id derived from its login.
func (s *Server) handleRepoInstallation(w http.ResponseWriter, r *http.Request, p params) {
	owner := p["owner"]
	s.mu.Lock()
	var id int64
	for iid, o := range s.installations {
		if strings.EqualFold(o, owner) && (id == 0 || iid < id) {
			id = iid
		}
	}
	if id == 0 && s.anyInst {
		id = stableID("installation/" + owner)
	}
	s.mu.Unlock()
	if id == 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	base := apiBase(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"id":                   id,
		"account":              organizationObject(owner),
		"app_id":               s.appID,
		"app_slug":             "jit-runners",
		"target_id":            stableID(owner),
		"target_type":          "Organization",
		"repository_selection": "all",
		"access_tokens_url":    fmt.Sprintf("%s/app/installations/%d/access_tokens", base, id),
		"repositories_url":     base + "/installation/repositories",
		"html_url":             fmt.Sprintf("https://github.com/organizations/%s/settings/installations/%d", owner, id),
		"permissions":          map[string]string{"actions": "write", "administration": "write", "metadata": "read", "organization_self_hosted_runners": "write"},
		"events":               []string{"workflow_job"},
		"created_at":           ts(s.now().AddDate(0, -1, 0)),
		"updated_at":           ts(s.now().AddDate(0, -1, 0)),
		"single_file_name":     nil,
		"suspended_at":         nil,
	})
}

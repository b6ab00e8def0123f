package ghfake

import (
	"bytes"
	"cmp"
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
	"slices"
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
	app            int64 // the App whose JWT asked for it
	expiresAt      time.Time
}

// PrivateKeyPEM returns the primary App's private key as PKCS#1 PEM ("RSA
// PRIVATE KEY"), the format GitHub hands out and ghinstallation reads.
func (s *Server) PrivateKeyPEM() []byte { return bytes.Clone(s.primary.keyPEM) }

// PrivateKey returns the primary App's private key.
func (s *Server) PrivateKey() *rsa.PrivateKey { return s.primary.key }

func encodeKeyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// AddInstallation registers installation id of the primary App on owner
// (an organization or user login). Its tokens are accepted only for paths
// of that owner (compared case-insensitively). Adding an id again changes
// its owner (and makes it the primary App's: see InstallApp).
func (s *Server) AddInstallation(id int64, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installations[id] = installation{app: s.primary.id, owner: owner}
}

// jwtError is a rejected JWT; its text is GitHub's message.
type jwtError string

func (e jwtError) Error() string { return string(e) }

// verifyJWT checks an App JWT the way GitHub does and returns its App: iss
// names the App, and the JWT must be RS256 signed by that App's key, with
// integer iat and exp, exp in the future and at most 10 minutes after iat.
// A JWT whose iss names no App is checked against the primary App's key,
// so that the errors stay those of a Server with one App.
func (s *Server) verifyJWT(raw string) (*app, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, jwtError(msgJWTDecode)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "RS256" {
		return nil, jwtError(msgJWTDecode)
	}
	claims, ok := jwtClaims(parts[1])
	if !ok {
		return nil, jwtError(msgJWTDecode)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, jwtError(msgJWTDecode)
	}
	iss, issErr := issuer(claims)
	a := s.primary
	if issErr == nil {
		if named := s.appByID(iss); named != nil {
			a = named
		}
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&a.key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return nil, jwtError(msgJWTDecode)
	}
	if issErr != nil {
		return nil, jwtError(msgJWTIssuer)
	}
	if iss != a.id {
		return nil, jwtError(msgJWTDecode)
	}
	iat, ok := intClaim(claims["iat"])
	if !ok {
		return nil, jwtError(msgJWTIssuedAt)
	}
	exp, ok := intClaim(claims["exp"])
	if !ok || exp <= s.now().Unix() {
		return nil, jwtError(msgJWTExpiry)
	}
	if exp-iat > int64(maxJWTLifetime/time.Second) {
		return nil, jwtError(msgJWTExpiryTooFar)
	}
	return a, nil
}

// jwtClaims decodes a JWT's claims segment, numbers as json.Number.
func jwtClaims(segment string) (map[string]any, bool) {
	pb, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return nil, false
	}
	claims := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, false
	}
	return claims, true
}

// issuer reads the iss claim, an integer or a string of one (ghinstallation
// sends a string).
func issuer(claims map[string]any) (int64, error) {
	switch v := claims["iss"].(type) {
	case json.Number:
		return v.Int64()
	case string:
		return strconv.ParseInt(v, 10, 64)
	}
	return 0, errors.New("missing")
}

// unverifiedIssuer returns the iss of a JWT without checking it, or 0; it
// picks the budget whose headers an injected fault shows.
func unverifiedIssuer(raw string) int64 {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return 0
	}
	claims, ok := jwtClaims(parts[1])
	if !ok {
		return 0
	}
	iss, _ := issuer(claims)
	return iss
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

// installationLocked reports installation id (its App, and its owner, ""
// meaning any owner) and whether it exists. With WithAnyInstallation every
// id not added exists as the primary App's, for any owner. The caller holds
// s.mu.
func (s *Server) installationLocked(id int64) (installation, bool) {
	if in, ok := s.installations[id]; ok {
		return in, true
	}
	return installation{app: s.primary.id}, s.anyInst
}

// checkToken validates an installation token for a path of owner and returns
// its rate-limit budget key and its App. A token is good only while its
// installation is still its App's and only for that installation's owner:
// a token of App A is refused on an owner where only App B is installed,
// as GitHub refuses it.
func (s *Server) checkToken(tok, owner string) (string, *app, bool) {
	if tok == "" {
		return "", nil, false
	}
	h := hashSecret(tok)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.tokens[h]
	if !ok || !now.Before(it.expiresAt) {
		return "", nil, false
	}
	in, ok := s.installationLocked(it.installationID)
	if !ok || in.app != it.app || (in.owner != "" && !strings.EqualFold(in.owner, owner)) {
		return "", nil, false
	}
	a := s.appLocked(it.app)
	if a == nil {
		return "", nil, false
	}
	return tokenBudgetKey(h), a, true
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
// /app/installations/{installation_id}/access_tokens): 404 unless the
// installation is the calling App's, as GitHub answers another App's.
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
	caller := s.callerOf(r)
	s.mu.Lock()
	in, ok := s.installationLocked(id)
	ok = ok && in.app == caller.id
	if ok {
		s.tokens[hashSecret(tok)] = installToken{installationID: id, app: caller.id, expiresAt: expires}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	owner := in.owner

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

// handleRepoInstallation serves GET /repos/{owner}/{repo}/installation and
// GET /orgs/{org}/installation (App JWT): the calling App's installation on
// the owner, or 404 when that App is not installed there (another App's
// installation does not count, as on GitHub). With WithAnyInstallation an
// owner without an added installation of the primary App gets a stable id
// derived from its login.
func (s *Server) handleRepoInstallation(w http.ResponseWriter, r *http.Request, p params) {
	owner := p["owner"]
	if owner == "" {
		owner = p["org"]
	}
	caller := s.callerOf(r)
	s.mu.Lock()
	id := s.installationOfLocked(caller.id, owner)
	if id == 0 && s.anyInst && caller == s.primary {
		id = stableID("installation/" + owner)
	}
	s.mu.Unlock()
	if id == 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, s.installationObject(apiBase(r), caller, id, owner))
}

// handleListInstallations serves GET /app/installations (App JWT): the
// calling App's installations by id, paginated like GitHub's list.
func (s *Server) handleListInstallations(w http.ResponseWriter, r *http.Request, _ params) {
	caller := s.callerOf(r)
	type entry struct {
		id    int64
		owner string
	}
	s.mu.Lock()
	var list []entry
	for id, in := range s.installations {
		if in.app == caller.id {
			list = append(list, entry{id, in.owner})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(list, func(a, b entry) int { return cmp.Compare(a.id, b.id) })
	from, to := paginate(w, r, len(list))
	out := make([]map[string]any, 0, to-from)
	for _, e := range list[from:to] {
		out = append(out, s.installationObject(apiBase(r), caller, e.id, e.owner))
	}
	writeJSON(w, http.StatusOK, out)
}

// installationObject is GitHub's installation object for installation id
// of App a on owner.
func (s *Server) installationObject(base string, a *app, id int64, owner string) map[string]any {
	return map[string]any{
		"id":                   id,
		"account":              organizationObject(owner),
		"app_id":               a.id,
		"app_slug":             a.slug(a == s.primary),
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
	}
}

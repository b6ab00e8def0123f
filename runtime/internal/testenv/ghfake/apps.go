package ghfake

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Several GitHub Apps.
//
// GitHub's budgets are per App: the primary rate limit of its JWT and of
// each of its installation tokens, and the JIT-config budget of about 180
// a minute (jitbudget.go). A control plane that must register more runners
// a minute than one App may therefore spreads the work over several Apps
// installed on the same owners. The fake models what that relies on: each
// App has its own id, private key and webhook secret; its own installation
// (its own installation id) on each owner; its own delivery of every
// workflow_job event, signed with its secret and naming its installation;
// its own delivery log; and its own budgets.
//
// The App a Server is built with (WithAppID, WithAppKey, WithInstallation)
// is the primary App. Every API that names no App is about it: AppID,
// PrivateKey, PrivateKeyPEM, AddInstallation, SetWebhook, and the delivery
// QueueJob and DeliverJob return. AddApp adds the others.

// ErrUnknownApp is the error of the per-App hooks for an App id the Server
// does not have.
var ErrUnknownApp = errors.New("ghfake: unknown App")

// App is one GitHub App of the fake, as a control plane would be configured
// with it.
type App struct {
	// ID is the App id, the iss claim of its JWTs and the
	// X-GitHub-Hook-Installation-Target-ID of its deliveries.
	ID int64
	// PrivateKey signs the App's JWTs; PrivateKeyPEM is the same key as
	// PKCS#1 PEM, the format GitHub hands out.
	PrivateKey    *rsa.PrivateKey
	PrivateKeyPEM []byte
	// WebhookURL is where the App's deliveries go ("" for nowhere) and
	// WebhookSecret what they are signed with: SetWebhook sets them for the
	// primary App, SetAppWebhook for any App.
	WebhookURL    string
	WebhookSecret []byte
}

// app is the fake's state of one App. id, key and keyPEM never change; the
// other fields are guarded by Server.mu.
type app struct {
	id     int64
	key    *rsa.PrivateKey
	keyPEM []byte

	hookURL    string
	hookSecret []byte
	// The App's JIT-config budget (jitbudget.go): the times of the requests
	// counted in the last minute, how many were refused, and how many
	// configs it generated.
	jitTimes   []time.Time
	jitLimited int
	jitConfigs int
}

// generateAppKey makes a 2048-bit App key, as GitHub hands out; the fake
// panics when it cannot, as New and AddApp document.
func generateAppKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("ghfake: generate app key: %v", err))
	}
	return k
}

func newApp(id int64, key *rsa.PrivateKey) *app {
	return &app{id: id, key: key, keyPEM: encodeKeyPEM(key)}
}

// view is the exported snapshot of a. The caller holds s.mu.
func (a *app) view() App {
	return App{
		ID: a.id, PrivateKey: a.key, PrivateKeyPEM: slices.Clone(a.keyPEM),
		WebhookURL: a.hookURL, WebhookSecret: slices.Clone(a.hookSecret),
	}
}

// slug is the App's URL name, as installation objects report it.
func (a *app) slug(primary bool) string {
	if primary {
		return "jit-runners"
	}
	return "jit-runners-" + strconv.FormatInt(a.id, 10)
}

// installation is one App's installation on one owner. Installation ids
// are one namespace on GitHub, whatever the App.
type installation struct {
	app   int64
	owner string
}

// AppOption configures an App added with AddApp.
type AppOption func(*appOptions)

type appOptions struct {
	id     int64
	key    *rsa.PrivateKey
	secret []byte
}

// AppWithID sets the added App's id. Without it the App gets the lowest id
// above the primary App's that no App has: DefaultAppID+1, +2, ... by
// default.
func AppWithID(id int64) AppOption { return func(o *appOptions) { o.id = id } }

// AppWithKey sets the added App's RSA private key. Without it AddApp
// generates a 2048-bit key, which takes a moment; tests adding many Apps
// may share keys they generated once.
func AppWithKey(key *rsa.PrivateKey) AppOption { return func(o *appOptions) { o.key = key } }

// AppWithWebhookSecret sets the added App's webhook secret. Without it the
// App gets a random secret of its own, so that a receiver checking one
// App's signature with another's secret fails as it would on GitHub.
func AppWithWebhookSecret(secret []byte) AppOption {
	return func(o *appOptions) { o.secret = slices.Clone(secret) }
}

// AddApp adds another GitHub App to the Server and returns it. The App
// has no installation (InstallApp gives it some) and no webhook URL
// (SetAppWebhook sets one); its JWTs are accepted at once, and its budgets
// (primary rate limit, JIT configs per minute) are its own. AddApp panics
// if the id is taken or a key cannot be generated, as New does.
func (s *Server) AddApp(opts ...AppOption) App {
	var o appOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.key == nil {
		o.key = generateAppKey()
	}
	if o.secret == nil {
		o.secret = []byte(randomAlnum(40))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := o.id
	if id == 0 {
		for id = s.primary.id + 1; s.appLocked(id) != nil; id++ {
		}
	} else if s.appLocked(id) != nil {
		panic(fmt.Sprintf("ghfake: App id %d is taken", id))
	}
	a := newApp(id, o.key)
	a.hookSecret = o.secret
	s.apps = append(s.apps, a)
	return a.view()
}

// Apps returns the Server's Apps, the primary first, then in the order
// AddApp added them.
func (s *Server) Apps() []App {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]App, 0, len(s.apps))
	for _, a := range s.apps {
		out = append(out, a.view())
	}
	return out
}

// appLocked returns App id, or nil. The caller holds s.mu.
func (s *Server) appLocked(id int64) *app {
	for _, a := range s.apps {
		if a.id == id {
			return a
		}
	}
	return nil
}

// appByID is appLocked for callers not holding s.mu.
func (s *Server) appByID(id int64) *app {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appLocked(id)
}

// InstallApp registers installation installationID of App appID on owner
// (an organization or user login), as an organization owner installing
// that App does. Its tokens are accepted only for paths of that owner, and
// the App's deliveries for jobs of that owner name it. Installation ids are
// unique across Apps on GitHub: installing an id again changes its owner
// and App (tokens issued for it before then stop working if the App
// changed). It returns ErrUnknownApp for an App the Server lacks.
func (s *Server) InstallApp(appID, installationID int64, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appLocked(appID) == nil {
		return fmt.Errorf("%w: id %d", ErrUnknownApp, appID)
	}
	s.installations[installationID] = installation{app: appID, owner: owner}
	return nil
}

// installationOfLocked returns App appID's lowest installation id on
// owner, or 0 when the App is not installed there. The caller holds s.mu.
func (s *Server) installationOfLocked(appID int64, owner string) int64 {
	var id int64
	for iid, in := range s.installations {
		if in.app == appID && strings.EqualFold(in.owner, owner) && (id == 0 || iid < id) {
			id = iid
		}
	}
	return id
}

// SetAppWebhook sets App appID's webhook URL and secret, as SetWebhook does
// for the primary App: from then on the App receives its own delivery of
// every workflow_job event for owners it is installed on. An empty url
// stops its deliveries. It returns ErrUnknownApp for an App the Server
// lacks.
func (s *Server) SetAppWebhook(appID int64, url string, secret []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appLocked(appID)
	if a == nil {
		return fmt.Errorf("%w: id %d", ErrUnknownApp, appID)
	}
	a.hookURL, a.hookSecret = url, slices.Clone(secret)
	return nil
}

package githubapp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
	"github.com/jit-runners/jit-runners/runtime/internal/testkit"
)

const (
	testInst int64 = 4242
	testOrg        = "acme"
	testRepo       = "acme/app"
)

// inst is the test installation as the Lambdas pass it.
var inst = Installation{ID: testInst, Owner: testOrg, Repository: testRepo}

// sharedKey saves generating a 2048-bit key per test.
var sharedKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// newFake starts the GitHub fake with the shared key and the test
// installation on testOrg.
func newFake(t testing.TB, opts ...ghfake.Option) *ghfake.Server {
	t.Helper()
	opts = append([]ghfake.Option{ghfake.WithAppKey(sharedKey()), ghfake.WithInstallation(testInst, testOrg)}, opts...)
	return ghfake.NewForTest(t, opts...)
}

// sleepRecorder stands in for the Client's sleep: it records each wait and
// returns at once (or runs then, when set, to change the fake mid-wait).
type sleepRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
	then  func(d time.Duration)
}

func (r *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.waits = append(r.waits, d)
	then := r.then
	r.mu.Unlock()
	if then != nil {
		then(d)
	}
	return ctx.Err()
}

func (r *sleepRecorder) all() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.waits...)
}

// testClient is a Client on a fake, with its sleeps recorded and its logs
// captured.
type testClient struct {
	*Client
	srv    *ghfake.Server
	sleeps *sleepRecorder
	logs   *testkit.Buffer
}

// newTestClient returns a Client of scope on srv (GitHub.com-style URL);
// edit adjusts the Config before New.
func newTestClient(t testing.TB, srv *ghfake.Server, scope string, edit ...func(*Config)) *testClient {
	t.Helper()
	logs := &testkit.Buffer{}
	cfg := Config{
		APIURL:     srv.URL(),
		AppID:      srv.AppID(),
		PrivateKey: srv.PrivateKeyPEM(),
		Scope:      scope,
		HTTPClient: &http.Client{Timeout: 20 * time.Second},
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &sleepRecorder{}
	c.sleep = rec.sleep
	return &testClient{Client: c, srv: srv, sleeps: rec, logs: logs}
}

package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/jit-runners/jit-runners/runtime/bootstrap"
	"github.com/jit-runners/jit-runners/runtime/config"
	"github.com/jit-runners/jit-runners/runtime/fleet"
	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
	"github.com/jit-runners/jit-runners/runtime/jitstore"
	"github.com/jit-runners/jit-runners/runtime/queue"
	"github.com/jit-runners/jit-runners/runtime/state"
)

// The GitHub side of the built-in fake: one App installation on one
// organisation, whose repository runs every generated job.
const (
	InstallationID int64 = 4242
	Owner                = "octo-org"
	Repo                 = "app"
	// ConfigFile is the effective configuration, written into the log dir.
	ConfigFile = "jitr-config.json"
)

// ImageID is the runner AMI id in the generated profile: an AMI the moto
// server knows (testenv.Images), so that scaleup's DescribeImages finds its
// root device as it would on AWS.
var ImageID = testenv.ImageX64.ID

// JobLabels are the runs-on labels of generated jobs: the default profile.
var JobLabels = []string{"self-hosted", "linux", "x64"}

const defaultRegion = "us-east-1"

// startAWS starts one moto server per service (or takes
// Options.AWSEndpoint), the router in front of them (the endpoint every
// AWS client of the sandbox uses) and builds the sandbox's own AWS
// configuration for it.
func (s *Sandbox) startAWS(ctx context.Context) error {
	s.region = defaultRegion
	upstreams := map[string]string{}
	var fallback string
	if s.opts.AWSEndpoint != "" {
		fallback = trimSlash(s.opts.AWSEndpoint)
		if r := os.Getenv("AWS_REGION"); r != "" {
			s.region = r
		}
	} else {
		motos, err := startMotos(ctx, s.logDir)
		if err != nil {
			return err
		}
		s.motos = motos
		for svc, m := range motos {
			upstreams[svc] = m.URL
			s.log.Info("moto started", slog.String("service", svc), slog.String("url", m.URL), slog.Int("pid", m.PID()))
		}
		// Other services (STS) go to the least busy one.
		fallback = motos[motoServices[len(motoServices)-1]].URL
	}
	router, err := newAWSRouter(upstreams, fallback, s.log)
	if err != nil {
		return err
	}
	s.router = router
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.routerSrv = &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.routerSrv.Serve(ln) }()
	s.awsURL = "http://" + ln.Addr().String()
	s.log.Info("AWS router started", slog.String("url", s.awsURL), slog.String("other services", fallback))
	id, secret, token := s.awsCredentials()
	s.awsCfg = aws.Config{
		Region:       s.region,
		BaseEndpoint: aws.String(s.awsURL),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret, SessionToken: token, Source: "sandbox"}, nil
		}),
	}
	s.instances = fleet.New(ec2.NewFromConfig(s.awsCfg))
	return nil
}

// awsCredentials are dummy credentials for moto; for another endpoint the
// ones in this process's environment, when there are some.
func (s *Sandbox) awsCredentials() (id, secret, token string) {
	if s.opts.AWSEndpoint != "" && os.Getenv("AWS_ACCESS_KEY_ID") != "" {
		return os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN")
	}
	return "test", "test", ""
}

// functionKey is the access key id function fn signs with: against moto
// its own (functionKeyID), so the fault proxy can tell the callers apart;
// otherwise the configured one.
func (s *Sandbox) functionKey(id, fn string) string {
	if id == "test" {
		return functionKeyID(fn)
	}
	return id
}

// resourceParams are the names the resources get.
type resourceParams struct {
	base          string // resource name stem
	namePrefix    string
	runnerVersion string
	idleTimeout   time.Duration
}

// resources are what the sandbox created on the AWS endpoint.
type resources struct {
	jobsTable        string
	jitTable         string
	queue            queue.Created
	network          *testenv.Network
	appKeyARN        string
	webhookSecretARN string
}

// classes names the resources in the terms of the stack's plan, keyed by
// what a request names them by (table name, queue URL, secret ARN), for
// the per-resource call record.
func (r *resources) classes() map[string]string {
	return map[string]string{
		r.jobsTable: "jobs-table", r.jitTable: "jit-table",
		r.queue.URL: "queue", r.queue.DLQURL: "dead-letter-queue",
		r.appKeyARN: "app-key", r.webhookSecretARN: "webhook-secret",
	}
}

// conditionClasses names the values the IAM conditions of our policies
// compare with: the deployment's name prefix (the jitr:managed-by tag),
// its launch template and subnets.
func (r *resources) conditionClasses(namePrefix string) map[string]string {
	c := map[string]string{namePrefix: "name-prefix"}
	if r.network != nil {
		c[r.network.LaunchTemplateID] = "launch-template"
		for _, s := range r.network.SubnetIDs {
			c[s] = "subnet"
		}
	}
	return c
}

// resourceParams takes the name prefix and runner version from the overlay
// when it sets them, since they are baked into the launch template's
// user-data. Against an endpoint the sandbox did not start, names get a
// random suffix so runs do not collide.
func (s *Sandbox) resourceParams() resourceParams {
	p := resourceParams{namePrefix: config.DefaultNamePrefix, runnerVersion: config.DefaultRunnerVersion, idleTimeout: s.opts.IdleTimeout}
	var over struct {
		NamePrefix    string `json:"namePrefix"`
		RunnerVersion string `json:"runnerVersion"`
	}
	if len(s.opts.ConfigOverlay) > 0 && json.Unmarshal(s.opts.ConfigOverlay, &over) == nil {
		if over.NamePrefix != "" {
			p.namePrefix = over.NamePrefix
		}
		if over.RunnerVersion != "" {
			p.runnerVersion = over.RunnerVersion
		}
	}
	p.base = p.namePrefix + "-sandbox"
	if s.opts.AWSEndpoint != "" {
		p.base += "-" + randomSuffix(6)
	}
	return p
}

func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// createResources creates the stack's data plane from the definitions the
// stack itself uses: the jobs and JIT tables, the queue pair, and the
// network with the runner launch template whose user-data is the rendered
// bootstrap.
func createResources(ctx context.Context, cfg aws.Config, p resourceParams) (*resources, error) {
	db := dynamodb.NewFromConfig(cfg)
	r := &resources{jobsTable: p.base + "-jobs", jitTable: p.base + "-jit"}
	if err := state.JobsTable.Create(ctx, db, r.jobsTable); err != nil {
		return nil, err
	}
	if err := jitstore.Table.Create(ctx, db, r.jitTable); err != nil {
		return nil, err
	}
	q, err := queue.ScaleUp.Create(ctx, sqs.NewFromConfig(cfg), p.base+"-scaleup")
	if err != nil {
		return nil, err
	}
	r.queue = q
	r.network, err = testenv.CreateNetwork(ctx, ec2.NewFromConfig(cfg), testenv.NetworkParams{
		Name: p.base,
		Bootstrap: bootstrap.Params{
			RunnerVersion: p.runnerVersion, NamePrefix: p.namePrefix, JITTable: r.jitTable,
			IdleTimeoutSeconds: int(p.idleTimeout / time.Second),
			// No runner is downloaded in the sandbox; the digests only have
			// to be well-formed for the script to render.
			RunnerSHA256X64: testenv.TestRunnerSHA256, RunnerSHA256ARM64: testenv.TestRunnerSHA256,
		},
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// storeSecrets puts the App key and the webhook secret into Secrets
// Manager; the Lambdas get their ARNs only.
func (s *Sandbox) storeSecrets(ctx context.Context) error {
	sm := secretsmanager.NewFromConfig(s.awsCfg)
	var key []byte
	if s.fake != nil {
		key = s.fake.PrivateKeyPEM()
	} else {
		key = s.opts.GitHub.PrivateKeyPEM
	}
	put := func(name string, value []byte) (string, error) {
		out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
			Name: aws.String(name), SecretString: aws.String(string(value)),
		})
		if err != nil {
			return "", fmt.Errorf("create secret %s: %w", name, err)
		}
		return aws.ToString(out.ARN), nil
	}
	base := strings.TrimSuffix(s.res.jobsTable, "-jobs")
	var err error
	if s.res.appKeyARN, err = put(base+"/github-app-key", key); err != nil {
		return err
	}
	s.res.webhookSecretARN, err = put(base+"/webhook-secret", s.webhookSecret)
	return err
}

// generatedConfig is the configuration the sandbox writes before the
// overlay: every key set and valid.
func (s *Sandbox) generatedConfig(p resourceParams) *config.Config {
	appID := int64(0)
	if s.fake != nil {
		appID = s.fake.AppID()
	} else {
		appID = s.opts.GitHub.AppID
	}
	return baseConfig(p, s.githubURL, appID, s.res)
}

// checkOverlay merges overlay over a configuration with placeholder
// resources and validates it, so a bad --config fails before anything
// starts.
func checkOverlay(overlay []byte) error {
	if len(bytes.TrimSpace(overlay)) == 0 {
		return nil
	}
	const arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:placeholder"
	gen := baseConfig(resourceParams{namePrefix: config.DefaultNamePrefix, runnerVersion: config.DefaultRunnerVersion},
		"http://127.0.0.1:1", 1, &resources{
			jobsTable: "placeholder-jobs", jitTable: "placeholder-jit", appKeyARN: arn, webhookSecretARN: arn,
			queue:   queue.Created{URL: "http://127.0.0.1:1/123456789012/placeholder"},
			network: &testenv.Network{LaunchTemplateID: "lt-0123456789abcdef0", SubnetIDs: []string{"subnet-0123456789abcdef0"}},
		})
	doc, err := mergeOverlay(gen, overlay)
	if err != nil {
		return err
	}
	if _, err := config.Parse(doc); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	return nil
}

func baseConfig(p resourceParams, githubURL string, appID int64, res *resources) *config.Config {
	return &config.Config{
		GitHub: config.GitHub{
			APIURL:              githubURL,
			AppID:               appID,
			PrivateKeySecretARN: res.appKeyARN,
			WebhookSecretARN:    res.webhookSecretARN,
			Scope:               config.ScopeOrg,
			RunnerGroup:         config.DefaultRunnerGroup,
		},
		QueueURL:      res.queue.URL,
		TableName:     res.jobsTable,
		NamePrefix:    p.namePrefix,
		RunnerVersion: p.runnerVersion,
		MaxRunners:    1000,
		Launch: config.Launch{
			LaunchTemplateID:   res.network.LaunchTemplateID,
			SubnetIDs:          res.network.SubnetIDs,
			JITConfigTableName: res.jitTable,
		},
		DefaultProfile: config.DefaultProfileName,
		ScaleDown: config.ScaleDown{
			CompletedGraceSeconds: config.DefaultCompletedGraceSeconds,
			BootTimeoutSeconds:    config.DefaultBootTimeoutSeconds,
			OrphanGraceSeconds:    config.DefaultOrphanGraceSeconds,
			MaxRuntimeSeconds:     config.DefaultMaxRuntimeSeconds,
			QueuedTimeoutSeconds:  config.DefaultQueuedTimeoutSeconds,
		},
		Profiles: map[string]config.Profile{
			config.DefaultProfileName: {InstanceTypes: []string{config.DefaultInstanceType}, ImageID: ImageID, Arch: config.ArchX64, VolumeGiB: config.DefaultVolumeGiB},
		},
		LogLevel: "info",
	}
}

// buildConfig returns the generated configuration with Options.ConfigOverlay
// deep-merged over it, parsed and validated exactly as the Lambdas parse it.
func (s *Sandbox) buildConfig(p resourceParams) (*config.Config, error) {
	gen := s.generatedConfig(p)
	doc, err := mergeOverlay(gen, s.opts.ConfigOverlay)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("sandbox configuration (generated, with --config merged over it): %w", err)
	}
	return cfg, nil
}

// mergeOverlay encodes gen and deep-merges the JSON object overlay over it.
func mergeOverlay(gen *config.Config, overlay []byte) ([]byte, error) {
	b, err := gen.Marshal()
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(overlay)) == 0 {
		return b, nil
	}
	var base, over map[string]any
	if err := json.Unmarshal(b, &base); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(overlay, &over); err != nil {
		return nil, fmt.Errorf("--config: not a JSON object: %w", err)
	}
	if over == nil {
		return nil, errors.New("--config: not a JSON object")
	}
	return json.Marshal(DeepMerge(base, over))
}

// DeepMerge merges src into dst: keys whose values are objects on both sides
// merge recursively; any other value in src replaces dst's. It returns dst.
func DeepMerge(dst, src map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = DeepMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// writeConfig saves the effective configuration (ARNs only, no secret).
func (s *Sandbox) writeConfig() error {
	b, err := json.MarshalIndent(s.cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.logDir, ConfigFile), append(b, '\n'), 0o644)
}

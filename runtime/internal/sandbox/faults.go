package sandbox

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jit-runners/jit-runners/runtime/tags"
)

// faultProxy is a reverse proxy in front of the AWS router that only the
// Lambdas use (their AWS_ENDPOINT_URL). With a fault rate it answers that
// share of requests with HTTP 500, which the SDK retries with backoff, and
// that share of spot CreateFleet requests with per-override
// InsufficientInstanceCapacity errors and no instance, so that scaleup falls
// back to on-demand; moto produces neither.
//
// Faults are transient by construction: the last attempt the SDK announces
// (header amz-sdk-request: attempt=N; max=N) is never failed, so every call
// eventually succeeds, as with AWS's own transient errors.
type faultProxy struct {
	url  string
	rate float64
	srv  *http.Server
	next http.Handler // the AWS router
	log  *slog.Logger

	mu     sync.Mutex
	rng    *mrand.Rand
	ops    map[string]int64            // requests per operation, e.g. "dynamodb.PutItem"
	fnCall map[string]map[string]int64 // per function, then operation as called
	fnOps  map[string]map[string]int64 // per function, then operation IAM authorises
	fnRes  map[string]map[string]int64 // per function, then "operation resource"
	fnCon  map[string]map[string]int64 // per function, then condition fact (conditions.go)
	// classes names the deployment's resources by table name, queue URL
	// and secret ARN (setResources); nil records no resources.
	classes map[string]string
	// cond classes the values IAM conditions look at; nil records none.
	cond *conditionContext

	requests     atomic.Int64
	injected500  atomic.Int64
	injectedSpot atomic.Int64
	spotRequests atomic.Int64
	// lat holds every answer's latency per operation (latencySince).
	latMu sync.Mutex
	lat   map[string][]time.Duration
	// CreateFleet requests that launched for a job, and into a warm pool
	// (tagged jitr:pool).
	jobLaunches, poolLaunches atomic.Int64
	// fleets records every CreateFleet request for a job (FleetRequests).
	fleetsMu sync.Mutex
	fleets   []FleetRequest
}

// FleetRequest is one CreateFleet request for a job, as the proxy saw it
// on the wire.
type FleetRequest struct {
	JobID    string   // the request's jitr:job-id tag
	Capacity string   // DefaultTargetCapacityType: spot or on-demand
	Types    []string // the distinct instance types of its overrides, in order
	// VolumeGiB is the largest root volume its overrides map (0: none).
	VolumeGiB int
}

var overrideVolumeRE = regexp.MustCompile(`^LaunchTemplateConfigs\.\d+\.Overrides\.\d+\.BlockDeviceMapping\.\d+\.Ebs\.VolumeSize$`)

// fleetRequest reads a CreateFleet form.
func fleetRequest(form url.Values) FleetRequest {
	fr := FleetRequest{Capacity: form.Get("TargetCapacitySpecification.DefaultTargetCapacityType")}
	for k, v := range form {
		if strings.HasPrefix(k, "TagSpecification.") && strings.HasSuffix(k, ".Key") && slices.Contains(v, tags.JobID) {
			fr.JobID = form.Get(strings.TrimSuffix(k, ".Key") + ".Value")
		}
	}
	type ov struct{ cfg, n int }
	byIndex := map[ov]string{}
	for k, v := range form {
		if overrideVolumeRE.MatchString(k) && len(v) > 0 {
			n, _ := strconv.Atoi(v[0])
			fr.VolumeGiB = max(fr.VolumeGiB, n)
		}
		if m := overrideKeyRE.FindStringSubmatch(k); m != nil && m[3] == "InstanceType" && len(v) > 0 {
			c, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			byIndex[ov{c, n}] = v[0]
		}
	}
	keys := slices.SortedFunc(maps.Keys(byIndex), func(a, b ov) int { return cmp.Or(cmp.Compare(a.cfg, b.cfg), cmp.Compare(a.n, b.n)) })
	for _, k := range keys {
		if t := byIndex[k]; !slices.Contains(fr.Types, t) {
			fr.Types = append(fr.Types, t)
		}
	}
	return fr
}

// fleetRequests returns the CreateFleet requests for jobs seen so far.
func (p *faultProxy) fleetRequests() []FleetRequest {
	p.fleetsMu.Lock()
	defer p.fleetsMu.Unlock()
	return slices.Clone(p.fleets)
}

// FaultStats counts the proxy's requests and injected faults.
type FaultStats struct {
	Requests    int64 `json:"requests"`
	Injected500 int64 `json:"injected500"`
	// Operations counts the requests per operation ("dynamodb.PutItem").
	Operations map[string]int64 `json:"operations,omitempty"`
	// Calls counts them per Lambda ("scaleup") and operation as made: each
	// function signs with its own access key id (functionKeyID). One
	// TransactWriteItems is one call.
	Calls map[string]map[string]int64 `json:"calls,omitempty"`
	// ByFunction counts, per Lambda, the operations IAM authorises: the
	// calls, with a transaction counted as its items (IAM has no
	// TransactWriteItems action; each Put or Update in it needs PutItem or
	// UpdateItem on its table). The record the IAM sufficiency check reads.
	ByFunction map[string]map[string]int64 `json:"byFunction,omitempty"`
	// ByResource counts them per function and "operation resource", where
	// resource names the deployment's table (and index), queue or secret
	// the request names ("dynamodb.Query jobs-table/index/wait-index"):
	// the resource side of the IAM sufficiency check. EC2 requests are not
	// in it.
	ByResource map[string]map[string]int64 `json:"byResource,omitempty"`
	// ByCondition counts, per function, the values each call carried for
	// the condition keys of our policies (conditions.go): the condition
	// side of the check, which moto cannot make.
	ByCondition  map[string]map[string]int64 `json:"byCondition,omitempty"`
	SpotRequests int64                       `json:"spotRequests"`
	// JobLaunchRequests and PoolLaunchRequests split the CreateFleet
	// requests: for a job, or into a warm pool (refills, replacements).
	JobLaunchRequests  int64 `json:"jobLaunchRequests"`
	PoolLaunchRequests int64 `json:"poolLaunchRequests"`
	InjectedSpot       int64 `json:"injectedSpotCapacityErrors"`
	InjectedTotal      int64 `json:"injectedTotal"`
}

// startFaultProxy serves on a loopback port and passes what it does not
// fail on to next (the AWS router).
func startFaultProxy(next http.Handler, rate float64, seed uint64, log *slog.Logger) (*faultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &faultProxy{
		url:  "http://" + ln.Addr().String(),
		rate: rate,
		next: next,
		log:  log.With(slog.String("component", "aws-fault-proxy")),
		rng:  mrand.New(mrand.NewPCG(seed, seed^0x5bd1e995)),
		ops:  map[string]int64{},
		lat:  map[string][]time.Duration{},
	}
	p.srv = &http.Server{Handler: p}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("proxy stopped", slog.String("error", err.Error()))
		}
	}()
	return p, nil
}

func (p *faultProxy) close() { _ = p.srv.Close() }

func (p *faultProxy) stats() FaultStats {
	st := FaultStats{
		Requests: p.requests.Load(), Injected500: p.injected500.Load(),
		SpotRequests: p.spotRequests.Load(), InjectedSpot: p.injectedSpot.Load(),
		JobLaunchRequests: p.jobLaunches.Load(), PoolLaunchRequests: p.poolLaunches.Load(),
	}
	st.InjectedTotal = st.Injected500 + st.InjectedSpot
	p.mu.Lock()
	st.Operations = make(map[string]int64, len(p.ops))
	for k, v := range p.ops {
		st.Operations[k] = v
	}
	st.Calls = copyCounts(p.fnCall)
	st.ByFunction = copyCounts(p.fnOps)
	st.ByResource = copyCounts(p.fnRes)
	st.ByCondition = copyCounts(p.fnCon)
	p.mu.Unlock()
	return st
}

// sub returns the difference of two snapshots.
func (st FaultStats) sub(before FaultStats) FaultStats {
	d := FaultStats{
		Requests: st.Requests - before.Requests, Injected500: st.Injected500 - before.Injected500,
		SpotRequests: st.SpotRequests - before.SpotRequests, InjectedSpot: st.InjectedSpot - before.InjectedSpot,
		JobLaunchRequests: st.JobLaunchRequests - before.JobLaunchRequests, PoolLaunchRequests: st.PoolLaunchRequests - before.PoolLaunchRequests,
		Operations: map[string]int64{}, Calls: subCounts(st.Calls, before.Calls), ByFunction: subCounts(st.ByFunction, before.ByFunction),
		ByResource: subCounts(st.ByResource, before.ByResource), ByCondition: subCounts(st.ByCondition, before.ByCondition),
	}
	d.InjectedTotal = d.Injected500 + d.InjectedSpot
	for k, v := range st.Operations {
		if n := v - before.Operations[k]; n > 0 {
			d.Operations[k] = n
		}
	}
	return d
}

func copyCounts(m map[string]map[string]int64) map[string]map[string]int64 {
	out := make(map[string]map[string]int64, len(m))
	for fn, ops := range m {
		out[fn] = make(map[string]int64, len(ops))
		for k, v := range ops {
			out[fn][k] = v
		}
	}
	return out
}

func subCounts(now, before map[string]map[string]int64) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for fn, ops := range now {
		for k, v := range ops {
			if n := v - before[fn][k]; n > 0 {
				if out[fn] == nil {
					out[fn] = map[string]int64{}
				}
				out[fn][k] = n
			}
		}
	}
	return out
}

func increment(m *map[string]map[string]int64, fn, key string) {
	if *m == nil {
		*m = map[string]map[string]int64{}
	}
	if (*m)[fn] == nil {
		(*m)[fn] = map[string]int64{}
	}
	(*m)[fn][key]++
}

// setResources names the deployment's resources for the record, and what
// the condition recorder needs.
func (p *faultProxy) setResources(classes map[string]string, cond *conditionContext) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.classes = classes
	p.cond = cond
}

// count records one call of fn. body is a JSON request's body: a
// transaction's items are recorded as the operations IAM authorises.
func (p *faultProxy) count(fn, op string, target jsonTarget, body []byte, facts []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops[op]++
	if fn == "" {
		return
	}
	increment(&p.fnCall, fn, op)
	items := []authorised{{op, target}}
	switch op {
	case "dynamodb.TransactWriteItems":
		items = transactItems(body)
	case "dynamodb.BatchGetItem":
		items = batchItems(op, body)
	}
	for _, it := range items {
		increment(&p.fnOps, fn, it.op)
		if res := it.target.class(p.classes); res != "" {
			increment(&p.fnRes, fn, it.op+" "+res)
		}
	}
	for _, f := range facts {
		increment(&p.fnCon, fn, f)
	}
}

// authorised is one operation IAM authorises, on the resource it names.
type authorised struct {
	op     string
	target jsonTarget
}

// transactOps are the IAM actions of a TransactWriteItems item's kinds.
var transactOps = map[string]string{
	"Put": "dynamodb.PutItem", "Update": "dynamodb.UpdateItem",
	"Delete": "dynamodb.DeleteItem", "ConditionCheck": "dynamodb.ConditionCheckItem",
}

// transactItems lists a TransactWriteItems request's items as the
// operations IAM authorises, each on its table.
func transactItems(body []byte) []authorised {
	var req struct {
		TransactItems []map[string]jsonTarget `json:"TransactItems"`
	}
	_ = json.Unmarshal(body, &req)
	var out []authorised
	for _, item := range req.TransactItems {
		for kind, t := range item {
			op, ok := transactOps[kind]
			if !ok {
				op = "dynamodb.Unknown" + kind // fails the sufficiency check: nothing grants it
			}
			out = append(out, authorised{op, t})
		}
	}
	return out
}

// batchItems lists a batch request's tables as the operation on each (IAM
// authorises BatchGetItem per table).
func batchItems(op string, body []byte) []authorised {
	var req struct {
		RequestItems map[string]json.RawMessage `json:"RequestItems"`
	}
	_ = json.Unmarshal(body, &req)
	var out []authorised
	for _, table := range slices.Sorted(maps.Keys(req.RequestItems)) {
		out = append(out, authorised{op, jsonTarget{TableName: table}})
	}
	if len(out) == 0 {
		out = append(out, authorised{op, jsonTarget{}})
	}
	return out
}

func (p *faultProxy) conditions() *conditionContext {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cond
}

// jsonTarget is what a JSON-protocol request (DynamoDB, SQS, Secrets
// Manager) names as its resource.
type jsonTarget struct {
	TableName string `json:"TableName"`
	IndexName string `json:"IndexName"`
	QueueURL  string `json:"QueueUrl"`
	SecretID  string `json:"SecretId"`
}

// class names the target among classes; "unknown:<name>" for a resource
// that is not the deployment's, "" when the request names none.
func (t jsonTarget) class(classes map[string]string) string {
	if classes == nil {
		return ""
	}
	name := t.TableName
	if name == "" {
		name = t.QueueURL
	}
	if name == "" {
		name = t.SecretID
	}
	if name == "" {
		return ""
	}
	c, ok := classes[name]
	if !ok {
		return "unknown:" + name
	}
	if t.IndexName != "" {
		c += "/index/" + t.IndexName
	}
	return c
}

// functionKeyPrefix starts the access key id each Lambda signs with against
// moto (which accepts any): functionKeyPrefix + the function's name.
const functionKeyPrefix = "JITRSANDBOX"

// functionKeyID is the access key id of function fn.
func functionKeyID(fn string) string { return functionKeyPrefix + strings.ToUpper(fn) }

// caller names the function that signed r, "" for anyone else.
func caller(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return ""
	}
	key, _, _ := strings.Cut(auth[i+len("Credential="):], "/")
	if !strings.HasPrefix(key, functionKeyPrefix) {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(key, functionKeyPrefix))
}

func (p *faultProxy) chance() bool {
	if p.rate <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < p.rate
}

var sdkAttemptRE = regexp.MustCompile(`attempt=(\d+);\s*max=(\d+)`)

// lastAttempt reports whether the SDK says this is its last attempt.
func lastAttempt(r *http.Request) bool {
	m := sdkAttemptRE.FindStringSubmatch(r.Header.Get("Amz-Sdk-Request"))
	if m == nil {
		return false
	}
	a, _ := strconv.Atoi(m[1])
	n, _ := strconv.Atoi(m[2])
	return a >= n
}

// rereadBody reads r's body (up to 4 MiB) and puts it back for the proxy;
// on a read error it answers 400 and returns false.
func rereadBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, true
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	var form url.Values
	if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		body, ok := rereadBody(w, r)
		if !ok {
			return
		}
		form, _ = url.ParseQuery(string(body))
	}
	op := service(r) + "."
	var target jsonTarget
	var body []byte
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		op += t[strings.LastIndexByte(t, '.')+1:]
		var ok bool
		if body, ok = rereadBody(w, r); !ok {
			return
		}
		_ = json.Unmarshal(body, &target)
	} else {
		op += form.Get("Action")
	}
	fn := caller(r)
	var facts []string
	if fn != "" {
		facts = p.conditions().conditionFacts(r, op, form, body)
	}
	p.count(fn, op, target, body, facts)
	if p.rate > 0 && !lastAttempt(r) && p.chance() {
		p.injected500.Add(1)
		writeInternalError(w, r)
		return
	}
	if form != nil {
		if form.Get("Action") == "CreateFleet" {
			if tagged(form, tags.Pool) {
				p.poolLaunches.Add(1)
			} else {
				p.jobLaunches.Add(1)
				fr := fleetRequest(form)
				p.fleetsMu.Lock()
				p.fleets = append(p.fleets, fr)
				p.fleetsMu.Unlock()
			}
		}
		if form.Get("Action") == "CreateFleet" && form.Get("TargetCapacitySpecification.DefaultTargetCapacityType") == "spot" {
			p.spotRequests.Add(1)
			if p.chance() {
				p.injectedSpot.Add(1)
				writeSpotCapacityError(w, form)
				return
			}
		}
	}
	start := time.Now()
	p.next.ServeHTTP(w, r)
	p.latMu.Lock()
	p.lat[op] = append(p.lat[op], time.Since(start))
	p.latMu.Unlock()
}

// latencyMark is how many latency samples each operation has: a load's
// latencies are those recorded after its mark.
func (p *faultProxy) latencyMark() map[string]int {
	p.latMu.Lock()
	defer p.latMu.Unlock()
	m := make(map[string]int, len(p.lat))
	for op, v := range p.lat {
		m[op] = len(v)
	}
	return m
}

// latencySince returns, per operation, the percentiles of the emulated
// AWS's answers (proxy to answer, in seconds) recorded after mark: where an
// emulator saturates, its operations' latencies show it.
func (p *faultProxy) latencySince(mark map[string]int) map[string]Percentiles {
	p.latMu.Lock()
	defer p.latMu.Unlock()
	out := map[string]Percentiles{}
	for op, v := range p.lat {
		if len(v) > mark[op] {
			out[op] = NewPercentiles(v[mark[op]:])
		}
	}
	return out
}

// tagged reports whether an EC2 request's tag specifications set key.
func tagged(form url.Values, key string) bool {
	for k, v := range form {
		if strings.HasPrefix(k, "TagSpecification.") && strings.HasSuffix(k, ".Key") && slices.Contains(v, key) {
			return true
		}
	}
	return false
}

// service names the AWS service of a request from its SigV4 scope.
func service(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return ""
	}
	parts := strings.Split(strings.SplitN(auth[i+len("Credential="):], ",", 2)[0], "/")
	if len(parts) >= 4 {
		return parts[3]
	}
	return ""
}

// writeInternalError answers HTTP 500 in the request's protocol.
func writeInternalError(w http.ResponseWriter, r *http.Request) {
	id := requestID()
	const msg = "We encountered an internal error. Please try again. (injected by the jitr sandbox)"
	w.Header().Set("X-Amzn-Requestid", id)
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/x-amz-json"):
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Amzn-Errortype", "InternalFailure")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"__type":"InternalFailure","message":%q}`, msg)
	case service(r) == "ec2":
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>InternalError</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`, msg, id)
	default:
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`, msg, id)
	}
}

var overrideKeyRE = regexp.MustCompile(`^LaunchTemplateConfigs\.(\d+)\.Overrides\.(\d+)\.(InstanceType|SubnetId|AvailabilityZone)$`)

// overrideField names the override field a CreateFleet form key sets
// ("SubnetId"), or "" for any other key.
func overrideField(key string) string {
	if m := overrideKeyRE.FindStringSubmatch(key); m != nil {
		return m[3]
	}
	return ""
}

type fleetOverride struct {
	InstanceType     string `xml:"instanceType,omitempty"`
	SubnetID         string `xml:"subnetId,omitempty"`
	AvailabilityZone string `xml:"availabilityZone,omitempty"`
}

type fleetError struct {
	LaunchTemplateID string        `xml:"launchTemplateAndOverrides>launchTemplateSpecification>launchTemplateId"`
	Version          string        `xml:"launchTemplateAndOverrides>launchTemplateSpecification>version"`
	Overrides        fleetOverride `xml:"launchTemplateAndOverrides>overrides"`
	Lifecycle        string        `xml:"lifecycle"`
	ErrorCode        string        `xml:"errorCode"`
	ErrorMessage     string        `xml:"errorMessage"`
}

type createFleetResponse struct {
	XMLName   xml.Name     `xml:"CreateFleetResponse"`
	XMLNS     string       `xml:"xmlns,attr"`
	RequestID string       `xml:"requestId"`
	FleetID   string       `xml:"fleetId"`
	Errors    []fleetError `xml:"errorSet>item"`
	Instances struct{}     `xml:"fleetInstanceSet"`
}

// writeSpotCapacityError answers a CreateFleet request the way EC2 does when
// no override has spot capacity: 200, one InsufficientInstanceCapacity per
// override, no instance.
func writeSpotCapacityError(w http.ResponseWriter, form url.Values) {
	type key struct{ cfg, ov int }
	overrides := map[key]*fleetOverride{}
	for k, v := range form {
		m := overrideKeyRE.FindStringSubmatch(k)
		if m == nil || len(v) == 0 {
			continue
		}
		c, _ := strconv.Atoi(m[1])
		o, _ := strconv.Atoi(m[2])
		ov := overrides[key{c, o}]
		if ov == nil {
			ov = &fleetOverride{}
			overrides[key{c, o}] = ov
		}
		switch m[3] {
		case "InstanceType":
			ov.InstanceType = v[0]
		case "SubnetId":
			ov.SubnetID = v[0]
		case "AvailabilityZone":
			ov.AvailabilityZone = v[0]
		}
	}
	keys := make([]key, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].cfg != keys[j].cfg {
			return keys[i].cfg < keys[j].cfg
		}
		return keys[i].ov < keys[j].ov
	})
	resp := createFleetResponse{XMLNS: "http://ec2.amazonaws.com/doc/2016-11-15/", RequestID: requestID(), FleetID: "fleet-" + randomHex(17)}
	for _, k := range keys {
		ov := overrides[k]
		resp.Errors = append(resp.Errors, fleetError{
			LaunchTemplateID: form.Get("LaunchTemplateConfigs." + strconv.Itoa(k.cfg) + ".LaunchTemplateSpecification.LaunchTemplateId"),
			Version:          form.Get("LaunchTemplateConfigs." + strconv.Itoa(k.cfg) + ".LaunchTemplateSpecification.Version"),
			Overrides:        *ov,
			Lifecycle:        "spot",
			ErrorCode:        "InsufficientInstanceCapacity",
			ErrorMessage: fmt.Sprintf("We currently do not have sufficient %s capacity in the Availability Zone you requested (%s). "+
				"Our system will be working on provisioning additional capacity. (injected by the jitr sandbox)", ov.InstanceType, ov.AvailabilityZone),
		})
	}
	b, err := xml.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	_, _ = w.Write(append([]byte(xml.Header), b...))
}

func requestID() string {
	b := randomHex(32)
	return b[0:8] + "-" + b[8:12] + "-" + b[12:16] + "-" + b[16:20] + "-" + b[20:32]
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv"
)

// motoServices are the AWS services that get a moto server of their own.
// moto serves a process's requests one at a time (Python's global
// interpreter lock), so one server for everything measures moto's queue,
// not the control plane: one per service lets them use every core, as the
// real services scale out. Any other service (STS) goes to the first.
var motoServices = []string{"dynamodb", "ec2", "sqs", "secretsmanager"}

// awsRouter sends each AWS request to the endpoint of its service, read
// from the request's SigV4 credential scope, like the SDK's per-service
// endpoints (AWS_ENDPOINT_URL_<SERVICE>) would.
type awsRouter struct {
	byService map[string]*httputil.ReverseProxy
	fallback  *httputil.ReverseProxy
}

// newAWSRouter routes service -> URL; fallback serves every other service.
func newAWSRouter(upstreams map[string]string, fallback string, log *slog.Logger) (*awsRouter, error) {
	transport := &http.Transport{
		Proxy: nil, MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 0,
		DialContext: (&net.Dialer{}).DialContext,
	}
	proxyTo := func(target string) (*httputil.ReverseProxy, error) {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("AWS endpoint %q is not a URL", target)
		}
		return &httputil.ReverseProxy{
			Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u) },
			Transport: transport,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				if r.Context().Err() == nil {
					log.Warn("AWS endpoint unreachable", slog.String("endpoint", target), slog.String("error", err.Error()))
				}
				w.WriteHeader(http.StatusBadGateway)
			},
		}, nil
	}
	r := &awsRouter{byService: map[string]*httputil.ReverseProxy{}}
	var err error
	if r.fallback, err = proxyTo(fallback); err != nil {
		return nil, err
	}
	for svc, target := range upstreams {
		if r.byService[svc], err = proxyTo(target); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *awsRouter) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if p, ok := r.byService[service(req)]; ok {
		p.ServeHTTP(w, req)
		return
	}
	r.fallback.ServeHTTP(w, req)
}

// startMotos starts one moto server per service in motoServices, in
// parallel, each logging to moto-<service>.log in logDir. On an error it
// stops the ones that started.
func startMotos(ctx context.Context, logDir string) (map[string]*testenv.Moto, error) {
	var (
		mu    sync.Mutex
		motos = map[string]*testenv.Moto{}
		errs  []error
		wg    sync.WaitGroup
	)
	for _, svc := range motoServices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := testenv.StartMoto(ctx, logDir, "moto-"+svc+".log")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("moto for %s: %w", svc, err))
				return
			}
			motos[svc] = m
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, m := range motos {
			_ = m.Close()
		}
		return nil, err
	}
	return motos, nil
}

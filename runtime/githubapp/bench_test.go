package githubapp

import (
	"context"
	"fmt"
	"testing"

	"github.com/jit-runners/jit-runners/runtime/internal/testenv/ghfake"
)

// BenchmarkJITConfig measures GenerateJITConfig on a warm Client (token and
// runner group cached) and reports the GitHub calls each one costs.
func BenchmarkJITConfig(b *testing.B) {
	for _, scope := range []string{ScopeOrg, ScopeRepo} {
		b.Run(scope, func(b *testing.B) {
			srv := newFake(b)
			c := newTestClient(b, srv, scope)
			ctx := context.Background()
			if _, err := c.GenerateJITConfig(ctx, inst, "jitr-warm", labels); err != nil {
				b.Fatal(err)
			}
			srv.ResetCalls()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.GenerateJITConfig(ctx, inst, fmt.Sprintf("jitr-%d", i), labels); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(srv.TotalCalls())/float64(i), "gh-calls/op")
			b.ReportMetric(float64(srv.TokenRequests())/float64(i), "token-requests/op")
			_ = ghfake.RouteOrgJITConfig
		})
	}
}

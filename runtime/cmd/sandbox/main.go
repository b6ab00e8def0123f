// Command sandbox runs the whole jit-runners control plane on one machine
// (moto, the GitHub fake, the three Lambdas under the Runtime Interface
// Emulator, an SQS poller, a scheduler and the webhook endpoint). It is
// wiring only; package runtime/internal/sandbox does the work. Usage:
// docs/sandbox.md, or `go run ./runtime/cmd/sandbox -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jit-runners/jit-runners/runtime/internal/sandbox"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	st, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sandbox:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: st.logLevel}))
	st.opts.Stdout, st.opts.Logger = stdout, log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := sandbox.Start(ctx, st.opts)
	if err != nil {
		if ctx.Err() != nil {
			return 0 // interrupted during start-up; Start stopped what it started
		}
		log.Error("sandbox failed to start", slog.String("error", err.Error()))
		return 1
	}
	code := 0
	if st.load.Jobs > 0 {
		sum, err := s.RunLoad(ctx, st.load)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			log.Error("load failed", slog.String("error", err.Error()))
			code = 1
		default:
			sum.Print(stdout)
			if !sum.OK() {
				code = 1
			}
		}
	} else {
		<-ctx.Done()
	}
	stop() // a second signal now ends the process at once
	if err := s.Close(); err != nil {
		log.Warn("close", slog.String("error", err.Error()))
	}
	log.Info("sandbox stopped")
	return code
}

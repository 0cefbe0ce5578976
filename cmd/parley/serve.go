package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/parley-rtc/parley/configs"
)

// shutdownTimeout bounds a graceful stop.
const shutdownTimeout = 30 * time.Second

// splitConfigFlag takes --config FILE (or PARLEY_CONFIG) out of args.
func splitConfigFlag(args []string) (string, []string) {
	path := os.Getenv("PARLEY_CONFIG")
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path = args[i+1]
				i++
			}
		case len(a) > 9 && a[:9] == "--config=":
			path = a[9:]
		case len(a) > 8 && a[:8] == "-config=":
			path = a[8:]
		default:
			rest = append(rest, a)
		}
	}
	return path, rest
}

func serveCmd(args []string, stdout, stderr io.Writer) int {
	start := time.Now()
	path, rest := splitConfigFlag(args)
	cfg, err := configs.Load(path, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: parley serve [--config FILE] [flags]\n\n  -config FILE\n    \tYAML configuration file (PARLEY_CONFIG)\n%s", configs.FlagUsage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley: %v\n", err)
		return 2
	}
	// The variables `parley agent assistant` reads make the demo's agent
	// the assistant too.
	as := &cfg.EchoAgent.Assistant
	as.BaseURL = cmp.Or(as.BaseURL, os.Getenv(envAssistantBaseURL))
	as.Model = cmp.Or(as.Model, os.Getenv(envAssistantModel))
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	log.Info("starting parley", "version", version, "config", cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a := newApp(cfg, log)
	if err := a.Start(ctx); err != nil {
		log.Error("start failed", "err", err)
		fmt.Fprintf(stderr, "parley: start failed: %v\n", err)
		return 1
	}
	natsURL := configs.RedactNATSURL(a.broker.NATSClientURL()) // an external URL may hold a password or token
	log.Info("parley ready", "demo", a.demoURL(), "nats", natsURL,
		"startup", time.Since(start).Round(time.Millisecond).String())
	fmt.Fprintf(stdout, "Parley is ready: open %s (agents connect to %s)\n", a.demoURL(), natsURL)
	if dir := a.broker.CredsDir(); dir != "" {
		fmt.Fprintf(stdout, "NATS credentials are in %s (parley rooms/keys/agent echo find them with --data-dir %s; nats CLI: --creds %s)\n",
			dir, a.cfg.DataDir, filepath.Join(dir, "operator.creds"))
	}

	<-ctx.Done()
	stop() // a second signal now kills the process
	log.Info("shutting down (a second signal forces it)")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := a.Stop(sctx); err != nil {
		log.Warn("shutdown was not clean", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

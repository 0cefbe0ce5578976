package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/cmd/internal/assistant"
	"github.com/parley-rtc/parley/configs"
	"github.com/parley-rtc/parley/media"
	"github.com/parley-rtc/parley/media/speech"
	"github.com/parley-rtc/parley/signaling"
)

// app is one running Parley: broker, HTTP edge and the in-process echo
// agent workers. Tests build it the same way serve does.
type app struct {
	cfg    configs.Config
	log    *slog.Logger
	broker *broker.Broker
	engine *media.Engine
	lk     *media.LiveKit // nil without livekit.url
	server *signaling.Server
	// closeSpeech closes the speech engines' HTTP clients; closeAssistant
	// the demo assistant's (nil: the echo agent).
	closeSpeech    func()
	closeAssistant func()

	echoConn    *nats.Conn
	echoWorkers []*agentbridge.Worker
}

func newApp(cfg configs.Config, log *slog.Logger) *app {
	return &app{cfg: cfg, log: log, broker: broker.New(cfg, log)}
}

// Start starts the broker, the media engine, the HTTP server (with
// LiveKit if configured) and the echo workers. On error whatever started is
// stopped again, through Stop, which stops only what is there.
func (a *app) Start(ctx context.Context) (err error) {
	defer func() {
		if err == nil {
			return
		}
		// A context of its own: ctx may be what failed the start, and the
		// server's sweeper must be waited for whatever ctx says.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if stopErr := a.Stop(stopCtx); stopErr != nil {
			a.log.Warn("stopping after a failed start", "err", stopErr)
		}
	}()
	if err := a.broker.Start(ctx); err != nil {
		return err
	}
	engine, err := media.NewEngine(mediaConfig(a.cfg.Media), a.log.With("component", "media"))
	if err != nil {
		return err
	}
	a.engine = engine
	server, err := signaling.New(a.cfg, signaling.BrokerDeps(a.broker), a.engine, a.log)
	if err != nil {
		return err
	}
	a.server = server
	engines, closeSpeech := speechEngines(a.cfg, a.log)
	a.closeSpeech = closeSpeech
	a.server.SetSpeech(engines)
	if a.cfg.LiveKit.Enabled() {
		lk, err := media.NewLiveKit(liveKitConfig(a.cfg.LiveKit), mediaConfig(a.cfg.Media), a.log.With("component", "livekit"))
		if err != nil {
			return err
		}
		a.lk = lk
		a.server.SetLiveKit(lk)
	}
	if err := a.server.Start(); err != nil {
		return err
	}
	if a.cfg.EchoAgent.Enabled && a.cfg.EchoAgent.Workers > 0 {
		if err := a.startEcho(); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) startEcho() error {
	opts := []nats.Option{nats.Name("parley-echo-agent"), nats.MaxReconnects(-1)}
	if o := a.broker.InProcessOption(); o != nil {
		opts = append(opts, o)
	}
	auth, err := a.broker.ClientOptions(broker.AgentRole(a.cfg.EchoAgent.Agent))
	if err != nil {
		return fmt.Errorf("echo agent: %w", err)
	}
	opts = append(opts, auth...)
	opts = append(opts, agentbridge.ConnectOptions(a.cfg.NATS.Prefix, a.cfg.EchoAgent.Agent)...)
	nc, err := nats.Connect(a.broker.InProcessURL(), opts...)
	if err != nil {
		return fmt.Errorf("echo agent: connect: %w", err)
	}
	a.echoConn = nc
	if h, ok, err := a.demoAssistant(); err != nil {
		return err
	} else if ok {
		workers, err := startWorkers(nc, a.cfg.NATS.Prefix, a.cfg.EchoAgent.Agent, a.cfg.EchoAgent.Workers, a.log, h)
		a.echoWorkers = workers
		if err != nil {
			return fmt.Errorf("assistant agent: %w", err)
		}
		return nil
	}
	workers, err := startEchoWorkers(nc, a.cfg.NATS.Prefix, a.cfg.EchoAgent.Agent, a.cfg.EchoAgent.Workers, a.log)
	a.echoWorkers = workers
	return err
}

// demoAssistant is the in-process agent's handler when an assistant
// endpoint is configured (echo_agent.assistant.base_url; serve also takes
// PARLEY_ASSISTANT_BASE_URL, as `parley agent assistant` does); ok is
// false without one: the demo runs the echo agent.
func (a *app) demoAssistant() (agentbridge.Handler, bool, error) {
	ac := a.cfg.EchoAgent.Assistant
	if ac.BaseURL == "" {
		return nil, false, nil
	}
	cfg := assistant.Config{BaseURL: ac.BaseURL, Model: ac.Model, KeyFile: ac.APIKeyFile}
	if cfg.KeyFile == "" {
		cfg.Key = speech.Secret(firstEnv(envAssistantKey, "OPENAI_API_KEY"))
	}
	client, err := assistant.NewClient(cfg)
	if err != nil {
		return nil, false, fmt.Errorf("assistant agent: %w", err)
	}
	a.closeAssistant = client.Close
	a.log.Info("demo agent: the assistant", "agent", a.cfg.EchoAgent.Agent, "endpoint", client.URL(),
		"model", client.Model(), "api_key", client.HasKey())
	ag := &assistant.Agent{Client: client, System: ac.System, Log: a.log.With("component", "assistant")}
	return ag.Run, true, nil
}

// startEchoWorkers starts n echo workers on nc.
func startEchoWorkers(nc *nats.Conn, prefix, agent string, n int, log *slog.Logger) ([]*agentbridge.Worker, error) {
	workers, err := startWorkers(nc, prefix, agent, n, log, echoAgent)
	if err != nil {
		return workers, fmt.Errorf("echo agent: %w", err)
	}
	return workers, nil
}

// Stop shuts down in dependency order: the HTTP edge first (in-flight
// requests finish storing, WebSockets close with 1001), then the agent
// workers drain, then the broker closes NATS and the embedded server.
func (a *app) Stop(ctx context.Context) error {
	var errs []error
	if a.server != nil {
		errs = append(errs, a.server.Shutdown(ctx))
	}
	for _, w := range a.echoWorkers {
		if err := w.Drain(ctx); err != nil {
			errs = append(errs, fmt.Errorf("echo agent drain: %w", err))
		}
	}
	if a.echoConn != nil {
		a.echoConn.Close()
	}
	if a.closeAssistant != nil {
		a.closeAssistant()
	}
	a.broker.Close() // hangs up voice legs
	if a.closeSpeech != nil {
		a.closeSpeech() // after the server: its pipelines have stopped
	}
	if a.lk != nil {
		errs = append(errs, a.lk.Close()) // after the broker: its legs closed their bridges
	}
	if a.engine != nil {
		errs = append(errs, a.engine.Close())
	}
	return errors.Join(errs...)
}

// liveKitConfig maps the LiveKit settings onto media's.
func liveKitConfig(l configs.LiveKitConfig) media.LiveKitConfig {
	return media.LiveKitConfig{URL: l.URL, APIKey: l.APIKey, APISecret: l.APISecret,
		RoomPrefix: l.RoomPrefix, EmptyTimeout: l.EmptyTimeout}
}

// mediaConfig maps the media settings onto the engine's.
func mediaConfig(m configs.MediaConfig) media.Config {
	return media.Config{
		UDPPort: m.UDPPort, PortMin: uint16(m.PortMin), PortMax: uint16(m.PortMax),
		NAT1To1IPs: m.NAT1To1IPs, Interfaces: m.Interfaces, IncludeLoopback: m.IncludeLoopback,
		DisconnectedTimeout: m.DisconnectedTimeout, FailedTimeout: m.FailedTimeout,
		JitterWindow: m.JitterWindow, SilenceTimeout: m.SilenceTimeout, PlayoutQueue: m.PlayoutQueueFrames,
	}
}

// demoURL is the page a person opens to try Parley.
func (a *app) demoURL() string {
	if a.cfg.PublicURL != "" {
		return a.cfg.PublicURL + "/"
	}
	addr := a.server.Addr()
	if h, p, ok := strings.Cut(addr, ":"); ok && (h == "127.0.0.1" || h == "" || h == "0.0.0.0" || h == "[::]") {
		addr = "localhost:" + p
	}
	return "http://" + addr + "/"
}

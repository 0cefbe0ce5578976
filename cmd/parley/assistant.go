package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/parley-rtc/parley/cmd/internal/assistant"
	"github.com/parley-rtc/parley/media/speech"
)

// The environment variables of `parley agent assistant`; the OPENAI_*
// ones are the fallbacks the OpenAI SDKs read.
const (
	envAssistantBaseURL = "PARLEY_ASSISTANT_BASE_URL"
	envAssistantModel   = "PARLEY_ASSISTANT_MODEL"
	envAssistantKey     = "PARLEY_ASSISTANT_API_KEY"
)

// assistantUsage heads parley agent assistant -h; the flags follow.
const assistantUsage = `Usage: parley agent assistant --base-url URL [--model M] [--api-key-file FILE] [flags]

Runs agent workers that answer each visitor message (chat, or voice through the speech
pipeline) with a reply streamed from an OpenAI-compatible chat-completions endpoint
(POST URL/chat/completions, "stream": true), the conversation so far as context. A barge-in
stops the model at once; an endpoint that fails gives the visitor a short apology and the
agent logs why. The key comes from --api-key-file, else ` + envAssistantKey + `, else
OPENAI_API_KEY, and is never logged.

Flags:
`

// assistantCmd runs `parley agent assistant`.
func assistantCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley agent assistant", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, assistantUsage)
		fs.PrintDefaults()
	}
	af := addAgentFlags(fs)
	baseURL := fs.String("base-url", firstEnv(envAssistantBaseURL, "OPENAI_BASE_URL"),
		"chat-completions API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1 ("+envAssistantBaseURL+", OPENAI_BASE_URL)")
	model := fs.String("model", firstEnv(envAssistantModel), "model name ("+envAssistantModel+"; default "+assistant.DefaultModel+")")
	keyFile := fs.String("api-key-file", "", "file holding the API key (default: "+envAssistantKey+", then OPENAI_API_KEY)")
	system := fs.String("system", assistant.DefaultSystem, "system prompt")
	maxHistory := fs.Int("max-history", assistant.DefaultMaxHistory, "earlier messages sent with each request (0: none)")
	timeout := fs.Duration("timeout", assistant.DefaultTimeout, "longest wait for the endpoint's answer to start, and between two pieces of it")
	if code, done := af.parse(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "parley agent assistant: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *baseURL == "" {
		fmt.Fprintf(stderr, "parley agent assistant: no chat-completions endpoint: pass --base-url URL (or set %s or OPENAI_BASE_URL), "+
			"e.g. --base-url https://api.openai.com/v1 with OPENAI_API_KEY set, or a local server's http://127.0.0.1:PORT/v1\n", envAssistantBaseURL)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "parley agent assistant: --timeout must be positive")
		return 2
	}
	cfg := assistant.Config{BaseURL: *baseURL, Model: *model, Timeout: *timeout, KeyFile: *keyFile}
	if *keyFile == "" {
		cfg.Key = speech.Secret(firstEnv(envAssistantKey, "OPENAI_API_KEY"))
	}
	client, err := assistant.NewClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "parley agent assistant: %v\n", err)
		return 2
	}
	defer client.Close()
	log := af.logger(stderr)
	// -1 asks for no history; the package's zero means its default.
	hist := *maxHistory
	if hist <= 0 {
		hist = -1
	}
	a := &assistant.Agent{Client: client, System: *system, MaxHistory: hist, Log: log}
	log.Info("assistant agent", "endpoint", client.URL(), "model", client.Model(), "api_key", client.HasKey(),
		"max_history", *maxHistory, "timeout", timeout.String())
	return af.serve("assistant agent", a.Run, stdout, log)
}

// firstEnv is the first of the variables set to something.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

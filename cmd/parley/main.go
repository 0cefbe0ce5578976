// Command parley is Parley's one binary: the broker (serve), agent workers
// (agent echo, agent assistant) and operator tools.
//
//	parley serve [--config FILE] [flags]   run Parley (embedded NATS, demo, echo agent)
//	parley agent echo [--data-dir DIR]     run echo agent workers against a NATS server
//	parley agent assistant --base-url URL  run agent workers backed by a chat-completions endpoint
//	parley agents credentials --agent NAME an agent's NATS credentials (agents.go)
//	parley bench voice [--sessions N]      load-test the voice path
//	parley bench chat [--conversations N]  load-test the chat path
//	parley check --data-dir DIR            check a stopped store for lost data
//	parley version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	// Every command takes the arguments after its name and the two writers.
	commands := map[string]func(args []string, stdout, stderr io.Writer) int{
		"serve":  serveCmd,
		"agent":  agentCmd,
		"bench":  benchCmd,
		"agents": agentsCmd,
		"keys":   keysCmd,
		"rooms":  roomsCmd,
		"check":  checkCmd,
	}
	if cmd, ok := commands[args[0]]; ok {
		return cmd(args[1:], stdout, stderr)
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, "parley", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "parley: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: parley <command> [flags]

Commands:
  serve        run Parley: HTTP API, embedded NATS + JetStream, demo page, echo agent
  agent echo   run echo agent workers against a NATS server (--nats-url; credentials
               from --data-dir, default ./parley-data, or --nats-creds)
  agent assistant
               the same with replies streamed from an OpenAI-compatible chat-completions
               endpoint (--base-url, --model, key from PARLEY_ASSISTANT_API_KEY)
  agents       NATS credentials of an agent's workers (parley agents credentials --agent NAME),
               or the permissions to give it on an external NATS (parley agents permissions)
  bench voice  load-test the voice path with N pion peers (starts its own serve)
  bench chat   load-test the chat path with N live conversations (starts its own serve)
  keys         create, list and revoke API keys (admin "ak_", secret "sk_")
  rooms        list, watch (--watch) and show live rooms (parley rooms show ID)
  check        check a stopped parley's data directory for lost or corrupt data (--data-dir)
  version      print the version

Run "parley serve -h" for the serve flags.
`)
}

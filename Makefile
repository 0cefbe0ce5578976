# Parley — build, run and test. `make test` is the README's test command
# and what CI runs (.ci/run).

GO      ?= go
PKGS    ?= ./...
GOFLAGS ?= -buildvcs=false
export GOFLAGS

.PHONY: all build run test test-short vet fmt-check bench fuzz clean browser livekit speech-tools whip-client \
	vendor-livekit-client check-vendor

all: build

## build: the parley binary in ./bin
build:
	$(GO) build -o bin/parley ./cmd/parley

## run: Parley with embedded NATS, the demo page and the echo agent
run:
	$(GO) run ./cmd/parley serve

## test: formatting, vet, and every test with the race detector
test: browser livekit speech-tools whip-client fmt-check check-vendor vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	@out=$$($(GO) test -count=1 -run '^TestAttackList$$' -v ./signaling 2>&1); rc=$$?; \
	printf '%s\n' "$$out" | grep -E '^(--- FAIL|FAIL)|attacks and promises tried'; exit $$rc

## test-short: the quick tests only (no subprocesses), without -race
test-short:
	$(GO) test -short -count=1 $(PKGS)

## browser: Debian's chromium for the browser tests (cmd/parley/browser_test.go),
## installed once. A failed install only warns: those tests then skip loudly
## (or fail, with PARLEY_REQUIRE_BROWSER=1 as in CI).
browser:
	@if [ -x "/usr/bin/chromium" ]; then exit 0; fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi; \
	echo "== installing chromium for the browser tests"; \
	if $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium && [ -x "/usr/bin/chromium" ]; then \
	  echo "== chromium installed: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else \
	  echo "################################################################" >&2; \
	  echo "## WARNING: could not install chromium (/usr/bin/chromium is missing)." >&2; \
	  echo "## The browser tests (TestBrowser*) will SKIP, or FAIL when" >&2; \
	  echo "## PARLEY_REQUIRE_BROWSER=1." >&2; \
	  echo "################################################################" >&2; \
	fi

## livekit: livekit-server $(LIVEKIT_VERSION) for the LiveKit tests
## (cmd/parley/livekit_test.go), built once from its Go module source into
## $(CACHE)/bin (about 90 s on 2 cores). Skipped when the binary is there and
## answers --version. A failed build only warns: those tests then skip loudly
## (or fail, with PARLEY_REQUIRE_LIVEKIT=1 as in CI).
CACHE           ?= .cache
LIVEKIT_VERSION ?= v1.11.0
LIVEKIT_SRC     := $(CACHE)/livekit-server-src
LIVEKIT_BIN     := $(CACHE)/bin/livekit-server
livekit:
	@if [ -x "$(LIVEKIT_BIN)" ] && "$(LIVEKIT_BIN)" --version >/dev/null 2>&1; then exit 0; fi; \
	echo "== building livekit-server $(LIVEKIT_VERSION) into $(LIVEKIT_BIN) (once; ~90 s on 2 cores)"; \
	start=$$(date +%s); \
	info=$$($(GO) mod download -json github.com/livekit/livekit-server@$(LIVEKIT_VERSION) 2>&1); \
	dir=$$(printf '%s\n' "$$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	[ -n "$$dir" ] || printf '%s\n' "$$info" >&2; \
	if [ -n "$$dir" ] && [ -d "$$dir" ] \
	  && rm -rf "$(LIVEKIT_SRC)" && mkdir -p "$(CACHE)/bin" && cp -R "$$dir" "$(LIVEKIT_SRC)" \
	  && chmod -R u+w "$(LIVEKIT_SRC)" \
	  && (cd "$(LIVEKIT_SRC)" && GOWORK=off $(GO) build -o "$(abspath $(LIVEKIT_BIN))" ./cmd/server) \
	  && "$(LIVEKIT_BIN)" --version; then \
	  echo "== livekit-server built in $$(( $$(date +%s) - start )) s"; \
	else \
	  rm -f "$(LIVEKIT_BIN)"; \
	  echo "################################################################" >&2; \
	  echo "## WARNING: could not build livekit-server $(LIVEKIT_VERSION)" >&2; \
	  echo "## ($(LIVEKIT_BIN) is missing). The LiveKit tests (TestLiveKit*)" >&2; \
	  echo "## will SKIP, or FAIL when PARLEY_REQUIRE_LIVEKIT=1." >&2; \
	  echo "################################################################" >&2; \
	fi

## whip-client: a WHIP client nobody here wrote, for the interop test
## (cmd/parley/whipclient_test.go, TestWHIPClient): the npm package
## $(WHIP_CLIENT) (MIT, by the author of RFC 9725), fetched once with
## `npm pack`, its tarball checked against the pinned sha256 and unpacked,
## unmodified, into $(WHIP_CLIENT_DIR). Nothing of it is committed. Skipped
## when the stamp names this version and checksum. A failed fetch only
## warns: the test then skips loudly (or fails, with PARLEY_REQUIRE_BROWSER=1
## as in CI).
WHIP_CLIENT        ?= whip-whep@1.2.0
WHIP_CLIENT_SHA256 ?= f032b2b2015da76268d3f4a0450af2cf24ae984c6bf7cc5bfd494763cefaf786
WHIP_CLIENT_DIR    := $(CACHE)/whip-client
whip-client:
	@stamp="$(WHIP_CLIENT) $(WHIP_CLIENT_SHA256)"; \
	if [ -f "$(WHIP_CLIENT_DIR)/whip.js" ] && [ "$$(cat "$(WHIP_CLIENT_DIR)/.stamp" 2>/dev/null)" = "$$stamp" ]; then exit 0; fi; \
	echo "== fetching $(WHIP_CLIENT) (npm) into $(WHIP_CLIENT_DIR)"; \
	tmp=$$(mktemp -d); \
	if command -v npm >/dev/null 2>&1 \
	  && tgz=$$(cd "$$tmp" && npm pack --silent "$(WHIP_CLIENT)" 2>/dev/null | tail -n 1) && [ -f "$$tmp/$$tgz" ] \
	  && echo "$(WHIP_CLIENT_SHA256)  $$tmp/$$tgz" | sha256sum -c --status - \
	  && tar -xzf "$$tmp/$$tgz" -C "$$tmp" && [ -f "$$tmp/package/whip.js" ] \
	  && printf '%s\n' "$$stamp" > "$$tmp/package/.stamp" \
	  && mkdir -p "$(CACHE)" && rm -rf "$(WHIP_CLIENT_DIR)" && mv "$$tmp/package" "$(WHIP_CLIENT_DIR)"; then \
	  echo "== $(WHIP_CLIENT) in $(WHIP_CLIENT_DIR) (sha256 $(WHIP_CLIENT_SHA256))"; \
	else \
	  echo "################################################################" >&2; \
	  echo "## WARNING: could not fetch $(WHIP_CLIENT) with a tarball of sha256" >&2; \
	  echo "## $(WHIP_CLIENT_SHA256)" >&2; \
	  echo "## (not in $(WHIP_CLIENT_DIR)). The WHIP interop test" >&2; \
	  echo "## (TestWHIPClient) will SKIP, or FAIL when PARLEY_REQUIRE_BROWSER=1." >&2; \
	  echo "################################################################" >&2; \
	fi; \
	rm -rf "$$tmp"

## speech-tools: Debian's offline speech engines for media/speech (and the
## voice pipeline): pocketsphinx with its US English model for speech-to-text,
## flite and espeak-ng for text-to-speech. Installed once; skipped when every
## binary and the model are there. A failed install only warns: the speech
## tests then skip loudly (or fail, with PARLEY_REQUIRE_SPEECH=1 as in CI).
SPEECH_PACKAGES ?= pocketsphinx pocketsphinx-en-us flite espeak-ng
SPEECH_MODEL    := /usr/share/pocketsphinx/model/en-us/en-us
speech-tools:
	@if command -v pocketsphinx_continuous >/dev/null 2>&1 && command -v flite >/dev/null 2>&1 \
	  && command -v espeak-ng >/dev/null 2>&1 && [ -d "$(SPEECH_MODEL)" ]; then exit 0; fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi; \
	echo "== installing $(SPEECH_PACKAGES) for the speech tests"; \
	if $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $(SPEECH_PACKAGES) \
	  && command -v pocketsphinx_continuous >/dev/null && command -v flite >/dev/null && [ -d "$(SPEECH_MODEL)" ]; then \
	  echo "== speech tools installed:"; dpkg-query -W -f='   $${Package} $${Version}\n' $(SPEECH_PACKAGES); \
	else \
	  echo "################################################################" >&2; \
	  echo "## WARNING: could not install $(SPEECH_PACKAGES)." >&2; \
	  echo "## The speech tests (media/speech) will SKIP, or FAIL when" >&2; \
	  echo "## PARLEY_REQUIRE_SPEECH=1." >&2; \
	  echo "################################################################" >&2; \
	fi

## vendor-livekit-client: the official livekit-client npm package's UMD build
## and its licence (Apache-2.0), which the widget loads for voice_transport:
## livekit, vendored into signaling/static/vendor/livekit-client/ (committed,
## embedded in the binary). Fetches the package's tarball with `npm pack`,
## checks it against the pinned sha256 and npm's sha512 integrity, and
## extracts the two files; does nothing when they are there and match. To
## upgrade: set the version and both tarball pins, run this, then set
## LIVEKIT_CLIENT_UMD_SHA256 and liveKitClientSHA256 (signaling/vendorjs.go)
## to the new file's sha256.
LIVEKIT_CLIENT_VERSION      ?= 2.23.0
LIVEKIT_CLIENT_TGZ_SHA256   := 993eafb83afb4c566bb388108ad6469bf499d76200014c96c35fe3b39fee859d
LIVEKIT_CLIENT_TGZ_SHA512   := j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg==
LIVEKIT_CLIENT_UMD_SHA256   := fb646f2260d84f91238d0a2dc10726c456631d6a26c7cafc43cfee5959b4d31d
LIVEKIT_CLIENT_DIR          := signaling/static/vendor/livekit-client
vendor-livekit-client:
	@set -e; dir="$(LIVEKIT_CLIENT_DIR)"; \
	if [ -f "$$dir/LICENSE" ] && echo "$(LIVEKIT_CLIENT_UMD_SHA256)  $$dir/livekit-client.umd.js" | sha256sum -c --status 2>/dev/null; then \
	  echo "== livekit-client $(LIVEKIT_CLIENT_VERSION) already vendored in $$dir"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "== fetching livekit-client@$(LIVEKIT_CLIENT_VERSION) with npm pack"; \
	tgz=$$(cd "$$tmp" && npm pack --silent "livekit-client@$(LIVEKIT_CLIENT_VERSION)" | tail -n 1); \
	mv "$$tmp/$$tgz" "$$tmp/pkg.tgz"; \
	echo "$(LIVEKIT_CLIENT_TGZ_SHA256)  $$tmp/pkg.tgz" | sha256sum -c --quiet; \
	sri=$$(openssl dgst -sha512 -binary "$$tmp/pkg.tgz" | base64 -w0); \
	if [ "$$sri" != "$(LIVEKIT_CLIENT_TGZ_SHA512)" ]; then echo "npm integrity (sha512) mismatch: $$sri" >&2; exit 1; fi; \
	tar -xzf "$$tmp/pkg.tgz" -C "$$tmp" package/dist/livekit-client.umd.js package/LICENSE; \
	echo "$(LIVEKIT_CLIENT_UMD_SHA256)  $$tmp/package/dist/livekit-client.umd.js" | sha256sum -c --quiet; \
	mkdir -p "$$dir"; \
	cp "$$tmp/package/dist/livekit-client.umd.js" "$$tmp/package/LICENSE" "$$dir/"; \
	echo "== vendored livekit-client $(LIVEKIT_CLIENT_VERSION) into $$dir (update its README.md if the version changed)"

## check-vendor: the committed vendored files match their pins (offline), so a
## tampered or half-upgraded vendor file fails `make test` and CI.
check-vendor:
	@echo "$(LIVEKIT_CLIENT_UMD_SHA256)  $(LIVEKIT_CLIENT_DIR)/livekit-client.umd.js" | sha256sum -c --quiet \
	  || { echo "$(LIVEKIT_CLIENT_DIR)/livekit-client.umd.js does not match LIVEKIT_CLIENT_UMD_SHA256: run make vendor-livekit-client" >&2; exit 1; }
	@grep -q "Apache License" "$(LIVEKIT_CLIENT_DIR)/LICENSE" \
	  || { echo "$(LIVEKIT_CLIENT_DIR)/LICENSE is missing" >&2; exit 1; }

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard -- '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## bench: the benchmarks whose figures go into docs/BENCHMARKS.md
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x -timeout 20m ./cmd/parley/

## bench-speech: the offline speech engines' latency per phrase and word
## error rate per voice (media/speech; figures in docs/BENCHMARKS.md)
.PHONY: bench-speech
bench-speech: speech-tools
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 20m ./media/speech

## bench-speech-call: voice to voice through the offline speech pipeline
## (BenchmarkVoiceToVoice: 20 spoken turns per VAD hangover, a real pion
## visitor, the echo agent; figures in docs/BENCHMARKS.md)
.PHONY: bench-speech-call
bench-speech-call: speech-tools
	$(GO) test -run '^$$' -bench VoiceToVoice -benchtime 20x -timeout 20m ./cmd/parley/

## bench-voice: `parley bench voice` (voice load test against a child serve)
## for each N in BENCH_VOICE_SESSIONS, D long; prints one table per N
BENCH_VOICE_SESSIONS ?= 100 300 500
D ?= 20s
.PHONY: bench-voice
bench-voice: build
	@rc=0; for N in $(BENCH_VOICE_SESSIONS); do \
	  echo "== bin/parley bench voice --sessions $$N --duration $(D)"; \
	  bin/parley bench voice --sessions $$N --duration $(D) || rc=1; \
	  echo; \
	done; exit $$rc

## bench-chat: `parley bench chat` (chat load against a child serve and a
## separate echo agent) for each N in BENCH_CHAT_CONVERSATIONS, D long, at
## BENCH_CHAT_RATE messages/s; prints one table per N
BENCH_CHAT_CONVERSATIONS ?= 1000 10000
BENCH_CHAT_RATE ?= 1000
.PHONY: bench-chat
bench-chat: build
	@rc=0; for N in $(BENCH_CHAT_CONVERSATIONS); do \
	  echo "== bin/parley bench chat --conversations $$N --rate $(BENCH_CHAT_RATE) --duration $(D)"; \
	  bin/parley bench chat --conversations $$N --rate $(BENCH_CHAT_RATE) --duration $(D) || rc=1; \
	  echo; \
	done; exit $$rc

## bench-voice-livekit: `parley bench voice --transport both` (direct, then
## through livekit-server --dev and Parley's bridge, and their ratios) for
## each N in BENCH_VOICE_LIVEKIT_SESSIONS, D long
BENCH_VOICE_LIVEKIT_SESSIONS ?= 20 50
.PHONY: bench-voice-livekit
bench-voice-livekit: build livekit
	@rc=0; for N in $(BENCH_VOICE_LIVEKIT_SESSIONS); do \
	  echo "== bin/parley bench voice --transport both --sessions $$N --duration $(D)"; \
	  bin/parley bench voice --transport both --sessions $$N --duration $(D) || rc=1; \
	  echo; \
	done; exit $$rc

## bench-cluster: the same chat and voice load against 1 broker with its
## embedded NATS, then a 3-node NATS JetStream cluster (node processes) with
## 1 and with 3 brokers on it (docs/BENCHMARKS.md, DEPLOYMENT.md's model)
BENCH_CLUSTER_CONVERSATIONS ?= 3000
BENCH_CLUSTER_RATE ?= 300
BENCH_CLUSTER_SESSIONS ?= 100
.PHONY: bench-cluster
bench-cluster: build
	@rc=0; for C in "" "--nats-nodes 3 --brokers 1" "--nats-nodes 3 --brokers 3"; do \
	  echo "== bin/parley bench chat --conversations $(BENCH_CLUSTER_CONVERSATIONS) --rate $(BENCH_CLUSTER_RATE) --duration $(D) $$C"; \
	  bin/parley bench chat --conversations $(BENCH_CLUSTER_CONVERSATIONS) --rate $(BENCH_CLUSTER_RATE) --duration $(D) $$C || rc=1; \
	  echo "== bin/parley bench voice --agent process --sessions $(BENCH_CLUSTER_SESSIONS) --duration $(D) $$C"; \
	  bin/parley bench voice --agent process --sessions $(BENCH_CLUSTER_SESSIONS) --duration $(D) $$C || rc=1; \
	  echo; \
	done; exit $$rc

## fuzz: every fuzz target for FUZZTIME each (CI: 30s) — origins, tokens,
## identity, JSON request decoders, config loader, SDP fragments, frames
## (.ci/fuzz-target runs each, and explains the one Go 1.26 fuzzer race it
## does not count as a failure)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; GO=$(GO) .ci/fuzz-target $$pkg $$f $(FUZZTIME) || exit 1; \
	  done; \
	done

clean:
	rm -rf bin parley-data

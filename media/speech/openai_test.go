package speech

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
)

const testKey = "sk-parley-test-7f3a9c0e5d1b"

// localProvider is a real OpenAI-compatible speech server on loopback whose
// two endpoints call the local engines, so the provider's tests carry real
// speech both ways. It answers 401 to a wrong key, echoing the key back as
// some hosted providers do.
type localProvider struct {
	ps *Pocketsphinx
	f  *Flite

	mu   sync.Mutex
	seen []string // "model=… voice=… format=…" per request
}

func (p *localProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error"}}`, strings.TrimPrefix(got, "Bearer "))
		return
	}
	switch r.URL.Path {
	case "/v1/audio/transcriptions":
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		file, hdr, err := r.FormFile("file")
		if err != nil {
			http.Error(w, "no file", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(file)
		a, err := ParseWAV(b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.note(fmt.Sprintf("model=%s format=%s file=%s type=%s", r.FormValue("model"), r.FormValue("response_format"), hdr.Filename, hdr.Header.Get("Content-Type")))
		tr, err := p.ps.Transcribe(r.Context(), a)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"text": tr.Text})
	case "/v1/audio/speech":
		var req struct {
			Model, Voice, Input string
			ResponseFormat      string `json:"response_format"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.note(fmt.Sprintf("model=%s voice=%s format=%s", req.Model, req.Voice, req.ResponseFormat))
		a, err := p.f.Synthesize(r.Context(), req.Input)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if req.ResponseFormat == "pcm" {
			a24, _ := a.Resample(24000)
			w.Header().Set("Content-Type", "audio/pcm")
			w.Write(a24.PCM())
			return
		}
		w.Header().Set("Content-Type", "audio/wav")
		w.Write(a.WAV())
	default:
		http.NotFound(w, r)
	}
}

func (p *localProvider) note(s string) {
	p.mu.Lock()
	p.seen = append(p.seen, s)
	p.mu.Unlock()
}

// TestOpenAIRoundTrip: the HTTP provider speaks through a real server
// (flite behind /v1/audio/speech) and hears the result back through it
// (pocketsphinx behind /v1/audio/transcriptions), in both response formats.
func TestOpenAIRoundTrip(t *testing.T) {
	ps, f := requireLocal(t)
	prov := &localProvider{ps: ps, f: f}
	srv := httptest.NewServer(prov)
	t.Cleanup(srv.Close)
	for _, format := range []string{"wav", "pcm"} {
		t.Run(format, func(t *testing.T) {
			var logs agenttest.LogBuffer
			o, err := NewOpenAI(OpenAIConfig{BaseURL: srv.URL + "/v1/", Key: testKey, Format: format, TTSModel: "flite-slt", STTModel: "pocketsphinx", Voice: "slt",
				Timeout: 20 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(o.Close)
			a, err := o.Synthesize(context.Background(), "hello can you hear me")
			if err != nil {
				t.Fatal(err)
			}
			wantRate := map[string]int{"wav": 16000, "pcm": 24000}[format]
			if a.Rate != wantRate || a.Duration() < time.Second {
				t.Fatalf("speech: %d Hz, %s", a.Rate, a.Duration())
			}
			tr, err := o.Transcribe(context.Background(), a)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Text != "hello can you hear me" || tr.Engine != "openai:pocketsphinx" {
				t.Fatalf("heard %q (%s)", tr.Text, tr.Engine)
			}
			if n := strings.Count(logs.String(), "speech provider answered"); n != 2 || strings.Contains(logs.String(), testKey) {
				t.Fatalf("logs: %d request lines, key present: %v\n%s", n, strings.Contains(logs.String(), testKey), logs.String())
			}
		})
	}
	prov.mu.Lock()
	defer prov.mu.Unlock()
	want := []string{"model=flite-slt voice=slt format=wav", "model=pocketsphinx format=json file=audio.wav type=audio/wav",
		"model=flite-slt voice=slt format=pcm", "model=pocketsphinx format=json file=audio.wav type=audio/wav"}
	if fmt.Sprint(prov.seen) != fmt.Sprint(want) {
		t.Fatalf("server saw %q", prov.seen)
	}
}

// TestOpenAIKeyNeverShown: a rejected key is CodeRejected with the
// provider's status, and neither the error (even though the server echoes
// the key) nor the config, printed any way, shows it.
func TestOpenAIKeyNeverShown(t *testing.T) {
	srv := httptest.NewServer(&localProvider{})
	t.Cleanup(srv.Close)
	bad := "sk-wrong-" + testKey
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("\n"+bad+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs agenttest.LogBuffer
	cfg := OpenAIConfig{BaseURL: srv.URL, KeyFile: keyFile, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	o, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	_, err = o.Synthesize(context.Background(), "hello")
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeRejected || e.Status != http.StatusUnauthorized {
		t.Fatalf("got %v, want CodeRejected, HTTP 401", err)
	}
	if strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "Incorrect API key provided: [redacted]") {
		t.Fatalf("error shows the key or lost the provider's message: %v", err)
	}
	cfg.Key = Secret(bad)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "speech", cfg, "key", cfg.Key)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.Key), logs.String()} {
		if strings.Contains(s, bad) || strings.Contains(s, testKey) {
			t.Fatalf("key printed: %s", s)
		}
	}
	if !strings.Contains(logs.String(), `"key":"[redacted]"`) {
		t.Fatalf("slog did not redact: %s", logs.String())
	}
}

// TestOpenAIDown: a provider that is not listening is CodeDown, fast.
func TestOpenAIDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	o, err := NewOpenAI(OpenAIConfig{BaseURL: url, Key: testKey, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	_, err = o.Synthesize(context.Background(), "hello")
	if CodeOf(err) != CodeDown || !errors.Is(err, ErrDown) || strings.Contains(err.Error(), testKey) {
		t.Fatalf("synthesize: %v", err)
	}
	_, err = o.Transcribe(context.Background(), Audio{Rate: 16000, Samples: make([]int16, 1600)})
	if CodeOf(err) != CodeDown {
		t.Fatalf("transcribe: %v", err)
	}
}

// TestOpenAISlow: a provider that never answers, or stalls in the middle
// of its body, is CodeTimeout after Timeout; a caller that gives up first
// gets CodeCanceled. The handlers wait for the client to go away, never
// for a clock.
func TestOpenAISlow(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/audio/speech" {
			w.Header().Set("Content-Type", "audio/wav")
			w.Write(Audio{Rate: 16000, Samples: make([]int16, 100)}.WAV()[:30]) // half a header, then nothing
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: frees any handler still waiting
	o, err := NewOpenAI(OpenAIConfig{BaseURL: srv.URL, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	for name, call := range map[string]func(context.Context) error{
		"no answer (transcribe)": func(ctx context.Context) error {
			_, err := o.Transcribe(ctx, Audio{Rate: 16000, Samples: make([]int16, 1600)})
			return err
		},
		"stalled body (synthesize)": func(ctx context.Context) error {
			_, err := o.Synthesize(ctx, "hello")
			return err
		},
	} {
		start := time.Now()
		err := call(context.Background())
		if CodeOf(err) != CodeTimeout || !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: got %v, want CodeTimeout", name, err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("%s: took %s with a 300 ms limit", name, took)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := call(ctx); CodeOf(err) != CodeCanceled || !errors.Is(err, context.Canceled) {
			t.Fatalf("%s, cancelled: got %v, want CodeCanceled", name, err)
		}
	}
}

// TestOpenAIGarbage: answers that break the protocol are coded, never
// passed on as speech or text.
func TestOpenAIGarbage(t *testing.T) {
	cases := []struct {
		name   string
		op     string // "stt" or "tts"
		format string
		status int
		ctype  string
		body   string
		want   Code
	}{
		{"transcription not JSON", "stt", "", 200, "text/html", "<html>hello</html>", CodeBadResponse},
		{"transcription without text", "stt", "", 200, "application/json", `{"segments":[]}`, CodeBadResponse},
		{"transcription text not a string", "stt", "", 200, "application/json", `{"text":42}`, CodeBadResponse},
		{"speech as JSON", "tts", "wav", 200, "application/json", `{"audio":"…"}`, CodeBadResponse},
		{"speech not a WAV", "tts", "wav", 200, "audio/wav", "ID3\x03\x00 mp3 bytes", CodeBadResponse},
		{"speech empty WAV", "tts", "wav", 200, "audio/wav", string(Audio{Rate: 16000}.WAV()), CodeBadResponse},
		{"speech odd PCM", "tts", "pcm", 200, "audio/pcm", "abc", CodeBadResponse},
		{"speech empty PCM", "tts", "pcm", 200, "audio/pcm", "", CodeBadResponse},
		{"oversized answer", "tts", "pcm", 200, "audio/pcm", strings.Repeat("x", 5000), CodeBadResponse},
		{"unavailable with a huge page", "stt", "", 503, "text/html", strings.Repeat("<p>down</p>", 1000), CodeDown},
		{"server error", "stt", "", 500, "text/plain", "internal error", CodeDown},
		{"bad gateway", "tts", "wav", 502, "text/html", "<html>502</html>", CodeDown},
		{"rate limited", "tts", "wav", 429, "application/json", `{"error":{"message":"slow down"}}`, CodeDown},
		{"unknown model", "stt", "", 404, "application/json", `{"error":{"message":"model not found"}}`, CodeRejected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.ctype)
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			t.Cleanup(srv.Close)
			o, err := NewOpenAI(OpenAIConfig{BaseURL: srv.URL, Format: c.format, MaxResponse: 4096})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(o.Close)
			if c.op == "stt" {
				_, err = o.Transcribe(context.Background(), Audio{Rate: 16000, Samples: make([]int16, 1600)})
			} else {
				var a Audio
				a, err = o.Synthesize(context.Background(), "hello")
				if len(a.Samples) != 0 {
					t.Fatalf("%d samples of garbage passed on", len(a.Samples))
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != c.want || e.Status != c.status {
				t.Fatalf("got %v, want %s with HTTP %d", err, c.want, c.status)
			}
		})
	}
}

func TestOpenAIConfig(t *testing.T) {
	env := map[string]string{EnvSpeechBaseURL: "http://127.0.0.1:9/v1", "OPENAI_API_KEY": testKey, EnvSpeechVoice: "nova"}
	cfg := OpenAIConfigFromEnv(func(k string) string { return env[k] })
	if cfg.BaseURL != "http://127.0.0.1:9/v1" || string(cfg.Key) != testKey || cfg.Voice != "nova" || cfg.STTModel != "" {
		t.Fatalf("from env: %#v (key set: %v)", cfg, cfg.Key != "")
	}
	o, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.base != "http://127.0.0.1:9" || o.sttModel != "whisper-1" || o.ttsModel != "tts-1" || o.voiceName != "nova" || o.format != "wav" {
		t.Fatalf("defaults: base %q, models %q %q, voice %q, format %q", o.base, o.sttModel, o.ttsModel, o.voiceName, o.format)
	}
	if _, err := NewOpenAI(OpenAIConfig{BaseURL: "ftp://x"}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("ftp base: %v", err)
	}
	if _, err := NewOpenAI(OpenAIConfig{BaseURL: "http://%zz"}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("unparsable base: %v", err)
	}
	if o, err := NewOpenAI(OpenAIConfig{BaseURL: "http://user:hunter2@127.0.0.1:9"}); err != nil || strings.Contains(o.logURL, "hunter2") {
		t.Fatalf("password in the logged URL: %v", err)
	}
	if _, err := NewOpenAI(OpenAIConfig{BaseURL: "http://x", Format: "mp3"}); CodeOf(err) != CodeUnavailable {
		t.Fatalf("mp3: %v", err)
	}
	if _, err := o.Synthesize(context.Background(), strings.Repeat("x", 4001)); CodeOf(err) != CodeRejected {
		t.Fatalf("long text: %v", err)
	}
	if a, err := o.Synthesize(context.Background(), "  "); err != nil || len(a.Samples) != 0 {
		t.Fatalf("blank text: %v", err)
	}
}

package speech

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"time"
)

// Secret is a credential that prints as "[redacted]" in every format and in
// slog, so a config that holds one can be logged whole.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// OpenAIConfig configures the HTTP provider: any server that speaks
// OpenAI's audio API (hosted, or self-hosted such as a whisper or TTS
// server with an OpenAI-compatible front).
type OpenAIConfig struct {
	// BaseURL is the server, e.g. "https://api.openai.com" or
	// "http://127.0.0.1:8000"; a trailing "/v1" is accepted (the form the
	// OpenAI SDKs take) and not doubled.
	BaseURL string
	// Key is sent as "Authorization: Bearer …" when set. KeyFile, if Key
	// is empty, is a file holding it (surrounding white space trimmed).
	Key     Secret
	KeyFile string
	// STTModel is the transcription model (default "whisper-1").
	STTModel string
	// TTSModel and Voice are the speech model and voice (default "tts-1",
	// "alloy").
	TTSModel, Voice string
	// Format is the speech response_format asked for: "wav" (default) or
	// "pcm" (raw s16le at PCMRate).
	Format string
	// PCMRate is the rate of "pcm" responses (default 24,000, OpenAI's).
	PCMRate int
	// Timeout bounds one request, body included (default 30 s).
	Timeout time.Duration
	// MaxResponse caps a response body in bytes (default 16 MiB).
	MaxResponse int64
	// MaxAudio is the longest utterance sent (default 60 s); MaxText the
	// longest text (default 4,000 bytes).
	MaxAudio time.Duration
	MaxText  int
	// Client is the HTTP client (default: a new one with sane dial and
	// header timeouts). Its Timeout is left to Timeout above.
	Client *http.Client
	// Logger gets one debug line per request (never the key or content).
	Logger *slog.Logger
}

// The environment variables OpenAIConfigFromEnv reads.
const (
	EnvSpeechBaseURL  = "PARLEY_SPEECH_BASE_URL"
	EnvSpeechKey      = "PARLEY_SPEECH_API_KEY"
	EnvSpeechKeyFile  = "PARLEY_SPEECH_API_KEY_FILE"
	EnvSpeechSTTModel = "PARLEY_SPEECH_STT_MODEL"
	EnvSpeechTTSModel = "PARLEY_SPEECH_TTS_MODEL"
	EnvSpeechVoice    = "PARLEY_SPEECH_VOICE"
)

// OpenAIConfigFromEnv fills a config from the PARLEY_SPEECH_* variables,
// read with getenv (os.Getenv, or a map in tests). OPENAI_API_KEY and
// OPENAI_BASE_URL are the fallbacks, as the OpenAI SDKs read them.
func OpenAIConfigFromEnv(getenv func(string) string) OpenAIConfig {
	return OpenAIConfig{
		BaseURL:  cmp(getenv(EnvSpeechBaseURL), getenv("OPENAI_BASE_URL")),
		Key:      Secret(cmp(getenv(EnvSpeechKey), getenv("OPENAI_API_KEY"))),
		KeyFile:  getenv(EnvSpeechKeyFile),
		STTModel: getenv(EnvSpeechSTTModel),
		TTSModel: getenv(EnvSpeechTTSModel),
		Voice:    getenv(EnvSpeechVoice),
	}
}

// OpenAI is the HTTP provider; it is both a Recognizer and a Synthesizer.
type OpenAI struct {
	base                          string
	logURL                        string // base without any user:password, for logs
	key                           string
	sttModel, ttsModel, voiceName string
	format                        string
	pcmRate                       int
	timeout                       time.Duration
	maxResp                       int64
	maxAudio                      time.Duration
	maxText                       int
	client                        *http.Client
	log                           *slog.Logger
}

// NewOpenAI checks the config (a base URL; a readable key file if one is
// named) or returns an *Error with CodeUnavailable. It does not call the
// server: a provider that is down is reported per request, with CodeDown.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	base = strings.TrimSuffix(base, "/v1")
	if base == "" || !(strings.HasPrefix(base, "http://") || strings.HasPrefix(base, "https://")) {
		return nil, &Error{Code: CodeUnavailable, Engine: "openai", Op: "check", Detail: "no http(s) base URL configured (" + EnvSpeechBaseURL + ")"}
	}
	key := string(cfg.Key)
	if key == "" && cfg.KeyFile != "" {
		b, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			// The path is not secret; the error from os carries only it.
			return nil, &Error{Code: CodeUnavailable, Engine: "openai", Op: "check", Detail: "key file unreadable", Err: err}
		}
		key = strings.TrimSpace(string(b))
	}
	o := &OpenAI{
		base: base, key: key,
		sttModel: cmp(cfg.STTModel, "whisper-1"), ttsModel: cmp(cfg.TTSModel, "tts-1"), voiceName: cmp(cfg.Voice, "alloy"),
		format: cmp(cfg.Format, "wav"), pcmRate: cfg.PCMRate,
		timeout: cmpDur(cfg.Timeout, 30*time.Second), maxResp: cfg.MaxResponse,
		maxAudio: cmpDur(cfg.MaxAudio, 60*time.Second), maxText: cfg.MaxText,
		client: cfg.Client, log: cfg.Logger,
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, &Error{Code: CodeUnavailable, Engine: "openai", Op: "check", Detail: "base URL does not parse"}
	}
	o.logURL = u.Redacted()
	if o.format != "wav" && o.format != "pcm" {
		return nil, &Error{Code: CodeUnavailable, Engine: "openai", Op: "check", Detail: fmt.Sprintf("response format %q is not wav or pcm", o.format)}
	}
	if o.pcmRate <= 0 {
		o.pcmRate = 24000
	}
	if o.maxResp <= 0 {
		o.maxResp = 16 << 20
	}
	if o.maxText <= 0 {
		o.maxText = 4000
	}
	if o.client == nil {
		o.client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: o.timeout,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Close drops the client's idle keep-alive connections (and with them the
// transport's reader goroutines). Calls after Close still work; they dial
// again.
func (o *OpenAI) Close() {
	o.client.CloseIdleConnections()
}

// Transcribe implements Recognizer: POST {base}/v1/audio/transcriptions,
// multipart with model, response_format=json and file=audio.wav (16 kHz).
func (o *OpenAI) Transcribe(ctx context.Context, a Audio) (Transcript, error) {
	const op = "transcribe"
	out := Transcript{Engine: "openai:" + o.sttModel}
	if a.Duration() > o.maxAudio {
		return out, &Error{Code: CodeRejected, Engine: "openai", Op: op, Detail: fmt.Sprintf("utterance of %s over the %s limit", a.Duration().Round(time.Millisecond), o.maxAudio)}
	}
	if len(a.Samples) == 0 {
		return out, nil
	}
	a16, err := a.Resample(RecognitionRate)
	if err != nil {
		return out, &Error{Code: CodeRejected, Engine: "openai", Op: op, Err: err}
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("model", o.sttModel) // writes to a bytes.Buffer cannot fail
	_ = mw.WriteField("response_format", "json")
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="audio.wav"`)
	h.Set("Content-Type", "audio/wav")
	fw, _ := mw.CreatePart(h)
	_, _ = fw.Write(a16.WAV())
	_ = mw.Close()
	resp, err := o.do(ctx, op, "/v1/audio/transcriptions", mw.FormDataContentType(), &body)
	if err != nil {
		return out, err
	}
	var r struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(resp.body, &r); err != nil || r.Text == nil {
		return out, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.status, Detail: "not a JSON transcription ({\"text\": …})"}
	}
	out.Text = strings.TrimSpace(*r.Text)
	return out, nil
}

// Synthesize implements Synthesizer: POST {base}/v1/audio/speech with JSON
// {model, voice, input, response_format}. A WAV answer keeps its own rate;
// "pcm" is read at PCMRate.
func (o *OpenAI) Synthesize(ctx context.Context, text string) (Audio, error) {
	const op = "synthesize"
	if len(text) > o.maxText {
		return Audio{}, &Error{Code: CodeRejected, Engine: "openai", Op: op, Detail: fmt.Sprintf("text of %d bytes over the %d-byte limit", len(text), o.maxText)}
	}
	text = speakable(text)
	if text == "" {
		return Audio{Rate: o.pcmRate}, nil
	}
	req, _ := json.Marshal(map[string]string{"model": o.ttsModel, "voice": o.voiceName, "input": text, "response_format": o.format})
	resp, err := o.do(ctx, op, "/v1/audio/speech", "application/json", bytes.NewReader(req))
	if err != nil {
		return Audio{}, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.contentType); mt == "application/json" || strings.HasPrefix(mt, "text/") {
		return Audio{}, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.status, Detail: "answered " + mt + ", not audio"}
	}
	var a Audio
	if o.format == "pcm" {
		if len(resp.body)%2 != 0 {
			return Audio{}, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.status, Detail: "odd-length PCM"}
		}
		a = AudioFromPCM(o.pcmRate, resp.body)
	} else if a, err = ParseWAV(resp.body); err != nil {
		return Audio{}, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.status, Detail: "unreadable WAV", Err: err}
	}
	if len(a.Samples) == 0 {
		return Audio{}, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.status, Detail: "no audio"}
	}
	return a, nil
}

type response struct {
	status      int
	contentType string
	body        []byte
}

// do sends one POST and reads the whole answer within the time limit,
// mapping every failure to a code. Nothing it returns or logs holds the key.
func (o *OpenAI) do(ctx context.Context, op, path, contentType string, body io.Reader) (response, error) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, o.base+path, body)
	if err != nil {
		return response{}, &Error{Code: CodeUnavailable, Engine: "openai", Op: op, Detail: "bad base URL"}
	}
	req.Header.Set("Content-Type", contentType)
	if o.key != "" {
		req.Header.Set("Authorization", "Bearer "+o.key)
	}
	fail := func(err error, status int) (response, error) {
		e := &Error{Engine: "openai", Op: op, Status: status}
		switch {
		case errors.Is(ctx.Err(), context.Canceled):
			e.Code, e.Err = CodeCanceled, ctx.Err()
		case rctx.Err() != nil:
			e.Code, e.Detail, e.Err = CodeTimeout, fmt.Sprintf("no complete answer after %s", time.Since(start).Round(time.Millisecond)), rctx.Err()
		case isTimeout(err):
			e.Code, e.Detail = CodeTimeout, "no answer in time"
		default:
			e.Code, e.Detail = CodeDown, o.redact(err.Error())
		}
		o.log.Debug("speech provider failed", "op", op, "url", o.logURL+path, "code", string(e.Code), "elapsed", time.Since(start))
		return response{}, e
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return fail(err, 0)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, o.maxResp+1))
	if err != nil {
		return fail(err, resp.StatusCode)
	}
	o.log.Debug("speech provider answered", "op", op, "url", o.logURL+path, "status", resp.StatusCode, "bytes", len(b), "elapsed", time.Since(start))
	if resp.StatusCode/100 != 2 {
		code := CodeRejected
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			code = CodeDown
		}
		return response{}, &Error{Code: code, Engine: "openai", Op: op, Status: resp.StatusCode, Detail: o.redact(ProviderMessage(b))}
	}
	if int64(len(b)) > o.maxResp {
		return response{}, &Error{Code: CodeBadResponse, Engine: "openai", Op: op, Status: resp.StatusCode, Detail: fmt.Sprintf("answer over the %d-byte cap", o.maxResp)}
	}
	return response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b}, nil
}

// ProviderMessage is the "error.message" of an OpenAI-style error body, or
// the start of the body, made Printable. Any client of an OpenAI-style API
// (the assistant agent's too) reports a provider's refusal with it.
func ProviderMessage(b []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return Printable(e.Error.Message)
	}
	return Printable(string(b))
}

// Printable makes text a provider wrote one short line (at most 200
// bytes) without control characters, fit for a log or an error.
func Printable(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// redact removes the key from text a provider or the network stack wrote
// (some providers echo a rejected key back).
func (o *OpenAI) redact(s string) string {
	if o.key == "" {
		return s
	}
	return strings.ReplaceAll(s, o.key, "[redacted]")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package speech

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// LocalTTSConfig configures an offline synthesiser (Flite or EspeakNG).
// Zero fields take defaults.
type LocalTTSConfig struct {
	// Binary is the program (default "flite" or "espeak-ng", found on PATH).
	Binary string
	// Voice is the voice: flite's built-in slt (default), rms, awb, kal16,
	// or a .flitevox file; espeak-ng's en-us (default) or any it lists.
	Voice string
	// Speed, for espeak-ng only, is words per minute (0: its default, 175).
	Speed int
	// Timeout bounds one synthesis (default 10 s).
	Timeout time.Duration
	// MaxText is the longest text accepted, in bytes (default 4,000; a
	// sentence at a time is the intended use). Longer text is refused with
	// CodeRejected.
	MaxText int
	// MaxAudio caps the WAV a run may produce, in bytes (default 16 MiB,
	// about 8 minutes at 16 kHz).
	MaxAudio int64
	// TempDir is where each run's temporary directory is made.
	TempDir string
}

// Flite is the offline Synthesizer built on Debian's flite (2.2): one
// process per sentence,
//
//	flite -voice slt -f text.txt -o out.wav
//
// Its slt voice speaks at 16 kHz and is what pocketsphinx recognises best.
type Flite struct {
	local
	voice string
}

// NewFlite checks that flite is installed and has the voice, or returns an
// *Error with CodeUnavailable.
func NewFlite(cfg LocalTTSConfig) (*Flite, error) {
	l, err := newLocal("flite", cfg, "flite")
	if err != nil {
		return nil, err
	}
	f := &Flite{local: l, voice: cmp(cfg.Voice, "slt")}
	if strings.ContainsRune(f.voice, os.PathSeparator) {
		if _, err := os.Stat(f.voice); err != nil {
			return nil, &Error{Code: CodeUnavailable, Engine: "flite", Op: "check", Detail: "voice file missing", Err: err}
		}
		return f, nil
	}
	// flite falls back to its default voice for an unknown name, silently:
	// check the list instead ("Voices available: kal awb_time kal16 awb rms slt").
	var listed string
	err = f.t.check().run(context.Background(), "check", func(string) ([]string, error) { return []string{"-lv"}, nil },
		func(_ string, stdout []byte) error { listed = string(stdout); return nil })
	if err != nil {
		return nil, &Error{Code: CodeUnavailable, Engine: "flite", Op: "check", Detail: "flite -lv failed", Err: err}
	}
	_, names, _ := strings.Cut(listed, ":")
	for _, v := range strings.Fields(names) {
		if v == f.voice {
			return f, nil
		}
	}
	return nil, &Error{Code: CodeUnavailable, Engine: "flite", Op: "check",
		Detail: fmt.Sprintf("no voice %q (flite has: %s)", f.voice, strings.TrimSpace(names))}
}

// Synthesize implements Synthesizer.
func (f *Flite) Synthesize(ctx context.Context, text string) (Audio, error) {
	return f.synthesize(ctx, text, func(in, out string) []string {
		return []string{"-voice", f.voice, "-f", in, "-o", out}
	})
}

// EspeakNG is the offline Synthesizer built on Debian's espeak-ng (1.51):
//
//	espeak-ng -v en-us [-s wpm] -f text.txt -w out.wav
//
// It speaks at 22,050 Hz. Its formant voices are harder for pocketsphinx
// than flite's (see the package's benchmarks), so Flite is the default.
type EspeakNG struct {
	local
	voice string
	speed int
}

// NewEspeakNG checks that espeak-ng is installed and has the voice, or
// returns an *Error with CodeUnavailable.
func NewEspeakNG(cfg LocalTTSConfig) (*EspeakNG, error) {
	l, err := newLocal("espeak-ng", cfg, "espeak-ng")
	if err != nil {
		return nil, err
	}
	e := &EspeakNG{local: l, voice: cmp(cfg.Voice, "en-us"), speed: cfg.Speed}
	// An unknown voice makes espeak-ng exit 1; -q speaks nothing.
	err = e.t.check().run(context.Background(), "check", func(string) ([]string, error) {
		return []string{"-q", "-v", e.voice, "x"}, nil
	}, func(string, []byte) error { return nil })
	if err != nil {
		return nil, &Error{Code: CodeUnavailable, Engine: "espeak-ng", Op: "check", Detail: fmt.Sprintf("voice %q not usable", e.voice), Err: err}
	}
	return e, nil
}

// Synthesize implements Synthesizer.
func (e *EspeakNG) Synthesize(ctx context.Context, text string) (Audio, error) {
	return e.synthesize(ctx, text, func(in, out string) []string {
		args := []string{"-v", e.voice}
		if e.speed > 0 {
			args = append(args, "-s", strconv.Itoa(e.speed))
		}
		return append(args, "-f", in, "-w", out)
	})
}

// local is what the two synthesisers share: text in a file, WAV out of one.
type local struct {
	t        tool
	maxText  int
	maxAudio int64
}

func newLocal(engine string, cfg LocalTTSConfig, pkg string) (local, error) {
	path, err := lookTool(engine, cmp(cfg.Binary, engine), pkg)
	if err != nil {
		return local{}, err
	}
	l := local{
		t:        tool{engine: engine, path: path, timeout: cmpDur(cfg.Timeout, 10*time.Second), maxOut: 64 << 10, tempDir: cfg.TempDir},
		maxText:  cfg.MaxText,
		maxAudio: cfg.MaxAudio,
	}
	if l.maxText <= 0 {
		l.maxText = 4000
	}
	if l.maxAudio <= 0 {
		l.maxAudio = 16 << 20
	}
	return l, nil
}

// synthesize writes the cleaned text to a file (never an argument: text
// starting with '-' or over the argument limit cannot confuse the tool),
// runs the tool with args(in, out) and reads the WAV it wrote.
func (l *local) synthesize(ctx context.Context, text string, args func(in, out string) []string) (Audio, error) {
	const op = "synthesize"
	if len(text) > l.maxText {
		return Audio{}, &Error{Code: CodeRejected, Engine: l.t.engine, Op: op, Detail: fmt.Sprintf("text of %d bytes over the %d-byte limit", len(text), l.maxText)}
	}
	text = speakable(text)
	if text == "" {
		return Audio{Rate: RecognitionRate}, nil
	}
	var a Audio
	err := l.t.run(ctx, op, func(dir string) ([]string, error) {
		in := filepath.Join(dir, "text.txt")
		if err := os.WriteFile(in, []byte(text+"\n"), 0o600); err != nil {
			return nil, err
		}
		return args(in, filepath.Join(dir, "out.wav")), nil
	}, func(dir string, _ []byte) error {
		b, err := readCapped(l.t.engine, op, filepath.Join(dir, "out.wav"), l.maxAudio)
		if err != nil {
			return err
		}
		if a, err = ParseWAV(b); err != nil {
			return &Error{Code: CodeFailed, Engine: l.t.engine, Op: op, Detail: "unreadable output", Err: err}
		}
		return nil
	})
	return a, err
}

// speakable drops control characters (keeping line breaks as spaces) and
// trims: what is left is what the tool should read.
func speakable(text string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case unicode.IsControl(r) || r == unicode.ReplacementChar:
			return -1
		}
		return r
	}, text))
}

package speech

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PocketsphinxConfig configures the offline recogniser. Zero fields take
// the defaults of Debian's packages pocketsphinx and pocketsphinx-en-us.
type PocketsphinxConfig struct {
	// Binary is the program (default "pocketsphinx_continuous", found on
	// PATH).
	Binary string
	// ModelDir holds the US English model (default
	// /usr/share/pocketsphinx/model/en-us): the acoustic model in en-us/,
	// en-us.lm.bin and cmudict-en-us.dict. HMM, LM and Dict override one
	// part each.
	ModelDir      string
	HMM, LM, Dict string
	// Timeout bounds one transcription (default 20 s; decoding runs at
	// about 10× real time on one core).
	Timeout time.Duration
	// MaxAudio is the longest utterance accepted (default 60 s); longer
	// ones are refused with CodeRejected rather than tying up a core.
	MaxAudio time.Duration
	// TempDir is where each run's temporary directory is made (default
	// os.TempDir()).
	TempDir string
}

// DefaultPocketsphinxModel is where pocketsphinx-en-us installs its model.
const DefaultPocketsphinxModel = "/usr/share/pocketsphinx/model/en-us"

// Pocketsphinx is the offline Recognizer: one pocketsphinx_continuous
// process per utterance, reading a 16 kHz WAV file:
//
//	pocketsphinx_continuous -infile in.wav -hmm <model>/en-us \
//	  -lm <model>/en-us.lm.bin -dict <model>/cmudict-en-us.dict \
//	  -samprate 16000 -logfn log.txt
//
// It prints one line per segment its voice activity detector found; the
// lines are joined. A process per call costs about 0.3 s of model loading
// but keeps nothing running between calls.
type Pocketsphinx struct {
	t             tool
	hmm, lm, dict string
	maxAudio      time.Duration
}

// NewPocketsphinx checks that the binary and every model file are there and
// returns the recogniser, or an *Error with CodeUnavailable naming what is
// missing.
func NewPocketsphinx(cfg PocketsphinxConfig) (*Pocketsphinx, error) {
	const engine = "pocketsphinx"
	bin := cmp(cfg.Binary, "pocketsphinx_continuous")
	path, err := lookTool(engine, bin, "pocketsphinx")
	if err != nil {
		return nil, err
	}
	dir := cmp(cfg.ModelDir, DefaultPocketsphinxModel)
	p := &Pocketsphinx{
		t: tool{engine: engine, path: path, timeout: cmpDur(cfg.Timeout, 20*time.Second),
			maxOut: 64 << 10, tempDir: cfg.TempDir, logName: "log.txt"},
		hmm:      cmp(cfg.HMM, filepath.Join(dir, "en-us")),
		lm:       cmp(cfg.LM, filepath.Join(dir, "en-us.lm.bin")),
		dict:     cmp(cfg.Dict, filepath.Join(dir, "cmudict-en-us.dict")),
		maxAudio: cmpDur(cfg.MaxAudio, 60*time.Second),
	}
	for _, f := range []string{filepath.Join(p.hmm, "mdef"), p.lm, p.dict} {
		if _, err := os.Stat(f); err != nil {
			return nil, &Error{Code: CodeUnavailable, Engine: engine, Op: "check",
				Detail: fmt.Sprintf("model file %s missing (install Debian's pocketsphinx-en-us: make speech-tools)", f), Err: err}
		}
	}
	return p, nil
}

// Transcribe implements Recognizer. Audio at another rate is resampled to
// 16 kHz first.
func (p *Pocketsphinx) Transcribe(ctx context.Context, a Audio) (Transcript, error) {
	const op = "transcribe"
	out := Transcript{Engine: "pocketsphinx"}
	if a.Duration() > p.maxAudio {
		return out, &Error{Code: CodeRejected, Engine: p.t.engine, Op: op,
			Detail: fmt.Sprintf("utterance of %s over the %s limit", a.Duration().Round(time.Millisecond), p.maxAudio)}
	}
	if len(a.Samples) == 0 {
		return out, nil
	}
	a16, err := a.Resample(RecognitionRate)
	if err != nil {
		return out, &Error{Code: CodeRejected, Engine: p.t.engine, Op: op, Err: err}
	}
	err = p.t.run(ctx, op, func(dir string) ([]string, error) {
		in := filepath.Join(dir, "in.wav")
		if err := os.WriteFile(in, a16.WAV(), 0o600); err != nil {
			return nil, err
		}
		return []string{"-infile", in, "-hmm", p.hmm, "-lm", p.lm, "-dict", p.dict,
			"-samprate", strconv.Itoa(RecognitionRate), "-logfn", filepath.Join(dir, "log.txt")}, nil
	}, func(_ string, stdout []byte) error {
		out.Text = strings.Join(strings.Fields(string(stdout)), " ")
		return nil
	})
	return out, err
}

func cmp(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func cmpDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

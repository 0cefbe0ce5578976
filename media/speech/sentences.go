package speech

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentences cuts a reply that arrives in pieces (an agent's text_delta
// chunks) into sentences to speak one at a time, so that the first audio
// does not wait for the end of the reply. A sentence ends at '.', '!', '?'
// or '…' (with any closing quotes or brackets) followed by white space, or
// at a line break. "3.5", "e.g." inside a word and "Dr. Smith" style
// abbreviations do not end one. A run with no end longer than MaxLen is
// cut at its last space, so a reply without punctuation still streams.
//
// A Sentences is used by one goroutine (the caller's reply loop).
type Sentences struct {
	// MaxLen is the longest sentence held back before a forced cut, in
	// bytes (0: 200).
	MaxLen int
	buf    string
}

// abbreviations that end in a period but seldom end a sentence.
func isAbbreviation(word string) bool {
	switch strings.ToLower(strings.TrimLeft(word, "(\"'")) {
	case "mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no.", "approx.", "jr.", "sr.", "prof.":
		return true
	}
	return false
}

// Push adds a chunk of text and returns the sentences it completed, trimmed,
// in order (none is empty).
func (s *Sentences) Push(chunk string) []string {
	s.buf += chunk
	var out []string
	for {
		end := s.boundary()
		if end < 0 {
			break
		}
		if t := strings.TrimSpace(s.buf[:end]); t != "" {
			out = append(out, t)
		}
		s.buf = s.buf[end:]
	}
	return out
}

// Flush returns what is left (the last sentence, which may lack a final
// period) and empties the splitter; "" when nothing is left.
func (s *Sentences) Flush() string {
	t := strings.TrimSpace(s.buf)
	s.buf = ""
	return t
}

// boundary returns the byte offset just past the first complete sentence in
// buf, or -1.
func (s *Sentences) boundary() int {
	b := s.buf
	for i := 0; i < len(b); {
		r, w := utf8.DecodeRuneInString(b[i:])
		switch {
		case r == '\n':
			return i + w
		case r == '.' || r == '!' || r == '?' || r == '…':
			j := i + w
			for j < len(b) {
				q, qw := utf8.DecodeRuneInString(b[j:])
				if !strings.ContainsRune("\"')]”’»", q) {
					break
				}
				j += qw
			}
			if j >= len(b) {
				return -1 // the next chunk decides
			}
			next, _ := utf8.DecodeRuneInString(b[j:])
			if unicode.IsSpace(next) && !(r == '.' && isAbbreviation(lastWord(b[:i+w]))) {
				return j
			}
		}
		i += w
	}
	maxLen := s.MaxLen
	if maxLen <= 0 {
		maxLen = 200
	}
	if len(b) > maxLen {
		if k := strings.LastIndexFunc(b[:maxLen], unicode.IsSpace); k > 0 {
			return k + 1
		}
		k := maxLen
		for k > 0 && !utf8.RuneStart(b[k]) {
			k-- // never cut inside a character
		}
		if k == 0 {
			k = maxLen // not UTF-8 at all: cut anyway, so Push always progresses
		}
		return k
	}
	return -1
}

// lastWord is the last white-space separated word of t.
func lastWord(t string) string {
	if k := strings.LastIndexFunc(t, unicode.IsSpace); k >= 0 {
		return t[k+1:]
	}
	return t
}

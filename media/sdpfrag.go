package media

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// Trickle ICE fragments: the application/trickle-ice-sdpfrag media type of
// RFC 8840 §9, as WHIP PATCH bodies carry them (RFC 9725 §4.3):
//
//	a=ice-ufrag:EsAw
//	a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
//	m=audio 9 UDP/TLS/RTP/SAVPF 111
//	a=mid:0
//	a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0
//	a=end-of-candidates
//
// Lines end in CRLF or LF. Other lines (v=, o=, a=group, a=ice-options …)
// are accepted and ignored.

// Limits on fragments from outside.
const (
	maxFragBytes      = 16 << 10
	maxFragLines      = 256
	maxFragLineBytes  = 1024
	maxFragCandidates = 64
)

// sdpFrag is a parsed trickle-ice-sdpfrag body.
type sdpFrag struct {
	Ufrag, Pwd string // "" when absent
	Media      []fragMedia
}

// fragMedia is one m-line's part of a fragment.
type fragMedia struct {
	MLine      string   // the m= value, e.g. "audio 9 UDP/TLS/RTP/SAVPF 111"; "" before any m-line
	Mid        string   // a=mid, "" when absent
	Candidates []string // a=candidate values (after "candidate:")
	End        bool     // a=end-of-candidates
}

// candidates counts the fragment's candidates.
func (f *sdpFrag) candidates() int {
	n := 0
	for _, m := range f.Media {
		n += len(m.Candidates)
	}
	return n
}

// parseSDPFrag parses a trickle-ice-sdpfrag body. Errors wrap
// ErrBadFragment.
func parseSDPFrag(body string) (sdpFrag, error) {
	var f sdpFrag
	bad := func(format string, args ...any) (sdpFrag, error) {
		return sdpFrag{}, fmt.Errorf("%w: "+format, append([]any{ErrBadFragment}, args...)...)
	}
	if len(body) > maxFragBytes {
		return bad("%d bytes (max %d)", len(body), maxFragBytes)
	}
	cur := func() *fragMedia {
		if len(f.Media) == 0 {
			f.Media = append(f.Media, fragMedia{})
		}
		return &f.Media[len(f.Media)-1]
	}
	useful := false
	lines := 0
	for line := range strings.SplitSeq(body, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if lines++; lines > maxFragLines {
			return bad("more than %d lines", maxFragLines)
		}
		if len(line) > maxFragLineBytes {
			return bad("line of %d bytes", len(line))
		}
		if len(line) < 2 || line[1] != '=' || line[0] < 'a' || line[0] > 'z' {
			return bad("line %d is not an SDP line", lines)
		}
		if !printable(line) {
			return bad("line %d has control characters", lines)
		}
		typ, val := line[0], line[2:]
		if typ == 'm' {
			if len(f.Media) >= 16 {
				return bad("too many m-lines")
			}
			if strings.Count(val, " ") < 3 {
				return bad("bad m-line %q", val)
			}
			f.Media = append(f.Media, fragMedia{MLine: val})
			useful = true
			continue
		}
		if typ != 'a' {
			continue
		}
		key, v, _ := strings.Cut(val, ":")
		switch key {
		case "ice-ufrag":
			if !iceChars(v, 4, 256) {
				return bad("bad ice-ufrag")
			}
			f.Ufrag, useful = v, true
		case "ice-pwd":
			if !iceChars(v, 22, 256) {
				return bad("bad ice-pwd")
			}
			f.Pwd, useful = v, true
		case "mid":
			if v == "" || len(v) > 32 || strings.ContainsAny(v, " \t") {
				return bad("bad mid")
			}
			cur().Mid = v
		case "candidate":
			if strings.Count(v, " ") < 7 {
				return bad("bad candidate %q", v)
			}
			if f.candidates() >= maxFragCandidates {
				return bad("more than %d candidates", maxFragCandidates)
			}
			m := cur()
			m.Candidates = append(m.Candidates, v)
			useful = true
		case "end-of-candidates":
			cur().End, useful = true, true
		}
	}
	if !useful {
		return bad("no ICE credentials, candidates or m-lines")
	}
	if (f.Ufrag == "") != (f.Pwd == "") {
		return bad("ice-ufrag and ice-pwd must come together")
	}
	return f, nil
}

// String formats the fragment with CRLF line ends.
func (f sdpFrag) String() string {
	var b strings.Builder
	if f.Ufrag != "" {
		b.WriteString("a=ice-ufrag:" + f.Ufrag + "\r\n")
		b.WriteString("a=ice-pwd:" + f.Pwd + "\r\n")
	}
	for _, m := range f.Media {
		if m.MLine != "" {
			b.WriteString("m=" + m.MLine + "\r\n")
		}
		if m.Mid != "" {
			b.WriteString("a=mid:" + m.Mid + "\r\n")
		}
		for _, c := range m.Candidates {
			b.WriteString("a=candidate:" + c + "\r\n")
		}
		if m.End {
			b.WriteString("a=end-of-candidates\r\n")
		}
	}
	return b.String()
}

// printable reports whether s is printable ASCII (SDP is UTF-8, but every
// field a fragment carries is ASCII).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// iceChars reports whether s is n..m ice-chars (RFC 8839 §5.4:
// ALPHA / DIGIT / "+" / "/").
func iceChars(s string, n, m int) bool {
	if len(s) < n || len(s) > m {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// restartOffer rewrites the current remote offer for an ICE restart
// signalled by a fragment (RFC 8840 §4.4, RFC 8445 §9): new ufrag and pwd,
// the fragment's candidates instead of the old ones, and a new session
// version (RFC 8866 §5.2).
func restartOffer(remote string, f sdpFrag) (string, error) {
	var s sdp.SessionDescription
	if err := s.UnmarshalString(remote); err != nil {
		return "", fmt.Errorf("%w: current remote description: %v", ErrBadSDP, err)
	}
	s.Origin.SessionVersion++
	replaced := setAttr(&s.Attributes, "ice-ufrag", f.Ufrag)
	setAttr(&s.Attributes, "ice-pwd", f.Pwd)
	for i, m := range s.MediaDescriptions {
		if setAttr(&m.Attributes, "ice-ufrag", f.Ufrag) {
			replaced = true
		}
		setAttr(&m.Attributes, "ice-pwd", f.Pwd)
		attrs := m.Attributes[:0]
		for _, a := range m.Attributes {
			if a.Key != "candidate" && a.Key != "end-of-candidates" {
				attrs = append(attrs, a)
			}
		}
		m.Attributes = attrs
		mid := mediaMid(m)
		for _, fm := range f.Media {
			if fm.Mid == mid || (fm.Mid == "" && i == 0) {
				for _, c := range fm.Candidates {
					m.Attributes = append(m.Attributes, sdp.NewAttribute("candidate", c))
				}
				if fm.End {
					m.Attributes = append(m.Attributes, sdp.NewPropertyAttribute("end-of-candidates"))
				}
			}
		}
	}
	if !replaced {
		s.Attributes = append(s.Attributes,
			sdp.NewAttribute("ice-ufrag", f.Ufrag), sdp.NewAttribute("ice-pwd", f.Pwd))
	}
	out, err := s.Marshal()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	return string(out), nil
}

// setAttr replaces the value of every attribute key; it reports whether
// there was one.
func setAttr(attrs *[]sdp.Attribute, key, value string) bool {
	found := false
	for i := range *attrs {
		if (*attrs)[i].Key == key {
			(*attrs)[i].Value = value
			found = true
		}
	}
	return found
}

// answerFrag describes our side of a local description as a fragment:
// credentials, then per accepted m-line its m= value, mid, candidates (of
// component 1 alone when RTCP is multiplexed) and a=end-of-candidates
// (gathering is complete).
func answerFrag(local string) (string, error) {
	var s sdp.SessionDescription
	if err := s.UnmarshalString(local); err != nil {
		return "", fmt.Errorf("media: local description: %w", err)
	}
	var f sdpFrag
	f.Ufrag, f.Pwd = iceCredentials(&s)
	for _, m := range s.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			continue // rejected m-line (RFC 8829 §5.3.1)
		}
		fm := fragMedia{
			MLine: fmt.Sprintf("%s 9 %s %s", m.MediaName.Media,
				strings.Join(m.MediaName.Protos, "/"), strings.Join(m.MediaName.Formats, " ")),
			Mid: mediaMid(m),
			End: true,
		}
		_, muxed := m.Attribute("rtcp-mux")
		for _, a := range m.Attributes {
			if a.Key != "candidate" {
				continue
			}
			// With RTCP multiplexed on the RTP port (RFC 5761 §5.1.3,
			// which WebRTC requires: RFC 8834 §4.5), only component 1 is
			// used; pion still writes each candidate for component 2.
			if f := strings.Fields(a.Value); muxed && len(f) > 1 && f[1] != "1" {
				continue
			}
			fm.Candidates = append(fm.Candidates, a.Value)
		}
		f.Media = append(f.Media, fm)
	}
	return f.String(), nil
}

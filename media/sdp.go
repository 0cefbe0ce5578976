package media

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Checks on SDP offers (RFC 8866 syntax, RFC 8829 JSEP semantics) before
// pion sees them, so callers get ErrBadSDP / ErrNoAudio with a reason.

// maxSDPBytes bounds an offer (browser offers are 2–10 KB).
const maxSDPBytes = 64 << 10

// checkOffer parses offer and checks it has an audio m-line offering Opus.
// With initial set it must also look like an initial offer: a=setup, when
// present, is actpass (RFC 8842 §5.3: "the offerer MUST use actpass"),
// which tells an offer from an answer.
func checkOffer(offer string, initial bool) error {
	if strings.TrimSpace(offer) == "" {
		return fmt.Errorf("%w: empty offer", ErrBadSDP)
	}
	if len(offer) > maxSDPBytes {
		return fmt.Errorf("%w: offer of %d bytes (max %d)", ErrBadSDP, len(offer), maxSDPBytes)
	}
	var s sdp.SessionDescription
	if err := s.UnmarshalString(offer); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	if initial {
		if v, ok := s.Attribute("setup"); ok && !strings.EqualFold(v, "actpass") {
			return fmt.Errorf("%w: a=setup:%s is an answer's, not an offer's", ErrBadSDP, v)
		}
		for _, m := range s.MediaDescriptions {
			if v, ok := m.Attribute("setup"); ok && !strings.EqualFold(v, "actpass") {
				return fmt.Errorf("%w: a=setup:%s is an answer's, not an offer's", ErrBadSDP, v)
			}
		}
	}
	audio := false
	for _, m := range s.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		audio = true
		if offersOpus(m) {
			return nil
		}
	}
	if !audio {
		return fmt.Errorf("%w: no audio m-line", ErrNoAudio)
	}
	return fmt.Errorf("%w: the audio m-line does not offer opus/48000/2", ErrNoAudio)
}

// offersOpus reports whether an m-line lists a payload type mapped to
// opus/48000 (a=rtpmap, RFC 8866 §6.6).
func offersOpus(m *sdp.MediaDescription) bool {
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, enc, ok := strings.Cut(a.Value, " ")
		if !ok {
			continue
		}
		if _, err := strconv.ParseUint(pt, 10, 7); err != nil {
			continue
		}
		name, rate, _ := strings.Cut(strings.ToLower(strings.TrimSpace(enc)), "/")
		rate, _, _ = strings.Cut(rate, "/")
		if name == "opus" && rate == "48000" {
			return true
		}
	}
	return false
}

// iceCredentials returns the ICE ufrag and password of a description
// (session level, else the first m-line that has them; RFC 8839 §5.4).
func iceCredentials(s *sdp.SessionDescription) (ufrag, pwd string) {
	ufrag, _ = s.Attribute("ice-ufrag")
	pwd, _ = s.Attribute("ice-pwd")
	for _, m := range s.MediaDescriptions {
		if ufrag == "" {
			ufrag, _ = m.Attribute("ice-ufrag")
		}
		if pwd == "" {
			pwd, _ = m.Attribute("ice-pwd")
		}
	}
	return ufrag, pwd
}

// mediaMid returns an m-line's a=mid (RFC 9143 §3) or "".
func mediaMid(m *sdp.MediaDescription) string {
	v, _ := m.Attribute("mid")
	return v
}

package media

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Offer/answer after the first: trickled candidates and ICE restarts by
// fragment (RFC 8840, WHIP PATCH: RFC 9725 §4.3) or by a full re-offer
// (RFC 8829 §5.2, what a browser makes after restartIce()).

// trickleTimeout bounds the ICE gathering of a restart started by Trickle.
const trickleTimeout = 10 * time.Second

// ICE sessions (RFC 9725 §4.3.1): a leg names its current ICE session with
// an opaque tag, new at every ICE restart, so that an update meant for an
// earlier session (candidates overtaken by a restart) is refused instead of
// applied to the wrong one. WHIP carries the tag as the leg's entity-tag.

// ICEUpdate is what an ICE update did.
type ICEUpdate struct {
	// Answer is our fragment after an ICE restart by fragment (new ufrag,
	// pwd and candidates), our full SDP answer after a re-offer, and ""
	// when candidates were only added.
	Answer string
	// Restarted: ICE restarted, and Session is a new tag.
	Restarted bool
	// Session is the tag of the leg's ICE session after the update.
	Session string
}

// ICESession returns the tag of the leg's current ICE session: opaque
// (base64url characters), unique, and changed by every ICE restart, by
// fragment or by re-offer.
func (l *Leg) ICESession() string {
	s, _ := l.iceSession.Load().(string)
	return s
}

// setICESession notes the ICE credentials of our new local description
// and, when they changed (ICE restarted, or the first answer), gives the
// session a new tag. The caller holds negMu, or owns the leg (NewLeg).
func (l *Leg) setICESession(local string) (restarted bool, err error) {
	var s sdp.SessionDescription
	if err := s.UnmarshalString(local); err != nil {
		return false, fmt.Errorf("media: local description: %w", err)
	}
	ufrag, _ := iceCredentials(&s)
	if ufrag == l.iceUfrag && l.ICESession() != "" {
		return false, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("media: ICE session tag: %w", err)
	}
	l.iceUfrag = ufrag
	l.iceSession.Store(base64.RawURLEncoding.EncodeToString(b[:]))
	return true, nil
}

// Trickle applies a trickle-ice-sdpfrag body (RFC 8840) from the visitor.
// Without credentials, or with the current ones, its candidates are added
// and Trickle returns ("", false, nil). With new ones it is an ICE restart
// (RFC 8445 §9): the leg restarts ICE and returns a fragment with its new
// ufrag, pwd and candidates (ending in a=end-of-candidates) and
// restarted=true. Bad bodies or candidates give ErrBadFragment; a closed
// leg ErrClosed.
func (l *Leg) Trickle(frag string) (answerFrag string, restarted bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), trickleTimeout)
	defer cancel()
	return l.TrickleContext(ctx, frag)
}

// TrickleContext is Trickle with ctx bounding an ICE restart's gathering.
func (l *Leg) TrickleContext(ctx context.Context, frag string) (string, bool, error) {
	u, err := l.TrickleIf(ctx, frag, nil)
	return u.Answer, u.Restarted, err
}

// TrickleIf is TrickleContext for the ICE session match accepts: match
// gets the tag of the leg's session under the lock that orders ICE updates
// (no restart comes between the check and the update) and, when it says
// no, TrickleIf changes nothing and returns ErrICESessionChanged. A nil
// match accepts any session. A malformed fragment is ErrBadFragment before
// match is asked.
func (l *Leg) TrickleIf(ctx context.Context, frag string, match func(session string) bool) (ICEUpdate, error) {
	if err := l.closedErr(); err != nil {
		return ICEUpdate{}, err
	}
	f, err := parseSDPFrag(frag)
	if err != nil {
		return ICEUpdate{}, err
	}
	l.negMu.Lock()
	defer l.negMu.Unlock()
	if match != nil && !match(l.ICESession()) {
		return ICEUpdate{}, ErrICESessionChanged
	}
	rd := l.pc.RemoteDescription()
	if rd == nil {
		return ICEUpdate{}, ErrClosed
	}
	var cur sdp.SessionDescription
	if err := cur.UnmarshalString(rd.SDP); err != nil {
		return ICEUpdate{}, fmt.Errorf("%w: current remote description: %v", ErrBadSDP, err)
	}
	ufrag, pwd := iceCredentials(&cur)
	if f.Ufrag == "" || (f.Ufrag == ufrag && f.Pwd == pwd) {
		return ICEUpdate{Session: l.ICESession()}, l.addCandidates(&cur, f)
	}

	offer, err := restartOffer(rd.SDP, f)
	if err != nil {
		return ICEUpdate{}, err
	}
	local, err := l.reanswer(ctx, offer)
	if errors.Is(err, ErrBadSDP) {
		return ICEUpdate{}, fmt.Errorf("%w: ICE restart: %w", ErrBadFragment, err)
	}
	if err != nil {
		return ICEUpdate{}, err
	}
	ans, err := answerFrag(local)
	if err != nil {
		return ICEUpdate{}, err
	}
	if _, err := l.setICESession(local); err != nil {
		return ICEUpdate{}, err
	}
	l.log.Info("media: ICE restart by fragment")
	return ICEUpdate{Answer: ans, Restarted: true, Session: l.ICESession()}, nil
}

// addCandidates adds a fragment's candidates; a fragment m-line without
// a=mid means the first m-line of the remote description. A mid the session
// does not have is an error (as for addIceCandidate, W3C webrtc-pc §4.4.1.6);
// pion itself ignores mids, since every m-line is bundled on one transport.
func (l *Leg) addCandidates(cur *sdp.SessionDescription, f sdpFrag) error {
	mids := make(map[string]bool, len(cur.MediaDescriptions))
	first := ""
	for i, m := range cur.MediaDescriptions {
		if i == 0 {
			first = mediaMid(m)
		}
		mids[mediaMid(m)] = true
	}
	for _, m := range f.Media {
		mid := m.Mid
		if mid == "" {
			mid = first
		}
		if len(m.Candidates) > 0 && !mids[mid] {
			return fmt.Errorf("%w: no m-line with mid %q", ErrBadFragment, mid)
		}
		for _, c := range m.Candidates {
			err := l.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: "candidate:" + c, SDPMid: &mid})
			if err != nil {
				if e := l.closedErr(); e != nil {
					return e
				}
				return fmt.Errorf("%w: candidate %q: %v", ErrBadFragment, c, err)
			}
		}
	}
	return nil
}

// Renegotiate answers a new full SDP offer from the visitor on the same
// leg, e.g. after the browser's restartIce() (an ICE restart by re-offer,
// RFC 8829 §5.2.1): it returns the complete answer (non-trickle). ctx bounds
// gathering. Errors wrap ErrBadSDP or ErrNoAudio; a closed leg gives
// ErrClosed.
func (l *Leg) Renegotiate(ctx context.Context, offer string) (string, error) {
	u, err := l.RenegotiateIf(ctx, offer, nil)
	return u.Answer, err
}

// RenegotiateIf is Renegotiate for the ICE session match accepts, as
// TrickleIf. Restarted tells whether the re-offer restarted ICE (new
// credentials, so a new session tag).
func (l *Leg) RenegotiateIf(ctx context.Context, offer string, match func(session string) bool) (ICEUpdate, error) {
	if err := l.closedErr(); err != nil {
		return ICEUpdate{}, err
	}
	if err := checkOffer(offer, false); err != nil {
		return ICEUpdate{}, err
	}
	l.negMu.Lock()
	defer l.negMu.Unlock()
	if match != nil && !match(l.ICESession()) {
		return ICEUpdate{}, ErrICESessionChanged
	}
	answer, err := l.reanswer(ctx, offer)
	if err != nil {
		return ICEUpdate{}, err
	}
	restarted, err := l.setICESession(answer)
	if err != nil {
		return ICEUpdate{}, err
	}
	return ICEUpdate{Answer: answer, Restarted: restarted, Session: l.ICESession()}, nil
}

// reanswer applies a subsequent remote offer and returns our answer; on
// failure it rolls the signaling state back to stable (RFC 8829 §4.1.10.2)
// so the leg keeps its current session.
func (l *Leg) reanswer(ctx context.Context, offer string) (string, error) {
	if err := l.closedErr(); err != nil {
		return "", err
	}
	err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer})
	if err != nil {
		if e := l.closedErr(); e != nil {
			return "", e
		}
		return "", fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	answer, err := l.completeAnswer(ctx)
	if err != nil {
		if l.pc.SignalingState() == webrtc.SignalingStateHaveRemoteOffer {
			_ = l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback})
		}
		if e := l.closedErr(); e != nil {
			return "", e
		}
		return "", err
	}
	return answer, nil
}

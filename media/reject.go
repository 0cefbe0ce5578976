package media

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pion/sdp/v3"
)

// Rejected m-lines. A leg takes one audio m-line; an offer may carry more:
// video above all, which many WHIP clients offer by default (audio plus
// video, RFC 9725 §4.2). The answer rejects them (RFC 3264 §6: port 0), in
// the form RFC 9429 §5.3.1 and RFC 9143 §7.3.3 give, so that offerers which
// match m-lines by mid accept it:
//
//	m=video 0 UDP/TLS/RTP/SAVPF 96
//	c=IN IP4 0.0.0.0
//	a=mid:1
//	a=inactive
//	a=rtpmap:96 VP8/90000
//
// pion's own rejection ("m=video 0 UDP/TLS/RTP/SAVPF 0", no a=mid) is
// refused by offerers that look transceivers up by mid, and by pion itself
// when it offered a video track (it binds the track to a codec of the
// answer's video m-line: "codec is not supported by remote"). So the
// rejected m-line keeps the offer's first format and its a=rtpmap (RFC 3264
// §6: the formats of a rejected stream are ignored, but one must be there),
// and its mid leaves a=group:BUNDLE.

// rejectUnused rewrites the rejected m-lines (port 0) of local, our
// answer to offer, as above; the rest is kept as it is. pion writes our
// candidates on the first m-line: when the offer put video first, that is
// the rejected one, whose candidates an offerer ignores (RFC 8839 §5.1), so
// they move to the first accepted m-line, the one the BUNDLE transport runs
// on.
//
// pion refuses a local description that differs from the answer it made,
// so this is the text the visitor gets, not the one pion keeps: the same
// session, written the way offerers read it.
func rejectUnused(local, offer string) (string, error) {
	var a, o sdp.SessionDescription
	if err := a.UnmarshalString(local); err != nil {
		return "", fmt.Errorf("%w: local answer: %v", ErrBadSDP, err)
	}
	if err := o.UnmarshalString(offer); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	var accepted *sdp.MediaDescription
	for _, m := range a.MediaDescriptions {
		if m.MediaName.Port.Value != 0 {
			accepted = m
			break
		}
	}
	var rejected []string
	changed := false
	for i, m := range a.MediaDescriptions {
		if m.MediaName.Port.Value != 0 || i >= len(o.MediaDescriptions) {
			continue
		}
		changed = true
		om := o.MediaDescriptions[i]
		if accepted != nil {
			for _, attr := range m.Attributes {
				if attr.Key == "candidate" || attr.Key == "end-of-candidates" {
					accepted.Attributes = append(accepted.Attributes, attr)
				}
			}
		}
		m.MediaName.Protos = slices.Clone(om.MediaName.Protos)
		m.MediaName.Formats = []string{"0"}
		m.Bandwidth = nil
		m.ConnectionInformation = &sdp.ConnectionInformation{NetworkType: "IN", AddressType: "IP4",
			Address: &sdp.Address{Address: "0.0.0.0"}}
		m.Attributes = nil
		if mid := mediaMid(om); mid != "" {
			m.Attributes = append(m.Attributes, sdp.NewAttribute("mid", mid))
			rejected = append(rejected, mid)
		}
		m.Attributes = append(m.Attributes, sdp.NewPropertyAttribute("inactive"))
		if len(om.MediaName.Formats) > 0 {
			f := om.MediaName.Formats[0]
			m.MediaName.Formats = []string{f}
			for _, attr := range om.Attributes {
				if pt, _, _ := strings.Cut(attr.Value, " "); attr.Key == "rtpmap" && pt == f {
					m.Attributes = append(m.Attributes, sdp.NewAttribute("rtpmap", attr.Value))
				}
			}
		}
	}
	if !changed {
		return local, nil
	}
	for i, attr := range a.Attributes {
		f := strings.Fields(attr.Value)
		if attr.Key != "group" || len(f) == 0 || f[0] != "BUNDLE" {
			continue
		}
		kept := slices.DeleteFunc(f[1:], func(id string) bool { return slices.Contains(rejected, id) })
		a.Attributes[i].Value = strings.Join(append([]string{"BUNDLE"}, kept...), " ")
	}
	out, err := a.Marshal()
	if err != nil {
		return "", fmt.Errorf("%w: local answer: %v", ErrBadSDP, err)
	}
	return string(out), nil
}

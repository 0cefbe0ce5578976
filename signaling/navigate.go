package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/configs"
)

// Guided navigation: an agent may send the visitor only to places of the
// widget's nav map. The agent names a target id; the page gets the path,
// selector and label the site configured, never a URL the agent made up.

// ErrNavTargetUnknown: an agent's navigate action names no target of the
// widget's nav map (a WebSocket error frame NAV_TARGET_UNKNOWN; the action
// is not forwarded).
var ErrNavTargetUnknown = errors.New("navigation target not in the nav map")

// navigateData is what the page gets in a navigate action frame.
type navigateData struct {
	Target   string `json:"target"`
	Path     string `json:"path"`
	Selector string `json:"selector,omitempty"`
	Label    string `json:"label"`
}

// resolveNavigate looks up the target of a navigate action's data in a nav
// map and returns the frame data the page gets.
func resolveNavigate(navMap []configs.NavTarget, data json.RawMessage) (json.RawMessage, error) {
	var req struct {
		Target string `json:"target"`
	}
	if len(data) == 0 || json.Unmarshal(data, &req) != nil || req.Target == "" {
		return nil, fmt.Errorf("%w: navigate needs {\"target\": \"<nav map id>\"}", ErrNavTargetUnknown)
	}
	for _, t := range navMap {
		if t.ID == req.Target {
			out, err := json.Marshal(navigateData{Target: t.ID, Path: t.Path, Selector: t.Selector, Label: t.Label})
			if err != nil {
				return nil, fmt.Errorf("signaling: navigate data: %w", err)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNavTargetUnknown, truncate(req.Target, 64))
}

// actionFrame maps an agent's action event to the frame the page gets. A
// navigate action is checked against the session's widget's nav map (read
// now, so a changed map applies at once).
func (l *leg) actionFrame(ev *agentbridge.Event) (serverFrame, error) {
	f := serverFrame{Type: "action", Action: ev.Action, Data: ev.Data, Seq: ev.Seq}
	if ev.Action != agentbridge.ActionNavigate {
		return f, nil
	}
	wc, err := l.s.widgets.WidgetByID(l.sess.Widget)
	if err != nil {
		return f, fmt.Errorf("%w: the widget is gone", ErrNavTargetUnknown)
	}
	data, err := resolveNavigate(wc.NavMap, ev.Data)
	if err != nil {
		return f, err
	}
	f.Data = data
	return f, nil
}

// truncate cuts s to at most n bytes, on a rune boundary, (for echoing outside input in errors).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

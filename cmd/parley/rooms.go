package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// roomsCmd shows the live rooms of a deployment, read straight from its
// NATS (the <prefix>_rooms KV bucket and parley.rooms.<cid>):
//
//	parley rooms [--watch] [--json] [--widget W] [--mode M] [--agent A] [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--prefix P]
//	parley rooms show ID [--json] [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--prefix P]
//
// --json prints one JSON array; with --watch, one room object per line and
// change (ended_reason set when the room ended).
func roomsCmd(args []string, stdout, stderr io.Writer) int {
	show := len(args) > 0 && args[0] == "show"
	name := "parley rooms"
	if show {
		name, args = "parley rooms show", args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	nf := addNATSFlags(fs)
	prefix := fs.String("prefix", "parley", "subject and bucket prefix")
	asJSON := fs.Bool("json", false, "print JSON")
	var watch *bool
	var widget, mode, agent *string
	if !show {
		watch = fs.Bool("watch", false, "keep watching: redraw on every change")
		widget = fs.String("widget", "", "only rooms of this widget id")
		mode = fs.String("mode", "", "only rooms in this mode (chat or voice)")
		agent = fs.String("agent", "", "only rooms of this agent")
	}
	fs.Usage = func() {
		if show {
			fmt.Fprintln(stderr, "Usage: parley rooms show ID [--json] [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--prefix P]")
		} else {
			fmt.Fprintln(stderr, "Usage: parley rooms [--watch] [--json] [--widget W] [--mode M] [--agent A] [--nats-url URL] [--data-dir DIR | --nats-creds FILE] [--prefix P]\n       parley rooms show ID")
		}
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if code, done := parseExit(err); done {
		return code
	}
	if show && len(pos) != 1 || !show && len(pos) != 0 {
		fs.Usage()
		return 2
	}

	nf.markSet(fs)
	b, err := attachBroker(nf, *prefix, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer b.Close()
	if show {
		return showRoom(b, pos[0], *asJSON, stdout, stderr)
	}
	if *watch {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		f := roomFilter{widget: *widget, mode: *mode, agent: *agent}
		if err := watchRooms(ctx, b, f, *asJSON, isTerminal(stdout), stdout); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rooms, err := b.Rooms(ctx, *widget, *mode, *agent)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if *asJSON {
		printJSON(stdout, rooms, "  ")
		return 0
	}
	printRooms(stdout, rooms, time.Now())
	return 0
}

// attachBroker attaches to a running deployment's NATS, as keys does:
// never creating or reconfiguring its stream and buckets.
func attachBroker(nf *natsFlags, prefix string, stderr io.Writer) (*broker.Broker, error) {
	creds, err := nf.credsFile(broker.RoleOperator, prefix)
	if err != nil {
		return nil, err
	}
	cfg := configs.Default()
	cfg.NATS.URL, cfg.NATS.Prefix, cfg.NATS.CredentialsFile = nf.url, prefix, creds
	cfg.Widgets = nil // never seed from a CLI
	b := broker.New(cfg, newLogger(stderr, "warn", "text"))
	b.AttachOnly()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		return nil, nf.connErr(err, creds)
	}
	return b, nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments (flag stops at the first of those).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		args = fs.Args()
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func printJSON(w io.Writer, v any, indent string) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", indent)
	_ = enc.Encode(v)
}

// printRooms prints rooms as a table, the way kubectl get does.
func printRooms(w io.Writer, rooms []broker.Room, now time.Time) {
	if len(rooms) == 0 {
		fmt.Fprintln(w, "No live rooms.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tWIDGET\tMODE\tAGENT\tLEGS\tAGE\tIN/OUT\tLOSS %")
	for _, r := range rooms {
		inOut, loss := mediaSummary(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ConversationID, orDash(r.Widget), orDash(r.Mode),
			agentSummary(r), legsSummary(r), humanAge(now.Sub(r.StartedAt)), inOut, loss)
	}
	_ = tw.Flush()
}

// agentSummary is "echo" or "echo/thinking".
func agentSummary(r broker.Room) string {
	if r.AgentState == "" {
		return orDash(r.Agent)
	}
	return orDash(r.Agent) + "/" + r.AgentState
}

// legsSummary is the transports of the legs: "websocket,webrtc".
func legsSummary(r broker.Room) string {
	var t []string
	for _, l := range r.Legs {
		t = append(t, l.Transport)
	}
	if len(t) == 0 {
		return "-"
	}
	return strings.Join(t, ",")
}

// mediaSummary is the frames per second in and out ("50/50") and the loss
// ("0.4") over the room's voice legs, or "-" without any.
func mediaSummary(r broker.Room) (inOut, loss string) {
	var in, out float64
	var received, lost uint64
	seen := false
	for _, l := range r.Legs {
		if l.Media == nil {
			continue
		}
		seen = true
		in += l.Media.InFPS
		out += l.Media.OutFPS
		received += l.Media.FramesIn
		lost += l.Media.Lost
	}
	if !seen {
		return "-", "-"
	}
	pct := 0.0
	if received+lost > 0 {
		pct = 100 * float64(lost) / float64(received+lost)
	}
	return fmt.Sprintf("%.0f/%.0f", in, out), fmt.Sprintf("%.1f", pct)
}

// humanAge is d the way kubectl prints ages: 5s, 3m, 2h, 4d.
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// showRoom prints one room, its conversation and its recent events.
func showRoom(b *broker.Broker, cid string, asJSON bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	room, err := b.Room(ctx, cid)
	if errors.Is(err, broker.ErrUnknownConversation) {
		fmt.Fprintf(stderr, "parley rooms show: no live room %s\n", cid)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley rooms show: %v\n", err)
		return 1
	}
	events, err := b.ReadLog(ctx, cid, 0)
	if err != nil {
		fmt.Fprintf(stderr, "parley rooms show: conversation log: %v\n", err)
		return 1
	}
	transcript := broker.ConversationTranscript(events, room.Agent)
	if transcript == nil {
		transcript = []broker.TranscriptEntry{}
	}
	if len(events) > 20 {
		events = events[len(events)-20:]
	}
	if events == nil {
		events = []agentbridge.Event{}
	}
	if asJSON {
		printJSON(stdout, map[string]any{"room": room, "transcript": transcript, "recent_events": events}, "  ")
		return 0
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Room:\t%s\n", room.ConversationID)
	fmt.Fprintf(tw, "Widget:\t%s\n", orDash(room.Widget))
	fmt.Fprintf(tw, "Mode:\t%s\n", orDash(room.Mode))
	fmt.Fprintf(tw, "Agent:\t%s (state %s, worker %s)\n", orDash(room.Agent), orDash(room.AgentState), orDash(room.WorkerID))
	fmt.Fprintf(tw, "Started:\t%s (%s ago)\n", room.StartedAt.Local().Format(time.RFC3339), humanAge(now.Sub(room.StartedAt)))
	fmt.Fprintf(tw, "Last activity:\t%s\n", agoOrDash(room.LastActivity, now))
	fmt.Fprintf(tw, "Updated:\t%s\n", agoOrDash(room.UpdatedAt, now))
	fmt.Fprintf(tw, "Broker:\t%s\n", orDash(room.Broker))
	_ = tw.Flush()

	fmt.Fprintln(stdout, "\nLegs:")
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tKIND\tTRANSPORT\tSESSION\tAGE\tIN/OUT FPS\tFRAMES IN/OUT\tLOST\tLOSS %\tJITTER MS\tRTT MS")
	for _, l := range room.Legs {
		m := "-\t-\t-\t-\t-\t-"
		if l.Media != nil {
			m = fmt.Sprintf("%.0f/%.0f\t%d/%d\t%d\t%.1f\t%.1f\t%.1f", l.Media.InFPS, l.Media.OutFPS, l.Media.FramesIn,
				l.Media.FramesOut, l.Media.Lost, l.Media.LossPct, l.Media.JitterMS, l.Media.RTTMS)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Kind, l.Transport, l.SessionID, humanAge(now.Sub(l.Since)), m)
	}
	_ = tw.Flush()

	fmt.Fprintln(stdout, "\nParticipants:")
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tID")
	for _, p := range room.Participants {
		fmt.Fprintf(tw, "  %s\t%s\n", p.Kind, p.ID)
	}
	_ = tw.Flush()

	fmt.Fprintln(stdout, "\nConversation:")
	for _, e := range transcript {
		fmt.Fprintf(stdout, "  %s  %s\n", e.At.Local().Format("15:04:05"), transcriptLine(e))
	}

	fmt.Fprintf(stdout, "\nRecent events (last %d):\n", len(events))
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tTIME\tTYPE\tDETAIL")
	for _, ev := range events {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", ev.Seq, ev.TS.Local().Format("15:04:05.000"), ev.Type, eventDetail(ev))
	}
	_ = tw.Flush()
	return 0
}

func agoOrDash(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanAge(now.Sub(t)) + " ago"
}

// eventDetail is a one-line summary of a log event.
func eventDetail(ev agentbridge.Event) string {
	var parts kvParts
	switch ev.Type {
	case agentbridge.EventModeChanged:
		parts = append(parts, orDash(ev.PreviousMode)+" → "+ev.Mode)
	case agentbridge.EventAgentState:
		parts = append(parts, ev.State)
	}
	parts.add("session", ev.SessionID)
	parts.add("via", ev.Via)
	parts.add("leg", ev.LegID)
	parts.add("action", ev.Action)
	parts.add("reason", ev.Reason)
	parts.add("worker", ev.WorkerID)
	if ev.Type != agentbridge.EventTextDelta && ev.Text != "" {
		parts = append(parts, quoteShort(ev.Text, 60))
	}
	return strings.Join(parts, " ")
}

// kvParts are the parts of a one-line summary: add appends "k=v", or
// nothing when v is empty.
type kvParts []string

func (p *kvParts) add(k, v string) {
	if v != "" {
		*p = append(*p, k+"="+v)
	}
}

// transcriptLine is one line of a conversation as `parley rooms show`
// prints it: "visitor (chat): …", "agent echo (voice): …", "-- call
// started (voice_leg) --".
func transcriptLine(e broker.TranscriptEntry) string {
	if m := e.Turn; m != nil {
		who := m.Role
		if m.Role == broker.RoleAgent && e.Agent != "" {
			who += " " + e.Agent
		}
		line := fmt.Sprintf("%s (%s): %s", who, m.Via, quoteShort(m.Body, 200))
		switch {
		case e.InProgress:
			line += " [writing…]"
		case m.Interrupted && m.Written != "":
			line += " [cut off by the visitor; written: " + quoteShort(m.Written, 200) + "]"
		case m.Interrupted:
			line += " [cut off]"
		case m.Unheard != "":
			line += " [not understood: " + m.Unheard + "]"
		}
		return line
	}
	var parts kvParts
	switch e.Kind {
	case broker.EntryInterrupt:
		parts.add("reply", e.MessageID)
		if e.HeardMS != nil {
			parts.add("heard_ms", fmt.Sprint(*e.HeardMS))
		}
		if e.HeardText != nil {
			parts = append(parts, "heard "+quoteShort(*e.HeardText, 80))
		}
	case broker.EntryHandOver:
		parts.add("from", e.PreviousWorkerID)
		parts.add("to", e.WorkerID)
	case broker.EntryHandoff, broker.EntryAction, broker.EntryCapture:
		parts.add("action", e.Action)
		if len(e.Data) > 0 {
			parts = append(parts, string(e.Data))
		}
	}
	parts.add("session", e.SessionID)
	parts.add("reason", e.Reason)
	return "-- " + strings.ReplaceAll(e.Kind, "_", " ") + " " + strings.Join(parts, " ") + " --"
}

// quoteShort quotes s, cut to n runes, on one line.
func quoteShort(s string, n int) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) > n {
		return fmt.Sprintf("%q…", string(r[:n]))
	}
	return fmt.Sprintf("%q", string(r))
}

// roomFilter is the --widget/--mode/--agent selection.
type roomFilter struct{ widget, mode, agent string }

func (f roomFilter) match(r broker.Room) bool {
	return (f.widget == "" || r.Widget == f.widget) && (f.mode == "" || r.Mode == f.mode) && (f.agent == "" || r.Agent == f.agent)
}

// roomStale matches the broker's: a room no broker rewrote for this long
// was left behind by one that died (brokers refresh theirs every 30 s).
const roomStale = 90 * time.Second

// watchRooms prints the rooms, then again on every change, until ctx ends.
// It subscribes before listing the KV bucket, so no change falls between;
// a snapshot older than what it holds is ignored.
func watchRooms(ctx context.Context, b *broker.Broker, f roomFilter, asJSON, tty bool, w io.Writer) error {
	// Never block NATS delivery: a watcher too slow relists instead.
	watch, err := broker.WatchRoomChanges(b.WatchRooms, 1024)
	if err != nil {
		return err
	}
	defer watch.Stop()
	changes, lost := watch.Updates, watch.Lost

	rooms := map[string]broker.Room{} // live and recently ended, by cid
	// apply merges a snapshot; it reports whether what is shown changed.
	apply := func(r broker.Room) bool {
		old, ok := rooms[r.ConversationID]
		if ok && r.UpdatedAt.Before(old.UpdatedAt) {
			return false
		}
		rooms[r.ConversationID] = r
		return f.match(r) || ok && f.match(old)
	}
	list := func() error {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		listed, err := b.Rooms(lctx, "", "", "")
		if err != nil {
			return err
		}
		present := map[string]bool{}
		for _, r := range listed {
			present[r.ConversationID] = true
			apply(r)
		}
		// Rooms that went while we were not looking.
		for cid, r := range rooms {
			if !present[cid] && r.EndedReason == "" && time.Since(r.UpdatedAt) > 5*time.Second {
				delete(rooms, cid)
			}
		}
		return nil
	}
	live := func(now time.Time) []broker.Room {
		var out []broker.Room
		for _, r := range rooms {
			if r.EndedReason == "" && now.Sub(r.UpdatedAt) <= roomStale && f.match(r) {
				out = append(out, r)
			}
		}
		slices.SortFunc(out, func(a, b broker.Room) int { return a.StartedAt.Compare(b.StartedAt) })
		return out
	}
	draw := func() {
		now := time.Now()
		if tty {
			fmt.Fprint(w, "\x1b[H\x1b[2J") // home, clear screen
			fmt.Fprintf(w, "parley rooms --watch   %s   (Ctrl-C to stop)\n\n", now.Format("15:04:05"))
		} else if !asJSON {
			fmt.Fprintln(w) // tables one after another, a blank line between
		}
		printRooms(w, live(now), now)
	}
	emit := func(r broker.Room) {
		data, _ := json.Marshal(r)
		fmt.Fprintf(w, "%s\n", data)
	}

	if err := list(); err != nil {
		return err
	}
	if asJSON {
		for _, r := range live(time.Now()) {
			emit(r)
		}
	} else {
		draw()
	}
	// A terminal's AGE column moves with the clock; ended rooms are
	// forgotten after a while.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			if err := list(); err != nil {
				return err
			}
			if !asJSON {
				draw()
			}
		case r := <-changes:
			// Take whatever else is queued too, then redraw once.
			shown := false
			for more := true; more; {
				if apply(r) {
					shown = true
					if asJSON {
						emit(r)
					}
				}
				select {
				case r = <-changes:
				default:
					more = false
				}
			}
			if shown && !asJSON {
				draw()
			}
		case now := <-tick.C:
			for cid, r := range rooms {
				if now.Sub(r.UpdatedAt) > 2*roomStale {
					delete(rooms, cid)
				}
			}
			if tty && !asJSON {
				draw()
			}
		}
	}
}

// Package assistant is the agent of `parley agent assistant`: a text agent
// that answers each visitor message (typed, or spoken and transcribed by
// the broker's speech pipeline) with a reply streamed from an
// OpenAI-compatible chat-completions endpoint, the conversation so far as
// its context. It is an example of the SDK (agentbridge) with a real
// model behind it: a barge-in stops the model at once, and an endpoint
// that fails gives the visitor a short apology, never a secret.
package assistant

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
)

// DefaultSystem is the system prompt when none is given: a website's
// assistant whose replies may be spoken, so short and plain.
const DefaultSystem = "You are the assistant on this website, talking with a visitor in a chat window or on a voice call. " +
	"Answer in one to three short sentences of plain text, without lists, markdown or emoji, because your replies may be spoken aloud. " +
	"If you do not know something about this website or its business, say so instead of guessing."

// DefaultMaxHistory is how many earlier messages go with a request.
const DefaultMaxHistory = 20

// NotHeard answers a voice turn the speech pipeline could not transcribe.
const NotHeard = "Sorry, I didn't catch that. Could you say it again?"

// Apology is what the visitor reads (or hears) when the endpoint fails.
const Apology = "Sorry, I can't answer right now. Please try again in a moment."

// Agent answers visitors through Client. Run is its agentbridge.Handler;
// one Agent serves any number of conversations at once.
type Agent struct {
	Client *Client
	// System is the system prompt (DefaultSystem when empty).
	System string
	// MaxHistory is how many earlier messages (visitor and agent turns)
	// go with each request (DefaultMaxHistory when zero; negative: none).
	MaxHistory int
	// Log gets one line per failed reply, with its code (default: the
	// conversation's logger).
	Log *slog.Logger
}

// Run is an agentbridge.Handler: it serves c until the conversation ends,
// one visitor message at a time.
func (a *Agent) Run(ctx context.Context, c *agentbridge.Conversation) error {
	log := c.Logger()
	if a.Log != nil {
		log = a.Log.With("conversation_id", c.ID())
	}
	h := historyOf(c.History())
	last := -1 // the index in h of the latest reply, lastID's
	lastID := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Audio():
			// A text agent: the broker's speech pipeline hears for it.
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Type {
			case agentbridge.EventUserMessage:
				if strings.TrimSpace(userText(ev)) == "" {
					// A voice turn the speech pipeline could not make out
					// (ev.Reason says why): nothing to ask the model.
					if err := c.SendText(ctx, ev.MessageID, NotHeard); err != nil {
						return err
					}
					continue
				}
				h = append(h, Message{Role: "user", Content: userText(ev)})
				r := c.NewReply(ev.MessageID)
				said, err := a.answer(ctx, c, log, r, a.request(h))
				last, lastID = -1, ""
				if said != "" {
					h = append(h, Message{Role: "assistant", Content: said})
					last, lastID = len(h)-1, r.ID()
				}
				if n := len(h) - len(a.tail(h)); n > 0 {
					h, last = h[n:], last-n // what no request will send again goes
				}
				if err != nil {
					return err
				}
			case agentbridge.EventInterrupt:
				// The visitor cut in while the broker spoke the reply:
				// what they heard is what was said.
				if ev.HeardText != nil && ev.MessageID == lastID && last >= 0 {
					h[last].Content = *ev.HeardText
				}
			case agentbridge.EventModeChanged:
				state := agentbridge.StateIdle
				if ev.Mode == agentbridge.ModeVoice {
					state = agentbridge.StateListening
				}
				if err := c.SetState(ctx, state, ""); err != nil {
					return err
				}
			}
		}
	}
}

// request is the messages of a request: the system prompt and the last
// MaxHistory messages of h besides the newest, the visitor's message.
func (a *Agent) request(h []Message) []Message {
	sys := a.System
	if sys == "" {
		sys = DefaultSystem
	}
	return append([]Message{{Role: "system", Content: sys}}, a.tail(h)...)
}

// tail is the end of h that the next request sends: MaxHistory messages
// and the one being answered.
func (a *Agent) tail(h []Message) []Message {
	keep := a.MaxHistory
	if keep == 0 {
		keep = DefaultMaxHistory
	}
	keep = max(keep, 0) + 1
	if len(h) > keep {
		h = h[len(h)-keep:]
	}
	return h
}

// answer streams the endpoint's reply to replyTo and returns what the
// visitor was given: the reply, as much of it as was said before a
// barge-in, or (after a failure, logged with its code) the apology. Its
// error is the conversation's (a refused append, a shutdown), not the
// endpoint's.
func (a *Agent) answer(ctx context.Context, c *agentbridge.Conversation, log *slog.Logger, r *agentbridge.Reply, msgs []Message) (string, error) {
	said, err := a.stream(ctx, c, r, msgs)
	switch {
	case errors.Is(err, agentbridge.ErrInterrupted):
		// The broker cut the reply (barge-in) and closed it in the log;
		// Done records it as interrupted, with what was said.
		return said, r.Done(ctx)
	case ctx.Err() != nil:
		return said, nil // shutting down: the broker closes a lost worker's reply
	case err != nil && CodeOf(err) == "":
		return said, err // the broker refused a delta
	case err != nil:
		var e *Error
		errors.As(err, &e)
		log.Warn("assistant reply failed; the visitor gets an apology", "code", string(e.Code), "status", e.Status,
			"detail", e.Detail, "endpoint", a.Client.URL(), "reply_id", r.ID(), "said_bytes", len(said))
		text := Apology
		if said != "" {
			text = " … " + Apology
		}
		if werr := r.Write(ctx, text); werr != nil && !errors.Is(werr, agentbridge.ErrInterrupted) {
			return said, werr
		} else if werr == nil {
			said += text
		}
	}
	return said, r.Done(ctx)
}

// stream runs the endpoint's stream on its own goroutine and writes its
// deltas to r as they come, those that arrived during one write merged
// into the next. A barge-in (r.Interrupted) or ctx cancels the request at
// once. The goroutine is owned: stream returns only after it ended. It
// returns the text written.
func (a *Agent) stream(ctx context.Context, c *agentbridge.Conversation, r *agentbridge.Reply, msgs []Message) (string, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deltas := make(chan string, 64)
	ended := make(chan error, 1)
	go func() {
		ended <- a.Client.Stream(sctx, msgs, func(d string) error {
			select {
			case deltas <- d:
				return nil
			case <-sctx.Done():
				return sctx.Err()
			}
		})
	}()
	stop := func() { cancel(); <-ended }
	var said strings.Builder
	write := func(first string) error {
		var b strings.Builder
		b.WriteString(first)
		for more := true; more; {
			select {
			case d := <-deltas:
				b.WriteString(d)
			default:
				more = false
			}
		}
		if b.Len() == 0 {
			return nil
		}
		if err := r.Write(ctx, b.String()); err != nil {
			return err
		}
		said.WriteString(b.String())
		return nil
	}
	for {
		select {
		case d := <-deltas:
			if err := write(d); err != nil {
				stop()
				return said.String(), err
			}
		case err := <-ended:
			// Every delta was queued before the stream ended.
			if werr := write(""); werr != nil {
				return said.String(), werr
			}
			return said.String(), err
		case <-r.Interrupted():
			stop()
			return said.String(), agentbridge.ErrInterrupted
		case <-ctx.Done():
			stop()
			return said.String(), ctx.Err()
		case <-c.Audio():
		}
	}
}

// historyOf turns the replayed log into messages: the visitor's turns
// (typed, or final transcripts of speech) as user, the agent's replies as
// assistant, an interrupted one as what was said of it (broker.Transcript
// reads the log the way the history API does).
func historyOf(events []agentbridge.Event) []Message {
	var h []Message
	for _, m := range broker.Transcript(events) {
		if strings.TrimSpace(m.Body) == "" {
			continue
		}
		role := "user"
		if m.Role == broker.RoleAgent {
			role = "assistant"
		}
		h = append(h, Message{Role: role, Content: m.Body})
	}
	return h
}

// userText is a visitor message as the model reads it: its text, and the
// names of files it carried (the model does not see them).
func userText(ev agentbridge.Event) string {
	text := ev.Text
	for _, at := range ev.Attachments {
		text = strings.TrimSpace(text + "\n[attached file: " + at.Name + "]")
	}
	return text
}

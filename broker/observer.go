package broker

import "time"

// Observer receives the broker's measurements (signaling feeds them to
// Prometheus). Its methods are called on hot paths: they must be cheap and
// must not block.
type Observer interface {
	// Dispatched: a worker of agent accepted a conversation d after the
	// first dispatch attempt.
	Dispatched(agent string, d time.Duration)
	// ModeChanged: a session switched to mode.
	ModeChanged(mode string)
	// SessionStarted: a session started (resumed: on an existing
	// conversation).
	SessionStarted(resumed bool)
	// MicFrame: a visitor audio frame was published d after its RTP
	// packet arrived.
	MicFrame(d time.Duration)
	// MediaFrames: voice legs moved in visitor frames in, agent frames
	// out and lost visitor frames since the last call.
	MediaFrames(in, out, lost uint64)
	// MediaDrops: voice legs dropped late visitor packets (behind the
	// jitter buffer), agent frames from the playout queue (queue full or
	// cleared by barge-in) and rejected agent frames (wrong codec or
	// malformed) since the last call.
	MediaDrops(late, dropped, rejected uint64)
	// SlowSubscriber: a live subscription fell subscriptionBuffer updates
	// behind and was ended with ErrSlowSubscriber.
	SlowSubscriber()
	// LiveGap and LiveRefill: a hub found a gap in a conversation's live
	// events (lost, or in flight from another broker), and read it from
	// the log.
	LiveGap()
	LiveRefill()
	// Swept: a session or retention sweep (kind "session" or "retention")
	// ended n records, or failed (err true).
	Swept(kind string, n int, failed bool)
	// StoreRetry: storing a log event failed transiently and is retried.
	StoreRetry()
	// AgentEventRefused: an agent append was refused (nothing stored);
	// reason is the error code in lower case (not_holder, too_large, …).
	AgentEventRefused(reason string)
	// AgentAudioRefused: an agent audio frame was dropped because its
	// Parley-Worker is not the worker holding the conversation.
	AgentAudioRefused()
	// ConversationLimited: a dispatch was held back by a conversation
	// limit (limit widget, tenant or fair_share).
	ConversationLimited(limit string)
	// Speech: a voice leg reported the visitor's voice activity (kind
	// started, stopped or barge_in), detected from source (audio_level
	// or decode).
	Speech(kind, source string)
}

type nopObserver struct{}

func (nopObserver) Dispatched(string, time.Duration)   {}
func (nopObserver) ModeChanged(string)                 {}
func (nopObserver) SessionStarted(bool)                {}
func (nopObserver) MicFrame(time.Duration)             {}
func (nopObserver) MediaFrames(uint64, uint64, uint64) {}
func (nopObserver) MediaDrops(uint64, uint64, uint64)  {}
func (nopObserver) SlowSubscriber()                    {}
func (nopObserver) LiveGap()                           {}
func (nopObserver) LiveRefill()                        {}
func (nopObserver) Swept(string, int, bool)            {}
func (nopObserver) StoreRetry()                        {}
func (nopObserver) AgentEventRefused(string)           {}
func (nopObserver) AgentAudioRefused()                 {}
func (nopObserver) Speech(string, string)              {}
func (nopObserver) ConversationLimited(string)         {}

// observerBox lets the observer be swapped while goroutines read it.
type observerBox struct{ Observer }

// SetObserver installs o (it may be called after Start).
func (b *Broker) SetObserver(o Observer) {
	if o != nil {
		b.observer.Store(&observerBox{o})
	}
}

// obs returns the current observer.
func (b *Broker) obs() Observer { return b.observer.Load().Observer }

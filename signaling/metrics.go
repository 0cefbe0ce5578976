package signaling

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-rtc/parley/broker"
)

// metrics are Parley's Prometheus metrics, on a registry the server owns
// (namespace parley_, histograms in seconds). It is also the broker's
// Observer.
type metrics struct {
	reg *prometheus.Registry

	sessionsStarted *prometheus.CounterVec
	dispatch        *prometheus.HistogramVec
	chatRoundTrip   prometheus.Histogram
	mediaHop        prometheus.Histogram
	mediaFrames     *prometheus.CounterVec
	mediaLost       prometheus.Counter
	httpRequests    *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
	modeSwitches    *prometheus.CounterVec
	resumes         prometheus.Counter

	// Drops and recoveries.
	mediaLate       prometheus.Counter
	playoutDropped  prometheus.Counter
	playoutRejected prometheus.Counter
	wsSlow          prometheus.Counter
	wsPingTimeouts  prometheus.Counter
	opsSlow         prometheus.Counter
	slowSubscribers prometheus.Counter
	liveGaps        prometheus.Counter
	liveRefills     prometheus.Counter
	storeRetries    prometheus.Counter
	agentRefused    *prometheus.CounterVec
	audioRefused    prometheus.Counter
	convLimited     *prometheus.CounterVec
	speech          *prometheus.CounterVec
	speechTurns     *prometheus.CounterVec
	speechStages    *prometheus.HistogramVec
	sweeps          *prometheus.CounterVec
	swept           *prometheus.CounterVec
}

// newMetrics registers every metric; gauges are computed at scrape time
// from health and agents.
func newMetrics(health Health, workers Agents, agents func() []string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "parley"}))
	r := registry{m.reg}
	m.sessionsStarted = r.counterVec("sessions", "started_total",
		"Visitor sessions started, by whether they resumed a conversation.", "resumed")
	m.dispatch = r.histogramVec("agents", "dispatch_seconds",
		"First dispatch attempt to a worker accepting the conversation.", prometheus.ExponentialBuckets(0.0005, 2, 16), "agent")
	m.chatRoundTrip = r.histogram("chat", "round_trip_seconds",
		"Visitor message received on the WebSocket to the agent's first chunk sent back.",
		prometheus.ExponentialBuckets(0.0005, 2, 16))
	m.mediaHop = r.histogram("media", "hop_seconds",
		"RTP packet arrival to its frame published on NATS.", prometheus.ExponentialBuckets(0.00001, 2, 16))
	m.mediaFrames = r.counterVec("media", "frames_total",
		"Audio frames: in = visitor to agent, out = agent to visitor.", "direction")
	m.mediaLost = r.counter("media", "frames_lost_total",
		"Visitor audio frames never received (gaps past the jitter window).")
	m.httpRequests = r.counterVec("http", "requests_total",
		"HTTP requests by route (method and pattern) and status code.", "route", "code")
	m.rateLimited = r.counterVec("http", "rate_limited_total",
		"Requests refused by a rate limit, by kind.", "kind")
	m.modeSwitches = r.counterVec("sessions", "mode_switches_total",
		"Mode switches, by the mode switched to.", "mode")
	m.resumes = r.counter("sessions", "resumes_total",
		"Sessions that resumed an existing conversation.")
	m.registerDrops(r)
	f(gaugeFunc("sessions", "active", "Visitor sessions with a leg on this broker.", func() float64 {
		return float64(health.LocalStats().Sessions)
	}))
	f(&gaugesBy{desc: prometheus.NewDesc("parley_conversations_active",
		"Live conversations hosted on this broker, by mode.", []string{"mode"}, nil),
		values: func(yield func(string, float64)) {
			byMode := health.LocalStats().ConversationsByMode
			for _, mode := range []string{"chat", "voice"} {
				yield(mode, float64(byMode[mode]))
			}
		}})
	f(&storeCollector{health: health,
		writable: prometheus.NewDesc("parley_store_writable",
			"1 when the store's last write (probe or real) succeeded, 0 when it failed.", nil, nil),
		lostMsgs: prometheus.NewDesc("parley_store_lost_messages",
			"Messages the store lost (corrupt or truncated blocks), by stream or bucket.", []string{"store"}, nil),
		lostBytes: prometheus.NewDesc("parley_store_lost_bytes",
			"Bytes the store lost, by stream or bucket (when known).", []string{"store"}, nil),
		dataLost: prometheus.NewDesc("parley_store_data_lost",
			"1 when any stream or bucket of the store lost data (see /readyz), else 0.", nil, nil),
		timeouts: prometheus.NewDesc("parley_store_read_timeouts_total",
			"Conversation log reads that timed out: the store claimed events it did not deliver.", nil, nil),
	})
	f(&gaugesBy{desc: prometheus.NewDesc("parley_agent_workers_alive",
		"Agent workers heartbeating, by agent.", []string{"agent"}, nil),
		values: func(yield func(string, float64)) {
			for _, a := range agents() {
				yield(a, float64(workers.AliveWorkers(a)))
			}
		}})
	return m
}

// registerDrops registers the counters of everything Parley drops (and of
// the recoveries that were log lines only).
func (m *metrics) registerDrops(r registry) {
	m.mediaLate = r.counter("media", "frames_late_total",
		"Visitor audio packets dropped because they arrived behind the jitter buffer.")
	m.playoutDropped = r.counter("media", "playout_dropped_total",
		"Agent audio frames dropped from a voice leg's playout queue: the queue was full, or cleared by barge-in.")
	m.playoutRejected = r.counter("media", "playout_rejected_total",
		"Agent audio frames dropped because of a wrong codec or a malformed payload.")
	m.wsSlow = r.counter("websocket", "slow_consumers_total",
		"Chat WebSockets cut off because the client did not read its frames fast enough.")
	m.wsPingTimeouts = r.counter("websocket", "ping_timeouts_total",
		"Chat WebSockets closed because they did not answer the server's liveness ping in time.")
	m.opsSlow = r.counter("ops", "slow_readers_total",
		"Ops event streams (/v1/ops/events) ended with reset because the reader fell 256 room updates behind.")
	m.slowSubscribers = r.counter("live", "slow_subscribers_total",
		"Live conversation subscriptions ended because they fell too far behind (broker.ErrSlowSubscriber).")
	m.liveGaps = r.counter("live", "gaps_total",
		"Gaps found in a conversation's live events (an event lost on a reconnect, or still in flight from another broker).")
	m.liveRefills = r.counter("live", "refills_total",
		"Gaps in live events filled by reading the conversation's log.")
	m.storeRetries = r.counter("store", "retries_total",
		"Log appends retried after a transient store failure.")
	m.agentRefused = r.counterVec("agent", "events_refused_total",
		"Agent appends refused by the broker (nothing stored), by reason: the error code in lower case.", "reason")
	m.audioRefused = r.counter("agent", "audio_refused_total",
		"Agent audio frames dropped because their Parley-Worker is not the worker holding the conversation.")
	m.convLimited = r.counterVec("agents", "conversations_limited_total",
		"Dispatch attempts held back by a conversation limit (limits.conversations), by limit: widget, tenant or fair_share. The visitor is told CONVERSATION_LIMIT; the conversation is dispatched when the limit allows.", "limit")
	m.speech = r.counterVec("voice", "speech_events_total",
		"Visitor voice activity reported by voice legs, by kind (started, stopped, barge_in) and source (audio_level: RFC 6464 header extension; decode: level of decoded audio).", "kind", "source")
	m.speechTurns = r.counterVec("speech", "turns_total",
		"Voice turns the speech pipeline logged, by result: heard, or the speech_* code of why there is no text.", "result")
	m.speechStages = r.histogramVec("speech", "stage_seconds",
		"Where a voice turn's time goes, from the end of the visitor's speech to the first audio of the reply, by stage: turn (end of speech detection), stt (recognition), store, agent (first text), tts (first sentence synthesized), total.",
		[]float64{.01, .025, .05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10}, "stage")
	m.sweeps = r.counterVec("retention", "sweeps_total",
		"Periodic sweeps run, by kind (session, retention) and result (ok, failed).", "kind", "result")
	m.swept = r.counterVec("retention", "swept_total",
		"Records ended by periodic sweeps: sessions expired (session), conversations deleted (retention).", "kind")
}

// registry makes parley_<subsystem>_<name> metrics and registers each on
// the server's registry as it is made, so none is made and forgotten.
type registry struct{ reg *prometheus.Registry }

func (r registry) counter(subsystem, name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "parley", Subsystem: subsystem, Name: name, Help: help})
	r.reg.MustRegister(c)
	return c
}

func (r registry) counterVec(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "parley", Subsystem: subsystem, Name: name, Help: help}, labels)
	r.reg.MustRegister(c)
	return c
}

func (r registry) histogram(subsystem, name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "parley", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets})
	r.reg.MustRegister(h)
	return h
}

func (r registry) histogramVec(subsystem, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "parley", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets}, labels)
	r.reg.MustRegister(h)
	return h
}

func gaugeFunc(subsystem, name, help string, fn func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "parley", Subsystem: subsystem, Name: name, Help: help}, fn)
}

// gaugesBy is a gauge of one label, a value per label value, computed at
// scrape time by values (conversations by mode, live workers by agent).
type gaugesBy struct {
	desc   *prometheus.Desc
	values func(yield func(label string, v float64))
}

func (c *gaugesBy) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *gaugesBy) Collect(ch chan<- prometheus.Metric) {
	c.values(func(label string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, label)
	})
}

// storeCollector reports the broker's store health at scrape time.
type storeCollector struct {
	health                                            Health
	writable, lostMsgs, lostBytes, dataLost, timeouts *prometheus.Desc
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.writable
	ch <- c.lostMsgs
	ch <- c.lostBytes
	ch <- c.dataLost
	ch <- c.timeouts
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.health.StoreStatus()
	w := 0.0
	if st.Writable {
		w = 1
	}
	ch <- prometheus.MustNewConstMetric(c.writable, prometheus.GaugeValue, w)
	ch <- prometheus.MustNewConstMetric(c.timeouts, prometheus.CounterValue, float64(st.ReadTimeouts))
	lost := 0.0
	if len(st.Lost) > 0 {
		lost = 1
	}
	ch <- prometheus.MustNewConstMetric(c.dataLost, prometheus.GaugeValue, lost)
	for _, l := range st.Lost {
		ch <- prometheus.MustNewConstMetric(c.lostMsgs, prometheus.GaugeValue, float64(l.Msgs), l.Store)
		ch <- prometheus.MustNewConstMetric(c.lostBytes, prometheus.GaugeValue, float64(l.Bytes), l.Store)
	}
}

// Observer methods (broker.Observer).

func (m *metrics) Dispatched(agent string, d time.Duration) {
	m.dispatch.WithLabelValues(agent).Observe(d.Seconds())
}
func (m *metrics) ModeChanged(mode string)  { m.modeSwitches.WithLabelValues(mode).Inc() }
func (m *metrics) MicFrame(d time.Duration) { m.mediaHop.Observe(d.Seconds()) }
func (m *metrics) SessionStarted(resumed bool) {
	m.sessionsStarted.WithLabelValues(strconv.FormatBool(resumed)).Inc()
	if resumed {
		m.resumes.Inc()
	}
}

// MediaFrames adds voice legs' frame counter deltas.
func (m *metrics) MediaFrames(in, out, lost uint64) {
	m.mediaFrames.WithLabelValues("in").Add(float64(in))
	m.mediaFrames.WithLabelValues("out").Add(float64(out))
	m.mediaLost.Add(float64(lost))
}

// MediaDrops adds voice legs' drop counter deltas.
func (m *metrics) MediaDrops(late, dropped, rejected uint64) {
	m.mediaLate.Add(float64(late))
	m.playoutDropped.Add(float64(dropped))
	m.playoutRejected.Add(float64(rejected))
}

func (m *metrics) SlowSubscriber() { m.slowSubscribers.Inc() }
func (m *metrics) LiveGap()        { m.liveGaps.Inc() }
func (m *metrics) LiveRefill()     { m.liveRefills.Inc() }
func (m *metrics) StoreRetry()     { m.storeRetries.Inc() }

// AgentEventRefused counts one refused agent append.
func (m *metrics) AgentEventRefused(reason string) { m.agentRefused.WithLabelValues(reason).Inc() }

// AgentAudioRefused counts one dropped agent audio frame.
func (m *metrics) AgentAudioRefused() { m.audioRefused.Inc() }

func (m *metrics) Speech(kind, source string) { m.speech.WithLabelValues(kind, source).Inc() }

func (m *metrics) ConversationLimited(limit string) { m.convLimited.WithLabelValues(limit).Inc() }

// Swept counts one periodic sweep.
func (m *metrics) Swept(kind string, n int, failed bool) {
	result := "ok"
	if failed {
		result = "failed"
	}
	m.sweeps.WithLabelValues(kind, result).Inc()
	if n > 0 {
		m.swept.WithLabelValues(kind).Add(float64(n))
	}
}

// handler serves /metrics.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// countRequest records a finished HTTP request by method and route
// pattern ("POST /v1/sessions"). Methods outside the standard ones count as
// OTHER, so a client cannot grow the label set.
func (m *metrics) countRequest(method, pattern string, code int) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
	default:
		method = "OTHER"
	}
	if pattern == "" {
		pattern = "unmatched"
	}
	m.httpRequests.WithLabelValues(method+" "+pattern, strconv.Itoa(code)).Inc()
}

var _ broker.Observer = (*metrics)(nil)

package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// StreamReport describes one JetStream stream of the deployment: the
// conversation log, a KV bucket or an object store.
type StreamReport struct {
	Name     string `json:"name"`
	Msgs     uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Deleted counts deleted sequences between FirstSeq and LastSeq
	// (gaps). KV buckets have many (an update deletes the old revision);
	// the conversation log has none unless data was lost or deleted.
	Deleted int `json:"deleted"`
	// LostMsgs and LostBytes are data the store lost: reported by
	// nats-server, or found by comparing with what Parley last saw.
	LostMsgs  uint64 `json:"lost_messages"`
	LostBytes uint64 `json:"lost_bytes"`
	// Problems explains every loss or inconsistency found.
	Problems []string `json:"problems,omitempty"`
	// LostSince is when the loss was first found (carried in the marks).
	LostSince time.Time `json:"lost_since,omitzero"`
}

// ourStream reports whether a stream belongs to the deployment of subj.
func ourStream(subj agentbridge.Subjects, name string) bool {
	return name == subj.StreamName() || strings.HasPrefix(name, "KV_"+subj.Prefix+"_") ||
		strings.HasPrefix(name, "OBJ_"+subj.Prefix+"_")
}

// inspectStreams reports on every stream of the deployment. deep (for
// `parley check`) also compares the per-subject index with the blocks and
// has nats-server verify every message's checksum; it reads the whole
// store.
func inspectStreams(ctx context.Context, js jetstream.JetStream, subj agentbridge.Subjects, deep bool) ([]StreamReport, error) {
	var names []string
	lister := js.StreamNames(ctx)
	for n := range lister.Name() {
		if ourStream(subj, n) {
			names = append(names, n)
		}
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, fmt.Errorf("%w: list streams: %w", ErrStore, err)
	}
	slices.Sort(names)
	reports := make([]StreamReport, 0, len(names))
	for _, n := range names {
		r, err := inspectStream(ctx, js, n, deep)
		if err != nil {
			return nil, err
		}
		reports = append(reports, r)
	}
	return reports, nil
}

func inspectStream(ctx context.Context, js jetstream.JetStream, name string, deep bool) (StreamReport, error) {
	r := StreamReport{Name: name}
	st, err := js.Stream(ctx, name)
	if err != nil {
		return r, fmt.Errorf("%w: stream %s: %w", ErrStore, name, err)
	}
	if deep {
		if err := verifyChecksums(ctx, js, name); err != nil {
			r.Problems = append(r.Problems, err.Error())
		}
	}
	var opts []jetstream.StreamInfoOpt
	if deep {
		opts = append(opts, jetstream.WithSubjectFilter(">"))
	}
	info, err := st.Info(ctx, opts...)
	if err != nil {
		return r, fmt.Errorf("%w: stream %s info: %w", ErrStore, name, err)
	}
	s := info.State
	r.Msgs, r.Bytes, r.FirstSeq, r.LastSeq, r.Deleted = s.Msgs, s.Bytes, s.FirstSeq, s.LastSeq, s.NumDeleted
	if s.Lost != nil && (len(s.Lost.Msgs) > 0 || s.Lost.Bytes > 0) {
		r.LostMsgs += uint64(len(s.Lost.Msgs))
		r.LostBytes += s.Lost.Bytes
		r.Problems = append(r.Problems, fmt.Sprintf("nats-server reports %d messages (%d bytes) lost", len(s.Lost.Msgs), s.Lost.Bytes))
	}
	if deep && s.Msgs > 0 {
		read, err := readAll(ctx, js, name)
		if read < s.Msgs {
			r.LostMsgs += s.Msgs - read
			r.Problems = append(r.Problems, fmt.Sprintf("only %d of %d messages could be read (%v)", read, s.Msgs, err))
		}
	}
	if deep {
		var indexed uint64
		for _, n := range s.Subjects {
			indexed += n
		}
		if indexed > s.Msgs {
			r.LostMsgs += indexed - s.Msgs
			r.Problems = append(r.Problems, fmt.Sprintf("the per-subject index counts %d messages, the blocks hold %d", indexed, s.Msgs))
		}
	}
	return r, nil
}

// readAll reads every message of a stream in order, as a consumer does,
// and returns how many it got before the stream ended or stalled.
func readAll(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{InactiveThreshold: 5 * time.Second})
	if err != nil {
		return 0, err
	}
	if cons.CachedInfo().NumPending == 0 {
		return 0, nil
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(logReadHeartbeat))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	var n uint64
	for {
		ictx, cancel := context.WithTimeout(ctx, logReadIdle)
		msg, err := it.Next(jetstream.NextContext(ictx))
		cancel()
		if err != nil {
			return n, fmt.Errorf("stalled after %d: %w", n, err)
		}
		n++
		meta, err := msg.Metadata()
		if err != nil || meta.NumPending == 0 {
			return n, err
		}
	}
}

// verifyChecksums has nats-server check every message's checksum (the
// check a stream snapshot runs with "jsck"). A failed check also makes the
// server report the lost messages in the stream's state.
func verifyChecksums(ctx context.Context, js jetstream.JetStream, name string) error {
	nc := js.Conn()
	inbox := nc.NewRespInbox()
	req, _ := json.Marshal(map[string]any{"deliver_subject": inbox, "no_consumers": true, "jsck": true, "chunk_size": 1024})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.SNAPSHOT."+name, req)
	if err != nil {
		return fmt.Errorf("checksum verification did not run: %w", err)
	}
	var resp struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("checksum verification: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("checksum verification failed: %s", resp.Error.Description)
	}
	// The snapshot itself is not wanted: nobody reads inbox, and the
	// server gives it up.
	return nil
}

// Marks: what Parley last saw of each stream of an embedded store, kept
// beside it in the data directory. A stream whose last sequence went back,
// or that gained gaps while the broker was stopped, lost data: nats-server
// rebuilds a corrupt or truncated block from what it can read and does not
// always report what it dropped.

const marksFileName = "parley-store-marks.json"

type markFile struct {
	// Clean is set when the broker saved the marks while closing: nothing
	// wrote the store after that.
	Clean   bool                  `json:"clean"`
	SavedAt time.Time             `json:"saved_at"`
	Streams map[string]streamMark `json:"streams"`
}

type streamMark struct {
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	Msgs      uint64    `json:"messages"`
	Deleted   int       `json:"deleted"`
	LostMsgs  uint64    `json:"lost_messages,omitempty"`
	LostBytes uint64    `json:"lost_bytes,omitempty"`
	LostSince time.Time `json:"lost_since,omitzero"`
	Problems  []string  `json:"problems,omitempty"`
}

// loadMarks reads the marks of dataDir; nil when there are none.
func loadMarks(dataDir string) *markFile {
	data, err := os.ReadFile(filepath.Join(dataDir, marksFileName))
	if err != nil {
		return nil
	}
	var m markFile
	if json.Unmarshal(data, &m) != nil || m.Streams == nil {
		return nil
	}
	return &m
}

// applyMarks adds to reports what comparing with the marks shows, and the
// losses found earlier (they stay reported until accepted with `parley
// check --accept-loss`).
func applyMarks(reports []StreamReport, m *markFile, convStream string) {
	if m == nil {
		return
	}
	for i := range reports {
		r := &reports[i]
		mk, ok := m.Streams[r.Name]
		if !ok {
			continue
		}
		found := false
		if r.LastSeq < mk.LastSeq {
			n := min(mk.LastSeq-r.LastSeq, mk.Msgs)
			r.LostMsgs += n
			r.Problems = append(r.Problems, fmt.Sprintf("last sequence went back from %d to %d", mk.LastSeq, r.LastSeq))
			found = true
		}
		// Gaps may appear while running (KV updates delete the old
		// revision); while stopped, nothing deletes.
		if m.Clean && r.Deleted > mk.Deleted && (r.LastSeq >= mk.LastSeq || r.Name == convStream) {
			n := uint64(r.Deleted - mk.Deleted)
			r.LostMsgs += n
			r.Problems = append(r.Problems, fmt.Sprintf("%d messages vanished while Parley was stopped (deleted gaps %d, were %d)", n, r.Deleted, mk.Deleted))
			found = true
		}
		if mk.LostMsgs > 0 || mk.LostBytes > 0 {
			r.LostMsgs += mk.LostMsgs
			r.LostBytes += mk.LostBytes
			r.LostSince = mk.LostSince
			r.Problems = append(r.Problems, mk.Problems...)
		} else if found || r.LostMsgs > 0 {
			r.LostSince = time.Now().UTC()
		}
	}
}

// saveMarks records reports as the marks of dataDir, with the losses in
// them.
func saveMarks(dataDir string, reports []StreamReport, clean bool) error {
	m := markFile{Clean: clean, SavedAt: time.Now().UTC(), Streams: make(map[string]streamMark, len(reports))}
	for _, r := range reports {
		mk := streamMark{FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, Msgs: r.Msgs, Deleted: r.Deleted,
			LostMsgs: r.LostMsgs, LostBytes: r.LostBytes}
		if r.LostMsgs > 0 || r.LostBytes > 0 {
			mk.LostSince = r.LostSince
			if mk.LostSince.IsZero() {
				mk.LostSince = m.SavedAt
			}
			mk.Problems = slices.Compact(slices.Clone(r.Problems))
		}
		m.Streams[r.Name] = mk
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, marksFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sortLosses(l []StoreLoss) {
	slices.SortFunc(l, func(a, b StoreLoss) int { return cmp.Compare(a.Store, b.Store) })
}

// CheckReport is what `parley check` found in a data directory.
type CheckReport struct {
	DataDir string         `json:"data_dir"`
	Streams []StreamReport `json:"streams"`
	// MarksFound is false when Parley never recorded this store's state
	// (it then relies on nats-server and its checksums alone).
	MarksFound bool `json:"marks_found"`
}

// Failed reports whether any stream lost data or is inconsistent.
func (c CheckReport) Failed() bool {
	for _, s := range c.Streams {
		if s.LostMsgs > 0 || s.LostBytes > 0 || len(s.Problems) > 0 {
			return true
		}
	}
	return false
}

// CheckDataDir checks the embedded JetStream store of a data directory that
// no broker is using: it starts a nats-server on the store, listening on
// loopback only, and reports per stream and bucket what is there and what
// was lost. It verifies every message's checksum. acceptLoss records the
// store's present state as good, so losses found earlier stop being
// reported.
func CheckDataDir(ctx context.Context, dataDir, prefix string, acceptLoss bool, log *slog.Logger) (CheckReport, error) {
	rep := CheckReport{DataDir: dataDir}
	if fi, err := os.Stat(filepath.Join(dataDir, "jetstream")); err != nil || !fi.IsDir() {
		return rep, fmt.Errorf("broker: %s holds no JetStream store (no jetstream/ directory)", dataDir)
	}
	// The server runs as serve runs it: with the data directory's
	// operator and accounts (the store lives under the PARLEY account), and
	// check connects as a user it issues for itself in memory. A data
	// directory from before authentication has no auth/ and is opened
	// without.
	connOpts := []nats.Option{nats.Name("parley-check")}
	var tune []func(*server.Options)
	if _, err := os.Stat(filepath.Join(AuthDir(dataDir), accountSeedFile)); err == nil {
		auth, err := loadNATSAuth(dataDir, false)
		if err != nil {
			return rep, err
		}
		if err := auth.migrateGlobalStore(dataDir, log); err != nil {
			return rep, err
		}
		creds, err := auth.issueUser("parley-check", jwt.Permissions{})
		if err != nil {
			return rep, err
		}
		o, err := credsBytesOption(creds)
		if err != nil {
			return rep, err
		}
		authTune, err := auth.serverOptions()
		if err != nil {
			return rep, err
		}
		tune = append(tune, authTune)
		connOpts = append(connOpts, o)
	}
	ns, err := EmbeddedNATS("127.0.0.1:-1", dataDir, EmbeddedSync{}, log, tune...)
	if err != nil {
		return rep, err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := nats.Connect(ns.ClientURL(), append(connOpts, nats.InProcessServer(ns))...)
	if err != nil {
		return rep, fmt.Errorf("broker: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rep, fmt.Errorf("broker: jetstream: %w", err)
	}
	subj := agentbridge.NewSubjects(prefix)
	reports, err := inspectStreams(ctx, js, subj, true)
	if err != nil {
		return rep, err
	}
	marks := loadMarks(dataDir)
	rep.MarksFound = marks != nil
	if !acceptLoss {
		applyMarks(reports, marks, subj.StreamName())
	} else {
		for i := range reports {
			reports[i].LostMsgs, reports[i].LostBytes, reports[i].Problems = 0, 0, nil
		}
		if err := saveMarks(dataDir, reports, true); err != nil {
			return rep, fmt.Errorf("broker: save marks: %w", err)
		}
	}
	rep.Streams = reports
	return rep, nil
}

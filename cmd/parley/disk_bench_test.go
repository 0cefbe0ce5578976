package main

import (
	"context"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge/agenttest"
	"github.com/parley-rtc/parley/configs"
)

// dirBytes is the disk use of a directory tree: allocated blocks where the
// platform reports them, else file sizes.
func dirBytes(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile (a compacted block)
		}
		n += allocated(info)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// storeBytes returns the bytes JetStream reports for the conversation
// stream and for all of Parley's KV buckets and the uploads store.
func storeBytes(tb testing.TB, js jetstream.JetStream) (logBytes, kvBytes uint64, logMsgs uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name := range js.StreamNames(ctx).Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if name == "PARLEY_CONV" {
			logBytes, logMsgs = info.State.Bytes, info.State.Msgs
			continue
		}
		kvBytes += info.State.Bytes
	}
	return logBytes, kvBytes, logMsgs
}

// BenchmarkDiskPerConversation measures the store per 1,000 conversations:
// 1,000 sessions, each with 10 chat turns answered by the echo agent (over
// HTTP, wait=true), then ended, through the real broker on an embedded
// JetStream file store. It reports the conversation stream's bytes, the
// KV buckets' bytes and the data directory on disk, then deletes every
// conversation as the retention sweeper does and reports what is left.
func BenchmarkDiskPerConversation(b *testing.B) {
	const (
		convs   = 1000
		turns   = 10
		clients = 8
	)
	for b.Loop() {
		e := startEnv(b, func(c *configs.Config) { c.EchoAgent.Workers = 2 })
		st := e.store()
		base := dirBytes(b, e.cfg.DataDir)
		baseLog, baseKV, _ := storeBytes(b, st.js)
		start := time.Now()
		var (
			mu   sync.Mutex
			cids []string
			wg   sync.WaitGroup
		)
		work := make(chan int)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					s := e.NewSession(nil)
					for t := range turns {
						if r := e.Post(s, "What are your opening hours on Saturday, and do you ship to Canada?", s.ID+"-"+string(rune('a'+t)), true); r.Status != 200 {
							b.Errorf("post: %d %s", r.Status, r.Raw)
							return
						}
					}
					if r := e.Do("DELETE", "/v1/sessions/"+s.ID, nil, "Authorization", "Bearer "+s.Token); r.Status != 204 {
						b.Errorf("end: %d %s", r.Status, r.Raw)
						return
					}
					mu.Lock()
					cids = append(cids, s.ConversationID)
					mu.Unlock()
				}
			}()
		}
		for i := range convs {
			work <- i
		}
		close(work)
		wg.Wait()
		took := time.Since(start)
		logB, kvB, msgs := storeBytes(b, st.js)
		logB, kvB = logB-baseLog, kvB-baseKV
		disk := dirBytes(b, e.cfg.DataDir) - base
		b.ReportMetric(float64(logB)/1e6, "log-MB/1000conv")
		b.ReportMetric(float64(kvB)/1e6, "kv-MB/1000conv")
		b.ReportMetric(float64(disk)/1e6, "disk-MB/1000conv")
		b.ReportMetric(float64(logB)/float64(convs*turns), "log-B/turn")
		b.ReportMetric(float64(msgs)/float64(convs), "events/conv")
		b.Logf("%d conversations × %d turns in %v: log %d B (%d events), kv %d B, disk %d B",
			convs, turns, took.Round(time.Millisecond), logB, msgs, kvB, disk)

		if info, err := mustStream(b, st.js).Info(context.Background()); err == nil {
			b.Logf("consumers on the stream before deleting: %d", info.State.Consumers)
		}
		// Privacy requests: one conversation at a time (each scans the
		// session, resume and upload records once).
		ctx := context.Background()
		const single = 50
		var del []time.Duration
		for _, cid := range cids[:single] {
			t0 := time.Now()
			if err := e.app.broker.DeleteConversation(ctx, cid); err != nil {
				b.Fatal(err)
			}
			del = append(del, time.Since(t0))
		}
		// The rest as one retention sweep does (one scan, then each
		// purged), once the conversations are idle: their consumers gone.
		agenttest.Poll(b, 2*time.Minute, "the conversations' consumers to go", func() bool {
			info, err := mustStream(b, st.js).Info(context.Background())
			return err == nil && info.State.Consumers < 10
		})
		t0 := time.Now()
		n, err := e.app.broker.DeleteConversations(ctx, cids[single:])
		if err != nil || n != len(cids)-single {
			b.Fatalf("batch delete: %d of %d: %v", n, len(cids)-single, err)
		}
		batch := time.Since(t0)
		logA, kvA, msgsA := storeBytes(b, st.js)
		diskA := dirBytes(b, e.cfg.DataDir) - base
		delP50, delMax := agenttest.Percentile(del, 0.5), agenttest.Percentile(del, 1)
		b.ReportMetric(float64(delP50.Microseconds())/1000, "delete-one-p50-ms")
		b.ReportMetric(float64(batch.Microseconds())/1000/float64(n), "sweep-ms/conv")
		b.ReportMetric(float64(diskA)/1e6, "disk-after-delete-MB")
		b.Logf("after deleting all: log %d B (%d events), kv %d B, disk %d B; one by one p50 %v max %v; sweep of %d in %v",
			logA-baseLog, msgsA, kvA-baseKV, diskA, delP50, delMax, n, batch.Round(time.Millisecond))
	}
}

// allocated is the disk space a file takes.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

func mustStream(tb testing.TB, js jetstream.JetStream) jetstream.Stream {
	s, err := js.Stream(context.Background(), "PARLEY_CONV")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

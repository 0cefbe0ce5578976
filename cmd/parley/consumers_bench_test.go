package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// BenchmarkLiveConsumers holds 1,000 live conversations (a visitor
// subscribed to each, one message each answered by the echo agent, which
// still holds them) and reports how many JetStream consumers the
// conversation stream has then, and the NATS server's subscriptions.
func BenchmarkLiveConsumers(b *testing.B) {
	const conversations = 1000
	for b.Loop() {
		e := startEnv(b, func(c *configs.Config) {
			c.EchoAgent.Workers = 2
		})
		br := e.app.broker
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		subs := make([]*broker.Subscription, 0, conversations)
		for i := range conversations {
			res, err := br.StartSession(ctx, broker.StartRequest{Widget: "pk_demo", Agent: "echo", Origin: testOrigin})
			if err != nil {
				b.Fatalf("session %d: %v", i, err)
			}
			sub, err := br.Subscribe(ctx, res.Session.ConversationID)
			if err != nil {
				b.Fatalf("subscribe %d: %v", i, err)
			}
			subs = append(subs, sub)
			p, err := br.PostMessage(ctx, res.Session, fmt.Sprintf("hello %d", i), "", "chat")
			if err != nil {
				b.Fatalf("post %d: %v", i, err)
			}
			if _, err := br.AwaitReply(ctx, sub, p); err != nil {
				b.Fatalf("reply %d: %v", i, err)
			}
		}
		js, err := jetstream.New(e.natsConn())
		if err != nil {
			b.Fatal(err)
		}
		st, err := js.Stream(ctx, agentbridge.NewSubjects("").StreamName())
		if err != nil {
			b.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(subs)), "conversations")
		b.ReportMetric(float64(info.State.Consumers), "consumers")
		for _, s := range subs {
			s.Close()
		}
		cancel()
		e.stop()
	}
}

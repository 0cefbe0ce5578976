package broker

import (
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parley-rtc/parley/agentbridge"
)

// decodeLogMsg decodes an entry of a conversation log read from JetStream
// and stamps its log position (Seq) from the message metadata. It is the
// broker's: agents read the log through the broker (ReadRequest).
func decodeLogMsg(msg jetstream.Msg) (agentbridge.Event, *jetstream.MsgMetadata, error) {
	var ev agentbridge.Event
	meta, err := msg.Metadata()
	if err != nil {
		return ev, nil, err
	}
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return ev, meta, err
	}
	ev.Seq = meta.Sequence.Stream
	return ev, meta, nil
}

package signaling

import (
	"strings"
	"testing"

	"github.com/parley-rtc/parley/broker"
	"github.com/parley-rtc/parley/configs"
)

// The core plays every role signaling needs.
var (
	_ Widgets       = (*broker.Broker)(nil)
	_ Keys          = (*broker.Broker)(nil)
	_ Sessions      = (*broker.Broker)(nil)
	_ Conversations = (*broker.Broker)(nil)
	_ Records       = (*broker.Broker)(nil)
	_ Voices        = (*broker.Broker)(nil)
	_ Rooms         = (*broker.Broker)(nil)
	_ Agents        = (*broker.Broker)(nil)
	_ Health        = (*broker.Broker)(nil)
	_ Broker        = (*broker.Broker)(nil)
)

// New names the role it was not given instead of failing on the first
// request that needs it.
func TestNewRefusesAMissingRole(t *testing.T) {
	d := BrokerDeps(broker.New(configs.Default(), nil))
	d.Records = nil
	_, err := New(configs.Default(), d, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "Records") {
		t.Fatalf("New without Records: %v, want an error naming the role", err)
	}
}

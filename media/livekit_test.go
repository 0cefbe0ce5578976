package media

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
)

// The bridge itself is tested against a real livekit-server in
// cmd/parley/livekit_test.go; these are its pure parts.

func TestNewLiveKitConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []LiveKitConfig{
		{},
		{URL: "ws://127.0.0.1:7880", APIKey: "devkey"},
		{URL: "ws://127.0.0.1:7880", APISecret: "secret-0123456789"},
	} {
		if _, err := NewLiveKit(c, Config{}, nil); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrBadConfig", c, err)
		}
	}
	lk, err := NewLiveKit(LiveKitConfig{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: "secret-0123456789",
		RoomPrefix: "parley-"}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lk.cfg.EmptyTimeout != defaultLiveKitEmptyTimeout || lk.cfg.JoinTimeout != defaultLiveKitJoinTimeout ||
		lk.audio.SilenceTimeout != defaultSilenceTimeout {
		t.Fatalf("defaults: %+v %+v", lk.cfg, lk.audio)
	}
	if r := lk.RoomName("conv_abc"); r != "parley-conv_abc" {
		t.Fatalf("RoomName = %q", r)
	}
	for room, want := range map[string]string{"parley-conv_abc": "conv_abc", "parley-": "", "other-conv_abc": "", "": ""} {
		if cid, ok := lk.ConversationOf(room); cid != want && ok || ok != (want != "") {
			t.Errorf("ConversationOf(%q) = %q, %v", room, cid, ok)
		}
	}
	if _, err := lk.NewBridge(context.Background(), BridgeOptions{Room: "parley-x"}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("bridge without a visitor: %v", err)
	}
	if err := lk.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := lk.NewBridge(context.Background(), BridgeOptions{Room: "parley-x", Visitor: "v"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("bridge after Close: %v", err)
	}
}

// TestNewBridgeUnreachable: a LiveKit that does not answer is ErrLiveKit
// within the join timeout, and leaves nothing behind.
func TestNewBridgeUnreachable(t *testing.T) {
	t.Parallel()
	lk, err := NewLiveKit(LiveKitConfig{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: "secret-0123456789",
		JoinTimeout: 2 * time.Second}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	_, err = lk.NewBridge(context.Background(), BridgeOptions{Room: "parley-x", Visitor: "visitor-1"})
	if !errors.Is(err, ErrLiveKit) {
		t.Fatalf("NewBridge = %v, want ErrLiveKit", err)
	}
	if n := lk.NumBridges(); n != 0 {
		t.Fatalf("%d bridges left", n)
	}
	if _, err := lk.RoomState(context.Background(), "parley-x"); !errors.Is(err, ErrLiveKit) {
		t.Fatalf("RoomState = %v, want ErrLiveKit", err)
	}
}

func TestDisconnectReason(t *testing.T) {
	t.Parallel()
	for r, want := range map[lksdk.DisconnectionReason]string{
		lksdk.RoomClosed: ReasonRoomClosed, lksdk.ParticipantRemoved: ReasonRemoved,
		lksdk.DuplicateIdentity: ReasonReplaced, lksdk.LeaveRequested: ReasonClosed, lksdk.Failed: ReasonDisconnect,
	} {
		if got := disconnectReason(r); got != want {
			t.Errorf("%s → %q, want %q", r, got, want)
		}
	}
}

// TestSDKLoggerQuiet: the SDK's info logs become debug; warnings stay.
func TestSDKLoggerQuiet(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := sdkLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Infow("chatty", "k", 1)
	l.WithValues("room", "r").WithName("engine").Debugw("chattier still")
	l.Debugw("chattier")
	l.Warnw("worth seeing", errors.New("boom"))
	out := buf.String()
	if strings.Contains(out, "chatty") || !strings.Contains(out, "worth seeing") || !strings.Contains(out, "level=WARN") {
		t.Fatalf("log:\n%s", out)
	}
}

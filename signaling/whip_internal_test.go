package signaling

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestParseIfMatch(t *testing.T) {
	t.Parallel()
	const tag = "AbC-d_01"
	for _, tc := range []struct {
		values  []string // nil: no header
		present bool
		matches bool
	}{
		{nil, false, false},
		{[]string{`"AbC-d_01"`}, true, true},
		{[]string{`"x", "AbC-d_01"`}, true, true},
		{[]string{`"x"`, `"AbC-d_01"`}, true, true},
		{[]string{`*`}, true, true},
		{[]string{` * `}, true, true},
		{[]string{`AbC-d_01`}, true, true}, // quotes stripped by a client
		{[]string{`W/"AbC-d_01"`}, true, false},
		{[]string{`W/*`}, true, false},
		{[]string{`"abc-d_01"`}, true, false},
		{[]string{`""`}, true, false},
		{[]string{``}, true, false},
		{[]string{`"AbC-d_01`}, true, true}, // unterminated: read to the end
		{[]string{`,,, "y" ,`}, true, false},
	} {
		h := http.Header{}
		for _, v := range tc.values {
			h.Add("If-Match", v)
		}
		m, ok := parseIfMatch(h)
		if ok != tc.present || m.matches(tag) != tc.matches {
			t.Errorf("If-Match %q: present %v matches %v, want %v %v", tc.values, ok, m.matches(tag), tc.present, tc.matches)
		}
	}
	// * needs a current session.
	if m, _ := parseIfMatch(http.Header{"If-Match": {"*"}}); m.matches("") {
		t.Error("* matched a leg without an ICE session")
	}
}

func FuzzParseIfMatch(f *testing.F) {
	for _, s := range []string{`"a", W/"b", *`, `"`, `W/`, `,`, "\"\t\"", `*,"x`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		m, ok := parseIfMatch(http.Header{"If-Match": {v}})
		if !ok {
			t.Fatal("a header present was read as absent")
		}
		for _, tag := range m.tags {
			if tag == "" {
				t.Fatalf("%q gave an empty tag", v)
			}
		}
	})
}

func TestICEServerLinks(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	setICEServerLinks(h, []iceServer{
		{URLs: []string{"stun:stun.example.net:3478", "stun:[2001:db8::1]:3478"}},
		{URLs: []string{"turns:turn.example.net:443?transport=tcp"}, Username: `17:ses_"x"`, Credential: `a\b=`},
		{URLs: []string{"stun:odd <host>"}},
	})
	want := []string{
		`<stun:stun.example.net:3478>; rel="ice-server"`,
		`<stun:[2001:db8::1]:3478>; rel="ice-server"`,
		`<turns:turn.example.net:443?transport=tcp>; rel="ice-server"; username="17:ses_\"x\""; credential="a\\b="; credential-type="password"`,
		`<stun:odd%20%3Chost%3E>; rel="ice-server"`,
	}
	if got := h.Values("Link"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Link:\n%q\nwant\n%q", got, want)
	}
}

func TestEndedLegs(t *testing.T) {
	t.Parallel()
	var e endedLegs
	t0 := time.Unix(1_000_000, 0)
	e.add("ses_a", "leg_1", t0)
	if !e.has("ses_a", "leg_1", t0.Add(endedLegsTTL)) || e.has("ses_b", "leg_1", t0) || e.has("ses_a", "leg_2", t0) {
		t.Fatal("lookup by session and leg")
	}
	if e.has("ses_a", "leg_1", t0.Add(endedLegsTTL+time.Second)) {
		t.Fatal("kept past its TTL")
	}
	for i := range endedLegsMax + 10 {
		e.add("ses_a", fmt.Sprint("leg_", i), t0)
	}
	if len(e.at) != endedLegsMax || len(e.order) != endedLegsMax || e.has("ses_a", "leg_0", t0) || !e.has("ses_a", fmt.Sprint("leg_", endedLegsMax+9), t0) {
		t.Fatalf("bound: %d entries, %d in order", len(e.at), len(e.order))
	}
}

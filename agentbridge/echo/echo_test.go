package echo

import (
	"slices"
	"strings"
	"testing"
)

// TestSplit: parts of similar length, cut on rune boundaries, that join
// back to the text; never more parts than asked, never an empty one.
func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want []string
	}{
		{"echo: hello", 3, []string{"echo", ": he", "llo"}},
		{"ab", 3, []string{"a", "b"}},
		{"", 3, []string{}},
		{"héllo wörld", 2, []string{"héllo ", "wörld"}},
		{"日本語のテキスト", 3, []string{"日本語", "のテキ", "スト"}},
	} {
		got := Split(tc.s, tc.n)
		if !slices.Equal(got, tc.want) || strings.Join(got, "") != tc.s {
			t.Errorf("Split(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

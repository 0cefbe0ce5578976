package broker

import (
	"strings"
	"testing"
)

func TestCleanFileName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"..", "upload"},
		{".", "upload"},
		{"a/..", "upload"},
		{"a/../..", "upload"},
		{`..\..\windows\system32`, "system32"},
		{"/etc/passwd", "passwd"},
		{"dir/", "dir"},
		{"", "upload"},
		{"   ", "upload"},
		{"...", "upload"},
		{"name.", "name"},
		{".hidden", "hidden"},
		{"a\r\nb.txt", "ab.txt"},
		{"invoice\u202efdp.exe", "invoicefdp.exe"},
		{"a\u200bb\u2066c\u2028d\u2029e\ufeff.png", "abcde.png"},
		{"bad\xffutf8.txt", "badutf8.txt"},
		{"\x00", "upload"},
		{"café ☕.jpg", "café ☕.jpg"},
		{strings.Repeat("é", 200), strings.Repeat("é", 127)},
		// The 255-byte cut falls right after a space or dot: trimmed too.
		{strings.Repeat("é", 127) + " x", strings.Repeat("é", 127)},
		{strings.Repeat("é", 127) + ". .x", strings.Repeat("é", 127)},
	} {
		if got := CleanFileName(tc.in); got != tc.want {
			t.Errorf("CleanFileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := CleanFileName(tc.in); !SafeName(got) || len(got) > maxFileName || got == ".." || got == "." {
			t.Errorf("CleanFileName(%q) = %q is not a safe name", tc.in, got)
		}
	}
}

func FuzzCleanFileName(f *testing.F) {
	for _, s := range []string{"..", "a/..", "x\u202e.exe", "a\r\nb", strings.Repeat("ü", 300), strings.Repeat("ü", 127) + " 000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := CleanFileName(in)
		if got == "" || got == "." || got == ".." || strings.ContainsAny(got, "/\\") || len(got) > maxFileName || !SafeName(got) {
			t.Fatalf("CleanFileName(%q) = %q", in, got)
		}
		if CleanFileName(got) != got {
			t.Fatalf("not idempotent: %q → %q → %q", in, got, CleanFileName(got))
		}
	})
}

package broker

import (
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text a visitor gives that people later read as a name — a lead's name,
// an upload's file name, the claims of a visitor identity — is shown in
// dashboards, the ops page, logs, NATS headers and agents' prompts. None
// of those has room for a control character (a CR/LF forges a line or a
// header), a Unicode format character (a right-to-left override turns
// "invoice‮fdp.exe" into "invoiceexe.pdf"; zero-width characters make two
// names look alike) or a line or paragraph separator.

// UnsafeRune reports whether r has no place in a displayed name: control
// and format characters, line and paragraph separators, and the
// replacement character that stands for invalid UTF-8.
func UnsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) || r == utf8.RuneError
}

// SafeName reports whether s is valid UTF-8 with no UnsafeRune.
func SafeName(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, UnsafeRune)
}

// maxFileName is the longest file name kept, in bytes (as most file
// systems allow).
const maxFileName = 255

// CleanFileName is the name an upload is stored and shown under: the last
// element of what the client sent (either slash separates), with unsafe
// runes dropped, surrounding spaces and dots trimmed (".." and "a/.." name
// no file) and at most 255 bytes, cut on a rune boundary (and trimmed
// again after the cut); "upload" when nothing is left.
func CleanFileName(name string) string {
	name = strings.ToValidUTF8(name, "")
	name = strings.Map(func(r rune) rune {
		if UnsafeRune(r) {
			return -1
		}
		return r
	}, strings.ReplaceAll(name, "\\", "/"))
	name = strings.Trim(path.Base(strings.TrimRight(name, "/ ")), " .")
	if name == "" || name == "/" {
		return "upload"
	}
	for len(name) > maxFileName {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	// The cut may have bared a space or dot that the trim above had not
	// reached; trimming it keeps the name as clean as the first pass made
	// it, so cleaning a clean name changes nothing.
	return strings.TrimRight(name, " .")
}

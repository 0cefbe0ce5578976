package speech

import (
	"strings"
	"unicode"
)

// Words splits text into lower-case words for scoring: letters, digits and
// apostrophes inside a word are kept ("what's"); everything else separates.
func Words(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '\''
	})
}

// WordErrorRate is the word error rate of hypothesis against reference:
// (substitutions + deletions + insertions) / words in the reference, by
// word-level edit distance after Words. An empty reference scores 0 against
// an empty hypothesis and 1 otherwise. It can exceed 1 (many insertions).
func WordErrorRate(reference, hypothesis string) float64 {
	ref, hyp := Words(reference), Words(hypothesis)
	if len(ref) == 0 {
		if len(hyp) == 0 {
			return 0
		}
		return 1
	}
	return float64(editDistance(ref, hyp)) / float64(len(ref))
}

// editDistance is the Levenshtein distance between two word sequences
// (two rows of the table).
func editDistance(a, b []string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

package translator

import (
	"fmt"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRegexProgramSize is the largest RE2 program a header regular
// expression may compile to. Envoy rejects (NACKs) a route configuration
// holding a regex whose RE2 ProgramSize() exceeds its runtime key
// re2.max_program_size.error_level, 100 by default, and weft's sidecar
// bootstrap does not raise it.
const MaxRegexProgramSize = 100

// checkRegex says whether the proxies can compile pattern, and if not, why,
// in words meant for the policy's author.
//
// Syntax: gRPC-Go compiles xDS regexes with Go's regexp (RE2 syntax, Perl
// flags) and Envoy with RE2 itself, which accepts the same language: no
// lookaround, no backreferences, repetition counts up to 1000.
//
// Size: Envoy also refuses programs above MaxRegexProgramSize.
// programSize estimates RE2's count from above, so a pattern accepted here
// is accepted by Envoy; a pattern close to the limit may be refused here
// although Envoy would take it.
func checkRegex(pattern string) error {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return fmt.Errorf("%s; write it in RE2 syntax (no lookaround, no backreferences, repeat counts up to 1000), or use type Exact",
			strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	if n := programSize(re); n > MaxRegexProgramSize {
		return fmt.Errorf("it compiles to about %d RE2 instructions and Envoy accepts at most %d; shorten it (every copy of a counted repeat such as [0-9a-f]{32} counts, while [0-9a-f]+ costs two)",
			n, MaxRegexProgramSize)
	}
	return nil
}

// regexProblem checks the regular expression of the header match at field
// and returns the message for the policy's status, or nil.
func regexProblem(field, pattern string) error {
	err := checkRegex(pattern)
	if err == nil {
		return nil
	}
	if r := []rune(pattern); len(r) > 64 {
		pattern = string(r[:64]) + "..."
	}
	return fmt.Errorf("%s: %q is not a regular expression the proxies accept: %v", field, pattern, err)
}

// programSize estimates the number of instructions RE2 compiles re to
// (RE2::ProgramSize, what Envoy checks), erring high. It walks the
// simplified expression as RE2's compiler (re2/compile.cc) does and counts
// what survives RE2's flattening of the program: a byte range per UTF-8
// byte of a literal or character-class piece, two per capture, one per
// empty-width assertion, plus the fail and match instructions and the
// unanchored-search loop; each alternative and repetition operator is
// counted as the no-op or loop it may leave behind. Counting RE2's
// optimisations only where they are simple (shared continuation bytes,
// the hand-built 80-10FFFF range) keeps the estimate high rather than low.
//
// TestProgramSizeAgainstRE2 compares it with the sizes RE2 itself reports
// (testdata/re2-program-size.tsv, made by hack/re2size): the estimate is
// never below RE2's for realistic patterns, and at most a few instructions
// below it for alternations that repeat an alternative (a|a), where RE2's
// parser factors differently from Go's.
func programSize(re *syntax.Regexp) int {
	s := re.Simplify()
	n := 2 // the fail instruction at 0 and the final match
	if !anchoredStart(s) {
		n += 2 // the .*? loop of an unanchored search
	}
	return n + insts(s)
}

// anchoredStart reports whether re begins with \A (or ^ without the m
// flag): RE2 then strips it and compiles no unanchored prefix.
func anchoredStart(re *syntax.Regexp) bool {
	for {
		switch re.Op {
		case syntax.OpBeginText:
			return true
		case syntax.OpConcat:
			if len(re.Sub) == 0 {
				return false
			}
			re = re.Sub[0]
		case syntax.OpCapture:
			re = re.Sub[0]
		default:
			return false
		}
	}
}

func insts(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpNoMatch:
		return 0
	case syntax.OpEmptyMatch:
		return 1 // a no-op
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			n += literalInsts(r, re.Flags&syntax.FoldCase != 0)
		}
		return n
	case syntax.OpCharClass:
		return classInsts(re.Rune)
	case syntax.OpAnyCharNotNL:
		return classInsts([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune})
	case syntax.OpAnyChar:
		return classInsts([]rune{0, unicode.MaxRune})
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 1
	case syntax.OpCapture:
		return 2 + insts(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		// RE2 doubles the loop around an expression that can match
		// the empty string.
		n := 2 + insts(re.Sub[0])
		if nullable(re.Sub[0]) {
			n += 2
		}
		return n
	case syntax.OpConcat:
		n := 0
		for _, s := range re.Sub {
			n += insts(s)
		}
		return n
	case syntax.OpAlternate:
		n := len(re.Sub) - 1
		for _, s := range re.Sub {
			n += insts(s)
		}
		return n
	case syntax.OpRepeat:
		// Simplify expands counted repetition; should one remain, count
		// its copies.
		copies := max(re.Min, re.Max)
		return copies * (1 + insts(re.Sub[0]))
	}
	return 1
}

// literalInsts is RE2's cost of one literal rune: a byte range per UTF-8
// byte; with case folding, an ASCII letter stays one instruction and other
// runes become the class of their case variants.
func literalInsts(r rune, fold bool) int {
	if fold && unicode.SimpleFold(r) != r && !isASCIILetter(r) {
		var class []rune
		for f := r; ; {
			class = append(class, f, f)
			if f = unicode.SimpleFold(f); f == r {
				break
			}
		}
		return classInsts(class)
	}
	return runeLen(r)
}

func isASCIILetter(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' }

// classInsts counts the byte-range instructions of a character class
// (pairs of inclusive rune ranges) as RE2 compiles it in UTF-8 mode: the
// range 80-10FFFF is six (RE2 compiles it by hand); any other range is
// split into pieces whose encodings share a length and leading bytes, and
// each piece costs one instruction per byte, except continuation-byte
// suffixes already built for the class (RE2 caches those). RE2 also merges
// common leading bytes and folds A-Z into a-z where the class allows;
// counting neither only over-estimates. The alternation between pieces
// costs nothing once RE2 flattens the program.
func classInsts(ranges []rune) int {
	c := &classCount{cache: map[[3]int]int{}}
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if lo <= 0x80 && hi == unicode.MaxRune {
			if lo < 0x80 {
				c.pieces(lo, 0x7f)
			}
			c.n += 6
			continue
		}
		c.pieces(lo, hi)
	}
	return c.n
}

type classCount struct {
	n     int
	next  int // ids of simulated instructions
	cache map[[3]int]int
}

// pieces splits lo-hi the way RE2's AddRuneRangeUTF8 does and counts
// the instructions of each piece.
func (c *classCount) pieces(lo, hi rune) {
	if lo > hi {
		return
	}
	// Split into ranges whose encodings have one length.
	for _, m := range []rune{0x7f, 0x7ff, 0xffff} {
		if lo <= m && m < hi {
			c.pieces(lo, m)
			c.pieces(m+1, hi)
			return
		}
	}
	if hi < utf8.RuneSelf {
		c.n++
		return
	}
	// Split into ranges that agree on their leading bytes.
	for i := 1; i < utf8.UTFMax; i++ {
		m := rune(1)<<(6*i) - 1 // the last i bytes of an encoding
		if lo&^m != hi&^m {
			if lo&m != 0 {
				c.pieces(lo, lo|m)
				c.pieces(lo|m+1, hi)
				return
			}
			if hi&m != m {
				c.pieces(lo, hi&^m-1)
				c.pieces(hi&^m, hi)
				return
			}
		}
	}
	var blo, bhi [4]byte
	n := encode(blo[:], lo)
	encode(bhi[:], hi)
	id := 0 // the end of the class
	for i := n - 1; i >= 0; i-- {
		key := [3]int{id, int(blo[i]), int(bhi[i])}
		if cached, ok := c.cache[key]; ok && i > 0 {
			id = cached
			continue
		}
		c.n++
		c.next++
		id = c.next
		if i > 0 {
			c.cache[key] = id
		}
	}
}

// encode writes r's UTF-8 encoding by value alone (surrogates included,
// which classes may span) and returns its length.
func encode(b []byte, r rune) int {
	switch n := runeLen(r); n {
	case 1:
		b[0] = byte(r)
		return 1
	default:
		for i := n - 1; i > 0; i-- {
			b[i] = 0x80 | byte(r&0x3f)
			r >>= 6
		}
		b[0] = byte(0xff<<(8-n)) | byte(r)
		return n
	}
}

// runeLen is the length of r's UTF-8 encoding by value alone, as RE2
// counts it (utf8.RuneLen refuses surrogates, which classes may span).
func runeLen(r rune) int {
	switch {
	case r < 0x80:
		return 1
	case r < 0x800:
		return 2
	case r < 0x10000:
		return 3
	}
	return 4
}

// nullable reports whether re can match the empty string.
func nullable(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpStar, syntax.OpQuest,
		syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	case syntax.OpCapture, syntax.OpPlus:
		return nullable(re.Sub[0])
	case syntax.OpRepeat:
		return re.Min == 0 || nullable(re.Sub[0])
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if !nullable(s) {
				return false
			}
		}
		return true
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if nullable(s) {
				return true
			}
		}
	}
	return false
}

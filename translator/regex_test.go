package translator

import (
	"bufio"
	"os"
	"regexp/syntax"
	"strconv"
	"strings"
	"testing"
)

// TestProgramSizeAgainstRE2 compares programSize with the program sizes
// that RE2 itself reported for the patterns of
// testdata/re2-program-size.tsv (hack/re2size regenerates it). The
// estimate must not be below RE2's for any realistic pattern, or weft
// would push a regex that Envoy refuses; for the random patterns (which
// include nonsense such as a|a and (?:^)*) it may be below by a few
// instructions, rarely.
func TestProgramSizeAgainstRE2(t *testing.T) {
	f, err := os.Open("testdata/re2-program-size.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n, random, under, over, maxUnder int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		fields := strings.SplitN(sc.Text(), "\t", 3)
		if len(fields) != 3 {
			t.Fatalf("malformed line %q", sc.Text())
		}
		kind, pattern := fields[0], fields[2]
		want, err := strconv.Atoi(fields[1])
		if err != nil {
			t.Fatalf("%q: RE2 refused it (%s); keep only patterns RE2 compiles", pattern, fields[1])
		}
		re, err := syntax.Parse(pattern, syntax.Perl)
		if err != nil {
			t.Errorf("%q: RE2 compiles it, Go does not: %v", pattern, err)
			continue
		}
		got := programSize(re)
		n++
		over += max(got-want, 0)
		switch {
		case kind == "real" && got < want:
			t.Errorf("%q: estimated %d instructions, RE2 has %d: weft would push a regex Envoy may refuse", pattern, got, want)
		case kind == "random":
			random++
			if got < want {
				under++
				maxUnder = max(maxUnder, want-got)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Fatalf("only %d patterns", n)
	}
	if under*100 > random || maxUnder > 12 {
		t.Errorf("%d of %d random patterns estimated below RE2's size, by up to %d instructions", under, random, maxUnder)
	}
	t.Logf("%d patterns; %d random ones under-estimated, by at most %d; mean over-estimate %.1f", n, under, maxUnder, float64(over)/float64(n))
}

func TestCheckRegex(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		err     string // substring; "" means valid
	}{
		{pattern: `^v[0-9]+$`},
		{pattern: `canary|beta`},
		{pattern: `^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$`},
		{pattern: `(?i)^bearer .+$`},
		{pattern: `(?=a)`, err: "invalid or unsupported Perl syntax: `(?=`"},
		{pattern: `(a)\1`, err: "invalid escape sequence: `\\1`"},
		{pattern: `a{2000}`, err: "invalid repeat count: `{2000}`"},
		{pattern: `(a`, err: "missing closing ): `(a`"},
		{pattern: `[z-a]`, err: "invalid character class range"},
		// Valid RE2, but beyond Envoy's default program size.
		{pattern: `a{1000}`, err: "Envoy accepts at most 100"},
		{pattern: `^sha256:[a-f0-9]{64}$`, err: "Envoy accepts at most 100"},
		{pattern: `\p{L}`, err: "Envoy accepts at most 100"},
	} {
		err := checkRegex(tc.pattern)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v, want valid", tc.pattern, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.pattern, err, tc.err)
		}
	}
}

package shadow

import (
	"encoding/json"
	"strconv"
	"testing"
)

// FuzzSameNumber checks sameNumber against what it must agree with: a
// number is itself, the relation is symmetric, and numbers it calls equal
// are equal as float64 too.
func FuzzSameNumber(f *testing.F) {
	for _, s := range [][2]string{{"1", "1.0"}, {"100", "1e2"}, {"-0", "0e5"}, {"0.1", "1E-1"}, {"1.5", "1.50001"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !json.Valid([]byte(a)) || !json.Valid([]byte(b)) {
			return
		}
		var na, nb json.Number
		if json.Unmarshal([]byte(a), &na) != nil || json.Unmarshal([]byte(b), &nb) != nil {
			return // not numbers
		}
		if !sameNumber(a, a) {
			t.Fatalf("%s is not the same number as itself", a)
		}
		if sameNumber(a, b) != sameNumber(b, a) {
			t.Fatalf("sameNumber(%s, %s) != sameNumber(%s, %s)", a, b, b, a)
		}
		fa, errA := strconv.ParseFloat(a, 64)
		fb, errB := strconv.ParseFloat(b, 64)
		if errA == nil && errB == nil && sameNumber(a, b) && fa != fb {
			t.Fatalf("sameNumber(%s, %s) is true, but as float64 they are %v and %v", a, b, fa, fb)
		}
	})
}

// FuzzCompareReencodedJSON checks that a JSON document and its own
// re-encoding (keys sorted, numbers and spacing as encoding/json writes
// them) compare equal.
func FuzzCompareReencodedJSON(f *testing.F) {
	for _, s := range []string{`{"b": 1.0, "a": [1, "x", null, true]}`, `[{"z": {}}, 1e3]`, `"s"`, `{"odd key": -0.0}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		v, err := decodeJSON([]byte(doc))
		if err != nil {
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if d := compareAnswers(jsonAnswer(doc), jsonAnswer(string(again)), ignoreSet{}, 1<<20); len(d) > 0 {
			t.Fatalf("%s and its re-encoding %s differ: %v", doc, again, d)
		}
	})
}

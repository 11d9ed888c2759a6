package backfill

import (
	"math"
	"slices"
	"strconv"
	"testing"
)

func TestSplitInts(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi int64
		n      int
		want   []string
	}{
		{"even", 1, 100, 4, []string{"25", "50", "75"}},
		{"negative", -10, 10, 2, []string{"-1"}},
		{"narrower than n", 5, 6, 4, []string{"5"}},
		{"one value", 7, 7, 3, nil},
		{"whole int64", math.MinInt64, math.MaxInt64, 2, []string{"-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, b := range splitInts(tt.lo, tt.hi, tt.n) {
				got = append(got, b[0])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestQuantiles(t *testing.T) {
	keys := func(vals ...int) [][]string {
		var out [][]string
		for _, v := range vals {
			out = append(out, []string{strconv.Itoa(v)})
		}
		return out
	}
	tests := []struct {
		name string
		keys [][]string
		n    int
		want [][]string
	}{
		{"even", keys(1, 2, 3, 4, 5, 6, 7, 8), 4, keys(3, 5, 7)},
		{"repeats dropped", keys(1, 1, 1, 1, 1, 1, 2, 2), 4, keys(1, 2)},
		{"fewer keys than ranges", keys(9), 3, nil},
		{"none", nil, 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := quantiles(tt.keys, tt.n)
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSpansCoverEverything(t *testing.T) {
	spans := spansOf([][]string{{"10"}, {"20"}})
	if got, want := len(spans), 3; got != want {
		t.Fatalf("got %d spans, want %d", got, want)
	}
	if spans[0].start != nil || spans[2].end != nil {
		t.Errorf("got first start %v and last end %v, want both unbounded", spans[0].start, spans[2].end)
	}
	if !slices.Equal(spans[1].start, spans[0].end) || !slices.Equal(spans[2].start, spans[1].end) {
		t.Errorf("got spans that do not meet: %v %v %v", *spans[0], *spans[1], *spans[2])
	}
}

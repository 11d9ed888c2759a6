package shadow

import (
	"net/http"
	"slices"
	"testing"
)

func TestNoiseLearnsEveryKindOfDifference(t *testing.T) {
	a := Answer{Status: 200, Header: http.Header{"Etag": {`"1"`}, "Content-Type": {"text/plain"}}, Body: []byte("at 12:00:01")}
	b := Answer{Status: 503, Header: http.Header{"Etag": {`"2"`}, "Content-Type": {"text/plain"}}, Body: []byte("at 12:00:02")}
	ig := Config{}.ignores()
	n := newNoise(2)

	n.learn(compareAnswers(a, b, ig, 1<<20))
	if got := n.report().Noisy; len(got) != 0 {
		t.Fatalf("after one check got noisy %v, want none", got)
	}
	if got := compareAnswers(a, b, merge(ig, n.set()), 1<<20); len(got) != 3 {
		t.Fatalf("after one check got %d differences, want 3 (status, header, body): %v", len(got), got)
	}

	n.learn(compareAnswers(a, b, ig, 1<<20))
	if got, want := n.report().Noisy, []string{"body", "header Etag", "status"}; !slices.Equal(got, want) {
		t.Fatalf("after two checks got noisy %v, want %v", got, want)
	}
	if got := compareAnswers(a, b, merge(ig, n.set()), 1<<20); len(got) != 0 {
		t.Fatalf("after two checks got differences %v, want none", got)
	}
	c := b
	c.Header = http.Header{"Etag": {`"3"`}, "Content-Type": {"text/html"}}
	if got := diffStrings(compareAnswers(a, c, merge(ig, n.set()), 1<<20)); !slices.Equal(got, []string{"header Content-Type: text/plain | text/html"}) {
		t.Fatalf("got %v, want only the Content-Type difference", got)
	}
}

func TestNoiseCountsAPathOncePerCheck(t *testing.T) {
	a := jsonAnswer(`{"items": [{"at": 1}, {"at": 1}, {"at": 1}]}`)
	b := jsonAnswer(`{"items": [{"at": 2}, {"at": 2}, {"at": 2}]}`)
	n := newNoise(2)
	n.learn(compareAnswers(a, b, ignoreSet{}, 1<<20))
	if got := n.report().Observed["$.items[*].at"]; got != 1 {
		t.Fatalf("got $.items[*].at observed %d times, want 1", got)
	}
}

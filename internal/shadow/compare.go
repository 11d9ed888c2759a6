package shadow

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Diff is one difference between the monolith's answer and the service's.
type Diff struct {
	// Path names what differs: "status", "header Content-Type", a JSON
	// path such as "$.items[2].name", or "body" for other bodies.
	Path string `json:"path"`
	// Monolith and Service are the two values, JSON values as compact
	// JSON, "(absent)" for a missing one; long values are cut.
	Monolith string `json:"monolith"`
	Service  string `json:"service"`

	// key is Path with every array index written [*]: what noise
	// learning counts.
	key string
}

// Answer is one HTTP answer as compared: the monolith's, captured by the
// proxy, or the service's.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// maxDiffs bounds the differences kept per comparison.
const maxDiffs = 50

// maxValue bounds the length of a value shown in a Diff.
const maxValue = 200

const absent = "(absent)"

// ignoreSet is what a comparison leaves out.
type ignoreSet struct {
	paths   []pattern
	headers map[string]bool // canonical names
	status  bool            // the status is noise
	body    bool            // a non-JSON body is noise
}

func (ig ignoreSet) ignoresPath(path []seg) bool {
	for _, p := range ig.paths {
		if p.matches(path) {
			return true
		}
	}
	return false
}

// compareAnswers returns the differences between a (the monolith's answer)
// and b (the service's), at most maxDiffs of them. maxBody bounds a
// decompressed body.
func compareAnswers(a, b Answer, ig ignoreSet, maxBody int64) []Diff {
	d := &differ{ig: ig}
	if a.Status != b.Status && !ig.status {
		d.add("status", strconv.Itoa(a.Status), strconv.Itoa(b.Status))
	}
	d.headers(a.Header, b.Header)
	d.bodies(a, b, maxBody)
	return d.diffs
}

type differ struct {
	ig    ignoreSet
	diffs []Diff
	path  []seg
}

func (d *differ) full() bool { return len(d.diffs) >= maxDiffs }

// add records a difference and reports whether there was room for it.
func (d *differ) add(path, a, b string) bool {
	if d.full() {
		return false
	}
	d.diffs = append(d.diffs, Diff{Path: path, Monolith: cut(a), Service: cut(b), key: path})
	return true
}

func (d *differ) headers(a, b http.Header) {
	names := map[string]bool{}
	for k := range a {
		names[http.CanonicalHeaderKey(k)] = true
	}
	for k := range b {
		names[http.CanonicalHeaderKey(k)] = true
	}
	for _, k := range slices.Sorted(maps.Keys(names)) {
		if d.ig.headers[k] {
			continue
		}
		av, bv := headerValue(a, k), headerValue(b, k)
		if av != bv {
			d.add("header "+k, av, bv)
		}
	}
}

func headerValue(h http.Header, k string) string {
	v := h.Values(k)
	if v == nil {
		return absent
	}
	return strings.Join(v, ", ")
}

func (d *differ) bodies(a, b Answer, maxBody int64) {
	ab, aerr := decodeBody(a.Header, a.Body, maxBody)
	bb, berr := decodeBody(b.Header, b.Body, maxBody)
	if aerr != nil || berr != nil {
		d.add("body", errText(aerr, ab), errText(berr, bb))
		return
	}
	if isJSON(a.Header) {
		if av, err := decodeJSON(ab); err == nil {
			bv, err := decodeJSON(bb)
			if err != nil {
				d.add("$", cutJSON(av), "not JSON: "+err.Error())
				return
			}
			d.value(av, bv)
			return
		}
	}
	if d.ig.body || bytes.Equal(ab, bb) {
		return
	}
	at := 0
	for at < len(ab) && at < len(bb) && ab[at] == bb[at] {
		at++
	}
	d.add("body", excerpt(ab, at), excerpt(bb, at))
}

func errText(err error, body []byte) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d bytes", len(body))
}

// excerpt describes body around offset at, where it first differs.
func excerpt(body []byte, at int) string {
	end := min(len(body), at+40)
	return fmt.Sprintf("%d bytes, from byte %d: %q", len(body), at, body[at:end])
}

// value compares two decoded JSON values at d.path.
func (d *differ) value(a, b any) {
	if d.full() || d.ig.ignoresPath(d.path) {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			d.path = append(d.path, seg{kind: segKey, key: k})
			d.member(av, bv, k)
			d.path = d.path[:len(d.path)-1]
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		for i := range max(len(av), len(bv)) {
			d.path = append(d.path, seg{kind: segIndex, index: i})
			switch {
			case i >= len(av):
				d.leaf(absent, cutJSON(bv[i]))
			case i >= len(bv):
				d.leaf(cutJSON(av[i]), absent)
			default:
				d.value(av[i], bv[i])
			}
			d.path = d.path[:len(d.path)-1]
		}
		return
	case json.Number:
		if bv, ok := b.(json.Number); ok && sameNumber(string(av), string(bv)) {
			return
		}
	case string, bool, nil:
		if a == b {
			return
		}
	}
	d.leaf(cutJSON(a), cutJSON(b))
}

// member compares key k of two objects, either of which may lack it.
func (d *differ) member(a, b map[string]any, k string) {
	av, aok := a[k]
	bv, bok := b[k]
	switch {
	case aok && bok:
		d.value(av, bv)
	case aok:
		d.leaf(cutJSON(av), absent)
	default:
		d.leaf(absent, cutJSON(bv))
	}
}

func (d *differ) leaf(a, b string) {
	if d.ig.ignoresPath(d.path) {
		return
	}
	if d.add(formatPath(d.path, false), a, b) {
		d.diffs[len(d.diffs)-1].key = formatPath(d.path, true)
	}
}

// decodeJSON decodes exactly one JSON value, numbers kept as written.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// decodeBody undoes a gzip Content-Encoding, so that two servers that
// compress differently (or one that does not) compare by content.
func decodeBody(h http.Header, body []byte, maxBody int64) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding"))) {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gunzip body: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("gunzip body: %w", err)
		}
		if int64(len(out)) > maxBody {
			return nil, fmt.Errorf("gunzipped body exceeds %d bytes", maxBody)
		}
		return out, nil
	default:
		return body, nil
	}
}

// sameNumber reports whether two JSON number literals are the same number:
// 1 == 1.0 == 1e0 == 10e-1, and -0 == 0. Both are brought to a canonical
// sign, digits (no leading or trailing zeros) and exponent, exactly.
func sameNumber(a, b string) bool {
	if a == b {
		return true
	}
	an, aok := canonNumber(a)
	bn, bok := canonNumber(b)
	return aok && bok && an == bn
}

type canonical struct {
	neg    bool
	digits string
	exp    int64
}

func canonNumber(s string) (canonical, bool) {
	var c canonical
	if strings.HasPrefix(s, "-") {
		c.neg, s = true, s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		e, err := strconv.ParseInt(expPart, 10, 32)
		if err != nil {
			return c, false
		}
		c.exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	c.exp -= int64(len(frac))
	digits = strings.TrimLeft(digits, "0")
	trimmed := strings.TrimRight(digits, "0")
	c.exp += int64(len(digits) - len(trimmed))
	c.digits = trimmed
	if c.digits == "" {
		return canonical{}, true // zero, whatever its sign and exponent
	}
	return c, true
}

func cutJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func cut(s string) string {
	if len(s) <= maxValue {
		return s
	}
	return s[:maxValue] + "…"
}

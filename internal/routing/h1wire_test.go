package routing

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestWriteRequestMatchesRequestWrite pins that writeRequest sends what
// Request.Write sends, header order aside, and leaves to it the requests it
// does not handle.
func TestWriteRequestMatchesRequestWrite(t *testing.T) {
	cases := []struct {
		name    string
		method  string
		url     string
		header  http.Header
		host    string
		handled bool
	}{
		{"GET", "GET", "http://svc:8001/api/users/1?x=1&y=2", http.Header{"Accept": {"*/*"}, "User-Agent": {""}}, "", true},
		{"no User-Agent entry", "GET", "http://svc:8001/", http.Header{"Accept": {"*/*"}}, "", true},
		{"client User-Agent", "GET", "http://svc:8001/a", http.Header{"User-Agent": {"  curl/8.0 "}}, "", true},
		{"HEAD", "HEAD", "http://svc:8001/a", http.Header{"User-Agent": {""}}, "", true},
		{"DELETE announces an empty body", "DELETE", "http://svc:8001/api/users/1", http.Header{"User-Agent": {""}}, "", true},
		{"POST announces an empty body", "POST", "http://svc:8001/api/users", http.Header{"User-Agent": {""}}, "", true},
		{"PATCH announces an empty body", "PATCH", "http://svc:8001/api/users/1", http.Header{"User-Agent": {""}}, "", true},
		{"OPTIONS", "OPTIONS", "http://svc:8001/api/users", nil, "", true},
		{"repeated fields keep their order", "GET", "http://svc:8001/a", http.Header{"X-A": {"1", "2", "3"}, "Cookie": {"a=b", "c=d"}}, "", true},
		{"excluded fields", "GET", "http://svc:8001/a", http.Header{"Host": {"evil"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}, "", true},
		{"invalid field name dropped", "GET", "http://svc:8001/a", http.Header{"Bad Name": {"x"}, "Ok": {"y"}}, "", true},
		{"line breaks in values", "GET", "http://svc:8001/a", http.Header{"X-Split": {"a\r\nb", "c\nd", " e\t"}}, "", true},
		{"escaped path", "GET", "http://svc:8001/a%2Fb/c%20d?q=%20", nil, "", true},
		{"empty query kept", "GET", "http://svc:8001/a?", nil, "", true},
		{"empty path", "GET", "http://svc:8001", nil, "", true},
		{"Host set", "GET", "http://svc:8001/a", nil, "other", false},
		{"control byte in query", "GET", "http://svc:8001/a", nil, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := newOutRequest(t, c.method, c.url, c.header)
			req.Host = c.host
			if c.name == "control byte in query" {
				req.URL.RawQuery = "a\x01b"
			}
			var got bytes.Buffer
			w := bufio.NewWriter(&got)
			handled := writeRequest(w, req, req.URL.Host)
			w.Flush()
			if handled != c.handled {
				t.Fatalf("handled: got %v, want %v", handled, c.handled)
			}
			if !handled {
				if got.Len() != 0 {
					t.Errorf("wrote %q for a request it left to Request.Write", got.String())
				}
				return
			}
			var want bytes.Buffer
			if err := req.Write(&want); err != nil {
				t.Fatal(err)
			}
			if g, w := headLines(got.String()), headLines(want.String()); !slices.Equal(g, w) {
				t.Errorf("got\n%q\nwant\n%q", g, w)
			}
			gr, err := http.ReadRequest(bufio.NewReader(&got))
			if err != nil {
				t.Fatal(err)
			}
			wr, _ := http.ReadRequest(bufio.NewReader(&want))
			if gr.Method != wr.Method || gr.RequestURI != wr.RequestURI || gr.Host != wr.Host ||
				!reflect.DeepEqual(gr.Header, wr.Header) || gr.ContentLength != wr.ContentLength {
				t.Errorf("got %s %s %s %v %d, want %s %s %s %v %d", gr.Method, gr.RequestURI, gr.Host, gr.Header, gr.ContentLength,
					wr.Method, wr.RequestURI, wr.Host, wr.Header, wr.ContentLength)
			}
		})
	}
}

func newOutRequest(tb testing.TB, method, rawURL string, h http.Header) *http.Request {
	tb.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		tb.Fatal(err)
	}
	if h == nil {
		h = http.Header{}
	}
	return &http.Request{Method: method, URL: u, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

// headLines is the request line followed by the sorted header lines.
func headLines(msg string) []string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	slices.Sort(lines[1:])
	return lines
}

// answerCases are raw answers, each followed by the start of the next one on
// the connection, and whether parseResponse handles them.
var answerCases = []struct {
	name    string
	method  string
	raw     string
	handled bool
}{
	{"plain", "GET", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", true},
	{"no reason phrase", "GET", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true},
	{"long reason phrase", "GET", "HTTP/1.1 503 Service Very Unavailable\r\nContent-Length: 1\r\n\r\nx", true},
	{"lower-case names", "GET", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-served-by: svc\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nabc", true},
	{"blanks around values", "GET", "HTTP/1.1 200 OK\r\nX-A:   spaced \t\r\nX-B:\r\nContent-Length: 1\r\n\r\nx", true},
	{"keep-alive", "GET", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nx", true},
	{"pragma", "GET", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx", true},
	{"HEAD with length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true},
	{"HEAD without length", "HEAD", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", true},
	{"204", "GET", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", true},
	{"304", "GET", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", true},
	{"obs-text value", "GET", "HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n", true},
	{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"trailer", "GET", "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\nx", false},
	{"connection close", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", false},
	{"no length", "GET", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end", false},
	{"two lengths", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false},
	{"bad length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", false},
	{"HTTP/1.0", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"interim answer", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false},
	{"folded line", "GET", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 1\r\n\r\nx", false},
	{"bare line feed", "GET", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", false},
	{"space before colon", "GET", "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 1\r\n\r\nx", false},
	{"control byte", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 1\r\n\r\nx", false},
	{"status 600", "GET", "HTTP/1.1 600 Odd\r\nContent-Length: 1\r\n\r\nx", false},
	{"headers not all buffered", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false},
}

// TestParseResponseMatchesReadResponse pins that parseResponse reads the
// answers it handles as http.ReadResponse does, and consumes nothing of
// the others.
func TestParseResponseMatchesReadResponse(t *testing.T) {
	for _, c := range answerCases {
		t.Run(c.name, func(t *testing.T) {
			handled, err := compareParse(c.method, c.raw+"NEXT")
			if err != "" {
				t.Error(err)
			}
			if handled != c.handled {
				t.Errorf("handled: got %v, want %v", handled, c.handled)
			}
		})
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, c := range answerCases {
		f.Add(c.method == "HEAD", c.raw)
	}
	f.Fuzz(func(t *testing.T, head bool, raw string) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		if _, err := compareParse(method, raw); err != "" {
			t.Error(err)
		}
	})
}

// compareParse parses raw with parseResponse and with http.ReadResponse and
// describes any difference.
func compareParse(method, raw string) (handled bool, diff string) {
	req := &http.Request{Method: method}
	br := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	br.Peek(1)
	got, n, ok := parseResponse(br, req)
	if !ok {
		if rest, _ := io.ReadAll(br); string(rest) != raw {
			return false, "consumed part of an answer it did not handle"
		}
		return false, ""
	}
	gotBody, _ := io.ReadAll(io.LimitReader(br, n))
	gotRest, _ := io.ReadAll(br)

	wbr := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	want, err := http.ReadResponse(wbr, req)
	if err != nil {
		return true, "handled an answer http.ReadResponse refuses: " + err.Error()
	}
	wantBody, _ := io.ReadAll(want.Body)
	wantRest, _ := io.ReadAll(wbr)
	switch {
	case got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto ||
		got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor:
		return true, "status: got " + got.Proto + " " + got.Status + ", want " + want.Proto + " " + want.Status
	case !reflect.DeepEqual(got.Header, want.Header):
		return true, "header differs"
	case got.ContentLength != want.ContentLength || got.Close != want.Close || len(want.Trailer) != 0:
		return true, "length, close or trailer differs"
	case !bytes.Equal(gotBody, wantBody) || !bytes.Equal(gotRest, wantRest):
		return true, "body or what follows differs"
	}
	return true, ""
}

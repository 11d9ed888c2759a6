package h1serve

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// plainHeads are heads plainHead accepts, chosen for what parsePlain
// decides itself; FuzzParsePlain starts from them.
var plainHeads = []string{
	get("/"),
	get("/api/users/12345", "User-Agent: bench", "X-User-ID: u-12345"),
	get("/a#b"),
	get("/%zz"),
	get("/a%2fb%20c"),
	get("/?"),
	get("/??"),
	get("/a?b=c&d=%20e#f"),
	get("//x"),
	get("///x/./../y"),
	get("/*"),
	get("/a;b=c"),
	get("/a+b"),
	get("/", "Pragma: no-cache"),
	get("/", "pragma:  no-cache "),
	get("/", "Pragma: No-Cache"),
	get("/", "Pragma: no-cache", "Cache-Control: max-age=0"),
	get("/", "Pragma: x", "Pragma: no-cache"),
	get("/", "X-Multi: a", "x-multi: b", "X-MULTI: c", "X-Other: d", "X-Multi: e"),
	get("/", "X-Tab:\ta\tb\t", "X-Spaces:   a b   "),
	get("/", "X-Empty:", "X-Blank: \t "),
	get("/", "x-USER-id: 1", "ACCEPT: */*", "content-type: text/plain", "dnt: 1", "x-1a-2B: z", "a: b", "A-: c", "-a: d"),
	get("/", "Www-Authenticate: x", "WWW-Authenticate: y", "Te: trailers", "Trailer: X-T"),
	get("/", "X-Colon: a:b:c", "X-Long: "+strings.Repeat("v", 3000)),
	get("/", "Connection: close"),
	get("/", "connection: Keep-Alive"),
	get("/", "Connection: keep-alive", "Connection: CLOSE"),
	get("/", "Content-Length: 0"),
	req("POST", "/", "Content-Length: 0"),
	req("POST", "/", "Content-Length: 12"),
	req("POST", "/", "Content-Length:  0012 "),
	req("POST", "/", "Content-Length: 999999999999999999"),
	req("HEAD", "/"),
	req("CONNECT", "/rpc"),
	req("PRI", "/"),
	req("ABCDEFGHIJKLMNOP", "/x"),
	"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	"GET / HTTP/1.1\r\nX-A: 1\r\nhost: Example.COM\r\nX-B: 2\r\n\r\n",
}

// TestParsePlain checks that parsePlain builds the request http.ReadRequest
// builds from the same head, field for field.
func TestParsePlain(t *testing.T) {
	for _, head := range plainHeads {
		if !plainHead([]byte(head), Limits{}.withDefaults()) {
			t.Errorf("%q: not a plain head", head)
			continue
		}
		checkParsePlain(t, head)
	}
}

// checkParsePlain compares parsePlain's request for head with
// http.ReadRequest's.
func checkParsePlain(t *testing.T, head string) {
	t.Helper()
	want, wantErr := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	var got http.Request
	c := &conn{}
	if !c.parsePlain([]byte(head), &got) {
		if wantErr == nil {
			t.Errorf("%q: parsePlain did not take a head http.ReadRequest reads", head)
		}
		return
	}
	if wantErr != nil {
		t.Errorf("%q: parsePlain took a head http.ReadRequest refuses: %v", head, wantErr)
		return
	}
	// A body is compared by reading it (see TestLengthBody); only the
	// lack of one must be the same value.
	if (want.Body == http.NoBody) != (got.Body == http.NoBody) {
		t.Errorf("%q: Body %T, want %T", head, got.Body, want.Body)
	}
	want.Body, got.Body = nil, nil
	if !reflect.DeepEqual(*want, got) {
		t.Errorf("%q:\n got %#v\nwant %#v\n got URL %#v\nwant URL %#v", head, got, *want, got.URL, want.URL)
	}
	// The values of a field must not share an array with another's.
	for k, vv := range got.Header {
		if cap(vv) == 1 {
			continue
		}
		if w := want.Header[k]; cap(vv) != cap(w) {
			t.Errorf("%q: %s: cap %d, want %d", head, k, cap(vv), cap(w))
		}
	}
}

// TestLengthBody checks that a lengthBody reads and closes as the body of a
// request that http.ReadRequest reads with the same Content-Length.
func TestLengthBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		length  int64
		closing bool
		stream  string // what the connection holds after the head
		steps   []int  // read sizes in turn; -1 closes, 0 reads into an empty buffer
	}{
		{"whole", 5, false, "hellonext", []int{5, 5}},
		{"in pieces", 5, false, "hellonext", []int{2, 2, 2, 2}},
		{"empty read", 5, false, "hello", []int{0, 5, 0}},
		{"short", 5, false, "hel", []int{2, 2, 2, 2}},
		{"close unread", 5, false, "hellonext", []int{-1, 2, -1, 4}},
		{"close half read", 5, false, "hellonext", []int{2, -1, 4}},
		{"close short", 5, false, "hel", []int{1, -1, 4}},
		{"close when closing", 5, true, "hellonext", []int{1, -1, 4}},
		{"close after the end", 5, true, "hellonext", []int{5, -1, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
			if tc.closing {
				head += "Connection: close\r\n"
			}
			head += "\r\n"
			wantBR := bufio.NewReader(strings.NewReader(head + tc.stream))
			want, err := http.ReadRequest(wantBR)
			if err != nil {
				t.Fatal(err)
			}
			gotBR := bufio.NewReader(strings.NewReader(tc.stream))
			gotBR.Peek(len(tc.stream)) // as ReadRequest left wantBR
			got := &lengthBody{r: io.LimitedReader{R: gotBR, N: tc.length}, closing: tc.closing}
			for i, n := range tc.steps {
				if n < 0 {
					we, ge := want.Body.Close(), got.Close()
					if !sameError(we, ge) {
						t.Errorf("step %d: Close: %v, want %v", i, ge, we)
					}
				} else {
					wb, gb := make([]byte, n), make([]byte, n)
					wn, we := want.Body.Read(wb)
					gn, ge := got.Read(gb)
					if gn != wn || string(gb[:gn]) != string(wb[:wn]) || !sameError(we, ge) {
						t.Errorf("step %d: Read(%d) = %d %q %v, want %d %q %v", i, n, gn, gb[:gn], ge, wn, wb[:wn], we)
					}
				}
				if gotBR.Buffered() != wantBR.Buffered() {
					t.Errorf("step %d: %d bytes left in the buffer, want %d", i, gotBR.Buffered(), wantBR.Buffered())
				}
			}
		})
	}
}

func sameError(a, b error) bool {
	return a == b || a != nil && b != nil && a.Error() == b.Error() && errors.Is(b, a)
}

// FuzzParsePlain checks parsePlain against http.ReadRequest on any head
// plainHead accepts.
func FuzzParsePlain(f *testing.F) {
	for _, h := range plainHeads {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n := headEnd([]byte(in))
		if n < 0 || !plainHead([]byte(in[:n]), Limits{}.withDefaults()) {
			t.Skip("not a plain head")
		}
		checkParsePlain(t, in[:n])
	})
}

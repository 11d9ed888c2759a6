package h1serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverPair is a net/http server and an h1serve server with the same
// handler and limits, each on its own loopback listener.
type serverPair struct {
	stdAddr, fastAddr string
	fast              *Server
}

// startPair starts both servers; maxHeaderBytes is set on both (zero means
// net/http's default). They are closed when the test ends.
func startPair(tb testing.TB, maxHeaderBytes int) *serverPair {
	tb.Helper()
	quiet := log.New(io.Discard, "", 0)
	std := &http.Server{Handler: diffHandler(), MaxHeaderBytes: maxHeaderBytes, ErrorLog: quiet}
	fast := &Server{Handler: diffHandler(), MaxHeaderBytes: maxHeaderBytes, ErrorLog: quiet}
	stdLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	fastLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stdLn.Close()
		tb.Fatal(err)
	}
	go std.Serve(stdLn)
	go fast.Serve(fastLn)
	tb.Cleanup(func() {
		std.Close()
		fast.Close()
	})
	return &serverPair{stdAddr: stdLn.Addr().String(), fastAddr: fastLn.Addr().String(), fast: fast}
}

// shutdownFast shuts the h1serve server down, which waits for the requests
// in flight, so that its Stats are final.
func (p *serverPair) shutdownFast() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.fast.Shutdown(ctx); err != nil {
		return fmt.Errorf("h1serve Shutdown: %v", err)
	}
	return nil
}

// The bounds of an exchange. They only keep a test from hanging: a server
// that has said all it will say is either closed or silent for quietAfter.
const (
	firstByteWait = 2 * time.Second
	quietAfter    = 300 * time.Millisecond
	writeWait     = 5 * time.Second
)

// How an exchange ended, as the last line of its transcript.
const (
	endClosed = "[closed]"
	endReset  = "[reset]"
	endOpen   = "[open]"
)

// exchange dials addr, writes the parts of send in turn, each after reading
// the answer to the one before (until the server closes the connection or
// falls silent), half-closes the connection after the last part when
// closeWrite is set, and returns what the server sent with the end of each
// part's reading marked: one of endClosed, endReset or endOpen.
func exchange(addr string, send []string, closeWrite bool) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	tc := c.(*net.TCPConn)
	var out strings.Builder
	buf := make([]byte, 64<<10)
	for i, part := range send {
		last := i == len(send)-1
		// The server may answer before it reads all of a large part, and
		// close the connection instead of reading the rest: write from
		// another goroutine, bounded by a write deadline.
		written := make(chan struct{})
		go func() {
			defer close(written)
			c.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := io.WriteString(c, part); err != nil {
				return
			}
			if last && closeWrite {
				tc.CloseWrite()
			}
		}()
		end := endOpen
		c.SetReadDeadline(time.Now().Add(firstByteWait))
		for {
			n, err := c.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				var ne net.Error
				switch {
				case errors.Is(err, io.EOF):
					end = endClosed
				case errors.Is(err, syscall.ECONNRESET):
					end = endReset
				case errors.As(err, &ne) && ne.Timeout():
					end = endOpen
				default:
					end = "[" + err.Error() + "]"
				}
				break
			}
			c.SetReadDeadline(time.Now().Add(quietAfter))
		}
		<-written
		fmt.Fprintf(&out, "\n%s\n", end)
		if end != endOpen {
			break
		}
	}
	return out.String(), nil
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r\n]*`)

// normalize replaces the values of Date headers, which differ by the time
// of the answer.
func normalize(s string) string {
	return dateLine.ReplaceAllString(s, "Date: <date>")
}

// readable renders a transcript one quoted line at a time, long lines cut.
func readable(s string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(s, "\n") {
		if len(line) > 200 {
			line = fmt.Sprintf("%s...(%d bytes)...%s", line[:100], len(line)-150, line[len(line)-50:])
		}
		b.WriteString("\t")
		b.WriteString(strconv.Quote(line))
		b.WriteString("\n")
	}
	return b.String()
}

// firstDiff describes where two transcripts first differ.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(i-40, 0)
	return fmt.Sprintf("first difference at byte %d: net/http %q, h1serve %q",
		i, a[from:min(i+40, len(a))], b[from:min(i+40, len(b))])
}

// diffHandler is the handler both servers run; its behaviour depends on the
// request's path, or, for any path, a Describe header asks it to describe
// the request.
func diffHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["Describe"]; ok {
			describeRequest(w, r)
			return
		}
		h := w.Header()
		switch p := r.URL.Path; p {
		case "/cl":
			h.Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/small":
			io.WriteString(w, "a small body\n")
		case "/big":
			w.Write(bytes.Repeat([]byte("0123456789abcdef"), 20<<10/16))
		case "/flush":
			io.WriteString(w, "first\n")
			if err := http.NewResponseController(w).Flush(); err != nil {
				io.WriteString(w, "flush: "+err.Error())
			}
			io.WriteString(w, "second\n")
		case "/head-cl":
			h.Set("Content-Type", "text/plain")
			h.Set("Content-Length", "11")
			if r.Method != http.MethodHead {
				io.WriteString(w, "hello world")
			}
		case "/204", "/304":
			h.Set("Content-Type", "text/plain")
			h.Set("Content-Length", "5")
			code, _ := strconv.Atoi(p[1:])
			w.WriteHeader(code)
			if _, err := io.WriteString(w, "hello"); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic(fmt.Sprintf("write after %d: %v", code, err))
			}
		case "/103":
			h.Set("Link", "</style.css>; rel=preload; as=style")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			io.WriteString(w, "after early hints\n")
		case "/trailer":
			h.Set("Trailer", "X-Sum")
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, "body with trailers\n")
			h.Set("X-Sum", "42")
			h.Set(http.TrailerPrefix+"X-Late", "late")
		case "/notype":
			io.WriteString(w, "<!DOCTYPE html><html><body>sniffed</body></html>")
		case "/close":
			h.Set("Connection", "close")
			io.WriteString(w, "closing")
		case "/short":
			h.Set("Content-Length", "10")
			io.WriteString(w, "12345")
		case "/long":
			h.Set("Content-Length", "5")
			if _, err := io.WriteString(w, "0123456789"); !errors.Is(err, http.ErrContentLength) {
				panic(fmt.Sprintf("write past Content-Length: %v", err))
			}
			io.WriteString(w, "01234")
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				h.Set("X-Read-Error", err.Error())
			}
			w.Write(b)
		case "/medium":
			// Over net/http's 2048-byte buffer: chunked.
			w.Write(bytes.Repeat([]byte("m"), 3000))
		case "/2048":
			w.Write(bytes.Repeat([]byte("f"), 2048))
		case "/many-writes":
			for i := range 200 {
				fmt.Fprintf(w, "line %03d of many\n", i)
			}
		case "/flush-writes":
			io.WriteString(w, "head\n")
			http.NewResponseController(w).Flush()
			for i := range 300 {
				fmt.Fprintf(w, "line %03d\n", i)
			}
		case "/te-chunked":
			h.Set("Transfer-Encoding", "chunked")
			io.WriteString(w, "handler said chunked\n")
		case "/te-identity":
			h.Set("Transfer-Encoding", "identity")
			io.WriteString(w, "handler said identity\n")
		case "/te-gzip":
			h.Set("Transfer-Encoding", "gzip")
			io.WriteString(w, "handler said gzip\n")
		case "/cl-invalid":
			h.Set("Content-Length", "abc")
			io.WriteString(w, "invalid length\n")
		case "/cl-te":
			h.Set("Content-Length", "7")
			h.Set("Transfer-Encoding", "chunked")
			io.WriteString(w, "cl + te")
		case "/keep-alive":
			h.Set("Connection", "keep-alive")
			io.WriteString(w, "keep\n")
		case "/date":
			h.Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
			io.WriteString(w, "fixed date\n")
		case "/no-date":
			h["Date"] = nil
			io.WriteString(w, "no date\n")
		case "/empty":
		case "/encoded":
			h.Set("Content-Encoding", "gzip")
			io.WriteString(w, "not really gzip")
		case "/twice":
			w.WriteHeader(http.StatusAccepted)
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "twice\n")
		case "/trailer-cl":
			h.Set("Trailer", "X-Sum")
			h.Set("Content-Length", "4")
			io.WriteString(w, "body")
			h.Set("X-Sum", "1")
		case "/trailer-empty":
			h.Set("Trailer", "X-Sum, X-Other")
			w.WriteHeader(http.StatusOK)
			h.Set("X-Sum", "1")
		case "/trailer-flush":
			h.Set(http.TrailerPrefix+"X-Only", "prefix")
			io.WriteString(w, "then flush\n")
			http.NewResponseController(w).Flush()
		case "/hop":
			h.Set("Connection", "close, x-hop")
			io.WriteString(w, "hop\n")
		case "/cl-zero":
			h.Set("Content-Length", "0")
		case "/cl-only":
			h.Set("Content-Length", "3")
		case "/104-twice":
			h.Set("Link", "</a>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Set("Link", "</b>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusCreated)
		case "/cl-pieces":
			// The type is sniffed from the start of the body, not from
			// the first write.
			h.Set("Content-Length", "28")
			io.WriteString(w, "<!DOC")
			io.WriteString(w, "TYPE html><p>pieces</p>")
		case "/big-pieces":
			// Strings are copied through net/http's buffer, bytes of a
			// large write are not.
			io.WriteString(w, "<!DOC")
			io.WriteString(w, "TYPE html>"+strings.Repeat("<p>x</p>", 1000))
			io.WriteString(w, strings.Repeat("s", 5000))
			w.Write([]byte("<!DOC"))
			w.Write([]byte(strings.Repeat("b", 5000)))
			w.Write([]byte("end"))
		case "/close-body":
			err := r.Body.Close()
			fmt.Fprintf(w, "closed: %v\n", err)
		case "/read-some":
			b := make([]byte, 3)
			n, err := io.ReadFull(r.Body, b)
			fmt.Fprintf(w, "read %q %v\n", b[:n], err)
		case "/ignore-body":
			io.WriteString(w, "body not read\n")
		case "/panic":
			io.WriteString(w, "about to panic")
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/headers":
			describeRequest(w, r)
		default:
			if ops, ok := strings.CutPrefix(p, "/do/"); ok {
				runOps(w, r, ops)
				return
			}
			if code, ok := strings.CutPrefix(p, "/status/"); ok {
				n, err := strconv.Atoi(code)
				if err != nil || n < 200 || n > 999 {
					http.Error(w, "bad status", http.StatusBadRequest)
					return
				}
				w.WriteHeader(n)
				io.WriteString(w, "status "+code+"\n")
				return
			}
			fmt.Fprintf(w, "%s %s\n", r.Method, r.RequestURI)
		}
	})
}

// describeRequest writes what the handler sees of r, in a fixed order.
func describeRequest(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	fmt.Fprintf(w, "Method=%q\nRequestURI=%q\nURL=%q\nProto=%q %d.%d\nHost=%q\nRemoteIP=%q\n",
		r.Method, r.RequestURI, r.URL.String(), r.Proto, r.ProtoMajor, r.ProtoMinor, r.Host, ip)
	u := *r.URL
	u.User = nil // a pointer; never set for a target in origin form
	fmt.Fprintf(w, "URL fields=%#v\n", u)
	fmt.Fprintf(w, "ContentLength=%d\nClose=%v\nTransferEncoding=%q\n", r.ContentLength, r.Close, r.TransferEncoding)
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		fmt.Fprintf(w, "Header %q=%q\n", k, r.Header[k])
	}
	b, err := io.ReadAll(r.Body)
	fmt.Fprintf(w, "Body=%q err=%v\n", b, err)
	for _, k := range slices.Sorted(maps.Keys(r.Trailer)) {
		fmt.Fprintf(w, "Trailer %q=%q\n", k, r.Trailer[k])
	}
}

// runOps runs a handler described by ops, one byte an action, so that the
// fuzz test can try many handlers. The header is changed only before the
// answer starts (changes after WriteHeader are a documented difference),
// except for the value of a declared trailer.
func runOps(w http.ResponseWriter, r *http.Request, ops string) {
	h := w.Header()
	started, trailer := false, false
	header := func(k, v string) {
		if !started {
			h.Set(k, v)
		}
	}
	for _, op := range []byte(ops) {
		switch op {
		case 'w':
			w.Write([]byte("0123456789"))
		case 'b':
			w.Write(bytes.Repeat([]byte("b"), 2040))
		case 'W':
			w.Write(bytes.Repeat([]byte("W"), 3000))
		case 's':
			io.WriteString(w, "<html>str</html>")
		case 'S':
			io.WriteString(w, strings.Repeat("S", 3000))
		case 'f':
			http.NewResponseController(w).Flush()
		case 'h':
			w.WriteHeader(http.StatusOK)
		case 'c':
			w.WriteHeader(http.StatusCreated)
		case 'n':
			w.WriteHeader(http.StatusNoContent)
		case 'm':
			w.WriteHeader(http.StatusNotModified)
		case 'e':
			w.WriteHeader(http.StatusEarlyHints)
		case 'L':
			header("Content-Length", "20")
		case 'z':
			header("Content-Length", "0")
		case 'I':
			header("Content-Length", "x")
		case 't':
			header("Content-Type", "text/plain")
		case 'g':
			header("Content-Encoding", "gzip")
		case 'x':
			header("Connection", "close")
		case 'i':
			header("Transfer-Encoding", "identity")
		case 'k':
			header("Transfer-Encoding", "chunked")
		case 'T':
			if !started {
				h.Set("Trailer", "X-T")
				trailer = true
			}
		case 'v':
			if trailer {
				h.Set("X-T", "v")
			}
		case 'p':
			header(http.TrailerPrefix+"X-P", "p")
		case 'r':
			io.Copy(io.Discard, r.Body)
		case 'R':
			io.CopyN(io.Discard, r.Body, 3)
		case 'q':
			r.Body.Close()
		case 'P':
			panic("ops")
		case 'A':
			panic(http.ErrAbortHandler)
		}
		switch op {
		case 'w', 'b', 'W', 's', 'S', 'f', 'h', 'c', 'n', 'm':
			started = true
		}
	}
}

// refusalAnswer matches the gate's answer to a refused head, and the close
// that follows it, at the end of a transcript.
var refusalAnswer = regexp.MustCompile(`^HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\d{3} [A-Za-z ]+: ([^\n]*)\n\n\[closed\]\n$`)

// gateRefusal reports whether fast, h1serve's transcript, is net/http's
// (std) up to where h1serve refused a head, then the gate's refusal and the
// close: the one way the two may differ (see gate.go). It returns the
// refusal's status and reason.
func gateRefusal(std, fast string) (status int, reason string, ok bool) {
	for i := strings.LastIndex(fast, "HTTP/1.1 "); i >= 0; i = strings.LastIndex(fast[:i], "HTTP/1.1 ") {
		m := refusalAnswer.FindStringSubmatch(fast[i:])
		if m == nil || !strings.HasPrefix(std, fast[:i]) {
			continue
		}
		status, _ = strconv.Atoi(m[1])
		return status, m[2], true
	}
	return 0, "", false
}

// refusalJustified is an oracle for the fuzz test, independent of the
// gate's parser: it reports whether in holds what the refusal's reason
// names, by a rough look at its lines.
func refusalJustified(in string, status int, reason string) bool {
	lines := strings.Split(in, "\n")
	fields := func(name string) int {
		n := 0
		for _, l := range lines {
			if len(l) > len(name) && strings.EqualFold(l[:len(name)+1], name+":") {
				n++
			}
		}
		return n
	}
	longest := 0
	for _, l := range lines {
		longest = max(longest, len(l))
	}
	te, cl := fields("transfer-encoding"), fields("content-length")
	switch {
	case status == 414:
		return longest > DefaultMaxURIBytes
	case status == 431:
		return longest > DefaultMaxHeaderLineBytes || len(lines) > DefaultMaxHeaderCount || len(in) > http.DefaultMaxHeaderBytes
	case status == 505:
		return regexp.MustCompile(`HTTP/[2-9]`).MatchString(in)
	case strings.Contains(reason, "both Transfer-Encoding and Content-Length"):
		return te > 0 && cl > 0
	case strings.Contains(reason, "Transfer-Encoding in an HTTP/1.0"):
		return te > 0 && strings.Contains(in, "HTTP/1.0")
	case strings.Contains(reason, "more than one Transfer-Encoding"):
		return te > 1
	case strings.Contains(reason, "Transfer-Encoding other than"):
		return te > 0
	case strings.Contains(reason, "more than one Content-Length"):
		return cl > 1
	case strings.Contains(reason, "obs-fold"):
		return strings.Contains(in, "\n ") || strings.Contains(in, "\n\t")
	case strings.Contains(reason, "userinfo"):
		return strings.Contains(in, "@")
	case strings.Contains(reason, `"*" target`):
		return strings.Contains(in, " * ")
	}
	return false
}

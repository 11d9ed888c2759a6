package h1serve

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The gate stands between a connection handed to net/http and net/http's
// server. net/http reads every request it serves through the gate, which
// follows the byte stream request by request (head, then the body framed by
// Content-Length or chunked coding) and refuses a head before net/http has
// seen its end, when it breaks one of these rules (issue 16; nginx and
// HAProxy refuse the same):
//
//   - a request line longer than Limits.MaxURIBytes allows: 414;
//   - a header line longer than Limits.MaxHeaderLineBytes, more header
//     lines than Limits.MaxHeaderCount, or a head larger than
//     Server.MaxHeaderBytes: 431;
//   - a version of HTTP/2 or above ("PRI * HTTP/2.0", the HTTP/2 preface,
//     included): 505;
//   - an absolute-form or authority-form target with userinfo
//     ("http://user@host/"), and "*" with a method other than OPTIONS: 400;
//   - obs-fold (a header line starting with a space or tab), in any
//     header: 400 (net/http would join it to the line before);
//   - Transfer-Encoding together with Content-Length (RFC 9112 §6.1: a
//     smuggling attempt or a broken client), Transfer-Encoding in an
//     HTTP/1.0 request, more than one Transfer-Encoding line, and a
//     Transfer-Encoding that is "chunked" written any other way than
//     "Transfer-Encoding: chunked" (" chunked", "chunked\t", "CHUNKED"):
//     400;
//   - more than one Content-Length line: 400.
//
// A refused request is answered with the status and a one-line reason, the
// connection is closed, and the handler never runs. Everything else passes
// unchanged: net/http serves it, or refuses it as it always did. The fast
// path takes only heads that break none of the rules (see plainHead).

// Limits bounds a request's head. A zero field takes its default.
type Limits struct {
	// MaxURIBytes bounds a request line's target (default 8 KiB, as
	// nginx's large_client_header_buffers): 414 beyond.
	MaxURIBytes int
	// MaxHeaderLineBytes bounds one header line, name and value (default
	// 8 KiB): 431 beyond.
	MaxHeaderLineBytes int
	// MaxHeaderCount bounds the number of header lines (default 100, as
	// HAProxy's tune.http.maxhdr and Apache's LimitRequestFields): 431
	// beyond.
	MaxHeaderCount int
}

// Default limits.
const (
	DefaultMaxURIBytes        = 8 << 10
	DefaultMaxHeaderLineBytes = 8 << 10
	DefaultMaxHeaderCount     = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxURIBytes <= 0 {
		l.MaxURIBytes = DefaultMaxURIBytes
	}
	if l.MaxHeaderLineBytes <= 0 {
		l.MaxHeaderLineBytes = DefaultMaxHeaderLineBytes
	}
	if l.MaxHeaderCount <= 0 {
		l.MaxHeaderCount = DefaultMaxHeaderCount
	}
	return l
}

// requestLineSlack is what a request line may hold besides its target: the
// method, two spaces and the version.
const requestLineSlack = 32

// maxChunkLine bounds a chunk-size or trailer line the gate keeps; net/http
// refuses longer ones (4 KiB) and closes the connection.
const maxChunkLine = 8 << 10

// refusal is the gate's answer to a request it refuses.
type refusal struct {
	status int
	reason string
}

func (r *refusal) response() []byte {
	text := strconv.Itoa(r.status) + " " + statusText(r.status)
	return []byte("HTTP/1.1 " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
		text + ": " + r.reason + "\n")
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 408:
		return "Request Timeout"
	case 414:
		return "URI Too Long"
	case 431:
		return "Request Header Fields Too Large"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

// The gate's states: where in the request stream the next byte is.
const (
	gHead        = iota // in a head
	gBody               // in a body of known length
	gChunkSize          // in a chunk-size line
	gChunkData          // in a chunk's data
	gChunkEnd           // in the line end after a chunk's data
	gTrailer            // in the trailer section
	gPassThrough        // no longer HTTP/1 requests (a tunnel), or net/http will close
)

// headScan is what the gate learned of the head being read.
type headScan struct {
	lines      int // lines read, the request line included
	size       int
	http10     bool
	te, cl     int  // Transfer-Encoding and Content-Length lines
	teOK       bool // the only Transfer-Encoding line is plainly "chunked"
	length     int64
	lengthOK   bool
	contentBad bool
}

// gate follows one connection's request stream; see the comment above.
type gate struct {
	lim      Limits
	maxHead  int
	state    int
	line     []byte // the line being read, in a head or a chunked body
	lineLen  int    // its length, also past what line keeps
	left     int64  // bytes left in a body or chunk
	head     headScan
	refused  *refusal
	lastPost bool
}

func newGate(lim Limits, maxHead int) *gate {
	return &gate{lim: lim.withDefaults(), maxHead: maxHead}
}

// scan follows b, the next bytes read from the client. It returns how many
// of them may go on to net/http now: those up to the end of the last whole
// line of a head (a head's line goes on only once whole and checked: given
// a part of a line and then an error, net/http's reader would take the part
// for a line), and every byte of a body. When a head is refused, g.refused
// is set and what is returned ends before the refused line.
func (g *gate) scan(b []byte) int {
	safe := 0
	for i := 0; i < len(b); {
		switch g.state {
		case gPassThrough:
			return len(b)
		case gBody, gChunkData:
			n := int64(len(b) - i)
			if n > g.left {
				n = g.left
			}
			g.left -= n
			i += int(n)
			safe = i
			if g.left == 0 {
				if g.state == gBody {
					g.state = gHead
				} else {
					g.state = gChunkEnd
				}
			}
		default:
			j := bytes.IndexByte(b[i:], '\n')
			end := len(b)
			if j >= 0 {
				end = i + j
			}
			head := g.state == gHead
			if !g.addLine(b[i:end]) {
				return safe
			}
			if j < 0 {
				if !head {
					safe = len(b)
				}
				return safe
			}
			i = end + 1
			if !g.endLine() {
				return safe
			}
			safe = i
		}
	}
	return safe
}

// addLine adds part of a line (no LF) to the current line. It reports false
// when the line is already too long for a head.
func (g *gate) addLine(p []byte) bool {
	g.lineLen += len(p)
	limit := maxChunkLine
	if g.state == gHead {
		if g.head.lines == 0 {
			limit = g.lim.MaxURIBytes + requestLineSlack
		} else {
			limit = g.lim.MaxHeaderLineBytes
		}
		if g.head.size+g.lineLen > g.maxHead {
			g.refuse(431, "request head larger than the limit")
			return false
		}
	}
	if g.lineLen > limit+1 { // +1: the CR
		if g.state != gHead {
			g.state = gPassThrough // net/http refuses it and closes
			return true
		}
		if g.head.lines == 0 {
			g.refuse(414, "request line longer than the limit")
		} else {
			g.refuse(431, "header line longer than the limit")
		}
		return false
	}
	g.line = append(g.line, p...)
	return true
}

// endLine handles the line just ended by an LF. It reports false when the
// head it ends is refused.
func (g *gate) endLine() bool {
	line := g.line
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	defer func() { g.line, g.lineLen = g.line[:0], 0 }()
	switch g.state {
	case gHead:
		return g.headLine(line)
	case gChunkSize:
		size, ok := chunkSize(line)
		switch {
		case !ok:
			g.state = gPassThrough // net/http refuses it and closes
		case size == 0:
			g.state = gTrailer
		default:
			g.state, g.left = gChunkData, size
		}
	case gChunkEnd:
		g.state = gChunkSize
	case gTrailer:
		if len(line) == 0 {
			g.state = gHead
		}
	}
	return true
}

// headLine handles one line of a head.
func (g *gate) headLine(line []byte) bool {
	h := &g.head
	h.size += g.lineLen + 1
	if h.lines == 0 {
		if len(line) == 0 {
			return true // a blank line before a request: net/http's to judge
		}
		h.lines++
		return g.requestLine(line)
	}
	if len(line) == 0 {
		return g.endHead()
	}
	h.lines++
	if h.lines-1 > g.lim.MaxHeaderCount {
		return g.refuse(431, "more header lines than the limit of "+strconv.Itoa(g.lim.MaxHeaderCount))
	}
	if line[0] == ' ' || line[0] == '\t' {
		return g.refuse(400, "obs-fold (a header line starting with whitespace) is not accepted")
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return true // net/http refuses it
	}
	name, value := line[:colon], line[colon+1:]
	switch {
	case equalFold(name, "transfer-encoding"):
		h.te++
		h.teOK = string(value) == " chunked" || string(value) == "chunked"
		if !h.teOK && bytes.EqualFold(trimOWS(value), []byte("chunked")) {
			return g.refuse(400, "Transfer-Encoding other than exactly \"chunked\"")
		}
	case equalFold(name, "content-length"):
		h.cl++
		v := trimOWS(value)
		n, err := strconv.ParseUint(string(v), 10, 63)
		h.length, h.lengthOK = int64(n), err == nil && len(v) > 0 && v[0] != '+'
	}
	return true
}

// requestLine checks a request line.
func (g *gate) requestLine(line []byte) bool {
	h := &g.head
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	g.lastPost = string(method) == "POST"
	if !ok1 || !ok2 {
		if len(line) > g.lim.MaxURIBytes {
			return g.refuse(414, "request line longer than the limit")
		}
		return true // net/http refuses it
	}
	if len(target) > g.lim.MaxURIBytes {
		return g.refuse(414, "request target longer than the limit of "+strconv.Itoa(g.lim.MaxURIBytes)+" bytes")
	}
	if v, ok := bytes.CutPrefix(version, []byte("HTTP/")); ok && len(v) > 0 && '2' <= v[0] && v[0] <= '9' {
		return g.refuse(505, "only HTTP/1.x is served on this port")
	}
	h.http10 = string(version) == "HTTP/1.0"
	switch {
	case string(target) == "*":
		if string(method) != "OPTIONS" {
			return g.refuse(400, "\"*\" target with a method other than OPTIONS")
		}
	case len(target) > 0 && target[0] != '/':
		authority := target
		if _, after, ok := bytes.Cut(target, []byte("://")); ok {
			authority = after
		}
		if i := bytes.IndexAny(authority, "/?#"); i >= 0 {
			authority = authority[:i]
		}
		if bytes.IndexByte(authority, '@') >= 0 {
			return g.refuse(400, "userinfo in the request target")
		}
	}
	return true
}

// endHead decides on a whole head and sets the state for its body.
func (g *gate) endHead() bool {
	h := g.head
	g.head = headScan{}
	switch {
	case h.te > 0 && h.cl > 0:
		return g.refuse(400, "both Transfer-Encoding and Content-Length")
	case h.te > 0 && h.http10:
		return g.refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
	case h.te > 1:
		return g.refuse(400, "more than one Transfer-Encoding line")
	case h.cl > 1:
		return g.refuse(400, "more than one Content-Length line")
	}
	switch {
	case h.te == 1 && h.teOK:
		g.state = gChunkSize
	case h.te == 1, h.cl == 1 && !h.lengthOK:
		g.state = gPassThrough // net/http refuses it and closes
	case h.cl == 1 && h.length > 0:
		g.state, g.left = gBody, h.length
	}
	return true
}

func (g *gate) refuse(status int, reason string) bool {
	g.refused = &refusal{status: status, reason: reason}
	return false
}

// chunkSize parses a chunk-size line (hex digits, then optional extensions).
func chunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto done
		}
		if i >= 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
done:
	return n, i > 0
}

// gateConn is a connection handed to net/http, read through a gate. A
// refused head makes its Read fail (net/http then closes the connection
// without an answer of its own) and its Close send the refusal first, after
// whatever net/http had to send.
type gateConn struct {
	net.Conn
	g *gate

	held []byte // the start of a head line, read and not yet given on
	out  []byte // bytes to give on before reading more
	err  error  // a read error to return once out is given on

	// tunnel is set once an answer of 101 Switching Protocols was
	// written: what follows is no longer HTTP/1 requests.
	tunnel atomic.Bool

	mu       sync.Mutex
	refusal  *refusal
	answered bool
}

// errRefused is what net/http reads after a refused head: a read error it
// takes for a client gone, so that it closes the connection in silence.
var errRefused = &net.OpError{Op: "read", Net: "tcp", Err: errRefusedHead{}}

type errRefusedHead struct{}

func (errRefusedHead) Error() string { return "request head refused" }

// Read is not called concurrently (net/http reads a connection from one
// goroutine at a time); Close may be, hence mu.
func (c *gateConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.g.refused != nil {
			return 0, errRefused
		}
		if c.tunnel.Load() {
			if len(c.held) > 0 {
				c.out, c.held = append(c.out[:0], c.held...), c.held[:0]
				continue
			}
			if err := c.err; err != nil {
				c.err = nil
				return 0, err
			}
			return c.Conn.Read(p)
		}
		if err := c.err; err != nil {
			c.err = nil // once: a timeout may be a deadline moved to wake a read
			return 0, err
		}
		n, err := c.Conn.Read(p)
		k := c.g.scan(p[:n])
		refused := c.g.refused != nil
		if refused {
			c.mu.Lock()
			c.refusal = c.g.refused
			c.mu.Unlock()
		}
		flush := err != nil && !refused && !isTimeout(err)
		if flush {
			k = n // net/http answers a head cut short as it always did
		}
		switch {
		case len(c.held) == 0 && k > 0:
			// The common case: no line was held, and bytes can go on
			// where they are.
			if !refused {
				c.held = append(c.held, p[k:n]...)
			}
			c.err = err
			return k, nil
		case refused && k == 0:
			c.held = c.held[:0] // the start of the refused line
		case k == 0 && !flush:
			c.held = append(c.held, p[:n]...) // still within a line
		default:
			c.out = append(append(c.out[:0], c.held...), p[:k]...)
			c.held = c.held[:0]
			if !refused {
				c.held = append(c.held, p[k:n]...)
			}
		}
		if err != nil && len(c.out) == 0 {
			return 0, err
		}
		c.err = err
	}
}

// Close sends a pending refusal, then closes as net/http closes after an
// error answer: half-closed, and after a short wait, so that a client still
// sending does not get a reset before it reads the answer.
func (c *gateConn) Close() error {
	c.mu.Lock()
	r := c.refusal
	send := r != nil && !c.answered
	c.answered = true
	c.mu.Unlock()
	if send {
		c.Conn.SetWriteDeadline(time.Now().Add(rstAvoidanceDelay))
		c.Conn.Write(r.response())
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			drainFor(c.Conn, rstAvoidanceDelay)
		}
	}
	return c.Conn.Close()
}

// drainFor reads and drops what the client sends for up to d, or until it
// closes.
func drainFor(c net.Conn, d time.Duration) {
	c.SetReadDeadline(time.Now().Add(d))
	var buf [4096]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// CloseWrite lets net/http half-close the connection after an error answer,
// as it does on a TCP connection.
func (c *gateConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

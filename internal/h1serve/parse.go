package h1serve

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// parsePlain fills r from head, a request head that passed plainHead, as
// http.ReadRequest would from the same bytes (every field a handler can see
// is the same; the context and RemoteAddr are the caller's), but at a
// fraction of the cost: the head is copied once into a string that the
// method, target, names and values are all cut from, the values of the
// header share one backing array, and the names are made canonical in the
// copy (textproto.CanonicalMIMEHeaderKey's form), not one string each.
// plainHead's rules leave out everything that would make ReadRequest do
// more: no Transfer-Encoding, no absolute target, one Host, at most one
// Content-Length, HTTP/1.1. It reads nothing from the connection: the
// caller discards the head and sets the body, when there is one (r.Body is
// then nil), to a lengthBody.
//
// It reports false, with r unusable, for a head it does not take: a target
// url.ParseRequestURI refuses (a bad escape), or one that is not laid out
// as plainHead promises. The caller then reads the head with
// http.ReadRequest, whose answer (an error, for a bad target) decides.
func (c *conn) parsePlain(head []byte, r *http.Request) bool {
	c.head = append(c.head[:0], head...)
	fields := canonicalNames(c.head)
	if fields < 1 {
		return false
	}
	s := string(c.head)
	line, rest, _ := strings.Cut(s, "\r\n")
	method, target, _ := strings.Cut(line, " ")
	target, ok := strings.CutSuffix(target, " HTTP/1.1")
	if !ok {
		return false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	// ReadRequest deletes the Host field after it set r.Host from it.
	h := make(http.Header, fields-1)
	vals := make([]string, fields-1)
	var host string
	hosts, length, closing := 0, int64(0), false
	for {
		line, rest, _ = strings.Cut(rest, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = trimOWS(value)
		switch name {
		case "Host":
			host = value
			hosts++
			continue
		case "Content-Length":
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil {
				return false
			}
			length = int64(n)
		case "Connection":
			// plainHead lets through only "keep-alive" and "close", in
			// any case, which is all net/http's token search sees.
			closing = closing || strings.EqualFold(value, "close")
		}
		if vv := h[name]; vv != nil {
			// As textproto: a repeated field's values get an array of
			// their own, so that appending to one slice never
			// overwrites the next.
			h[name] = append(vv, value)
		} else if len(vals) > 0 {
			vv, vals = vals[:1:1], vals[1:]
			vv[0] = value
			h[name] = vv
		} else {
			return false
		}
	}
	if hosts != 1 {
		return false
	}
	// As net/http, for HTTP/1.0 caches.
	if hp := h["Pragma"]; len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	*r = http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Close:         closing,
		Host:          host,
		RequestURI:    target,
	}
	if length == 0 {
		r.Body = http.NoBody
	}
	return true
}

// canonicalNames rewrites the field names of head, a plain request head, in
// the form textproto.CanonicalMIMEHeaderKey gives them (plain names are
// letters, digits and '-' only: upper case first and after each '-', lower
// case elsewhere), and returns the number of fields, or -1 when head is not
// laid out as plainHead promises.
func canonicalNames(head []byte) int {
	_, rest, ok := bytes.Cut(head, crlf)
	if !ok {
		return -1
	}
	n := 0
	for len(rest) > len(crlf) {
		colon := bytes.IndexByte(rest, ':')
		if colon <= 0 {
			return -1
		}
		upper := true
		for i, c := range rest[:colon] {
			switch {
			case upper && 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			case !upper && 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case c == '\r' || c == '\n':
				return -1
			}
			rest[i] = c
			upper = c == '-'
		}
		end := bytes.Index(rest[colon:], crlf)
		if end < 0 {
			return -1
		}
		rest = rest[colon+end+len(crlf):]
		n++
	}
	return n
}

var crlf = []byte("\r\n")

// lengthBody is the body of a request parsed by parsePlain: the next n
// bytes of the connection. It reads as the body http.ReadRequest gives a
// request with a Content-Length does (io.EOF with the last bytes,
// io.ErrUnexpectedEOF when the connection ends first, and
// http.ErrBodyReadAfterClose once closed), and its Close, as that body's,
// reads what is left unless the connection is to close after the request,
// and waits for a Read in flight: requestBody.end relies on both.
type lengthBody struct {
	mu      sync.Mutex // guards the fields below, and calls to Read and Close
	r       io.LimitedReader
	closing bool // the connection closes after the request
	sawEOF  bool
	closed  bool
}

func (b *lengthBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *lengthBody) readLocked(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.sawEOF = true
		if b.r.N > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == nil && n > 0 && b.r.N == 0 {
		err = io.EOF
		b.sawEOF = true
	}
	return n, err
}

func (b *lengthBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var err error
	if !b.sawEOF && !b.closing {
		_, err = io.Copy(io.Discard, readerFunc(b.readLocked))
	}
	b.closed = true
	return err
}

package routing

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
)

// The HTTP/1.1 wire format of h1Transport's exchanges. writeRequest and
// parseResponse handle the common shapes of a body-less request and of an
// answer with a Content-Length, with one allocation for the answer's whole
// header block instead of one per value and per parsing step; anything else
// is left to net/http (Request.Write, http.ReadResponse), so the two agree
// on every message they both accept.

// writeRequest writes req's request line and header to w as Request.Write
// would, for a request without body. It reports false, having written
// nothing, when req is of a shape it leaves to Request.Write.
func writeRequest(w *bufio.Writer, req *http.Request, host string) bool {
	u := req.URL
	if req.Host != "" || u.Opaque != "" || req.Method == http.MethodConnect || req.Close ||
		req.ContentLength != 0 || len(req.TransferEncoding) > 0 || req.Trailer != nil {
		return false
	}
	path := u.EscapedPath()
	if hasCTLByte(path) || hasCTLByte(u.RawQuery) {
		return false // Request.Write refuses these; let it say so
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteByte(' ')
	if path == "" {
		path = "/"
	}
	w.WriteString(path)
	if u.ForceQuery || u.RawQuery != "" {
		w.WriteByte('?')
		w.WriteString(u.RawQuery)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	// ReverseProxy sets User-Agent to "" when the client sent none, which
	// means no User-Agent line rather than Go's default.
	ua := "Go-http-client/1.1"
	if vv, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = sanitizeValue(vv[0])
		}
	}
	if ua != "" {
		writeField(w, "User-Agent", ua)
	}
	// Request.Write announces an empty body on the methods servers expect a
	// body with.
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		w.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !validFieldName(k) {
			continue // dropped, as Request.Write does
		}
		for _, v := range vv {
			writeField(w, k, sanitizeValue(v))
		}
	}
	w.WriteString("\r\n")
	return true
}

func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(v)
	w.WriteString("\r\n")
}

// sanitizeValue turns line breaks into spaces and trims the value, as
// Request.Write does, allocating only for values that need it.
func sanitizeValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		b := []byte(v)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' '
			}
		}
		v = string(b)
	}
	if v != "" && (isBlank(v[0]) || isBlank(v[len(v)-1])) {
		return textproto.TrimString(v)
	}
	return v
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func hasCTLByte(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// isTokenByte reports whether c may appear in a header field name (RFC 9110,
// section 5.6.2: tchar).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '!', '#', '$', '%', '&', '\'', '*', '+', '^', '`', '|', '~':
		return true
	}
	return false
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte(k[i]) {
			return false
		}
	}
	return true
}

// validValueByte reports whether c may appear in a header field value:
// visible characters, obs-text, space and tab (RFC 9110, section 5.5).
func validValueByte(c byte) bool {
	return c >= ' ' && c != 0x7f || c == '\t'
}

// parseResponse reads an answer's status line and header when they are
// already buffered in br and of a shape it handles: HTTP/1.1, a final status
// of 200 to 599, no Transfer-Encoding or Trailer, no Connection: close, and
// a body delimited by a single Content-Length (or none: HEAD, 204, 304).
// It reports false, having consumed nothing, for anything else, which the
// caller then reads with http.ReadResponse. The body is left in br; n is its
// length.
func parseResponse(br *bufio.Reader, req *http.Request) (resp *http.Response, n int64, ok bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, 0, false
	}
	// Status line: "HTTP/1.1 200 OK" or "HTTP/1.1 200".
	const proto = "HTTP/1.1 "
	line, rest, _ := bytes.Cut(buf[:end+2], []byte("\r\n"))
	if len(line) < len(proto)+3 || string(line[:len(proto)]) != proto ||
		len(line) > len(proto)+3 && line[len(proto)+3] != ' ' || hasCTL(line) {
		return nil, 0, false
	}
	code := 0
	for _, c := range line[len(proto) : len(proto)+3] {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 {
		return nil, 0, false
	}
	// Check the header lines and count them before allocating anything.
	fields := 0
	for r := rest; len(r) > 0; fields++ {
		l, next, _ := bytes.Cut(r, []byte("\r\n"))
		k, v, found := bytes.Cut(l, []byte(":"))
		if !found || len(k) == 0 || hasCTL(v) {
			return nil, 0, false
		}
		for _, c := range k {
			if !isTokenByte(c) {
				return nil, 0, false
			}
		}
		r = next
	}
	// One string holds the status text, keys and values.
	block := string(buf[len(proto) : end+2])
	h := make(http.Header, fields)
	vals := make([]string, fields)
	off := len(line) + 2 - len(proto) // of the first header line in block
	var lengths []string
	for i := 0; off < len(block); i++ {
		eol := off + strings.Index(block[off:], "\r\n")
		l := block[off:eol]
		colon := strings.IndexByte(l, ':')
		key := canonicalKey(l[:colon])
		val := strings.TrimRight(strings.TrimLeft(l[colon+1:], " \t"), " \t")
		off = eol + 2
		switch key {
		case "Transfer-Encoding", "Trailer":
			return nil, 0, false
		case "Connection":
			if hasToken(val, "close") {
				return nil, 0, false
			}
		case "Content-Length":
			lengths = append(lengths, val)
		}
		if vv, seen := h[key]; seen {
			h[key] = append(vv, val)
		} else {
			vals[i] = val
			h[key] = vals[i : i+1 : i+1]
		}
	}
	fixPragmaCacheControl(h)
	length := int64(-1)
	switch {
	case len(lengths) > 1:
		return nil, 0, false
	case len(lengths) == 1:
		if length = parseLength(lengths[0]); length < 0 {
			return nil, 0, false
		}
	}
	resp = &http.Response{
		Status:     block[:len(line)-len(proto)],
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Request:    req,
	}
	switch {
	case req.Method == http.MethodHead:
		resp.ContentLength = length // what a GET would get; no body follows
	case code == http.StatusNoContent || code == http.StatusNotModified:
	case length < 0:
		return nil, 0, false // delimited by the connection's end
	default:
		resp.ContentLength, n = length, length
	}
	br.Discard(end + 4)
	return resp, n, true
}

// canonicalKey returns the canonical form of a valid field name, without
// allocating when it already is canonical (as most answers' names are).
func canonicalKey(k string) string {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(k)
		}
		upper = c == '-'
	}
	return k
}

func hasCTL(b []byte) bool {
	for _, c := range b {
		if !validValueByte(c) {
			return true
		}
	}
	return false
}

// hasToken reports whether the comma-separated list v holds token,
// case-insensitively.
func hasToken(v, token string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(textproto.TrimString(f), token) {
			return true
		}
	}
	return false
}

// parseLength parses a Content-Length value; -1 when invalid.
func parseLength(v string) int64 {
	if v == "" || len(v) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// fixPragmaCacheControl does what http.ReadResponse does for HTTP/1.0
// caches: Pragma: no-cache without Cache-Control means Cache-Control:
// no-cache (RFC 9111, section 5.4).
func fixPragmaCacheControl(h http.Header) {
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

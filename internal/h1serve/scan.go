package h1serve

import "bytes"

// The fast path takes a request only when its head is plainly well formed,
// by rules stricter than HTTP's own, so that everything it accepts is a
// request net/http accepts and reads the same way, and simple enough that
// parsePlain builds the request from it as http.ReadRequest, net/http's own
// parser, would (parse_test.go checks that they agree; a target
// url.ParseRequestURI refuses is still left to ReadRequest, which refuses
// it too). Anything else, valid or not, goes
// to net/http's server with the connection: an HTTP/1.0 request, an absolute
// or "*" target, Expect, Upgrade, Transfer-Encoding, a Connection header other
// than "keep-alive" or "close", a missing or repeated Host, a repeated
// Content-Length, obs-fold, bare CR or LF, and any byte outside printable
// ASCII (and tab, in values).

// headEnd returns the length of the request head in b (through the blank
// line), or -1 when b does not hold a whole head yet.
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	return i + 4
}

var crlfcrlf = []byte("\r\n\r\n")

// numLeadingCRorLF counts the CR and LF bytes at the start of v.
func numLeadingCRorLF(v []byte) int {
	n := 0
	for n < len(v) && (v[n] == '\r' || v[n] == '\n') {
		n++
	}
	return n
}

// hasBareLF reports whether b holds an LF not preceded by a CR.
func hasBareLF(b []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return false
		}
		if i+j == 0 || b[i+j-1] != '\r' {
			return true
		}
		i += j + 1
	}
}

// plainHead reports whether head, a whole request head ending in a blank
// line, is one the fast path serves. A head beyond lim (which has its
// defaults) is not: the gate refuses it (see gate.go).
func plainHead(head []byte, lim Limits) bool {
	line, rest, ok := cutLine(head)
	if !ok || !plainRequestLine(line) || len(line) > lim.MaxURIBytes {
		return false
	}
	hosts, lengths, fields := 0, 0, 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			return len(rest) == 0 && hosts == 1 && lengths <= 1
		}
		if fields++; fields > lim.MaxHeaderCount || len(line) > lim.MaxHeaderLineBytes {
			return false
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenByte(c) {
				return false
			}
		}
		for _, c := range value {
			if (c < 0x20 || c > 0x7e) && c != '\t' {
				return false
			}
		}
		switch {
		case equalFold(name, "host"):
			hosts++
			if !plainHost(value) {
				return false
			}
		case equalFold(name, "content-length"):
			lengths++
			if len(value) == 0 || len(value) > 18 {
				return false
			}
			for _, c := range value {
				if c < '0' || c > '9' {
					return false
				}
			}
		case equalFold(name, "connection"):
			if !equalFold(value, "keep-alive") && !equalFold(value, "close") {
				return false
			}
		case equalFold(name, "expect"), equalFold(name, "upgrade"), equalFold(name, "transfer-encoding"),
			equalFold(name, "http2-settings"):
			return false
		}
	}
}

// cutLine splits b after its first CRLF. A CR or LF anywhere else in the
// line fails it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

// plainRequestLine accepts "METHOD /target HTTP/1.1" with an upper-case
// method and a target of printable ASCII starting with a slash.
func plainRequestLine(line []byte) bool {
	sp := bytes.IndexByte(line, ' ')
	if sp < 1 || sp > 16 {
		return false
	}
	for _, c := range line[:sp] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	line = line[sp+1:]
	const version = " HTTP/1.1"
	if len(line) < len(version)+1 || string(line[len(line)-len(version):]) != version || line[0] != '/' {
		return false
	}
	for _, c := range line[:len(line)-len(version)] {
		if c <= 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// plainHost accepts a host name or IPv4 address with an optional port, or a
// bracketed IPv6 address.
func plainHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// trimOWS removes the spaces and tabs around a header value.
func trimOWS[T string | []byte](b T) T {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isTokenByte is the conservative part of RFC 9110's tchar: letters, digits
// and '-', which is every header name in common use.
func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
}

// equalFold compares b with the lower-case ASCII word s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

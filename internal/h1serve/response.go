package h1serve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxPostHandlerRead is how much of a request body the server reads and
// throws away, when the handler left it unread, to keep the connection (as
// net/http does). A larger rest closes the connection instead.
const maxPostHandlerRead = 256 << 10

// response is the http.ResponseWriter of one request on the fast path. It
// frames the answer as net/http's server does: a Content-Length when the
// handler sets one, or when the whole answer fits in the first buffer and
// the handler returned; chunked otherwise; nothing for HEAD, 1xx, 204 and 304.
//
// The header is read when it is sent: at the first write past the buffer (at
// the first write when the handler set both Content-Length and
// Content-Type), a flush, or the end of the handler. Changes to it after
// WriteHeader and before then are sent too, where net/http, which sends a
// copy taken at WriteHeader, would ignore them; ReverseProxy makes none. (An
// answer that declares trailers is sent from such a copy, as their values
// are set after WriteHeader.)
type response struct {
	c      *conn
	req    *http.Request
	body   *requestBody // nil without a body
	header http.Header
	// headHeader, when not nil, is the header to send in the head (a copy
	// of header taken at WriteHeader); header then holds the trailers.
	headHeader http.Header

	status      int
	wroteHeader bool // the status is fixed
	headerSent  bool // the head is in the connection's buffer
	chunked     bool
	noBody      bool  // HEAD, or a status without a body
	length      int64 // the answer's Content-Length, -1 if unknown
	written     int64 // body bytes taken from the handler
	closeAfter  bool  // close the connection after this answer
	lingerClose bool  // half-close the connection, wait, then close it: the request body is unread
	buf         []byte
	trailers    []string // declared trailer names, canonical
	handlerDone bool
	timeoutSent bool // answerTimeout answered in the handler's place
	dropping    bool // and the handler's writes are dropped

	statusBuf [3]byte
	dateBuf   [len(http.TimeFormat)]byte
	lenBuf    [20]byte
}

// bufferBeforeChunking is the size of the buffer a body is written through,
// as in net/http: an answer of unknown length that fits in it when the
// handler returns gets a Content-Length.
const bufferBeforeChunking = 2048

func (w *response) reset(req *http.Request, body *requestBody) {
	clear(w.header)
	*w = response{c: w.c, req: req, body: body, header: w.header, buf: w.buf[:0], length: -1, trailers: w.trailers[:0]}
	w.closeAfter = req.Close
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter.
func (w *response) WriteHeader(code int) {
	if w.handlerDone || w.dropping {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		if w.wroteHeader {
			return
		}
		// Informational: sent at once, with the header as it is now.
		bw := w.c.bw
		w.writeStatusLine(code)
		_ = w.header.WriteSubset(bw, excludedNoBody)
		bw.WriteString("\r\n")
		bw.Flush()
		return
	}
	if !w.wroteHeader && !w.timeoutSent && w.body != nil && w.body.timedOut.Load() {
		w.answerTimeout()
		return
	}
	if w.wroteHeader {
		if w.c.s.ErrorLog != nil {
			w.c.s.ErrorLog.Printf("http: superfluous response.WriteHeader call")
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		// An invalid value is left in the header: net/http drops it
		// from the handler's header but sends the copy it took before,
		// so the answer is not given a Content-Length of its own (it is
		// chunked, or, for HEAD, sent with the invalid value).
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.length = v
		} else if w.c.s.ErrorLog != nil {
			w.c.s.ErrorLog.Printf("http: invalid Content-Length of %q", cl)
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
	if len(w.header["Trailer"]) > 0 {
		// Trailer values are set in the header after the body: the head
		// is sent from a copy of the header as it is now, as net/http
		// sends every head.
		w.headHeader = w.header.Clone()
	}
}

// answerTimeout answers 408 in place of the handler's answer, whose head
// was not sent, once the request body timed out (see timeout.go), and
// closes the connection after it.
func (w *response) answerTimeout() {
	w.timeoutSent = true
	clear(w.header)
	w.header.Set("Content-Type", "text/plain; charset=utf-8")
	w.header.Set("Connection", "close")
	w.closeAfter = true
	w.WriteHeader(http.StatusRequestTimeout)
	w.write([]byte(timeoutAnswer), false)
	w.dropping = true
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) { return w.write(p, false) }

// WriteString implements io.StringWriter.
func (w *response) WriteString(s string) (int, error) {
	// Small strings (error pages) only: the conversion copies.
	return w.write([]byte(s), true)
}

// write is Write, and WriteString when isString is set: net/http copies a
// large string through its buffer where it sends large bytes at once, and
// the chunks end where that makes them end.
func (w *response) write(p []byte, isString bool) (int, error) {
	if w.handlerDone {
		return 0, http.ErrHijacked
	}
	if w.dropping {
		return len(p), nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.length != -1 && w.written > w.length {
		return 0, http.ErrContentLength
	}
	n := len(p)
	isHEAD := w.req.Method == http.MethodHead
	if w.headerSent && !w.chunked || !w.headerSent && w.length != -1 && !w.sniffPending() {
		// The bytes sent do not depend on how they are buffered.
		if !w.headerSent {
			w.sendHead(p)
		}
		if isHEAD {
			return n, nil
		}
		return w.writeBody(p)
	}
	// net/http writes a body through a buffer of bufferBeforeChunking
	// bytes, which sets the body sniffed for a Content-Type, whether the
	// answer gets a Content-Length, and where the chunks end; do as it
	// does. The body of an answer to HEAD is held and sniffed as any
	// other, and then dropped.
	for len(p) > bufferBeforeChunking-len(w.buf) {
		if len(w.buf) == 0 && !isString {
			if !w.headerSent {
				w.sendHead(p)
			}
			if isHEAD {
				return n, nil
			}
			m, err := w.writeBody(p)
			return n - len(p) + m, err
		}
		k := bufferBeforeChunking - len(w.buf)
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		w.sendBuf()
	}
	w.buf = append(w.buf, p...)
	return n, nil
}

// sniffPending reports whether the answer's Content-Type is to be sniffed
// from its body.
func (w *response) sniffPending() bool {
	h := w.headerToSend()
	_, ok := h["Content-Type"]
	return !ok && h.Get("Content-Encoding") == "" && h.Get("Transfer-Encoding") == ""
}

// headerToSend is the header the head is to be sent with.
func (w *response) headerToSend() http.Header {
	if w.headHeader != nil {
		return w.headHeader
	}
	return w.header
}

// sendBuf sends the body held in the buffer: with the head when it is not
// sent yet, as one chunk when the answer is chunked.
func (w *response) sendBuf() {
	if !w.headerSent {
		w.sendHead(nil)
		return
	}
	if len(w.buf) > 0 {
		if w.req.Method != http.MethodHead {
			w.writeBody(w.buf)
		}
		w.buf = w.buf[:0]
	}
}

// writeBody writes p after the head, as a chunk when chunked.
func (w *response) writeBody(p []byte) (int, error) {
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(w.lenBuf[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
		n, _ := bw.Write(p)
		if _, err := bw.WriteString("\r\n"); err != nil {
			return n, err
		}
		return n, nil
	}
	return bw.Write(p)
}

// FlushError sends what is buffered to the client (http.ResponseController).
func (w *response) FlushError() error {
	if w.handlerDone {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.sendBuf()
	return w.c.bw.Flush()
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// sendHead writes the status line and header into the connection's buffer,
// then any body buffered so far. p is the next body bytes, sniffed for a
// Content-Type when the handler set none. The rules are net/http's
// (chunkWriter.writeHeader), and so is the order of the headers it adds.
func (w *response) sendHead(p []byte) {
	w.headerSent = true
	h := w.headerToSend()
	first := p
	if len(w.buf) > 0 {
		first = w.buf
	}
	for _, v := range h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
	hasTrailers := len(w.trailers) > 0 || hasTrailerPrefix(h)
	isHEAD := w.req.Method == http.MethodHead
	te := h.Get("Transfer-Encoding")
	hasTE := te != ""
	var extra extraHeader
	if _, ok := h["Content-Length"]; !ok && w.handlerDone && !hasTrailers && !hasTE && bodyAllowed(w.status) &&
		(!isHEAD || len(first) > 0) {
		w.length = int64(len(first))
		extra.contentLength = strconv.AppendInt(w.lenBuf[:0], w.length, 10)
	}
	if h.Get("Connection") == "close" || w.c.s.shutting.Load() {
		w.closeAfter = true
	}
	if w.checkRequestBody() {
		delete(h, "Connection")
		extra.connection = "close"
	}
	if bodyAllowed(w.status) {
		if _, ok := h["Content-Type"]; !ok && h.Get("Content-Encoding") == "" && !hasTE && len(first) > 0 {
			extra.contentType = http.DetectContentType(first)
		}
	} else {
		if w.status == http.StatusNotModified {
			delete(h, "Content-Type")
		}
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
	}
	if _, ok := h["Date"]; !ok {
		extra.date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}
	if w.length != -1 && hasTE && te != "identity" {
		delete(h, "Content-Length")
		w.length = -1
	}
	switch {
	case isHEAD || !bodyAllowed(w.status) || w.status == http.StatusNoContent:
		delete(h, "Transfer-Encoding")
	case w.length != -1:
		delete(h, "Transfer-Encoding")
	case hasTE && te == "identity":
		w.closeAfter = true
		delete(h, "Transfer-Encoding")
	default:
		w.chunked = true
		extra.transferEncoding = "chunked"
		if te == "chunked" {
			delete(h, "Transfer-Encoding")
		}
	}
	if w.chunked {
		delete(h, "Content-Length")
	}
	if w.closeAfter && !headerHasToken(h, "Connection", "close") {
		delete(h, "Connection")
		extra.connection = "close"
	}
	w.writeStatusLine(w.status)
	var exclude map[string]bool
	if hasTrailers {
		exclude = make(map[string]bool)
		for k := range h {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				exclude[k] = true
			}
		}
	}
	bw := w.c.bw
	_ = h.WriteSubset(bw, exclude)
	extra.write(bw)
	bw.WriteString("\r\n")
	if len(w.buf) > 0 {
		buf := w.buf
		if !isHEAD {
			w.writeBody(buf)
		}
		w.buf = buf[:0]
	}
}

// extraHeader is what the server adds to the handler's header.
type extraHeader struct {
	date, contentLength                       []byte
	contentType, connection, transferEncoding string
}

func (e *extraHeader) write(bw *bufio.Writer) {
	if e.date != nil {
		bw.WriteString("Date: ")
		bw.Write(e.date)
		bw.WriteString("\r\n")
	}
	if e.contentLength != nil {
		bw.WriteString("Content-Length: ")
		bw.Write(e.contentLength)
		bw.WriteString("\r\n")
	}
	for _, kv := range [...][2]string{{"Content-Type", e.contentType}, {"Connection", e.connection}, {"Transfer-Encoding", e.transferEncoding}} {
		if kv[1] != "" {
			bw.WriteString(kv[0])
			bw.WriteString(": ")
			bw.WriteString(kv[1])
			bw.WriteString("\r\n")
		}
	}
}

// checkRequestBody makes sure the request body is read to its end before the
// next request: what is left of it is read and dropped when small; the
// connection is closed after the answer when that fails, and when the rest
// is too large to read (then it returns true: the answer must say so).
func (w *response) checkRequestBody() (tooBig bool) {
	b := w.body
	if b == nil || w.closeAfter {
		return false
	}
	left := b.left.Load()
	switch {
	case b.closed.Load():
		// Closed by the handler: what it did not read is not read now.
		if left > 0 && !b.eof.Load() {
			w.closeAfter = true
		}
		// net/http closes the connection after a body closed early even
		// when the body was read through (exactly maxPostHandlerRead
		// bytes were left), without saying so.
		w.lingerClose = b.early.Load()
	case left >= maxPostHandlerRead:
		// Even when the connection ended before the body: net/http
		// goes by what the body's length leaves unread.
		w.closeAfter = true
		w.lingerClose = true
		return true
	case left == 0, b.eof.Load():
		// Nothing more can be read; as net/http, the answer does not
		// say that the connection closes (it does, when the next
		// request is read).
	default:
		if _, err := io.CopyN(io.Discard, b, left); err != nil {
			w.closeAfter = true
		}
	}
	return false
}

// finish completes the answer after the handler returned: head, buffered
// body, last chunk and trailers, then flushes it to the client.
func (w *response) finish() {
	if !w.wroteHeader {
		// As a write would: the handler's Content-Length counts.
		w.WriteHeader(http.StatusOK)
	}
	w.handlerDone = true
	w.sendBuf()
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if w.length != -1 && !w.noBody && w.written != w.length {
		// Too short: the client would wait for the rest, or read it as
		// the next answer.
		w.closeAfter = true
	}
	if err := bw.Flush(); err != nil {
		w.closeAfter = true
	}
}

// writeTrailers writes the declared trailers and those set with
// http.TrailerPrefix, with values made safe as net/http makes them.
func (w *response) writeTrailers() {
	if len(w.trailers) == 0 && !hasTrailerPrefix(w.header) {
		return
	}
	t := make(http.Header)
	for _, k := range w.trailers {
		if vv, ok := w.header[k]; ok {
			t[k] = vv
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			t[http.CanonicalHeaderKey(name)] = append(t[http.CanonicalHeaderKey(name)], vv...)
		}
	}
	for k := range t {
		switch k {
		case "Transfer-Encoding", "Content-Length", "Trailer":
			delete(t, k)
		}
	}
	_ = t.Write(w.c.bw)
}

func (w *response) writeStatusLine(code int) {
	bw := w.c.bw
	bw.WriteString("HTTP/1.1 ")
	if text := http.StatusText(code); text != "" {
		bw.Write(strconv.AppendInt(w.statusBuf[:0], int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
		bw.WriteString("\r\n")
		return
	}
	fmt.Fprintf(bw, "%03d status code %d\r\n", code, code)
}

var excludedNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == 204 || status == 304)
}

func hasTrailerPrefix(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h[key] {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// requestBody is a request's body on the fast path: it counts what is left
// to read, so that the server knows whether the next request can follow.
type requestBody struct {
	rc      io.ReadCloser // &own, or the body http.ReadRequest made
	own     lengthBody    // the body of a request parsePlain read
	closing bool          // the request asked to close the connection
	left    atomic.Int64

	// The body timeouts (see timeout.go). Reads of a body are not
	// concurrent: clock needs no lock.
	conn     net.Conn
	cancel   context.CancelFunc
	clock    bodyClock
	timedOut atomic.Bool

	eof    atomic.Bool // the connection ended before the body did
	closed atomic.Bool // Close was called
	early  atomic.Bool // Close left more than maxPostHandlerRead unread
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

func (b *requestBody) read(p []byte) (int, error) {
	if b.timedOut.Load() {
		return 0, &BodyReadError{Timeout: true}
	}
	if b.left.Load() > 0 {
		if d, ok := b.clock.next(time.Now()); ok {
			b.conn.SetReadDeadline(d)
		}
	}
	n, err := b.rc.Read(p)
	b.left.Add(-int64(n))
	switch {
	case err == nil, err == io.EOF:
		return n, err
	case err == io.ErrUnexpectedEOF:
		b.eof.Store(true)
	case isTimeout(err):
		b.timedOut.Store(true)
		b.cancel()
	}
	return n, clientError(err)
}

// Close closes the body as net/http's server closes a request's: the rest
// is read and dropped, unless the connection is to close or the rest is
// more than maxPostHandlerRead bytes (then the connection will close).
// (The underlying body's Close would read all of it.)
func (b *requestBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	left := b.left.Load()
	switch {
	case left == 0, b.eof.Load(), b.closing:
	case left > maxPostHandlerRead:
		b.early.Store(true)
	default:
		n, err := io.CopyN(io.Discard, readerFunc(b.read), maxPostHandlerRead)
		if n == maxPostHandlerRead {
			b.early.Store(true)
		}
		if err != io.EOF {
			return err
		}
	}
	return nil
}

// end makes sure no read of the body is still running (a transport may read
// it from a goroutine of its own that outlives the handler) before the
// connection's buffer serves the next request: the underlying body's Close
// waits for a read in flight, and fails every later one. It must only be
// called with the body read to its end, or with the connection closed (the
// underlying Close reads what is left).
func (b *requestBody) end() {
	b.closed.Store(true)
	b.rc.Close()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

var _ interface {
	http.ResponseWriter
	http.Flusher
	io.StringWriter
} = (*response)(nil)

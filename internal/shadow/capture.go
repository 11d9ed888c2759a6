package shadow

import (
	"io"
	"net/http"
	"sync"
)

// hopHeaders are the hop-by-hop headers (RFC 9110, section 7.6.1) left out
// of a copy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Capture is a request chosen for shadowing, waiting for the monolith's
// answer. Begin makes one; WrapResponse hands the answer over.
type Capture struct {
	s     *Shadower
	route string
	req   Request
}

// Begin samples a request of route that the rollout sends to the monolith
// and, when it is to be shadowed, captures what the copy needs: method,
// path, query and headers (hop-by-hop headers removed). It returns nil when
// the request is not shadowed. The proxy calls it with the inbound request
// (ProxyRequest.In in Rewrite), which it does not modify.
func (s *Shadower) Begin(route string, in *http.Request) *Capture {
	if !s.Sample(route, in.Method) {
		return nil
	}
	h := in.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	return &Capture{s: s, route: route, req: Request{
		Method: in.Method, Path: in.URL.Path, RawQuery: in.URL.RawQuery, Header: h,
	}}
}

// WrapResponse tees the monolith's answer: resp.Body is replaced by a body
// that passes every byte through to its reader unchanged and keeps a copy of
// up to MaxBody bytes. When the proxy has read the body to its end and closes
// it, the copy is submitted (Submit never waits). The client's bytes are
// never held back: the copy is an append to a buffer on the way through.
//
// A body announced or found larger than MaxBody is not compared (counted as
// dropped); a body the client stopped reading before its end is not
// compared either. The proxy calls WrapResponse from ModifyResponse for
// answers from the monolith.
func (c *Capture) WrapResponse(resp *http.Response) {
	if resp.ContentLength > c.s.opts.MaxBody {
		c.s.count(c.route, ResultDropped)
		return
	}
	t := &teeBody{rc: resp.Body, c: c, max: c.s.opts.MaxBody,
		status: resp.StatusCode, header: resp.Header.Clone()}
	if resp.ContentLength > 0 {
		t.buf = make([]byte, 0, resp.ContentLength)
	}
	resp.Body = t
}

// teeBody is a response body that keeps a capped copy of what is read.
type teeBody struct {
	rc     io.ReadCloser
	c      *Capture
	max    int64
	status int
	header http.Header

	buf  []byte
	over bool // more than max bytes: the copy was let go
	eof  bool
	once sync.Once
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 && !t.over {
		if int64(len(t.buf)+n) > t.max {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}

func (t *teeBody) Close() error {
	err := t.rc.Close()
	t.once.Do(func() {
		switch {
		case t.over:
			t.c.s.count(t.c.route, ResultDropped)
		case t.eof:
			t.c.s.Submit(t.c.route, t.c.req, Answer{Status: t.status, Header: t.header, Body: t.buf})
		}
	})
	return err
}

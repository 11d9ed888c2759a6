//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package routing

// alive cannot peek on this system: a pooled connection is reused unchecked.
// A dead one is found on use and the request retried when that is safe, but
// bytes an upstream wrote unasked after an answer are not noticed (issue 16,
// finding 1): on such a system, run strangler-proxy only in front of
// upstreams trusted to frame their answers correctly.
func (pc *h1Conn) alive() bool { return true }

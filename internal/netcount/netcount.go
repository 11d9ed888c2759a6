// Package netcount counts the bytes received over network connections, to
// measure how much data a database client pulls: datasync verify's hidden
// --debug-bytes flag and bench/verifybench use it as a pgx DialFunc.
package netcount

import (
	"context"
	"net"
	"sync/atomic"
)

// Counter dials connections that count every byte read from them.
type Counter struct {
	n atomic.Int64
}

// Dial connects like net.Dialer.DialContext and counts what the connection
// reads. Its signature is pgconn.DialFunc's.
func (c *Counter) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: c}, nil
}

// Received returns the bytes read so far by the connections c dialled.
func (c *Counter) Received() int64 { return c.n.Load() }

// Reset sets the count back to zero, e.g. after connecting.
func (c *Counter) Reset() { c.n.Store(0) }

type countingConn struct {
	net.Conn
	c *Counter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.n.Add(int64(n))
	return n, err
}

package netcount

import (
	"context"
	"io"
	"net"
	"testing"
)

func TestCounterCountsReceivedBytes(t *testing.T) {
	const sent = "sent bytes are not counted"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := io.ReadFull(conn, make([]byte, len(sent))); err != nil {
			return
		}
		conn.Write(make([]byte, 1000))
	}()
	var c Counter
	conn, err := c.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(sent)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Received(), n; got != want || got != 1000 {
		t.Errorf("got %d bytes counted (%d read), want 1000", got, n)
	}
	c.Reset()
	if got := c.Received(); got != 0 {
		t.Errorf("got %d after Reset, want 0", got)
	}
}

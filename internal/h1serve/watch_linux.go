package h1serve

import (
	"net"
	"syscall"
)

// fastPathSupported reports whether c can be served on the fast path: a TCP
// connection, whose closing by the client the watch can see with a peek.
func fastPathSupported(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// peekGone peeks at fd without blocking: wait is true when there is nothing
// to read yet; otherwise gone says whether the client closed the connection
// (or it failed) rather than sent more.
func peekGone(fd uintptr) (wait, gone bool) {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR {
		return true, false
	}
	return false, n == 0 || err != nil
}

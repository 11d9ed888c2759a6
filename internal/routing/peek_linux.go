package routing

import "syscall"

// alive peeks at an idle connection without blocking: a connection the
// upstream closed (EOF) or wrote to while idle cannot carry a new request.
func (pc *h1Conn) alive() bool {
	if pc.raw == nil {
		return true
	}
	ok := true
	err := pc.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: nothing to read, the connection is idle and open. A byte
		// or EOF (n == 0, err == nil) means it is not.
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}

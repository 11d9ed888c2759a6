//go:build linux || darwin || freebsd || netbsd || openbsd

package routing

import "syscall"

// alive peeks at an idle connection without blocking: a connection the
// upstream closed (EOF) or wrote to while idle cannot carry a new request.
func (pc *h1Conn) alive() bool {
	if pc.raw == nil {
		return true
	}
	if pc.peek == nil {
		// Made once: a closure made per call would be an allocation per
		// request.
		pc.peek = func(fd uintptr) bool {
			var b [1]byte
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			// EAGAIN: nothing to read, the connection is idle and open. A
			// byte or EOF (n == 0, err == nil) means it is not.
			pc.peekOK = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
			return true
		}
	}
	pc.peekOK = false
	err := pc.raw.Read(pc.peek)
	return err == nil && pc.peekOK
}

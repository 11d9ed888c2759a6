package apply

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// isNetError reports whether err comes from the network: a refused or
// reset connection, or one closed under us.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

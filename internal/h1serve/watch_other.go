//go:build !linux

package h1serve

import "net"

// fastPathSupported is false off Linux: every connection goes to net/http.
func fastPathSupported(net.Conn) bool { return false }

func peekGone(uintptr) (wait, gone bool) { return false, false }

// Command relay is the floor of bench/proxy.sh: a TCP relay that copies
// bytes between each client connection and a connection of its own to the
// backend, with no HTTP at all. What it reaches against nginx is what any Go
// proxy can reach on the machine at best, whatever it does with the
// requests.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18088", "address to listen on")
	upstream := flag.String("upstream", "127.0.0.1:18080", "address to relay to")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		go relay(c, *upstream)
	}
}

func relay(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return
	}
	defer u.Close()
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(c, u)
}

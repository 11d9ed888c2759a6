// Command backend is the upstream of bench/proxy.sh: it answers every
// request with the same 200-byte JSON document, as a fast service would.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "address to listen on")
	flag.Parse()
	body := []byte(`{"id":12345,"email":"user12345@example.com","username":"user12345","created_at":"2024-01-02T03:04:05Z","updated_at":"2024-01-02T03:04:05Z","roles":["reader"],"active":true,"plan":"basic"}` + "\n")
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = []string{"application/json"}
		hd["Content-Length"] = []string{length}
		w.Write(body)
	})
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

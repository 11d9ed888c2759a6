package h1serve

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkServe compares the fast path with net/http's server on the same
// handler (about 200 bytes of JSON with a Content-Length), over loopback
// TCP, one keep-alive connection per parallel client. The client reads
// answers without allocating, so allocs/op is the server's:
//
//	go test -run '^$' -bench BenchmarkServe -benchmem ./internal/h1serve/
func BenchmarkServe(b *testing.B) {
	body := []byte(`{"id":12345,"email":"user12345@example.com","username":"user12345",` +
		`"created_at":"2024-01-02T03:04:05Z","updated_at":"2024-01-02T03:04:05Z","roles":["reader"],"active":true}`)
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = []string{"application/json"}
		hd["Content-Length"] = []string{length}
		w.Write(body)
	})
	for _, bc := range []struct {
		name  string
		serve func(net.Listener) (close func())
	}{
		{"h1serve", func(ln net.Listener) func() {
			s := &Server{Handler: h}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
		{"net-http", func(ln net.Listener) func() {
			s := &http.Server{Handler: h}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer bc.serve(ln)()
			req := []byte("GET /api/users/12345 HTTP/1.1\r\nHost: " + ln.Addr().String() +
				"\r\nUser-Agent: bench\r\nX-User-ID: u-12345\r\n\r\n")
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.SetParallelism(8) // 16 connections on 2 cores: throughput, not round trips
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReaderSize(c, 4096)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readAnswer(br, len(body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// readAnswer reads one answer with a Content-Length of want bytes from br.
func readAnswer(br *bufio.Reader, want int) error {
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n != want {
		return errBadAnswer
	}
	_, err := br.Discard(n)
	return err
}

var errBadAnswer = &net.OpError{Op: "read", Err: net.UnknownNetworkError("answer without the expected Content-Length")}

// BenchmarkParse compares parsePlain with http.ReadRequest on
// BenchmarkServe's request head, each followed by the WithContext copy the
// server makes.
func BenchmarkParse(b *testing.B) {
	head := []byte("GET /api/users/12345 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nX-User-ID: u-12345\r\n\r\n")
	ctx := b.Context()
	b.Run("ReadRequest", func(b *testing.B) {
		src := bytes.NewReader(head)
		br := bufio.NewReader(src)
		for b.Loop() {
			src.Reset(head)
			br.Reset(src)
			r, err := http.ReadRequest(br)
			if err != nil {
				b.Fatal(err)
			}
			parseSink = r.WithContext(ctx)
		}
	})
	b.Run("parsePlain", func(b *testing.B) {
		c := &conn{}
		for b.Loop() {
			var r http.Request
			if !c.parsePlain(head, &r) {
				b.Fatal("parsePlain did not take the head")
			}
			parseSink = r.WithContext(ctx)
		}
	})
}

// parseSink keeps BenchmarkParse's requests from being optimized away.
var parseSink *http.Request

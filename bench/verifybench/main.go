// Command verifybench measures the two baselines datasync verify is
// compared with in bench/verify.sh, against a source and a target database:
//
//	verifybench floor  SOURCE_URL TARGET_URL TABLE
//	verifybench stream SOURCE_URL TARGET_URL TABLE KEY
//
// floor runs the fastest in-database whole-table hash on both sides at once;
// stream reads both tables ordered by KEY and compares them row by row. Each
// prints one line: mode, seconds, bytes received from each server, and what
// it found.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/netcount"
)

func connect(ctx context.Context, url string, c *netcount.Counter) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse URL: %w", err)
	}
	cfg.RuntimeParams["jit"] = "off"
	cfg.DialFunc = c.Dial
	return pgx.ConnectConfig(ctx, cfg)
}

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: verifybench floor|stream SOURCE_URL TARGET_URL TABLE [KEY]")
		os.Exit(2)
	}
	if err := run(context.Background(), os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5:]); err != nil {
		fmt.Fprintln(os.Stderr, "verifybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode, srcURL, dstURL, table string, rest []string) error {
	var srcN, dstN netcount.Counter
	src, err := connect(ctx, srcURL, &srcN)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer src.Close(ctx)
	dst, err := connect(ctx, dstURL, &dstN)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer dst.Close(ctx)
	// Connecting is not part of what is measured.
	srcN.Reset()
	dstN.Reset()
	start := time.Now()
	var found string
	switch mode {
	case "floor":
		found, err = floor(ctx, src, dst, table)
	case "stream":
		if len(rest) != 1 {
			return fmt.Errorf("stream needs the key column")
		}
		found, err = stream(ctx, src, dst, table, rest[0])
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s seconds=%.3f source_bytes=%d target_bytes=%d %s\n", mode, time.Since(start).Seconds(), srcN.Received(), dstN.Received(), found)
	return nil
}

func floor(ctx context.Context, src, dst *pgx.Conn, table string) (string, error) {
	q := "SELECT count(*), sum(hash_record_extended(t, 0))::text FROM " + table + " t"
	var wg sync.WaitGroup
	var counts [2]int64
	var sums [2]string
	var errs [2]error
	for i, c := range []*pgx.Conn{src, dst} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.QueryRow(ctx, q).Scan(&counts[i], &sums[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", fmt.Errorf("floor query: %w", err)
		}
	}
	return fmt.Sprintf("equal=%v", counts[0] == counts[1] && sums[0] == sums[1]), nil
}

// stream reads both tables ordered by key, the key being the first column
// and a bigint, and compares the rows' raw values.
func stream(ctx context.Context, src, dst *pgx.Conn, table, key string) (string, error) {
	q := "SELECT * FROM " + table + " ORDER BY " + key
	type rowData struct {
		key  int64
		vals [][]byte
	}
	read := func(c *pgx.Conn, out chan<- []rowData, errc chan<- error) {
		defer close(out)
		rows, err := c.Query(ctx, q, pgx.QueryResultFormats{pgx.BinaryFormatCode})
		if err != nil {
			errc <- err
			return
		}
		defer rows.Close()
		batch := make([]rowData, 0, 1024)
		for rows.Next() {
			raw := rows.RawValues()
			r := rowData{vals: make([][]byte, len(raw))}
			for i, v := range raw {
				r.vals[i] = bytes.Clone(v)
			}
			for _, b := range raw[0] {
				r.key = r.key<<8 | int64(b)
			}
			batch = append(batch, r)
			if len(batch) == cap(batch) {
				out <- batch
				batch = make([]rowData, 0, 1024)
			}
		}
		if len(batch) > 0 {
			out <- batch
		}
		errc <- rows.Err()
	}
	srcC, dstC := make(chan []rowData, 16), make(chan []rowData, 16)
	errc := make(chan error, 2)
	go read(src, srcC, errc)
	go read(dst, dstC, errc)

	next := func(c <-chan []rowData, buf *[]rowData) (rowData, bool) {
		for len(*buf) == 0 {
			b, ok := <-c
			if !ok {
				return rowData{}, false
			}
			*buf = b
		}
		r := (*buf)[0]
		*buf = (*buf)[1:]
		return r, true
	}
	var sb, db []rowData
	var missing, extra, mismatched int
	s, sok := next(srcC, &sb)
	d, dok := next(dstC, &db)
	for sok || dok {
		switch {
		case !dok || (sok && s.key < d.key):
			missing++
			s, sok = next(srcC, &sb)
		case !sok || d.key < s.key:
			extra++
			d, dok = next(dstC, &db)
		default:
			for i := range s.vals {
				if !bytes.Equal(s.vals[i], d.vals[i]) {
					mismatched++
					break
				}
			}
			s, sok = next(srcC, &sb)
			d, dok = next(dstC, &db)
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			return "", fmt.Errorf("stream: %w", err)
		}
	}
	return fmt.Sprintf("missing=%d extra=%d mismatched=%d", missing, extra, mismatched), nil
}

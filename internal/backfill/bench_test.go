package backfill

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// BenchmarkRun copies a 200,000-row users table; bench/backfill.sh compares
// bigger copies with a psql COPY pipe.
func BenchmarkRun(b *testing.B) {
	const rows = 200000
	ddl := `CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, username text NOT NULL,
		created_at timestamptz NOT NULL, updated_at timestamptz)`
	p := newPair(b, ddl+`;
		INSERT INTO users (email, username, created_at, updated_at)
		SELECT 'user' || i || '@example.com', 'user_' || i, now(), CASE WHEN i % 3 = 0 THEN now() END
		FROM generate_series(1, `+strconv.Itoa(rows)+`) i`, ddl)
	exec(b, p.src.Pool, "VACUUM ANALYZE users")
	tables := p.resolve(b, mapping.TableSpec{Source: "users"})
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				exec(b, p.dst.Pool, "TRUNCATE users; DROP SCHEMA IF EXISTS datasync CASCADE")
				b.StartTimer()
				if _, err := Run(context.Background(), p.opts(benchBatch, workers), tables); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkRowTracker measures following a COPY stream of 10,000 rows of
// five fields, passed on in 64 KiB chunks.
func BenchmarkRowTracker(b *testing.B) {
	var rows [][][]byte
	for i := range 10000 {
		rows = append(rows, [][]byte{[]byte(strconv.Itoa(i)), []byte("user@example.com"), []byte("user"), make([]byte, 8), nil})
	}
	stream := encodeCopy(rows)
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		tr := newRowTracker(io.Discard, 5, []int{0})
		r := bytes.NewReader(stream)
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := tr.Write(buf[:n]); werr != nil {
					b.Fatal(werr)
				}
			}
			if err != nil {
				break
			}
		}
		if err := tr.finish(); err != nil || tr.rows != 10000 {
			b.Fatalf("got %d rows, error %v", tr.rows, err)
		}
	}
}

const benchBatch = 0

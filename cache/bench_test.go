package cache

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkWarmRandomRead4K compares 4 KiB reads at random offsets of a fully
// cached 64 MiB entry (Entry.ReadAt) with os.File.ReadAt on a plain file of
// the same bytes, in the same run. Each iteration does reads of both kinds,
// so the ratio is meaningful even with -benchtime 1x. ratio = cache/plain.
func BenchmarkWarmRandomRead4K(b *testing.B) {
	const (
		size  = 64 << 20
		block = 4 << 10
		reads = 20000
	)
	dir := b.TempDir()
	c, err := Open(Config{Dir: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := patBytes(42, 0, size)
	plainPath := filepath.Join(dir, "plain")
	if err := os.WriteFile(plainPath, data, 0o600); err != nil {
		b.Fatal(err)
	}
	plain, err := os.Open(plainPath)
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	e, err := c.Acquire(key(42), size)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Release()
	ctx := context.Background()
	if err := e.CopyTo(ctx, mustTemp(b, dir), func(_ context.Context, w io.WriterAt, off, n int64) error {
		_, err := w.WriteAt(data[off:off+n], off)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if !e.Complete() {
		b.Fatal("entry not complete")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, reads)
	for i := range offs {
		offs[i] = rng.Int64N(size - block)
	}
	p := make([]byte, block)
	var tCache, tPlain time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		for _, off := range offs {
			if _, err := plain.ReadAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		for _, off := range offs {
			if _, err := e.ReadAt(ctx, p, off, nil); err != nil {
				b.Fatal(err)
			}
		}
		tCache += time.Since(t1)
		tPlain += t1.Sub(t0)
	}
	n := float64(b.N * reads)
	b.ReportMetric(float64(tCache.Nanoseconds())/n, "cache-ns/read")
	b.ReportMetric(float64(tPlain.Nanoseconds())/n, "plain-ns/read")
	b.ReportMetric(float64(tCache)/float64(tPlain), "ratio")
}

func mustTemp(b *testing.B, dir string) *os.File {
	f, err := os.CreateTemp(dir, "copy")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

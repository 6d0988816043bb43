package main

// Row "peak RSS copying 2 GiB out": a generated file stored for both tools
// (not timed); on a fresh mount it is read through once (compared with the
// generator as it goes), then the mount process's VmHWM (its peak resident
// memory since it started) is read from /proc.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

func (b *bench) rssRow() {
	ctx := context.Background()
	size := int64(cfg.bigMiB) << 20
	gen := genReaderAt{seed: 0x9e3779b97f4a7c15}
	const p = "peer/big.bin"
	for _, t := range b.tools {
		t.seed(ctx, p, gen, size)
	}
	r := result{what: fmt.Sprintf("peak RSS copying %d MiB out", cfg.bigMiB), unit: "MiB", higherIsBad: true}
	buf := make([]byte, 1<<20)
	for i, t := range b.tools {
		m := t.mount("rss-"+t.name(), cacheDir("rss-"+t.name()))
		n := readAll(m.path(p), func(off int64, got []byte) bool {
			want := buf[:len(got)]
			gen.ReadAt(want, off)
			return string(want) == string(got)
		})
		if n != size {
			fail("%s: read %d bytes of %s, want %d", t.name(), n, p, size)
		}
		r.val[i] = float64(procStatusKiB(m.p.pid(), "VmHWM:")) / 1024
		m.close()
	}
	b.add(r)
}

// genReaderAt is an endless reproducible pseudo-random byte stream.
type genReaderAt struct{ seed uint64 }

func mix64(x uint64) uint64 { // splitmix64's finaliser
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func (g genReaderAt) ReadAt(p []byte, off int64) (int, error) {
	var w [8]byte
	for i := 0; i < len(p); {
		o := off + int64(i)
		binary.LittleEndian.PutUint64(w[:], mix64(uint64(o/8)^g.seed))
		i += copy(p[i:], w[o%8:])
	}
	return len(p), nil
}

var _ io.ReaderAt = genReaderAt{}

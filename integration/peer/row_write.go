package main

// Rows "cp until stored" and "N x 4 KiB until stored": writes through each
// tool's mount, timed from the first byte written until the tool reports
// everything uploaded and the store lists every file at its size. The cp
// row's baseline is each tool's own direct upload of the same local file.
// Each cell also says when the last close returned.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func (b *bench) cpRow() {
	ctx := context.Background()
	size := cfg.cpMiB << 20
	src := filepath.Join(cfg.tmp, "cp-src.bin")
	data := randomBytes(53, size)
	want := sha256.Sum256(data)
	check(os.WriteFile(src, data, 0o644), "writing the source file")
	data = nil
	r := result{what: fmt.Sprintf("cp %d MiB until stored", cfg.cpMiB), unit: "s", baseName: "direct upload", higherIsBad: true}
	for i, t := range b.tools {
		readAll(src, nil) // the source in the page cache for both sides
		r.base[i] = t.direct(ctx, src, "peer/direct.bin").Seconds()
		checkStored(ctx, t, "peer/direct.bin", int64(size), want)

		m := t.mount("cp-"+t.name(), cacheDir("cp-"+t.name()))
		readAll(src, nil)
		const p = "peer/cp/copy.bin"
		check(os.MkdirAll(filepath.Dir(m.path(p)), 0o755), "mkdir in the mount")
		var closed time.Duration
		r.val[i] = timed(func() {
			closed = timed(func() { copyFile(src, m.path(p)) })
			untilStored(ctx, t, m, "peer/cp/", func(l map[string]listed) bool { return l[p].size == int64(size) })
		}).Seconds()
		r.text[i] = fmt.Sprintf("%.2f s (closed in %.2f s)", r.val[i], closed.Seconds())
		m.close()
		checkStored(ctx, t, p, int64(size), want)
	}
	b.add(r)
	os.Remove(src)
}

func (b *bench) smallRow() {
	ctx := context.Background()
	n, size := cfg.small, cfg.smallKiB<<10
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = randomBytes(uint64(1000+i), size)
	}
	r := result{what: fmt.Sprintf("%d x %d KiB until stored", n, cfg.smallKiB), unit: "s", higherIsBad: true}
	for i, t := range b.tools {
		m := t.mount("small-"+t.name(), cacheDir("small-"+t.name()))
		const dir = "peer/small/"
		check(os.MkdirAll(m.path(dir), 0o755), "mkdir in the mount")
		var closed time.Duration
		r.val[i] = timed(func() {
			closed = timed(func() {
				for j, body := range bodies {
					check(os.WriteFile(m.path(fmt.Sprintf("%sf%04d.bin", dir, j)), body, 0o644), "writing a small file")
				}
			})
			untilStored(ctx, t, m, dir, func(l map[string]listed) bool {
				for j := range bodies {
					if l[fmt.Sprintf("%sf%04d.bin", dir, j)].size != int64(size) {
						return false
					}
				}
				return true
			})
		}).Seconds()
		r.text[i] = fmt.Sprintf("%.2f s (closed in %.2f s)", r.val[i], closed.Seconds())
		m.close()
		for _, j := range []int{0, n / 2, n - 1} {
			checkStored(ctx, t, fmt.Sprintf("%sf%04d.bin", dir, j), int64(size), sha256.Sum256(bodies[j]))
		}
	}
	b.add(r)
}

// checkStored fails unless the store holds size bytes with sha256 want at p.
func checkStored(ctx context.Context, t tool, p string, size int64, want [32]byte) {
	n, sum, ok := t.stored(ctx, p)
	if !ok || n != size || sum != want {
		fail("%s: %s is not stored as written (present %v, %d bytes, want %d)", t.name(), p, ok, n, size)
	}
}

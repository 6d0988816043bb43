package main

// Rows "cold read" and "warm re-read": the same random bytes stored for
// both tools; per tool, curl of its blob (cold baseline), a cold read on a
// fresh mount, a re-read from the tool's cache, and a read of a local copy
// (warm baseline), the page cache dropped before each.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

func (b *bench) readRows() {
	ctx := context.Background()
	size := cfg.readMiB << 20
	data := randomBytes(51, size)
	const p = "peer/seq.bin"
	for _, t := range b.tools {
		t.seed(ctx, p, bytes.NewReader(data), int64(size))
	}
	local := filepath.Join(cfg.tmp, "local-seq.bin")
	check(os.WriteFile(local, data, 0o644), "writing the local copy")

	what := fmt.Sprintf("%d MiB", cfg.readMiB)
	cold := result{what: "cold read " + what, unit: "s", baseName: "curl", higherIsBad: true}
	warm := result{what: "warm re-read " + what, unit: "s", baseName: "local read", higherIsBad: true}
	for i, t := range b.tools {
		u := t.downloadURL(ctx, p)
		dropCaches()
		cold.base[i] = timed(func() { curl(u, size) }).Seconds()

		m := t.mount("read-"+t.name(), cacheDir("read-"+t.name()))
		dropCaches()
		cold.val[i] = timed(func() { expectSize(m.path(p), readAll(m.path(p), nil), size) }).Seconds()
		dropCaches()
		warm.val[i] = timed(func() { expectSize(m.path(p), readAll(m.path(p), nil), size) }).Seconds()
		readAll(m.path(p), sameAs(data)) // checked untimed
		m.close()

		dropCaches()
		warm.base[i] = timed(func() { readAll(local, nil) }).Seconds()
	}
	b.add(cold)
	b.add(warm)
	os.Remove(local)
}

// curl downloads u into /dev/null, failing on any HTTP error or a short body.
func curl(u string, size int) {
	out, err := exec.Command("curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}", u).CombinedOutput()
	if err != nil {
		fail("curl of a blob: %v: %s", err, sigRe.ReplaceAllString(string(out), "${1}REDACTED"))
	}
	if string(out) != fmt.Sprint(size) {
		fail("curl of a blob: %s bytes, want %d", out, size)
	}
}

func expectSize(p string, n int64, size int) {
	if n != int64(size) {
		fail("%s: read %d bytes, want %d", p, n, size)
	}
}

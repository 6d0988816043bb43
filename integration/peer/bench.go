package main

// What every row works with: the two tools behind one interface, their
// mounts, the row groups, and small I/O helpers shared by the rows.

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// tool is one side of the comparison.
type tool interface {
	name() string
	// mount mounts the tool at a new mountpoint with cacheDir as its cache
	// (a remount when cacheDir was used before) and waits until it answers.
	mount(label, cacheDir string) *mount
	// waitStored waits until the tool reports no closed file waiting or
	// uploading.
	waitStored(m *mount, timeout time.Duration)
	// seed stores bytes at path where the tool reads them (not timed).
	seed(ctx context.Context, path string, r io.ReaderAt, size int64)
	seedSmall(ctx context.Context, path string, data []byte) error
	// direct uploads the local file to path the tool's own direct way and
	// returns how long that took (the baseline of "cp until stored").
	direct(ctx context.Context, local, path string) time.Duration
	// downloadURL is a pre-signed Azurite URL of path's stored bytes.
	downloadURL(ctx context.Context, path string) string
	// stored returns the size and sha256 of what the store holds at path.
	stored(ctx context.Context, path string) (int64, [32]byte, bool)
	// list returns what the store holds under prefix.
	list(ctx context.Context, prefix string) map[string]listed
}

// mount is a running mount of one tool.
type mount struct {
	dir, cacheDir string
	p             *proc
	rcAddr        string // rclone's rc address
}

func (m *mount) path(rel string) string { return filepath.Join(m.dir, rel) }

// close stops the mount the tool's ordinary way (SIGTERM) and makes sure
// nothing stays mounted.
func (m *mount) close() {
	m.p.stop(2 * time.Minute)
	unmount(m.dir)
}

// bench holds the tools and the rows measured so far.
type bench struct {
	az      *azurite
	tools   []tool
	results []result
}

func (b *bench) add(r result) { b.results = append(b.results, r) }

// groups are the row groups in the order they run; PEER_ROWS picks some.
var groups = []struct {
	name string
	run  func(*bench)
}{
	{"read", (*bench).readRows},
	{"cp", (*bench).cpRow},
	{"small", (*bench).smallRow},
	{"tree", (*bench).treeRows},
	{"rss", (*bench).rssRow},
	{"kill", (*bench).killRow},
}

// cacheDir is a fresh cache dir for a tool's mount.
func cacheDir(label string) string { return filepath.Join(cfg.tmp, "cache-"+label) }

func timed(fn func()) time.Duration {
	t := time.Now()
	fn()
	return time.Since(t)
}

func runOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// randomBytes are n reproducible random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// readAll reads p sequentially with a 1 MiB buffer (like cat, into a
// reused buffer) and returns the byte count. When want is not nil, each
// chunk is compared with want(offset, n) as it is read.
func readAll(p string, want func(off int64, b []byte) bool) int64 {
	f, err := os.Open(p)
	check(err, "opening "+p)
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := io.ReadFull(f, buf)
		if k > 0 {
			if want != nil && !want(n, buf[:k]) {
				fail("%s: wrong bytes at offset %d", p, n)
			}
			n += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n
		}
		check(err, "reading "+p)
	}
}

// sameAs returns a chunk check against data.
func sameAs(data []byte) func(int64, []byte) bool {
	return func(off int64, b []byte) bool {
		return off+int64(len(b)) <= int64(len(data)) && bytes.Equal(b, data[off:off+int64(len(b))])
	}
}

// copyFile copies src to dst with a 1 MiB buffer and closes dst (what cp
// does); the close is part of the copy.
func copyFile(src, dst string) {
	in, err := os.Open(src)
	check(err, "opening "+src)
	defer in.Close()
	out, err := os.Create(dst)
	check(err, "creating "+dst)
	_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20))
	check(err, "copying to "+dst)
	check(out.Close(), "closing "+dst)
}

// waitListed polls the store until ok(listing) holds; it fails after timeout.
func waitListed(ctx context.Context, t tool, prefix string, timeout time.Duration, ok func(map[string]listed) bool) {
	deadline := time.Now().Add(timeout)
	for {
		if ok(t.list(ctx, prefix)) {
			return
		}
		if time.Now().After(deadline) {
			fail("%s: the store does not hold what was written under %s after %v", t.name(), prefix, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// untilStored waits until the tool reports it has uploaded everything and
// the store lists what ok expects (the second guards against a tool that
// has not queued a just-closed file yet).
func untilStored(ctx context.Context, t tool, m *mount, prefix string, ok func(map[string]listed) bool) {
	t.waitStored(m, cfg.storeTimeout)
	waitListed(ctx, t, prefix, cfg.storeTimeout, func(l map[string]listed) bool {
		if ok(l) {
			return true
		}
		t.waitStored(m, cfg.storeTimeout)
		return false
	})
}

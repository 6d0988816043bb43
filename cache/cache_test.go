package cache

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

const testChunk = 64 << 10

// pat is the deterministic content of every test file: byte off of file seed.
func pat(seed, off int64) byte {
	x := uint64(off)*0x9E3779B97F4A7C15 + uint64(seed)*0xBF58476D1CE4E5B9
	return byte(x>>29) ^ byte(x>>47)
}

func patBytes(seed, off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = pat(seed, off+int64(i))
	}
	return b
}

// source is the real callee of a FetchFunc here: it serves the pattern,
// writing each range in two halves, back half first, and records calls.
type source struct {
	seed  int64
	mu    sync.Mutex
	calls [][2]int64 // off, n
	fail  error      // if set, returned after writing the first half
	gate  chan struct{}
	ctxs  []context.Context
}

func (s *source) fetch(ctx context.Context, w io.WriterAt, off, n int64) error {
	s.mu.Lock()
	s.calls = append(s.calls, [2]int64{off, n})
	s.ctxs = append(s.ctxs, ctx)
	gate, fail := s.gate, s.fail
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h := n / 2
	if fail != nil {
		w.WriteAt(patBytes(s.seed, off, h), off)
		return fail
	}
	if _, err := w.WriteAt(patBytes(s.seed, off+h, n-h), off+h); err != nil {
		return err
	}
	_, err := w.WriteAt(patBytes(s.seed, off, h), off)
	return err
}

func (s *source) ncalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *source) callList() [][2]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][2]int64(nil), s.calls...)
}

func noFetch(t *testing.T) FetchFunc {
	return func(ctx context.Context, w io.WriterAt, off, n int64) error {
		t.Errorf("unexpected fetch [%d,+%d)", off, n)
		return errors.New("unexpected fetch")
	}
}

func openCache(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	c, err := Open(Config{Dir: dir, MaxBytes: max, ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func key(i int) Key {
	return Key{FileID: uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(i)}), Version: "v1"}
}

func acquire(t *testing.T, c *Cache, k Key, size int64) *Entry {
	t.Helper()
	e, err := c.Acquire(k, size)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkRead reads [off, off+n) and compares with the pattern, including
// the io.EOF behaviour of os.File.ReadAt.
func checkRead(t *testing.T, e *Entry, seed, off, n int64, fetch FetchFunc) {
	t.Helper()
	p := make([]byte, n)
	got, err := e.ReadAt(context.Background(), p, off, fetch)
	want := max(0, min(n, e.Size()-off))
	if int64(got) != want {
		t.Fatalf("ReadAt(%d,%d) = %d bytes, want %d (err %v)", off, n, got, want, err)
	}
	if want < n && err != io.EOF {
		t.Fatalf("ReadAt(%d,%d) past end: err %v, want io.EOF", off, n, err)
	}
	if want == n && err != nil {
		t.Fatalf("ReadAt(%d,%d): %v", off, n, err)
	}
	if !bytes.Equal(p[:got], patBytes(seed, off, want)) {
		t.Fatalf("ReadAt(%d,%d): wrong bytes", off, n)
	}
}

func TestFillAndReadExact(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 10*testChunk + 12345
	src := &source{seed: 1}
	e := acquire(t, c, key(1), size)
	defer e.Release()
	for _, r := range [][2]int64{{0, 1}, {100, 5000}, {testChunk - 3, 7}, {3*testChunk + 9, 2*testChunk + 100},
		{size - 10, 10}, {size - 10, 100}, {size, 10}, {size + 5, 1}, {0, size}} {
		checkRead(t, e, 1, r[0], r[1], src.fetch)
	}
	if !e.Complete() {
		t.Fatal("not complete after reading everything")
	}
	if u := c.Usage(); u.Bytes != size || u.Entries != 1 || u.Pinned != 1 {
		t.Fatalf("usage %+v", u)
	}
	u0 := c.Usage()
	n := src.ncalls()
	checkRead(t, e, 1, 0, size, noFetch(t))
	if src.ncalls() != n {
		t.Fatal("warm read fetched")
	}
	if u := c.Usage(); u0.Misses < 1 || u.Hits != u0.Hits+1 || u.HitBytes != u0.HitBytes+size || u.Misses != u0.Misses {
		t.Fatalf("hit/miss counters: before the warm read %+v, after %+v", u0, u)
	}
	if _, err := e.ReadAt(context.Background(), make([]byte, 1), -1, nil); err == nil {
		t.Fatal("negative offset accepted")
	}
}

func TestSparseReadsFetchOnlyNeededChunks(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 20*testChunk + 100
	src := &source{seed: 2}
	e := acquire(t, c, key(2), size)
	defer e.Release()
	checkRead(t, e, 2, 3*testChunk+5, 10, src.fetch)
	checkRead(t, e, 2, 6*testChunk, 1, src.fetch)
	// Chunks 4,5 and 7,8 missing around present 6: two merged fetches.
	checkRead(t, e, 2, 4*testChunk+1, 5*testChunk-2, src.fetch)
	// Last chunk is clipped to the size.
	checkRead(t, e, 2, size-1, 1, src.fetch)
	want := [][2]int64{{3 * testChunk, testChunk}, {6 * testChunk, testChunk},
		{4 * testChunk, 2 * testChunk}, {7 * testChunk, 2 * testChunk}, {20 * testChunk, 100}}
	got := src.callList()
	// The two runs of one read are fetched concurrently, in either order.
	if len(got) == len(want) && got[2] != want[2] {
		got[2], got[3] = got[3], got[2]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("fetches %v, want %v", got, want)
	}
	if u := c.Usage(); u.Bytes != 6*testChunk+100 {
		t.Fatalf("usage %d, want %d", u.Bytes, 6*testChunk+100)
	}
	if e.Complete() {
		t.Fatal("complete after sparse reads")
	}
}

// waiters counts readers that started waiting on someone else's fetch.
func waiters(c *Cache) *atomic.Int32 {
	var n atomic.Int32
	c.testWaitHook = func() { n.Add(1) }
	return &n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentReadersShareFetch(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	w := waiters(c)
	src := &source{seed: 3, gate: make(chan struct{})}
	e := acquire(t, c, key(3), 4*testChunk)
	defer e.Release()
	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(testChunk + i*100)
			p := make([]byte, 100)
			if _, err := e.ReadAt(context.Background(), p, off, src.fetch); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(p, patBytes(3, off, 100)) {
				errs <- errors.New("wrong bytes")
			}
		}()
	}
	waitFor(t, "readers to share the fetch", func() bool { return w.Load() == readers-1 })
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := src.ncalls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestFailedFetchRecordsNothing(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 1<<30)
	boom := errors.New("boom")
	src := &source{seed: 4, fail: boom}
	e := acquire(t, c, key(4), 3*testChunk)
	p := make([]byte, 10)
	if _, err := e.ReadAt(context.Background(), p, 5, src.fetch); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	// A fetch that claims success without writing everything is an error too.
	short := func(ctx context.Context, w io.WriterAt, off, n int64) error {
		_, err := w.WriteAt(patBytes(4, off, n-1), off)
		return err
	}
	if _, err := e.ReadAt(context.Background(), p, 5, short); err == nil {
		t.Fatal("short fetch accepted")
	}
	// Writes outside the requested range are refused.
	wild := func(ctx context.Context, w io.WriterAt, off, n int64) error {
		_, err := w.WriteAt(patBytes(4, off+n, n), off+n)
		return err
	}
	if _, err := e.ReadAt(context.Background(), p, 5, wild); err == nil {
		t.Fatal("out-of-range write accepted")
	}
	if u := c.Usage(); u.Bytes != 0 {
		t.Fatalf("usage %d after failures", u.Bytes)
	}
	e.Release()
	c.Close()
	// Nothing was recorded on disk either.
	c = openCache(t, dir, 1<<30)
	e = acquire(t, c, key(4), 3*testChunk)
	defer e.Release()
	ok := &source{seed: 4}
	checkRead(t, e, 4, 5, 10, ok.fetch)
	if ok.ncalls() != 1 {
		t.Fatalf("retry fetched %d times", ok.ncalls())
	}
}

func TestCancelledReaderDoesNotBreakSharedFetch(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	w := waiters(c)
	src := &source{seed: 5, gate: make(chan struct{})}
	e := acquire(t, c, key(5), 2*testChunk)
	defer e.Release()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := e.ReadAt(ctx, make([]byte, 10), 0, src.fetch)
		first <- err
	}()
	waitFor(t, "the fetch to start", func() bool { return src.ncalls() == 1 })
	second := make(chan error, 1)
	go func() {
		p := make([]byte, 10)
		_, err := e.ReadAt(context.Background(), p, 20, src.fetch)
		if err == nil && !bytes.Equal(p, patBytes(5, 20, 10)) {
			err = errors.New("wrong bytes")
		}
		second <- err
	}()
	waitFor(t, "second reader to wait", func() bool { return w.Load() == 1 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v", err)
	}
	close(src.gate)
	if err := <-second; err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if src.ncalls() != 1 {
		t.Fatalf("%d fetches", src.ncalls())
	}
	if err := src.ctxs[0].Err(); err != nil {
		t.Fatalf("fetch context: %v", err)
	}
}

func TestCloseCancelsFetches(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	src := &source{seed: 6, gate: make(chan struct{})} // never opened
	e := acquire(t, c, key(6), testChunk)
	res := make(chan error, 1)
	go func() {
		_, err := e.ReadAt(context.Background(), make([]byte, 10), 0, src.fetch)
		res <- err
	}()
	waitFor(t, "the fetch to start", func() bool { return src.ncalls() == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("reader after Close: %v", err)
	}
	e.Release()
	if _, err := c.Acquire(key(6), testChunk); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
}

func fillEntry(t *testing.T, c *Cache, k Key, seed, size int64) {
	t.Helper()
	e := acquire(t, c, k, size)
	defer e.Release()
	src := &source{seed: seed}
	checkRead(t, e, seed, 0, size, src.fetch)
}

func contentFiles(t *testing.T, c *Cache, ext string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(c.Dir(), "content", "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cached reports whether k is fully present, by reading it with no fetch.
func cached(t *testing.T, c *Cache, k Key, size int64) bool {
	t.Helper()
	e := acquire(t, c, k, size)
	defer e.Release()
	return e.Complete()
}

func TestEvictionLRU(t *testing.T) {
	const size = 2 * testChunk
	c := openCache(t, t.TempDir(), 3*size)
	for i := 1; i <= 3; i++ {
		fillEntry(t, c, key(i), int64(i), size)
	}
	if u := c.Usage(); u.Bytes != 3*size || u.Entries != 3 {
		t.Fatalf("usage %+v", u)
	}
	// Touch 1, so 2 is the least recently used.
	e := acquire(t, c, key(1), size)
	e.Release()
	fillEntry(t, c, key(4), 4, size)
	u := c.Usage()
	if u.Bytes > u.MaxBytes || u.Entries != 3 {
		t.Fatalf("usage %+v after eviction", u)
	}
	if u.Evictions != 1 || u.EvictedBytes != size {
		t.Fatalf("eviction counters %+v, want 1 entry of %d bytes", u, size)
	}
	if n := len(contentFiles(t, c, ".data")); n != 3 {
		t.Fatalf("%d content files, want 3", n)
	}
	for i, want := range map[int]bool{1: true, 3: true, 4: true} {
		if !cached(t, c, key(i), size) == want {
			t.Fatalf("key %d cached=%v", i, !want)
		}
	}
	if cached(t, c, key(2), size) {
		t.Fatal("LRU entry 2 survived")
	}
}

func TestPinnedNeverEvicted(t *testing.T) {
	const size = 4 * testChunk
	c := openCache(t, t.TempDir(), size)
	a := acquire(t, c, key(1), size)
	checkRead(t, a, 1, 0, size, (&source{seed: 1}).fetch)
	b := acquire(t, c, key(2), size)
	checkRead(t, b, 2, 0, size, (&source{seed: 2}).fetch)
	if u := c.Usage(); u.Bytes != 2*size || u.Pinned != 2 {
		t.Fatalf("usage %+v: pinned entries must stay", u)
	}
	// Both still fully readable without fetching.
	checkRead(t, a, 1, 0, size, noFetch(t))
	checkRead(t, b, 2, 0, size, noFetch(t))
	b.Release()
	if u := c.Usage(); u.Bytes != size || u.Entries != 1 {
		t.Fatalf("usage %+v after releasing b", u)
	}
	checkRead(t, a, 1, 0, size, noFetch(t))
	a.Release()
	if u := c.Usage(); u.Bytes > u.MaxBytes {
		t.Fatalf("usage %+v over budget after unpin", u)
	}
}

func TestRemoveAndResize(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 2 * testChunk
	fillEntry(t, c, key(1), 1, size)
	c.Remove(key(1))
	if u := c.Usage(); u.Bytes != 0 || u.Entries != 0 || len(contentFiles(t, c, "")) != 0 {
		t.Fatalf("after Remove: %+v files %v", u, contentFiles(t, c, ""))
	}
	// Remove while pinned: holder keeps reading, files go on Release.
	fillEntry(t, c, key(2), 2, size)
	e := acquire(t, c, key(2), size)
	c.Remove(key(2))
	checkRead(t, e, 2, 0, size, noFetch(t))
	e.Release()
	if n := len(contentFiles(t, c, "")); n != 0 {
		t.Fatalf("%d files left after Release of removed entry", n)
	}
	// A different size discards the old content.
	fillEntry(t, c, key(3), 3, size)
	e = acquire(t, c, key(3), size+1)
	defer e.Release()
	if e.Complete() || c.Usage().Bytes != 0 {
		t.Fatal("resized entry kept old content")
	}
	src := &source{seed: 3}
	checkRead(t, e, 3, 0, size+1, src.fetch)
}

func TestRestartKeepsPresentRanges(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 1<<30)
	const size = 8*testChunk + 7
	e := acquire(t, c, key(1), size)
	src := &source{seed: 1}
	checkRead(t, e, 1, testChunk, 2*testChunk, src.fetch)
	checkRead(t, e, 1, size-3, 3, src.fetch)
	// Close while pinned: Close persists.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	e.Release()

	c = openCache(t, dir, 1<<30)
	if u := c.Usage(); u.Bytes != 2*testChunk+7 || u.Entries != 1 {
		t.Fatalf("usage after reopen %+v", u)
	}
	e = acquire(t, c, key(1), size)
	checkRead(t, e, 1, testChunk, 2*testChunk, noFetch(t))
	checkRead(t, e, 1, size-7, 7, noFetch(t))
	src2 := &source{seed: 1}
	checkRead(t, e, 1, 0, size, src2.fetch)
	if got := src2.callList(); len(got) != 2 {
		t.Fatalf("fetches after reopen %v, want the two missing runs", got)
	}
	e.Release() // persists on last release
	c.Close()
	c = openCache(t, dir, 1<<30)
	e = acquire(t, c, key(1), size)
	defer e.Release()
	if !e.Complete() {
		t.Fatal("not complete after second reopen")
	}
	checkRead(t, e, 1, 0, size, noFetch(t))
}

func TestTornStateNeverServesWrongBytes(t *testing.T) {
	const size = 4 * testChunk
	prepare := func(t *testing.T) (dir, data, meta string) {
		dir = t.TempDir()
		c, err := Open(Config{Dir: dir, ChunkSize: testChunk})
		if err != nil {
			t.Fatal(err)
		}
		fillEntry(t, c, key(1), 1, size)
		data = contentFiles(t, c, ".data")[0]
		meta = contentFiles(t, c, ".meta")[0]
		c.Close()
		return dir, data, meta
	}
	// reopen and read everything; dropped tells whether the entry must be gone.
	verify := func(t *testing.T, dir string, wantFetch bool) {
		c := openCache(t, dir, 1<<30)
		e := acquire(t, c, key(1), size)
		defer e.Release()
		src := &source{seed: 1}
		checkRead(t, e, 1, 0, size, src.fetch)
		if (src.ncalls() > 0) != wantFetch {
			t.Fatalf("fetches %v, want fetch=%v", src.callList(), wantFetch)
		}
	}
	t.Run("corrupt sidecar", func(t *testing.T) {
		dir, _, meta := prepare(t)
		b, _ := os.ReadFile(meta)
		b[len(b)/2] ^= 0xff
		os.WriteFile(meta, b, 0o600)
		verify(t, dir, true)
	})
	t.Run("truncated sidecar", func(t *testing.T) {
		dir, _, meta := prepare(t)
		os.Truncate(meta, 20)
		verify(t, dir, true)
	})
	t.Run("truncated content", func(t *testing.T) {
		dir, data, _ := prepare(t)
		os.Truncate(data, testChunk)
		verify(t, dir, true)
		if n := len(contentFiles(t, &Cache{dir: dir}, ".data")); n != 1 {
			t.Fatalf("%d content files, want only the new one", n)
		}
	})
	t.Run("corrupt content", func(t *testing.T) {
		dir, data, _ := prepare(t)
		f, _ := os.OpenFile(data, os.O_RDWR, 0)
		f.WriteAt([]byte("garbage"), 2*testChunk+10)
		f.Close()
		c := openCache(t, dir, 1<<30)
		e := acquire(t, c, key(1), size)
		defer e.Release()
		src := &source{seed: 1}
		checkRead(t, e, 1, 0, size, src.fetch)
		if got := src.callList(); len(got) != 1 || got[0] != [2]int64{2 * testChunk, testChunk} {
			t.Fatalf("fetches %v, want only the corrupted chunk", got)
		}
	})
	t.Run("missing content", func(t *testing.T) {
		dir, data, _ := prepare(t)
		os.Remove(data)
		verify(t, dir, true)
	})
	t.Run("leftovers", func(t *testing.T) {
		dir, _, meta := prepare(t)
		tmp := meta + ".tmp"
		os.WriteFile(tmp, []byte("half a sidecar"), 0o600)
		orphan := filepath.Join(dir, "content", strings.Repeat("ab", 16)+".data")
		os.WriteFile(orphan, []byte("orphan"), 0o600)
		stg := filepath.Join(dir, "staging", "stg-keep")
		os.WriteFile(stg, []byte("journal owns me"), 0o600)
		verify(t, dir, false)
		for _, p := range []string{tmp, orphan} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s survived Open", p)
			}
		}
		if b, err := os.ReadFile(stg); err != nil || string(b) != "journal owns me" {
			t.Fatalf("staging file touched: %q %v", b, err)
		}
	})
	t.Run("different chunk size", func(t *testing.T) {
		dir, _, _ := prepare(t)
		c, err := Open(Config{Dir: dir, ChunkSize: 2 * testChunk})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if u := c.Usage(); u.Entries != 0 {
			t.Fatalf("entry with another chunk size kept: %+v", u)
		}
	})
}

func TestAdopt(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 1<<30)
	const size = 3*testChunk + 99
	f, err := c.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(patBytes(7, 0, size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if u := c.Usage(); u.Staging != size {
		t.Fatalf("staging usage %d", u.Staging)
	}
	// An older partial entry of the key is replaced.
	old := acquire(t, c, key(7), size)
	checkRead(t, old, 7, 0, 10, (&source{seed: 7}).fetch)
	if err := c.Adopt(f.Name(), key(7)); err != nil {
		t.Fatal(err)
	}
	checkRead(t, old, 7, 0, 10, noFetch(t)) // holders keep their entry
	old.Release()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	if u := c.Usage(); u.Bytes != size || u.Entries != 1 || u.Pinned != 0 {
		t.Fatalf("usage %+v", u)
	}
	e := acquire(t, c, key(7), size)
	if !e.Complete() {
		t.Fatal("adopted entry incomplete")
	}
	checkRead(t, e, 7, 0, size, noFetch(t))
	e.Release()
	c.Close()
	c = openCache(t, dir, 1<<30)
	e = acquire(t, c, key(7), size)
	defer e.Release()
	checkRead(t, e, 7, 0, size, noFetch(t))
}

func TestCopyTo(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 5*testChunk + 1
	e := acquire(t, c, key(8), size)
	defer e.Release()
	src := &source{seed: 8}
	checkRead(t, e, 8, 2*testChunk, 10, src.fetch)
	dst, err := c.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	dst.Write(bytes.Repeat([]byte{'x'}, 2*size)) // longer junk must be cut
	if err := e.CopyTo(context.Background(), dst, src.fetch); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, patBytes(8, 0, size)) {
		t.Fatalf("CopyTo: %d bytes, content mismatch", len(got))
	}
	if n := src.ncalls(); n != 3 { // the read, then the runs before and after it
		t.Fatalf("%d fetches", n)
	}
}

func TestPermissions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "c")
	c := openCache(t, root, 1<<30)
	fillEntry(t, c, key(1), 1, testChunk)
	f, err := c.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	check := func(p string, want os.FileMode) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	for _, d := range []string{root, filepath.Join(root, "content"), filepath.Join(root, "staging")} {
		check(d, 0o700)
	}
	files := append(contentFiles(t, c, ""), f.Name())
	if len(files) != 3 {
		t.Fatalf("files %v", files)
	}
	for _, p := range files {
		check(p, 0o600)
	}
}

func TestPrefetch(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	w := waiters(c)
	const size = 64 * testChunk
	src := &source{seed: 9, gate: make(chan struct{})}
	e := acquire(t, c, key(9), size)
	defer e.Release()
	e.Prefetch(0, 2*testChunk, src.fetch)
	e.Prefetch(testChunk, 2*testChunk, src.fetch) // chunk 1 in flight: only chunk 2
	e.Prefetch(0, 3*testChunk, src.fetch)         // all in flight: nothing
	waitFor(t, "two prefetches", func() bool { return src.ncalls() == 2 })
	// A reader of a prefetched chunk waits for the prefetch.
	res := make(chan error, 1)
	go func() {
		p := make([]byte, 100)
		_, err := e.ReadAt(context.Background(), p, testChunk+5, src.fetch)
		if err == nil && !bytes.Equal(p, patBytes(9, testChunk+5, 100)) {
			err = errors.New("wrong bytes")
		}
		res <- err
	}()
	waitFor(t, "reader to join the prefetch", func() bool { return w.Load() == 1 })
	// Saturate: two more start, the rest is dropped.
	for i := int64(10); i < 20; i += 2 {
		want := (i + 1) * testChunk
		if i >= 14 {
			want = i * testChunk // dropped: nothing of it is covered
		}
		if covered := e.Prefetch(i*testChunk, testChunk, src.fetch); covered != want {
			t.Fatalf("Prefetch of chunk %d covered up to %d, want %d", i, covered, want)
		}
	}
	waitFor(t, "prefetch limit", func() bool { return src.ncalls() == maxPrefetch })
	close(src.gate)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{0, 2 * testChunk}, {2 * testChunk, testChunk}, {10 * testChunk, testChunk}, {12 * testChunk, testChunk}}
	got := src.callList()
	slices.SortFunc(got, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	if !slices.Equal(got, want) {
		t.Fatalf("fetches %v, want %v", got, want)
	}
	waitFor(t, "prefetches to land", func() bool { return c.Usage().Bytes == int64(maxPrefetch+1)*testChunk })
	checkRead(t, e, 9, 0, 3*testChunk, noFetch(t))
	// Nothing more was started behind our back.
	if n := src.ncalls(); n != maxPrefetch {
		t.Fatalf("%d fetches", n)
	}
}

func TestReadPresent(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 3*testChunk + 7
	e := acquire(t, c, key(13), size)
	defer e.Release()
	p := make([]byte, 2*testChunk)
	if _, ok, _ := e.ReadPresent(p, 10); ok {
		t.Fatal("ReadPresent of an empty entry answered")
	}
	checkRead(t, e, 13, testChunk, 10, (&source{seed: 13}).fetch) // chunk 1 only
	if _, ok, _ := e.ReadPresent(p, testChunk/2); ok {
		t.Fatal("ReadPresent answered for a range with a missing chunk")
	}
	n, ok, err := e.ReadPresent(p[:testChunk], testChunk)
	if !ok || err != nil || n != testChunk || !bytes.Equal(p[:n], patBytes(13, testChunk, testChunk)) {
		t.Fatalf("ReadPresent of a present chunk: %d %v %v", n, ok, err)
	}
	checkRead(t, e, 13, 3*testChunk, 7, (&source{seed: 13}).fetch)
	n, ok, err = e.ReadPresent(p[:100], size-7)
	if !ok || n != 7 || err != io.EOF || !bytes.Equal(p[:n], patBytes(13, size-7, 7)) {
		t.Fatalf("ReadPresent at the end: %d %v %v", n, ok, err)
	}
}

// streamSource writes its range in order, one chunk at a time, and waits
// at gate before each chunk after the first; with fail set it fails there.
type streamSource struct {
	seed int64
	gate chan struct{}
	fail error
}

func (s *streamSource) fetch(ctx context.Context, w io.WriterAt, off, n int64) error {
	for done := int64(0); done < n; done += testChunk {
		if done > 0 {
			select {
			case <-s.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
			if s.fail != nil {
				return s.fail
			}
		}
		l := min(testChunk, n-done)
		// in two writes, to exercise the running checksum
		h := l / 3
		if _, err := w.WriteAt(patBytes(s.seed, off+done, h), off+done); err != nil {
			return err
		}
		if _, err := w.WriteAt(patBytes(s.seed, off+done+h, l-h), off+done+h); err != nil {
			return err
		}
	}
	return nil
}

func TestStreamingFetchServesLandedChunks(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 1<<30)
	const size = 8 * testChunk
	src := &streamSource{seed: 12, gate: make(chan struct{})}
	e := acquire(t, c, key(12), size)
	e.Prefetch(0, size, src.fetch)
	// readSoon reads while the prefetch is still blocked; waiting for the
	// whole fetch would run into the deadline.
	readSoon := func(off, n int64) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p := make([]byte, n)
		if _, err := e.ReadAt(ctx, p, off, noFetch(t)); err != nil {
			return err
		}
		if !bytes.Equal(p, patBytes(12, off, n)) {
			return errors.New("wrong bytes")
		}
		return nil
	}
	// Chunk 0 lands while the prefetch is blocked before chunk 1, and a
	// reader inside it is served at once, without a fetch of its own.
	if err := readSoon(100, testChunk-200); err != nil {
		t.Fatalf("read of the landed chunk: %v", err)
	}
	if u := c.Usage(); u.Bytes != testChunk {
		t.Fatalf("usage %d with one chunk landed, want %d", u.Bytes, testChunk)
	}
	// A reader further on waits for its chunk, not for the whole fetch.
	res := make(chan error, 1)
	go func() { res <- readSoon(2*testChunk+5, 10) }()
	src.gate <- struct{}{} // chunk 1
	src.gate <- struct{}{} // chunk 2
	if err := <-res; err != nil {
		t.Fatalf("read of chunk 2: %v", err)
	}
	if e.Complete() {
		t.Fatal("complete while the fetch is still blocked")
	}
	// The fetch then fails: chunks that landed stay, the rest is refetched.
	src.fail = errors.New("boom")
	src.gate <- struct{}{}
	waitFor(t, "the fetch to end", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.inflight) == 0
	})
	if e.Complete() {
		t.Fatal("complete after a failed fetch")
	}
	e.Release()
	c.Close()
	c = openCache(t, dir, 1<<30)
	e = acquire(t, c, key(12), size)
	defer e.Release()
	checkRead(t, e, 12, 0, 3*testChunk, noFetch(t))
	again := &source{seed: 12}
	checkRead(t, e, 12, 0, size, again.fetch)
	if got, want := again.callList(), [][2]int64{{3 * testChunk, 5 * testChunk}}; !slices.Equal(got, want) {
		t.Fatalf("refetched %v, want %v", got, want)
	}
}

// TestKill9Recovery fills a cache in a child process, kills it with SIGKILL
// in the middle of its work and checks that whatever the reopened cache
// believes present reads back exactly.
func TestKill9Recovery(t *testing.T) {
	const size = 16*testChunk + 3
	const nkeys = 4
	if dir := os.Getenv("EVOFS_CACHE_KILL_CHILD"); dir != "" {
		c, err := Open(Config{Dir: dir, ChunkSize: testChunk})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 7))
		for round := 0; ; round++ {
			i := round % nkeys
			e := acquire(t, c, key(i), size)
			src := &source{seed: int64(i)}
			off := rng.Int64N(size)
			checkRead(t, e, int64(i), off, rng.Int64N(3*testChunk)+1, src.fetch)
			e.Release()
			fmt.Println("progress", round)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9Recovery$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EVOFS_CACHE_KILL_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for n := 0; n < 40 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "progress") {
			n++
		}
	}
	cmd.Process.Kill()
	cmd.Wait()

	c := openCache(t, dir, 1<<30)
	if c.Usage().Bytes == 0 {
		t.Fatal("nothing survived the kill")
	}
	for i := range nkeys {
		e := acquire(t, c, key(i), size)
		checkRead(t, e, int64(i), 0, size, (&source{seed: int64(i)}).fetch)
		e.Release()
	}
}

// resident counts the pages of [off, off+n) of e's content file that are in
// the page cache.
func resident(t *testing.T, e *Entry, off, n int64) int {
	t.Helper()
	m, err := unix.Mmap(int(e.f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	r := 0
	for _, v := range vec {
		r += int(v & 1)
	}
	return r
}

// DropBehind frees the page cache of what a sequential reader has passed
// once it is written back, lags one step behind (pages are dropped only
// after an earlier call started their writeback), and loses no byte.
func TestDropBehind(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<30)
	const size = 3 * dropStep
	e := acquire(t, c, key(14), size)
	defer e.Release()
	src := &source{seed: 14}
	checkRead(t, e, 14, 0, size, src.fetch) // in the page cache, dirty
	e.DropBehind(dropStep + 5)              // starts writing back step 0
	if r := resident(t, e, 0, dropStep); r == 0 {
		t.Fatal("step 0 dropped before its writeback was started")
	}
	if err := unix.Fdatasync(int(e.f.Fd())); err != nil { // the time the reader takes to read a step
		t.Fatal(err)
	}
	e.DropBehind(2 * dropStep)
	if r := resident(t, e, 0, dropStep); r != 0 {
		t.Fatalf("%d pages of step 0 still cached after drop-behind passed it", r)
	}
	if r := resident(t, e, dropStep, dropStep); r == 0 {
		t.Fatal("step 1 dropped in the same call that started its writeback")
	}
	e.DropBehind(dropStep) // behind: nothing to do
	checkRead(t, e, 14, 0, size, noFetch(t))
}

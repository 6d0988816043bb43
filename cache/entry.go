package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// persistInterval is the least time between sidecar writes triggered by
// fetches (the last Release and Close always write it). Each write first
// fdatasyncs the content file, and the waiters of that fetch wait for it, so
// it is rare: a crash loses at most this much download progress (re-fetched
// later), never correctness.
const persistInterval = 30 * time.Second

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Entry is a pinned cache entry. Safe for concurrent use.
type Entry struct {
	// Constant.
	c       *Cache
	key     Key
	size    int64
	name    string // file base name under content/
	nchunks int64

	fmu     sync.Mutex
	openers int      // GUARDED_BY(fmu): pins that opened f (user pins and fetch goroutines)
	create  bool     // GUARDED_BY(fmu): content file not created yet
	f       *os.File // written under fmu; INVARIANT: non-nil and stable while openers > 0

	pmu         sync.Mutex
	lastPersist time.Time // GUARDED_BY(pmu)
	destroyed   bool      // GUARDED_BY(pmu): files removed, never write them again

	// GUARDED_BY(c.mu)
	refs    int   // user pins + fetch goroutines
	dropped bool  // out of the index; destroy when refs reaches 0
	counted int64 // bytes of this entry included in c.bytes

	mu         sync.Mutex
	present    bitset             // GUARDED_BY(mu): chunk bytes are in f
	verified   bitset             // GUARDED_BY(mu): present and known to match crc
	crc        []uint32           // GUARDED_BY(mu): CRC-32C of each present chunk
	npresent   int64              // GUARDED_BY(mu)
	bytes      int64              // GUARDED_BY(mu): bytes of present chunks
	inflight   map[int64]*fetchOp // GUARDED_BY(mu): chunk → fetch filling it
	prefetches int                // GUARDED_BY(mu): prefetch ops running
	dirty      bool               // GUARDED_BY(mu): present differs from the sidecar
	// progress is closed (and replaced) whenever chunks land or a fetch
	// ends, waking readers that wait on fetches they did not start.
	progress chan struct{} // GUARDED_BY(mu)

	dmu       sync.Mutex
	flushedTo int64 // GUARDED_BY(dmu): DropBehind started writing back [0, flushedTo)
	droppedTo int64 // GUARDED_BY(dmu): DropBehind dropped the pages of [0, droppedTo)
}

// fetchOp is one FetchFunc call filling chunks [first, last).
type fetchOp struct {
	first, last int64
	prefetch    bool
	done        chan struct{}
	err         error // set before done is closed

	// Streaming: a chunk whose bytes arrive in order from its start is
	// checksummed on the way and lands (becomes present) as soon as its
	// last byte is written, before the whole fetch returns, so a
	// sequential reader follows a big read-ahead fetch closely.
	mu     sync.Mutex
	filled []int64  // GUARDED_BY(mu): bytes of chunk first+j written in order from its start; -1 if not
	sums   []uint32 // GUARDED_BY(mu): running CRC-32C of those bytes
}

func newEntry(c *Cache, k Key, size int64, name string, create bool) *Entry {
	n := (size + c.chunkSize - 1) / c.chunkSize
	return &Entry{
		c: c, key: k, size: size, name: name, nchunks: n, create: create,
		present:  newBitset(n),
		verified: newBitset(n),
		crc:      make([]uint32, n),
		inflight: make(map[int64]*fetchOp),
		progress: make(chan struct{}),
	}
}

// Key returns the entry's key.
func (e *Entry) Key() Key { return e.key }

// Size returns the version's size.
func (e *Entry) Size() int64 { return e.size }

// Complete reports whether every byte is present.
func (e *Entry) Complete() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.npresent == e.nchunks
}

func (e *Entry) chunkLen(i int64) int64 {
	return min((i+1)*e.c.chunkSize, e.size) - i*e.c.chunkSize
}

// ReadAt reads into p at off, first fetching missing chunks covering the
// range (concurrent callers share one fetch of a chunk). Returns io.EOF past
// the end like os.File.ReadAt. A failed fetch returns its error; of its
// chunks only those written completely, in order, are kept.
func (e *Entry) ReadAt(ctx context.Context, p []byte, off int64, fetch FetchFunc) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cache: negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= e.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), e.size)
	e.c.stats.countRead(e.rangeVerified(off/e.c.chunkSize, (end-1)/e.c.chunkSize+1), int(end-off))
	if err := e.fill(ctx, off, end, fetch); err != nil {
		return 0, err
	}
	return e.readFile(p, off, end)
}

// ReadPresent reads into p at off like ReadAt if every chunk of the range
// is present and verified, without fetching or waiting; ok is false (and
// nothing was read) otherwise.
func (e *Entry) ReadPresent(p []byte, off int64) (n int, ok bool, err error) {
	if off < 0 || len(p) == 0 || off >= e.size {
		return 0, false, nil // ReadAt gives the answer
	}
	end := min(off+int64(len(p)), e.size)
	if !e.rangeVerified(off/e.c.chunkSize, (end-1)/e.c.chunkSize+1) {
		return 0, false, nil
	}
	e.c.stats.countRead(true, int(end-off))
	n, err = e.readFile(p, off, end)
	return n, true, err
}

// readFile reads [off, end) of the content file into p, with io.EOF if p
// reaches past the end (like os.File.ReadAt). The chunks must be present.
func (e *Entry) readFile(p []byte, off, end int64) (int, error) {
	n, err := e.f.ReadAt(p[:end-off], off)
	if err == nil && end < off+int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// dropStep is the granularity of DropBehind: one writeback start and one
// page drop per this many bytes read.
const dropStep = 32 << 20

// DropBehind tells e that a sequential reader has consumed [0, off) through
// a mount whose kernel page cache keeps those bytes, so the cache file's own
// pages for them are a second copy in memory (a GiB read would otherwise
// take two GiB of page cache). It starts writing [0, off) back to disk and
// drops the pages of the part whose writeback an earlier call started (the
// kernel skips pages still dirty or being written). Best effort: the bytes
// stay in the cache file, and a later read of them comes from disk. The
// caller holds a pin.
func (e *Entry) DropBehind(off int64) {
	off -= off % dropStep
	e.dmu.Lock()
	defer e.dmu.Unlock()
	if off < e.flushedTo+dropStep {
		return
	}
	fd := int(e.f.Fd())
	if e.droppedTo < e.flushedTo {
		if err := unix.Fadvise(fd, e.droppedTo, e.flushedTo-e.droppedTo, unix.FADV_DONTNEED); err != nil {
			e.c.log.WithError(err).Debug("cache: drop-behind")
		}
		e.droppedTo = e.flushedTo
	}
	if err := unix.SyncFileRange(fd, e.flushedTo, off-e.flushedTo, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		e.c.log.WithError(err).Debug("cache: drop-behind writeback")
	}
	e.flushedTo = off
}

// Prefetch starts fetching the missing chunks of [off, off+n) in the
// background (deduplicated with fetches in flight) and returns at once.
// At most maxPrefetch prefetches run per entry; requests beyond are
// dropped. It returns the offset up to which the range is now present or
// in flight (off+n, clipped to Size, unless something was dropped), so a
// caller can ask again for the rest later.
func (e *Entry) Prefetch(off, n int64, fetch FetchFunc) (covered int64) {
	if fetch == nil || n <= 0 || off < 0 || off >= e.size {
		return max(off, 0)
	}
	end := min(off+n, e.size)
	covered = end
	var ops []*fetchOp
	e.mu.Lock()
	e.scanLocked(off/e.c.chunkSize, (end-1)/e.c.chunkSize+1, func(first, last int64) bool {
		if e.prefetches >= maxPrefetch {
			covered = max(off, first*e.c.chunkSize)
			return false
		}
		ops = append(ops, e.startLocked(first, last, true))
		return true
	}, nil, nil)
	e.mu.Unlock()
	e.launch(ops, fetch)
	return covered
}

// CopyTo fetches whatever is missing and copies the whole content into dst
// from offset 0 (dst is truncated to Size).
func (e *Entry) CopyTo(ctx context.Context, dst *os.File, fetch FetchFunc) error {
	if e.size > 0 {
		if err := e.fill(ctx, 0, e.size, fetch); err != nil {
			return err
		}
	}
	if err := copyFile(dst, e.f, e.size); err != nil {
		return fmt.Errorf("cache: copy %s: %w", e.key, err)
	}
	return dst.Truncate(e.size)
}

// Release unpins the entry. It must be called exactly once per Acquire.
func (e *Entry) Release() {
	e.close()
	e.unpin()
}

// scanLocked walks chunks [first, last): runs of missing chunks not in
// flight go to missing (which returns false to stop), in-flight ops go to
// wait (once each), present but unverified chunks go to unverified.
// LOCKS_REQUIRED(e.mu)
func (e *Entry) scanLocked(first, last int64, missing func(first, last int64) bool, wait func(*fetchOp), unverified func(int64)) {
	run := int64(-1)
	var lastOp *fetchOp
	for i := first; i <= last; i++ {
		if i < last && !e.present.has(i) && e.inflight[i] == nil {
			if run < 0 {
				run = i
			}
			continue
		}
		if run >= 0 {
			if !missing(run, i) {
				return
			}
			run = -1
		}
		if i == last {
			break
		}
		if op := e.inflight[i]; op != nil {
			if op != lastOp && wait != nil {
				wait(op)
			}
			lastOp = op
		} else if !e.verified.has(i) && unverified != nil {
			unverified(i)
		}
	}
}

// fill makes chunks covering [off, end) present and verified.
// The caller holds a pin.
func (e *Entry) fill(ctx context.Context, off, end int64, fetch FetchFunc) error {
	first, last := off/e.c.chunkSize, (end-1)/e.c.chunkSize+1
	waited := false
	for {
		var started, waits []*fetchOp
		var unverified []int64
		e.mu.Lock()
		progress := e.progress
		e.scanLocked(first, last, func(f, l int64) bool {
			if fetch != nil {
				started = append(started, e.startLocked(f, l, false))
			}
			return true
		}, func(op *fetchOp) { waits = append(waits, op) },
			func(i int64) { unverified = append(unverified, i) })
		e.mu.Unlock()
		if started == nil && waits == nil && unverified == nil {
			if fetch == nil && !e.rangeVerified(first, last) {
				return fmt.Errorf("cache: %s: data not present and no fetch function", e.key)
			}
			return nil
		}
		e.launch(started, fetch)
		if len(waits) > 0 && !waited && e.c.testWaitHook != nil {
			e.c.testWaitHook()
		}
		waited = waited || len(waits) > 0
		for _, i := range unverified {
			if err := e.verify(i); err != nil {
				return err
			}
		}
		// Our own fetches cover exactly what we need: wait for them to end
		// (their goroutines have unpinned by then).
		for _, op := range started {
			select {
			case <-op.done:
				if op.err != nil {
					return op.err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// Others' fetches may be far bigger than what we need: wake on
		// every chunk that lands and scan again; a failed one fails us too.
		if len(waits) > 0 {
			select {
			case <-progress:
			case <-ctx.Done():
				return ctx.Err()
			}
			for _, op := range waits {
				select {
				case <-op.done:
					if op.err != nil {
						return op.err
					}
				default:
				}
			}
		}
	}
}

func (e *Entry) rangeVerified(first, last int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := first; i < last; i++ {
		if !e.verified.has(i) { // verified implies present
			return false
		}
	}
	return true
}

// verify checks a chunk loaded from disk against its recorded checksum; on
// mismatch the chunk becomes missing (and is fetched by the next fill pass).
func (e *Entry) verify(i int64) error {
	bp := e.c.bufs.Get().(*[]byte)
	defer e.c.bufs.Put(bp)
	buf := (*bp)[:e.chunkLen(i)]
	_, err := e.f.ReadAt(buf, i*e.c.chunkSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("cache: read %s: %w", e.key, err)
	}
	sum := crc32.Checksum(buf, castagnoli)
	failed := false
	e.c.account(e, func() int64 {
		if !e.present.has(i) || e.verified.has(i) {
			return 0
		}
		if err == nil && sum == e.crc[i] {
			e.verified.set(i)
			return 0
		}
		failed = true
		e.present.clear(i)
		e.npresent--
		delta := -int64(len(buf))
		e.bytes += delta
		e.dirty = true
		return delta
	})
	if failed {
		e.c.log.WithField("key", e.key.String()).WithField("chunk", i).Warn("cache chunk failed its checksum; refetching")
	}
	return nil
}

// startLocked registers a fetch of chunks [first, last). The caller must
// pass it to launch after unlocking e.mu. LOCKS_REQUIRED(e.mu)
func (e *Entry) startLocked(first, last int64, prefetch bool) *fetchOp {
	n := last - first
	op := &fetchOp{first: first, last: last, prefetch: prefetch, done: make(chan struct{}),
		filled: make([]int64, n), sums: make([]uint32, n)}
	for i := first; i < last; i++ {
		e.inflight[i] = op
	}
	if prefetch {
		e.prefetches++
	}
	return op
}

// launch runs ops in goroutines, each holding its own pin. The caller holds
// a pin, so the content file is open.
func (e *Entry) launch(ops []*fetchOp, fetch FetchFunc) {
	if len(ops) == 0 {
		return
	}
	c := e.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		for _, op := range ops {
			e.record(op, ErrClosed, nil)
			e.complete(op, ErrClosed)
		}
		return
	}
	e.refs += len(ops)
	c.fetches.Add(len(ops))
	c.mu.Unlock()
	for _, op := range ops {
		go e.run(op, fetch, e.open())
	}
}

// run performs op; openErr is the result of taking its file reference
// (which cannot fail while the launcher's pin holds the file open). Waiters
// are woken last, after the goroutine let go of its pin, so a reader that
// returns and releases leaves the entry truly unpinned.
func (e *Entry) run(op *fetchOp, fetch FetchFunc, openErr error) {
	defer e.c.fetches.Done()
	err := openErr
	if err == nil {
		var crcs []uint32
		crcs, err = e.fetch(op, fetch)
		if err != nil {
			e.c.log.WithError(err).WithField("key", e.key.String()).Debug("cache fetch failed")
		}
		e.record(op, err, crcs)
		e.pmu.Lock()
		due := time.Since(e.lastPersist) >= persistInterval
		e.pmu.Unlock()
		if due { // persist does nothing if no chunk landed since the last one
			if err := e.persist(); err != nil {
				e.c.log.WithError(err).Warn("cache: persist failed")
			}
		}
		e.close()
	} else {
		e.record(op, err, nil)
	}
	e.unpin()
	e.complete(op, err)
}

// fetch calls fn for op's range and returns the checksums of its chunks.
func (e *Entry) fetch(op *fetchOp, fn FetchFunc) (crcs []uint32, err error) {
	off := op.first * e.c.chunkSize
	end := min(op.last*e.c.chunkSize, e.size)
	w := &rangeWriter{e: e, op: op, f: e.f, lo: off, hi: end}
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("cache: fetch of %s panicked: %v", e.key, r)
			}
		}()
		err = fn(e.c.ctx, w, off, end-off)
	}()
	w.closed.Store(true) // a fetch that returned may not write any more
	if err != nil {
		return nil, err
	}
	if got := w.n.Load(); got < end-off {
		return nil, fmt.Errorf("cache: fetch of %s [%d,%d) wrote %d bytes", e.key, off, end, got)
	}
	// Checksum what actually landed in the file (from the page cache),
	// except chunks that landed on the way in (the op was started for
	// missing chunks only, so a present one is one of those).
	bp := e.c.bufs.Get().(*[]byte)
	defer e.c.bufs.Put(bp)
	for i := op.first; i < op.last; i++ {
		if e.rangeVerified(i, i+1) {
			crcs = append(crcs, 0) // unused: record skips present chunks
			continue
		}
		buf := (*bp)[:e.chunkLen(i)]
		if _, err := e.f.ReadAt(buf, i*e.c.chunkSize); err != nil {
			return nil, fmt.Errorf("cache: read back %s: %w", e.key, err)
		}
		crcs = append(crcs, crc32.Checksum(buf, castagnoli))
	}
	return crcs, nil
}

// track follows a write of p at off by op's fetch: chunks completed by
// bytes written in order land at once.
func (e *Entry) track(op *fetchOp, p []byte, off int64) {
	cs := e.c.chunkSize
	var done []int64
	var sums []uint32
	op.mu.Lock()
	for len(p) > 0 {
		i := off / cs
		j := i - op.first
		in := off - i*cs
		cl := e.chunkLen(i)
		l := min(int64(len(p)), cl-in)
		switch {
		case in == 0: // (re)starts the chunk, e.g. a retried range
			op.filled[j], op.sums[j] = l, crc32.Update(0, castagnoli, p[:l])
		case op.filled[j] == in:
			op.filled[j] += l
			op.sums[j] = crc32.Update(op.sums[j], castagnoli, p[:l])
		default:
			op.filled[j] = -1 // out of order: checksummed when the fetch returns
		}
		if op.filled[j] == cl { // completed by this write (again, if a retry rewrote it: land is idempotent)
			done, sums = append(done, i), append(sums, op.sums[j])
		}
		p, off = p[l:], off+l
	}
	op.mu.Unlock()
	if len(done) > 0 {
		e.land(op, done, sums)
	}
}

// land marks chunks of a running fetch present, counts them in the cache's
// usage and wakes waiting readers, all in one critical section: a reader
// that sees a chunk present sees it counted. The bytes are in the file
// already (the sidecar still lists them only after persist's fdatasync).
func (e *Entry) land(op *fetchOp, chunks []int64, sums []uint32) {
	e.c.account(e, func() (added int64) {
		for k, i := range chunks {
			added += e.settleLocked(op, i, sums[k], true)
		}
		e.broadcastLocked()
		return added
	})
}

// broadcastLocked wakes readers waiting for progress. LOCKS_REQUIRED(e.mu)
func (e *Entry) broadcastLocked() {
	close(e.progress)
	e.progress = make(chan struct{})
}

// record takes op's chunks out of flight and, if it succeeded, marks them
// present and counts them in the cache's usage in the same critical
// section (chunks that landed early were counted then).
func (e *Entry) record(op *fetchOp, err error, crcs []uint32) {
	e.c.account(e, func() (added int64) {
		for i := op.first; i < op.last; i++ {
			var sum uint32
			if err == nil {
				sum = crcs[i-op.first]
			}
			added += e.settleLocked(op, i, sum, err == nil)
		}
		if op.prefetch {
			e.prefetches--
		}
		return added
	})
}

// settleLocked takes chunk i out of op's flight (unless another fetch
// holds it now) and, if ok and it is not present yet, makes it present
// with checksum sum. It returns the bytes this added. LOCKS_REQUIRED(e.mu)
func (e *Entry) settleLocked(op *fetchOp, i int64, sum uint32, ok bool) int64 {
	if e.inflight[i] == op {
		delete(e.inflight, i)
	}
	if !ok || e.present.has(i) {
		return 0
	}
	e.present.set(i)
	e.verified.set(i)
	e.crc[i] = sum
	e.npresent++
	n := e.chunkLen(i)
	e.bytes += n
	e.dirty = true
	return n
}

// complete wakes op's waiters: those who started it and those waiting
// for progress.
func (e *Entry) complete(op *fetchOp, err error) {
	op.err = err
	close(op.done)
	e.mu.Lock()
	e.broadcastLocked()
	e.mu.Unlock()
}

// open takes a file reference (opening the content file for the first one).
// The caller holds a pin.
func (e *Entry) open() error {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.openers > 0 {
		e.openers++
		return nil
	}
	p := e.c.dataPath(e.name)
	if e.create {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if err := f.Truncate(e.size); err != nil {
			f.Close()
			os.Remove(p)
			return err
		}
		e.create = false
		e.f, e.openers = f, 1
		return nil
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if fi.Size() != e.size { // changed behind our back: trust nothing in it
		if err := f.Truncate(e.size); err != nil {
			f.Close()
			return err
		}
		e.c.account(e, func() int64 {
			lost := e.bytes
			e.present, e.verified = newBitset(e.nchunks), newBitset(e.nchunks)
			e.npresent, e.bytes, e.dirty = 0, 0, true
			return -lost
		})
	}
	e.f, e.openers = f, 1
	return nil
}

// close drops a file reference; the last one persists and closes the file.
func (e *Entry) close() {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.openers--
	if e.openers > 0 {
		return
	}
	if err := e.persist(); err != nil {
		e.c.log.WithError(err).Warn("cache: persist failed")
	}
	e.f.Close()
	e.f = nil
}

// unpin drops a reference; the last one puts e under the LRU (or removes
// its files if it was dropped meanwhile).
func (e *Entry) unpin() {
	c := e.c
	var victims []*Entry
	c.mu.Lock()
	e.refs--
	if e.refs == 0 {
		if e.dropped {
			victims = append(victims, e)
		} else {
			c.lru.Add(e.key, e)
			victims = c.evictLocked()
		}
	}
	c.mu.Unlock()
	destroyAll(victims)
}

// destroy removes e's files (sidecar first, so a crash in between leaves
// an orphan content file, which Open deletes). e is dropped and unpinned.
func (e *Entry) destroy() {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	if e.destroyed {
		return
	}
	e.destroyed = true
	e.c.removeFile(e.c.metaPath(e.name))
	e.c.removeFile(e.c.dataPath(e.name))
}

// persist writes the sidecar if present chunks changed since the last one.
// The caller holds a file reference. See the package comment for why the
// order snapshot → fdatasync(content) → write+fsync+rename(sidecar) makes
// every recorded chunk durable before it is recorded.
func (e *Entry) persist() error { return e.persistAs(true) }

// persistAs is persist; with durable false nothing is synced (Adopt: the
// content is already durable, and a sidecar lost or torn in a power cut
// only drops the entry: it is checksummed).
func (e *Entry) persistAs(durable bool) error {
	e.pmu.Lock()
	defer e.pmu.Unlock()
	e.c.mu.Lock()
	dropped := e.dropped
	e.c.mu.Unlock()
	if e.destroyed || dropped {
		return nil
	}
	e.mu.Lock()
	if !e.dirty {
		e.mu.Unlock()
		return nil
	}
	b := encodeMeta(meta{key: e.key, size: e.size, chunkSize: e.c.chunkSize, present: e.present.clone(), crc: append([]uint32(nil), e.crc...)})
	e.dirty = false
	e.mu.Unlock()
	var err error
	if durable {
		err = unix.Fdatasync(int(e.f.Fd()))
	}
	if err == nil {
		err = writeFileAtomic(e.c.metaPath(e.name), b, durable)
	}
	if err != nil {
		e.mu.Lock()
		e.dirty = true
		e.mu.Unlock()
		return fmt.Errorf("cache: persist %s: %w", e.key, err)
	}
	e.lastPersist = time.Now()
	return nil
}

// rangeWriter is the io.WriterAt handed to a FetchFunc: it only accepts
// writes inside the fetched range, and none after the fetch returned.
type rangeWriter struct {
	e      *Entry
	op     *fetchOp
	f      *os.File
	lo, hi int64
	n      atomic.Int64
	closed atomic.Bool
}

func (w *rangeWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.closed.Load() {
		return 0, errors.New("cache: write after fetch returned")
	}
	if off < w.lo || off+int64(len(p)) > w.hi {
		return 0, fmt.Errorf("cache: write [%d,%d) outside fetched range [%d,%d)", off, off+int64(len(p)), w.lo, w.hi)
	}
	n, err := w.f.WriteAt(p, off)
	w.n.Add(int64(n))
	if n > 0 {
		w.e.track(w.op, p[:n], off)
	}
	return n, err
}

// copyFile copies [0, n) of src into dst at offset 0, in the kernel where it can.
func copyFile(dst, src *os.File, n int64) error {
	var roff, woff int64
	for roff < n {
		m, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(n-roff, 1<<30)), 0)
		if err != nil || m == 0 {
			break // unsupported here (EXDEV, ENOSYS, EINVAL...): finish in user space
		}
	}
	if roff < n {
		_, err := io.Copy(io.NewOffsetWriter(dst, woff), io.NewSectionReader(src, roff, n-roff))
		return err
	}
	return nil
}

package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"evofs/cache"
	"evofs/remote"
	"evofs/writeback"
)

// Read-ahead window bounds for sequential reads of clean content.
const (
	minReadAhead = 1 << 20
	maxReadAhead = 64 << 20
)

// metaTimeout bounds a metadata call made on behalf of a kernel request.
const metaTimeout = 2 * time.Minute

// Handle is an open file. A read handle opened on clean content keeps the
// version it opened, unless that version was replaced by our own publish.
type Handle struct {
	fs    *FS
	n     *Node
	write bool

	key        cache.Key // clean version opened (read-only handles); zero for writers
	pageCached bool      // the kernel keeps what this handle reads (not DirectIO)

	mu       sync.Mutex // guards the fields below
	entry    *cache.Entry
	blob     *remote.Blob
	nextOff  int64 // where a sequential read continues
	window   int64 // read-ahead window; grows on sequential reads, resets on random ones
	ahead    int64 // end of what read-ahead has asked for
	released bool
}

// Node returns the handle's node.
func (h *Handle) Node() *Node { return h.n }

// OpenMode tells the kernel how to cache an open file's pages.
type OpenMode struct {
	// KeepCache: the version did not change since the last open, so cached
	// pages are still valid.
	KeepCache bool
	// DirectIO: readers of an older version are still open and own the page
	// cache (they keep the version they opened), so this handle bypasses it.
	//
	// (FUSE passthrough of fully cached versions was tried and removed: the
	// kernel refuses to mix passthrough and page-cached opens of one inode,
	// and go-fuse applies an inode's backing file to every later open.)
	DirectIO bool
}

// Open opens a file node.
func (f *FS) Open(ctx context.Context, n *Node, flags int) (h *Handle, mode OpenMode, err error) {
	if n.dir {
		return nil, mode, ErrIsDir
	}
	if n.kind != "" {
		return nil, mode, ErrInvalid // the kernel opens FIFOs and devices itself
	}
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	trunc := flags&syscall.O_TRUNC != 0
	if (write || trunc) && (f.cfg.ReadOnly || n.view.Load() != nil) {
		return nil, mode, ErrReadOnly
	}
	h = &Handle{fs: f, n: n, write: write}
	if write || trunc {
		n.io.Lock()
		n.stream.Break("opened again for writing") // a second writer, or a new start
		n.stream = nil
		err = f.makeLocalIO(ctx, n, trunc)
		if err == nil {
			f.mu.Lock()
			n.handles++
			if write {
				n.writers++
			}
			f.mu.Unlock()
		}
		if err == nil && trunc && write {
			f.startStreamIO(n)
		}
		if err == nil && trunc && !write {
			err = f.handOverIO(n)
		}
		n.io.Unlock()
		return h, mode, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n.handles++
	if n.local == nil && n.fileID != uuid.Nil {
		for v, c := range n.readers {
			if c > 0 && v != n.version {
				mode.DirectIO = true
			}
		}
		mode.KeepCache = n.openVer == n.version && !mode.DirectIO
		if !mode.DirectIO {
			n.openVer = n.version
			h.pageCached = true
		}
		h.key = cache.Key{FileID: n.fileID, Version: string(n.version)}
		if n.readers == nil {
			n.readers = map[remote.VersionID]int{}
		}
		n.readers[n.version]++
	}
	return h, mode, nil
}

// Create makes a new empty file and opens it. If the name exists (in
// another case, or created meanwhile) it opens that file instead.
func (f *FS) Create(ctx context.Context, dir *Node, name string, flags int) (*Node, *Handle, OpenMode, error) {
	return f.CreateAs(ctx, dir, name, flags, f.defaultNewAttr(false))
}

// CreateAs is Create with the new file's mode and owner.
func (f *FS) CreateAs(ctx context.Context, dir *Node, name string, flags int, a NewAttr) (*Node, *Handle, OpenMode, error) {
	if f.cfg.ReadOnly || dir.view.Load() != nil {
		return nil, nil, OpenMode{}, ErrReadOnly
	}
	if err := checkName(name); err != nil {
		return nil, nil, OpenMode{}, err
	}
	f.mu.Lock()
	if dir == f.root && f.controlNameLocked(name) {
		f.mu.Unlock()
		return nil, nil, OpenMode{}, ErrExist
	}
	if cur := dir.children[remote.FoldName(name)]; cur != nil {
		f.mu.Unlock()
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, OpenMode{}, ErrExist
		}
		h, mode, err := f.Open(ctx, cur, flags)
		return cur, h, mode, err
	}
	if err := checkPath(f.pathLocked(dir) + "/" + name); err != nil {
		f.mu.Unlock()
		return nil, nil, OpenMode{}, err
	}
	f.mu.Unlock()
	file, err := f.cache.NewStaging()
	if err != nil {
		return nil, nil, OpenMode{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.newNodeLocked(false)
	n.key = uuid.NewString()
	n.local = &staging{path: file.Name(), f: file, dirty: true}
	n.writers, n.handles = 1, 1
	f.setNewAttrLocked(dir, n, a)
	f.attachLocked(dir, name, n)
	f.byKey[n.key] = n
	f.claimParkedLocked(n)
	f.gen++
	n.touched = f.gen
	dir.mtime = n.mtime
	dir.ctime = n.mtime
	f.saveMetaLocked(n)
	f.mu.Unlock()
	n.io.Lock()
	f.startStreamIO(n)
	n.io.Unlock()
	f.mu.Lock()
	return n, &Handle{fs: f, n: n, write: true}, OpenMode{}, nil
}

// startStreamIO starts the streaming publish of n, which its only writer
// is about to write from offset 0 (a new file, or opened with O_TRUNC).
// Caller holds n.io.
func (f *FS) startStreamIO(n *Node) {
	f.mu.Lock()
	loc := n.local
	if loc == nil || n.writers != 1 || n.removed || n.size != 0 || f.isLocalOnly(n.name) {
		f.mu.Unlock()
		return
	}
	job := f.jobLocked(n, loc)
	f.mu.Unlock()
	n.stream = f.queue.Stream(job)
}

// jobLocked is the publish job of n's local content loc.
func (f *FS) jobLocked(n *Node, loc *staging) writeback.Job {
	return writeback.Job{
		Key: n.key, Path: f.pathLocked(n), FileID: n.fileID, BaseVersion: n.version,
		Staging: loc.path, DeleteAfter: n.deleteNext, DeleteAfterVersion: n.deleteVer,
	}
}

// claimParkedLocked gives a new node at path P the identity of a file that
// was renamed away from P to a local-only name (editor backup pattern), so
// that publishing it adds a version to that file.
func (f *FS) claimParkedLocked(n *Node) {
	if len(f.parked) == 0 {
		return
	}
	p := remote.FoldPath(f.pathLocked(n))
	for m := range f.parked {
		if m.removed || m.fileID == uuid.Nil || f.byID[m.fileID] != m || remote.FoldPath(f.pathLocked(m)) == remote.FoldPath(m.remotePath) {
			delete(f.parked, m) // not parked any more
			continue
		}
		if m == n || remote.FoldPath(m.remotePath) != p {
			continue
		}
		id := m.fileID
		n.fileID, n.version, n.remotePath = id, m.version, m.remotePath
		f.byID[id] = n
		m.fileID, m.version, m.remotePath = uuid.Nil, "", ""
		delete(f.parked, m)
		return
	}
}

// makeLocalIO gives n owned (writable) local content. Caller holds n.io.
func (f *FS) makeLocalIO(ctx context.Context, n *Node, trunc bool) error {
	f.mu.Lock()
	loc, removed := n.local, n.removed
	f.mu.Unlock()
	if removed && loc == nil {
		return ErrNotExist
	}
	if loc != nil {
		if err := f.reclaimIO(n); err != nil {
			return err
		}
		if trunc {
			f.mu.Lock()
			loc = n.local
			f.mu.Unlock()
			if err := loc.f.Truncate(0); err != nil {
				return err
			}
			f.markWrittenLocked(n, 0, true)
		}
		return nil
	}
	file, err := f.cache.NewStaging()
	if err != nil {
		return err
	}
	f.mu.Lock()
	size := n.size
	f.mu.Unlock()
	if !trunc && size > 0 {
		if err := f.copyClean(ctx, n, file); err != nil {
			file.Close()
			os.Remove(file.Name())
			return err
		}
	}
	f.mu.Lock()
	n.local = &staging{path: file.Name(), f: file, dirty: trunc && size > 0}
	if trunc {
		n.size = 0
	}
	f.mu.Unlock()
	return nil
}

// copyClean copies n's clean content (fetched through the cache) into dst.
func (f *FS) copyClean(ctx context.Context, n *Node, dst *os.File) error {
	f.mu.Lock()
	key := cache.Key{FileID: n.fileID, Version: string(n.version)}
	size := n.size
	blob := n.blob
	f.mu.Unlock()
	e, err := f.cache.Acquire(key, size)
	if err != nil {
		return err
	}
	defer e.Release()
	bctx, cancel := f.bg(24 * time.Hour)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	var mu sync.Mutex
	return e.CopyTo(bctx, dst, f.fetcher(n, key, &mu, &blob))
}

// reclaimIO turns queued local content back into owned content: take the
// job back if it has not started, otherwise continue on a private copy
// (the running upload keeps reading the old file). Caller holds n.io.
func (f *FS) reclaimIO(n *Node) error {
	f.mu.Lock()
	loc := n.local
	f.mu.Unlock()
	if loc == nil || !loc.queued {
		return nil
	}
	if f.takeBackIO(n, loc) {
		return nil
	}
	file, err := f.cache.NewStaging()
	if err != nil {
		return err
	}
	if err := copyFile(file, loc.f); err != nil {
		file.Close()
		os.Remove(file.Name())
		return err
	}
	f.mu.Lock()
	old := n.local
	n.local = &staging{path: file.Name(), f: file}
	f.mu.Unlock()
	old.f.Close()
	return nil
}

// takeBackIO takes n's queued publish back from writeback if it has not
// started, so its staging file may be written again. The content is still
// unpublished, hence dirty: the next close queues it again. Caller holds n.io.
func (f *FS) takeBackIO(n *Node, loc *staging) bool {
	if _, ok := f.queue.Take(n.key); !ok {
		return false
	}
	f.mu.Lock()
	loc.queued = false
	loc.dirty = true
	f.mu.Unlock()
	return true
}

// copyFile copies src into dst from offset 0 (in-kernel where possible).
func copyFile(dst, src *os.File) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(dst, src)
	return err
}

// markWrittenLocked records a local change of n's content (takes FS.mu).
func (f *FS) markWrittenLocked(n *Node, end int64, truncate bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.local != nil {
		n.local.dirty = true
	}
	if truncate || end > n.size {
		n.size = end
	}
	n.mtime = time.Now()
	n.ctime = n.mtime
	n.failed = ""
	f.gen++
	n.touched = f.gen
}

// handOverIO hands n's dirty local content to writeback (fsync + journal).
// Caller holds n.io. Local-only files stay local.
func (f *FS) handOverIO(n *Node) error {
	f.mu.Lock()
	loc := n.local
	if loc == nil || !loc.dirty || n.removed || f.isLocalOnly(n.name) {
		parked := loc != nil && loc.dirty && !n.removed && f.isLocalOnly(n.name)
		f.mu.Unlock() // local-only content stays dirty: it publishes if renamed to a normal name
		if parked {
			f.queue.Release(n.key) // a publish taken back before it was parked is not resumed
		}
		return nil
	}
	job := f.jobLocked(n, loc)
	f.mu.Unlock()
	if err := f.queue.Enqueue(job); err != nil { // fsyncs the staged bytes, then journals
		return fmt.Errorf("queueing %s for publishing: %w", job.Path, err)
	}
	n.stream = nil // handed to the job, if any
	f.mu.Lock()
	loc.queued = true
	loc.dirty = false
	f.mu.Unlock()
	return nil
}

// fetcher returns the cache fill function for version key of n. The
// download URL comes from *blob when it names that version, else from one
// get-by-id (kept in *blob for the next miss). mu guards *blob; fetches of
// one handle run concurrently, so they must share it.
func (f *FS) fetcher(n *Node, key cache.Key, mu *sync.Mutex, blob **remote.Blob) cache.FetchFunc {
	return func(ctx context.Context, w io.WriterAt, off, length int64) error {
		mu.Lock()
		b := *blob
		if b == nil || b.FileID != key.FileID || string(b.VersionID) != key.Version {
			m, err := f.client.GetByID(ctx, key.FileID, remote.GetOptions{VersionID: remote.VersionID(key.Version), Deleted: true})
			if err != nil {
				mu.Unlock()
				return err
			}
			b = f.client.NewBlob(m)
			*blob = b
			f.mu.Lock()
			if n.fileID == key.FileID && string(n.version) == key.Version {
				n.blob = b
			}
			f.mu.Unlock()
		}
		mu.Unlock()
		return f.client.Download(ctx, b, w, off, length, nil)
	}
}

// Read reads at off. Local content is read from the staging file; clean
// content through the cache with adaptive read-ahead.
func (h *Handle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	f, n := h.fs, h.n
	n.io.RLock()
	f.mu.Lock()
	loc := n.local
	key := cache.Key{FileID: n.fileID, Version: string(n.version)}
	size := n.size
	blob := n.blob
	f.mu.Unlock()
	if loc != nil {
		nr, err := loc.f.ReadAt(p, off)
		n.io.RUnlock()
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return nr, err
	}
	n.io.RUnlock()

	if h.key.FileID != uuid.Nil && h.key != key && !h.followsLocal(key) {
		key, size = h.key, -1 // keep the version this handle opened
	}
	h.mu.Lock()
	if h.entry == nil || h.entry.Key() != key {
		if key.FileID == uuid.Nil {
			h.mu.Unlock()
			return 0, nil // an empty file that was never published
		}
		if size < 0 {
			if size, blob = f.versionSize(h, key); size < 0 {
				h.mu.Unlock()
				return 0, syscall.ESTALE
			}
		}
		e, err := f.cache.Acquire(key, size)
		if err != nil {
			h.mu.Unlock()
			return 0, err
		}
		if h.entry != nil {
			h.entry.Release()
		}
		h.entry, h.blob, h.window = e, blob, 0
	}
	e := h.entry
	ekey := e.Key()
	// Read ahead in big steps: ask for the next window once less than a
	// window of what was asked for is left, so the service sees few large,
	// parallel ranged downloads rather than one per kernel read, and the
	// next window is already coming while the reader follows the current
	// one chunk by chunk.
	// The kernel issues read-ahead requests concurrently, so they arrive a
	// little out of order: a read near where the stream is counts as sequential.
	var aheadFrom, aheadLen int64
	sequential := false
	if near := max(h.window, minReadAhead); off >= h.nextOff-near && off <= h.nextOff+near {
		sequential = true
		h.window = min(max(2*h.window, minReadAhead), maxReadAhead)
		end := off + int64(len(p))
		if h.ahead < end {
			h.ahead = end
		}
		if h.ahead-end < h.window {
			aheadFrom, aheadLen = h.ahead, h.window
			h.ahead += h.window
		}
		h.nextOff = max(h.nextOff, end)
	} else {
		h.window, h.ahead = 0, 0
		h.nextOff = off + int64(len(p))
	}
	h.mu.Unlock()

	var fetch cache.FetchFunc
	if aheadLen > 0 && aheadFrom < e.Size() {
		fetch = f.fetcher(n, ekey, &h.mu, &h.blob)
		if covered := e.Prefetch(aheadFrom, aheadLen, fetch); covered < min(aheadFrom+aheadLen, e.Size()) {
			// Too many prefetches running: ask for the rest at a later
			// read rather than leave a hole the reader would fill 1 MiB
			// at a time.
			h.mu.Lock()
			h.ahead = min(h.ahead, covered)
			h.mu.Unlock()
		}
	}
	// Cached bytes need no context, timer or fetch function.
	nr, ok, err := e.ReadPresent(p, off)
	if !ok {
		if fetch == nil {
			fetch = f.fetcher(n, ekey, &h.mu, &h.blob)
		}
		bctx, cancel := f.bg(metaTimeout)
		defer cancel()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		nr, err = e.ReadAt(bctx, p, off, fetch)
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && sequential && h.pageCached {
		e.DropBehind(off + int64(nr))
	}
	return nr, err
}

// versionSize returns the size of a version a handle opened that is no
// longer the node's current one (the entry is normally still pinned by
// the handle; this path serves a handle whose first read comes after a
// remote change).
func (f *FS) versionSize(h *Handle, key cache.Key) (int64, *remote.Blob) {
	if h.entry != nil && h.entry.Key() == key {
		return h.entry.Size(), h.blob
	}
	ctx, cancel := f.bg(metaTimeout)
	defer cancel()
	m, err := f.client.GetByID(ctx, key.FileID, remote.GetOptions{VersionID: remote.VersionID(key.Version), Deleted: true})
	if err != nil {
		f.log.WithError(err).WithField("file_id", key.FileID).Warn("the version this handle opened is gone")
		return -1, nil
	}
	return m.Size, f.client.NewBlob(m)
}

// followsLocal reports whether a handle should move to version key: only
// when our own publish produced it (a remote change keeps the opened version).
func (h *Handle) followsLocal(key cache.Key) bool {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	return h.n.localVer == remote.VersionID(key.Version)
}

// Write writes p at off into the staging copy.
func (h *Handle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	if !h.write {
		return 0, syscall.EBADF
	}
	f, n := h.fs, h.n
	n.io.Lock()
	defer n.io.Unlock()
	if err := f.makeLocalIO(ctx, n, false); err != nil {
		return 0, err
	}
	f.mu.Lock()
	loc := n.local
	f.mu.Unlock()
	n.stream.BeginWrite(off, int64(len(p)))
	nw, err := loc.f.WriteAt(p, off)
	n.stream.EndWrite(off, int64(nw))
	if nw > 0 {
		f.markWrittenLocked(n, off+int64(nw), false)
	}
	return nw, err
}

// Truncate sets the size of n (h may be nil for a path truncate).
func (f *FS) Truncate(ctx context.Context, n *Node, h *Handle, size int64) error {
	if n.dir {
		return ErrIsDir
	}
	if f.cfg.ReadOnly || n.view.Load() != nil {
		return ErrReadOnly
	}
	n.io.Lock()
	defer n.io.Unlock()
	n.stream.Break("truncated")
	n.stream = nil
	if err := f.makeLocalIO(ctx, n, size == 0); err != nil {
		return err
	}
	f.mu.Lock()
	loc := n.local
	writers := n.writers
	f.mu.Unlock()
	if err := loc.f.Truncate(size); err != nil {
		return err
	}
	f.markWrittenLocked(n, size, true)
	if writers == 0 {
		return f.handOverIO(n) // no close will follow
	}
	if size == 0 {
		f.startStreamIO(n) // emptied by its only writer: a new sequential write may follow
	}
	return nil
}

// Flush runs on every close of a descriptor: dirty content is handed to
// writeback. It may run several times per handle.
func (h *Handle) Flush(ctx context.Context) error {
	if !h.write {
		return nil
	}
	f, n := h.fs, h.n
	n.io.Lock()
	err := f.handOverIO(n)
	n.io.Unlock()
	f.mu.Lock()
	f.saveMetaLocked(n) // the edit's times
	f.mu.Unlock()
	if err != nil {
		f.log.WithError(err).WithField("path", f.Path(n)).Error("close: cannot queue the file for publishing; it stays in the local cache")
		return err
	}
	if f.cfg.SyncClose {
		return h.waitPublished(ctx)
	}
	return nil
}

// Fsync blocks until the file's content is published.
func (h *Handle) Fsync(ctx context.Context) error {
	if !h.write {
		return nil
	}
	if err := h.Flush(ctx); err != nil {
		return err
	}
	return h.waitPublished(ctx)
}

func (h *Handle) waitPublished(ctx context.Context) error {
	f, n := h.fs, h.n
	f.mu.Lock()
	key, local := n.key, f.isLocalOnly(n.name)
	f.mu.Unlock()
	if local {
		return nil
	}
	if err := f.queue.Wait(ctx, key); err != nil {
		f.log.WithError(err).WithField("path", f.Path(n)).Error("publish failed; the data stays in the local cache")
		return err
	}
	return nil
}

// Release is the last close of a handle.
func (h *Handle) Release() {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return
	}
	h.released = true
	if h.entry != nil {
		h.entry.Release()
		h.entry = nil
	}
	h.mu.Unlock()
	f, n := h.fs, h.n
	n.io.Lock()
	defer n.io.Unlock()
	if h.write {
		if err := f.handOverIO(n); err != nil {
			f.log.WithError(err).WithField("path", f.Path(n)).Error("release: cannot queue the file for publishing; it stays in the local cache")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.key.FileID != uuid.Nil {
		if n.readers[remote.VersionID(h.key.Version)]--; n.readers[remote.VersionID(h.key.Version)] <= 0 {
			delete(n.readers, remote.VersionID(h.key.Version))
		}
	}
	n.handles--
	if h.write {
		n.writers--
	}
	if n.writers > 0 || n.local == nil {
		return
	}
	loc := n.local
	switch {
	case n.removed:
		if n.handles == 0 { // the last user of an unlinked file
			loc.f.Close()
			if !loc.queued {
				os.Remove(loc.path)
			}
			n.local = nil
		}
	case loc.dirty || f.isLocalOnly(n.name):
		// keep: failed to queue, or local-only content
	case !loc.queued && n.fileID != uuid.Nil:
		// opened for writing but never written: the cache has the bytes
		loc.f.Close()
		os.Remove(loc.path)
		n.local = nil
	case loc.queued:
		if _, pending := f.queue.Pending(n.key); !pending {
			if n.staleBase {
				// our content went to a conflict copy: show it from a private
				// copy until the listing brings the service's version
				f.keepPrivateCopyLocked(n)
				n.staleBase = false
				f.kickPoll()
			} else {
				f.dropLocalLocked(n) // published while we still had it open
			}
		}
	}
}

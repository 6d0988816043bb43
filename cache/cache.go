// Package cache is evofs's on-disk content store.
//
// It holds two kinds of files under Config.Dir:
//   - content: clean, sparse copies of remote file versions, keyed by
//     (file id, version id), with a record of which byte ranges are present;
//     bounded by MaxBytes with LRU eviction; persisted across restarts.
//   - staging: private working copies that writers modify; never evicted,
//     owned by whoever created them until handed to Adopt or removed.
//
// Invariants: a byte range is recorded as present only after its bytes are
// written to the content file, so a crash never serves torn data; an entry is
// never evicted while Acquired (pinned); files are 0600 and directories 0700.
// The package imports no other evofs package: misses are filled by a
// caller-supplied FetchFunc.
//
// # Layout
//
//	Dir/content/<name>.data   sparse content file, exactly Size bytes long
//	Dir/content/<name>.meta   sidecar: key, size, chunk size, present-chunk
//	                          bitmap, CRC-32C of every present chunk
//	Dir/content/*.tmp         sidecars being written (removed by Open)
//	Dir/staging/stg-*         staging files (never touched by Open/eviction)
//
// <name> is random and unique per entry instance, so an entry being
// discarded and its replacement for the same key never share files. The key
// lives inside the sidecar; Open drops every key found more than once.
//
// # Presence and crash safety
//
// Presence is tracked per chunk (ChunkSize bytes, the last chunk clipped).
// In memory a chunk becomes present as soon as its last byte is written, if
// the fetch wrote it in order from its start (its CRC-32C is computed on the
// way), else when the FetchFunc that wrote it returned successfully (its
// CRC-32C is then read back): every later read in this process goes through
// the same page cache, so it sees those bytes. The sidecar on disk is written
// lazily (after a fetch at most every persistInterval, on the last Release,
// on Close) and only ever lists chunks whose bytes were made durable first:
// persist snapshots the bitmap, fdatasyncs the content file, then writes the
// sidecar to a temp file, fsyncs it, renames it over the old one and fsyncs
// the directory (Adopt syncs nothing: its caller made the content durable,
// and a lost sidecar only drops the entry). So after kill -9 or power loss the sidecar may miss recent
// chunks (they are refetched) but never lists one whose bytes are torn. As a
// second line of defence each recorded chunk carries a CRC-32C; chunks loaded
// from disk are verified on their first read and refetched on mismatch, and
// a content file of the wrong length drops the entry.
//
// # Fetches
//
// A missing range is widened to whole chunks; adjacent missing chunks not
// already in flight become one FetchFunc call. Each chunk in flight maps to
// its fetchOp. A reader waits for the fetches it started to end; for
// chunks in others' fetches (often a big read-ahead) it waits on the
// entry's progress channel, closed whenever chunks land or a fetch ends,
// and scans again, so it is served as soon as its own chunks are in.
// Fetches run on the cache's own context (cancelled by Close), never on a
// reader's: a reader whose ctx ends stops waiting, the fetch carries on for
// the others. A fetch goroutine holds its own pin on the entry.
//
// # Locks
//
// Lock order: Entry.fmu → Entry.pmu → Cache.mu → Entry.mu. Cache.mu guards
// the index (entries, lru, bytes, closed) and each entry's refs, dropped and
// counted. Entry.mu guards the bitmaps and in-flight map. Entry.fmu guards
// opening/closing the content file; Entry.pmu serialises sidecar writes and
// file removal. A change to an entry's present bytes and the matching change
// to the cache's total are made under both Cache.mu and Entry.mu (account),
// so no one observes one without the other. No lock is held across a
// FetchFunc call or a pread. The LRU
// (simplelru, no eviction callback) is only touched under Cache.mu and holds
// exactly the unpinned live entries.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/sirupsen/logrus"
)

// Key identifies one immutable version of a remote file.
type Key struct {
	FileID  uuid.UUID
	Version string
}

func (k Key) String() string { return k.FileID.String() + "@" + k.Version }

// FetchFunc writes bytes [off, off+n) of the keyed version into w at the same
// offsets. It must write all of them or return an error.
type FetchFunc func(ctx context.Context, w io.WriterAt, off, n int64) error

// Config configures a Cache.
type Config struct {
	Dir       string // required; created 0700 if missing
	MaxBytes  int64  // budget for content (not staging); default 10 GiB
	ChunkSize int64  // fetch granularity, misses are widened to whole chunks; default 1 MiB
	Logger    *logrus.Entry
}

const (
	defaultMaxBytes  = 10 << 30
	defaultChunkSize = 1 << 20
	// maxPrefetch bounds concurrent background prefetch fetches per entry;
	// further Prefetch requests are dropped while it is reached.
	maxPrefetch = 4
)

// ErrClosed is returned by operations on a closed Cache.
var ErrClosed = errors.New("cache: closed")

// Cache is safe for concurrent use.
type Cache struct {
	// Constant after Open.
	dir, contentDir, stagingDir string
	maxBytes, chunkSize         int64
	log                         *logrus.Entry
	ctx                         context.Context // fetch context; cancelled by Close
	cancel                      context.CancelFunc
	stats                       readStats      // Usage's counters
	fetches                     sync.WaitGroup // running fetch goroutines
	bufs                        sync.Pool      // *[]byte of chunkSize, for checksums

	// testWaitHook, if set, is called when a reader starts waiting on a
	// fetch it did not start (tests use it to synchronise without sleeping).
	testWaitHook func()

	mu      sync.Mutex
	entries map[Key]*Entry              // GUARDED_BY(mu): live entries
	lru     *simplelru.LRU[Key, *Entry] // GUARDED_BY(mu): live entries with refs == 0
	bytes   int64                       // GUARDED_BY(mu): sum of counted over live entries
	closed  bool                        // GUARDED_BY(mu)
}

// Usage is a snapshot of the cache's size.
type Usage struct {
	Bytes    int64 // bytes of content present (allocated ranges)
	MaxBytes int64
	Entries  int
	Pinned   int
	Staging  int64 // bytes in staging files

	// Since Open: reads served from present chunks (hits) or that had to
	// fetch (misses), with their bytes; entries and bytes evicted.
	Hits, Misses            int64
	HitBytes, MissBytes     int64
	Evictions, EvictedBytes int64
}

// readStats are the counters of Usage's "since Open" part (atomics: read
// paths update them without any lock).
type readStats struct {
	hits, misses, hitBytes, missBytes atomic.Int64
	evictions, evictedBytes           atomic.Int64
}

// countRead records one read of n bytes as a hit or a miss.
func (r *readStats) countRead(hit bool, n int) {
	if hit {
		r.hits.Add(1)
		r.hitBytes.Add(int64(n))
	} else {
		r.misses.Add(1)
		r.missBytes.Add(int64(n))
	}
}

// Open opens (or creates) the cache in cfg.Dir and reloads its index,
// dropping entries whose files are missing or inconsistent.
func Open(cfg Config) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: Config.Dir is required")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = defaultMaxBytes
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = defaultChunkSize
	}
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Logger = logrus.NewEntry(l)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		dir:        dir,
		contentDir: filepath.Join(dir, "content"),
		stagingDir: filepath.Join(dir, "staging"),
		maxBytes:   cfg.MaxBytes,
		chunkSize:  cfg.ChunkSize,
		log:        cfg.Logger.WithField("component", "cache"),
		entries:    make(map[Key]*Entry),
	}
	c.bufs.New = func() any { b := make([]byte, c.chunkSize); return &b }
	c.lru, err = simplelru.NewLRU[Key, *Entry](math.MaxInt, nil)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{c.dir, c.contentDir, c.stagingDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// load rebuilds the index from content/. Anything it cannot trust is deleted.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.contentDir)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	metas, datas := map[string]bool{}, map[string]bool{}
	for _, de := range des {
		n := de.Name()
		base, ext, _ := strings.Cut(n, ".")
		switch {
		case ext == "meta" && validName(base) && de.Type().IsRegular():
			metas[base] = true
		case ext == "data" && validName(base) && de.Type().IsRegular():
			datas[base] = true
		default: // temp files and anything else we did not leave there
			c.removeFile(filepath.Join(c.contentDir, n))
		}
	}
	type cand struct {
		e     *Entry
		mtime int64
	}
	byKey := map[Key][]cand{}
	for base := range metas {
		e, mtime, err := c.loadEntry(base, datas[base])
		if err != nil {
			c.log.WithError(err).WithField("entry", base).Info("dropping cache entry")
			c.removeFile(c.metaPath(base))
			c.removeFile(c.dataPath(base))
			continue
		}
		byKey[e.key] = append(byKey[e.key], cand{e, mtime})
	}
	for base := range datas {
		if !metas[base] {
			c.removeFile(c.dataPath(base))
		}
	}
	var all []cand
	for k, cs := range byKey {
		if len(cs) > 1 { // a crash while replacing an entry: trust neither
			c.log.WithField("key", k.String()).Info("dropping duplicate cache entries")
			for _, cd := range cs {
				c.removeFile(c.metaPath(cd.e.name))
				c.removeFile(c.dataPath(cd.e.name))
			}
			continue
		}
		all = append(all, cs[0])
	}
	// Oldest sidecar first, so the most recently written ends up most recently used.
	sort.Slice(all, func(i, j int) bool { return all[i].mtime < all[j].mtime })
	c.mu.Lock()
	for _, cd := range all {
		e := cd.e
		c.entries[e.key] = e
		c.lru.Add(e.key, e)
		e.counted = e.bytes
		c.bytes += e.bytes
	}
	victims := c.evictLocked()
	c.mu.Unlock()
	destroyAll(victims)
	return nil
}

func (c *Cache) loadEntry(base string, haveData bool) (*Entry, int64, error) {
	if !haveData {
		return nil, 0, errors.New("content file missing")
	}
	mp := c.metaPath(base)
	fi, err := os.Stat(mp)
	if err != nil {
		return nil, 0, err
	}
	b, err := os.ReadFile(mp)
	if err != nil {
		return nil, 0, err
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, 0, err
	}
	if m.chunkSize != c.chunkSize {
		return nil, 0, fmt.Errorf("chunk size %d, want %d", m.chunkSize, c.chunkSize)
	}
	di, err := os.Lstat(c.dataPath(base))
	if err != nil {
		return nil, 0, err
	}
	if !di.Mode().IsRegular() || di.Size() != m.size {
		return nil, 0, fmt.Errorf("content file is %d bytes, want %d", di.Size(), m.size)
	}
	e := newEntry(c, m.key, m.size, base, false)
	e.present, e.crc = m.present, m.crc
	for i := int64(0); i < e.nchunks; i++ {
		if e.present.has(i) {
			e.npresent++
			e.bytes += e.chunkLen(i)
		}
	}
	return e, fi.ModTime().UnixNano(), nil
}

// Close stops background fetches and persists the index.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	live := make([]*Entry, 0, len(c.entries))
	for _, e := range c.entries {
		live = append(live, e)
	}
	c.mu.Unlock()
	c.cancel()
	c.fetches.Wait()
	// Unpinned entries were persisted by their last Release; pinned ones
	// may hold chunks fetched since.
	var errs []error
	for _, e := range live {
		e.fmu.Lock()
		if e.openers > 0 {
			errs = append(errs, e.persist())
		}
		e.fmu.Unlock()
	}
	return errors.Join(errs...)
}

// Dir returns the cache root.
func (c *Cache) Dir() string { return c.dir }

// Acquire pins the entry for k (creating an empty sparse one of the given
// size if absent; an existing one whose size differs is discarded and
// recreated). The entry is not evicted until Release.
func (c *Cache) Acquire(k Key, size int64) (*Entry, error) {
	if size < 0 {
		return nil, fmt.Errorf("cache: negative size %d", size)
	}
	for attempt := 0; ; attempt++ {
		var victims []*Entry
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		e := c.entries[k]
		if e != nil && e.size != size {
			c.dropLocked(e)
			if e.refs == 0 {
				victims = append(victims, e)
			}
			e = nil
		}
		if e == nil {
			e = newEntry(c, k, size, newName(), true)
			c.entries[k] = e
		}
		c.pinLocked(e)
		c.mu.Unlock()
		destroyAll(victims)

		err := e.open()
		if err == nil {
			return e, nil
		}
		// The entry's files are unusable: drop it and start afresh once.
		c.log.WithError(err).WithField("key", k.String()).Warn("cache entry unusable")
		c.mu.Lock()
		c.dropLocked(e)
		c.mu.Unlock()
		e.unpin()
		if attempt > 0 {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
}

// Remove drops k's content (if not pinned; otherwise when released).
// The key is forgotten at once: a later Acquire starts a fresh entry, while
// holders of the old one keep reading it until they Release.
func (c *Cache) Remove(k Key) {
	c.mu.Lock()
	e := c.entries[k]
	if e == nil {
		c.mu.Unlock()
		return
	}
	c.dropLocked(e)
	unpinned := e.refs == 0
	c.mu.Unlock()
	if unpinned {
		e.destroy()
	}
}

// Usage reports current sizes.
func (c *Cache) Usage() Usage {
	c.mu.Lock()
	u := Usage{Bytes: c.bytes, MaxBytes: c.maxBytes, Entries: len(c.entries),
		Hits: c.stats.hits.Load(), Misses: c.stats.misses.Load(), HitBytes: c.stats.hitBytes.Load(),
		MissBytes: c.stats.missBytes.Load(), Evictions: c.stats.evictions.Load(), EvictedBytes: c.stats.evictedBytes.Load()}
	for _, e := range c.entries {
		if e.refs > 0 {
			u.Pinned++
		}
	}
	c.mu.Unlock()
	if des, err := os.ReadDir(c.stagingDir); err == nil {
		for _, de := range des {
			if fi, err := de.Info(); err == nil && fi.Mode().IsRegular() {
				u.Staging += fi.Size()
			}
		}
	}
	return u
}

// pinLocked takes a reference. LOCKS_REQUIRED(c.mu)
func (c *Cache) pinLocked(e *Entry) {
	if e.refs == 0 && !e.dropped {
		c.lru.Remove(e.key)
	}
	e.refs++
}

// dropLocked forgets e: out of the index, the LRU and the byte count. Its
// files are removed by destroy once it is unpinned. LOCKS_REQUIRED(c.mu)
func (c *Cache) dropLocked(e *Entry) {
	if e.dropped {
		return
	}
	e.dropped = true
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
		if e.refs == 0 {
			c.lru.Remove(e.key)
		}
	}
	c.bytes -= e.counted
	e.counted = 0
}

// evictLocked drops least recently used unpinned entries until usage is
// within budget and returns them for destroy (to run without c.mu).
// LOCKS_REQUIRED(c.mu)
func (c *Cache) evictLocked() []*Entry {
	var victims []*Entry
	for c.bytes > c.maxBytes {
		_, e, ok := c.lru.GetOldest()
		if !ok {
			break // the rest is pinned
		}
		c.stats.evictions.Add(1)
		c.stats.evictedBytes.Add(e.counted)
		c.dropLocked(e)
		victims = append(victims, e)
	}
	return victims
}

// account runs change under c.mu and e.mu, adds the present bytes it
// returns to the total in the same critical section and evicts if needed.
// So whoever can see a chunk's presence change (under e.mu) and then asks
// for Usage (under c.mu) sees it counted: change's effects and the total
// move together.
func (c *Cache) account(e *Entry, change func() int64) {
	c.mu.Lock()
	e.mu.Lock()
	delta := change()
	e.mu.Unlock()
	var victims []*Entry
	if delta != 0 && !e.dropped {
		e.counted += delta
		c.bytes += delta
		victims = c.evictLocked()
	}
	c.mu.Unlock()
	destroyAll(victims)
}

func destroyAll(es []*Entry) {
	for _, e := range es {
		e.destroy()
	}
}

func (c *Cache) dataPath(name string) string { return filepath.Join(c.contentDir, name+".data") }
func (c *Cache) metaPath(name string) string { return filepath.Join(c.contentDir, name+".meta") }

func (c *Cache) removeFile(p string) {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.WithError(err).Warn("cache: remove failed")
	}
}

// newName returns a fresh random entry file name.
func newName() string {
	u := uuid.New()
	return fmt.Sprintf("%x", u[:])
}

func validName(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

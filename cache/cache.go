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
package cache

import (
	"context"
	"io"
	"os"

	"github.com/google/uuid"
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

// Cache is safe for concurrent use.
type Cache struct{}

// Usage is a snapshot of the cache's size.
type Usage struct {
	Bytes    int64 // bytes of content present (allocated ranges)
	MaxBytes int64
	Entries  int
	Pinned   int
	Staging  int64 // bytes in staging files
}

// Open opens (or creates) the cache in cfg.Dir and reloads its index,
// dropping entries whose files are missing or inconsistent.
func Open(cfg Config) (*Cache, error) { panic("unimplemented") }

// Close stops background fetches and persists the index.
func (c *Cache) Close() error { panic("unimplemented") }

// Dir returns the cache root.
func (c *Cache) Dir() string { panic("unimplemented") }

// Acquire pins the entry for k (creating an empty sparse one of the given
// size if absent; an existing one whose size differs is discarded and
// recreated). The entry is not evicted until Release.
func (c *Cache) Acquire(k Key, size int64) (*Entry, error) { panic("unimplemented") }

// Remove drops k's content (if not pinned; otherwise when released).
func (c *Cache) Remove(k Key) { panic("unimplemented") }

// Usage reports current sizes.
func (c *Cache) Usage() Usage { panic("unimplemented") }

// NewStaging creates an empty private staging file (0600) under Dir.
func (c *Cache) NewStaging() (*os.File, error) { panic("unimplemented") }

// Adopt makes the staging file at path the complete content of k, without
// copying where possible (hard link). The staging file itself is left in
// place for the caller to remove. The entry is unpinned and under the LRU.
func (c *Cache) Adopt(path string, k Key) error { panic("unimplemented") }

// Entry is a pinned cache entry. Safe for concurrent use.
type Entry struct{}

// Key returns the entry's key.
func (e *Entry) Key() Key { panic("unimplemented") }

// Size returns the version's size.
func (e *Entry) Size() int64 { panic("unimplemented") }

// ReadAt reads into p at off, first fetching missing chunks covering the
// range (concurrent callers share one fetch of a chunk). Returns io.EOF past
// the end like os.File.ReadAt. A failed fetch returns its error and records nothing.
func (e *Entry) ReadAt(ctx context.Context, p []byte, off int64, fetch FetchFunc) (int, error) {
	panic("unimplemented")
}

// Prefetch starts fetching the missing chunks of [off, off+n) in the
// background (deduplicated with fetches in flight) and returns at once.
func (e *Entry) Prefetch(off, n int64, fetch FetchFunc) { panic("unimplemented") }

// Complete reports whether every byte is present.
func (e *Entry) Complete() bool { panic("unimplemented") }

// CopyTo fetches whatever is missing and copies the whole content into dst
// from offset 0 (dst is truncated to Size).
func (e *Entry) CopyTo(ctx context.Context, dst *os.File, fetch FetchFunc) error {
	panic("unimplemented")
}

// Release unpins the entry. It must be called exactly once per Acquire.
func (e *Entry) Release() { panic("unimplemented") }

package cache

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// NewStaging creates an empty private staging file (0600) under Dir.
// The cache never evicts, reads or deletes staging files (not even in Open:
// the write-back journal owns them).
func (c *Cache) NewStaging() (*os.File, error) {
	f, err := os.CreateTemp(c.stagingDir, "stg-*")
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return f, nil
}

// Adopt makes the staging file at path the complete content of k, without
// copying where possible (hard link). The staging file itself is left in
// place for the caller to remove. The entry is unpinned and under the LRU.
//
// Adopt syncs nothing: if a power cut loses or tears the entry's sidecar
// (it is checksummed) the entry is dropped and fetched again; if it loses
// the content (a staging file that was never synced), the chunks fail their
// checksum on the first read and are fetched again.
//
// With a hard link the staging file and the content share one inode, so the
// caller must not modify the staging file after Adopt (remove it, or copy it
// to a new staging file before writing again). Any pinned entry of k keeps
// serving its holders; new Acquires of k see the adopted content.
func (c *Cache) Adopt(path string, k Key) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cache: adopt: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("cache: adopt %s: not a regular file", path)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	name := newName()
	dp := c.dataPath(name)
	if err := os.Link(path, dp); err != nil {
		c.log.WithError(err).Debug("cache: adopt: link failed, copying")
		if err := copyPath(path, dp); err != nil {
			return fmt.Errorf("cache: adopt: %w", err)
		}
	}
	e, err := c.adoptFile(k, name, fi.Size())
	if err != nil {
		c.removeFile(c.metaPath(name))
		c.removeFile(dp)
		return fmt.Errorf("cache: adopt %s: %w", k, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		e.destroy()
		return ErrClosed
	}
	var victims []*Entry
	if old := c.entries[k]; old != nil {
		c.dropLocked(old)
		if old.refs == 0 {
			victims = append(victims, old)
		}
	}
	c.entries[k] = e
	c.lru.Add(k, e)
	e.counted = e.bytes
	c.bytes += e.bytes
	victims = append(victims, c.evictLocked()...)
	c.mu.Unlock()
	destroyAll(victims)
	return nil
}

// adoptFile builds a complete, persisted entry on content file name.
func (c *Cache) adoptFile(k Key, name string, size int64) (*Entry, error) {
	f, err := os.OpenFile(c.dataPath(name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return nil, err
	}
	e := newEntry(c, k, size, name, false)
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	for i := int64(0); i < e.nchunks; i++ {
		buf := (*bp)[:e.chunkLen(i)]
		if _, err := f.ReadAt(buf, i*c.chunkSize); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("file shrank while being adopted")
			}
			return nil, err
		}
		e.crc[i] = crc32.Checksum(buf, castagnoli)
		e.present.set(i)
		e.verified.set(i)
	}
	e.npresent, e.bytes, e.dirty = e.nchunks, size, true
	// Not yet published: no other goroutine can see e.
	e.f, e.openers = f, 1
	err = e.persistAs(false)
	e.f, e.openers = nil, 0
	return e, err
}

// copyPath copies file src to a new file dst (0600) durably, via a temp name.
func copyPath(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = copyFile(out, in, fi.Size())
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// PruneStaging removes the staging files for which keep returns false
// (left by a crash before they were closed and journaled) and returns how
// many it removed. Call it only when no staging file is in use but those
// keep accepts.
func (c *Cache) PruneStaging(keep func(path string) bool) (int, error) {
	ents, err := os.ReadDir(c.stagingDir)
	if err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	removed := 0
	for _, e := range ents {
		p := filepath.Join(c.stagingDir, e.Name())
		if keep(p) {
			continue
		}
		if err := os.Remove(p); err == nil {
			removed++
		}
	}
	return removed, nil
}

// Package meta is the mount's store of what the File API does not keep:
// times a program set, modes, owners, and local-only nodes (symlinks,
// FIFOs, sockets, device nodes). Records are keyed by a string the caller
// chooses (fusefs/vfs uses the folded workspace path, so Move follows
// renames of files and folders and Delete goes with removals).
//
// # On disk
//
// One append-only log, meta.log, in the store's directory. Each entry is
//
//	magic(4) | length(4, little endian) | crc32c(payload)(4) | payload (JSON op)
//
// written with a single write(2), so a kill -9 at any moment leaves the
// entry either whole or as a torn tail. Opening replays the log: a torn
// tail is ignored (and cut off), and an entry whose checksum or JSON is
// wrong is skipped, counted in Stats().Damaged, and replay resynchronises
// at the next magic. A record is therefore always an old or a new version,
// never a mix. When the log grows well past the live records it is
// compacted: the live set is written to meta.log.tmp, fsynced, and renamed
// over meta.log (then the folder is fsynced), so a crash during compaction
// leaves the old log.
//
// # Durability
//
// Appends are not fsynced one by one (a kill -9 loses nothing the kernel
// has; Sync and Close fsync, and fusefs/vfs calls Sync every second), so a
// power cut may lose the newest records but never tears an older one.
//
// # Invariants
//
//   - recs holds exactly the records the log on disk replays to (after
//     every successful Set/Delete/Move/Retain), guarded by mu.
//   - Move(from, to) moves from and every key under from+"/" to the same
//     place under to, replacing what was there; MoveOne moves one key.
//   - The store never interprets records: merging with remote state is the
//     caller's business.
package meta

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Kind says what a local-only node is; "" is a file or folder of the tree.
type Kind string

// Local-only node kinds.
const (
	KindSymlink Kind = "symlink"
	KindFIFO    Kind = "fifo"
	KindSocket  Kind = "socket"
	KindChar    Kind = "char"
	KindBlock   Kind = "block"
)

// Record is what the mount keeps for one node. Zero times and fields not
// flagged in Has mean "not set here": the tree's own value shows.
type Record struct {
	// Version is the remote version the times apply to ("" for a node the
	// service does not know). Times of another version are stale.
	Version string `json:"v,omitempty"`
	Mtime   int64  `json:"m,omitempty"` // unix nanoseconds
	Atime   int64  `json:"a,omitempty"`
	Ctime   int64  `json:"c,omitempty"`
	// Has says which of Mode and UID/GID are set.
	Has Has `json:"h,omitempty"`
	// Mode holds the 12 permission bits (no type bits).
	Mode uint32 `json:"p,omitempty"`
	UID  uint32 `json:"u,omitempty"`
	GID  uint32 `json:"g,omitempty"`
	// Kind, Target and Rdev describe a local-only node.
	Kind   Kind   `json:"k,omitempty"`
	Target string `json:"t,omitempty"`
	Rdev   uint32 `json:"d,omitempty"`
}

// Has flags the optional fields of a Record.
type Has uint8

// Flags of Record.Has.
const (
	HasMode  Has = 1 << iota // Mode is set
	HasOwner                 // UID and GID are set
)

type op struct {
	Op   string   `json:"op"` // set, del, mv (a subtree), mv1 (one key)
	Key  string   `json:"k"`
	To   string   `json:"to,omitempty"`
	Rec  *Record  `json:"r,omitempty"`
	Keys []string `json:"ks,omitempty"` // del of several keys
}

const (
	logName  = "meta.log"
	tmpName  = "meta.log.tmp"
	hdrLen   = 12
	maxEntry = 1 << 20
)

var (
	magic  = []byte{0xE7, 0x0F, 0x5E, 0xA1}
	crcTab = crc32.MakeTable(crc32.Castagnoli)
)

// Stats describes the log as opened and as it is now.
type Stats struct {
	Records  int   // live records
	Damaged  int   // entries skipped at open (bad checksum or JSON)
	TornTail bool  // the log ended in a partial entry at open (cut off)
	LogBytes int64 // current size of meta.log
}

// Store is the metadata store. Safe for concurrent use.
type Store struct {
	dir string

	mu       sync.Mutex // guards everything below
	f        *os.File   // meta.log, opened for appending
	recs     map[string]Record
	logBytes int64
	live     int64 // approximate bytes a compacted log would take
	dirty    bool  // appended since the last Sync
	stats    Stats
}

// Open opens (or creates) the store in dir, replaying its log.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, tmpName)) // an interrupted compaction
	s := &Store{dir: dir, recs: map[string]Record{}}
	b, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	good := s.replay(b)
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s.f = f
	s.logBytes = int64(len(b))
	if s.stats.TornTail || s.stats.Damaged > 0 {
		// rewrite without the damage, so appends never follow garbage
		if err := s.compactLocked(); err != nil {
			f.Close()
			return nil, fmt.Errorf("metadata store: rewriting a damaged log: %w", err)
		}
	} else if _, err := f.Seek(int64(good), 0); err != nil {
		f.Close()
		return nil, err
	}
	s.stats.Records = len(s.recs)
	return s, nil
}

// replay applies the log's entries and returns the offset after the last whole one.
func (s *Store) replay(b []byte) int {
	off, good := 0, 0
	for off < len(b) {
		if len(b)-off < hdrLen || !bytes.Equal(b[off:off+4], magic) {
			if next := bytes.Index(b[off+1:], magic); next >= 0 && len(b)-off >= hdrLen {
				s.stats.Damaged++
				off += 1 + next
				continue
			}
			s.stats.TornTail = true
			return good
		}
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		sum := binary.LittleEndian.Uint32(b[off+8:])
		end := off + hdrLen + n
		if n > maxEntry || end > len(b) {
			if next := bytes.Index(b[off+4:], magic); next >= 0 {
				s.stats.Damaged++
				off += 4 + next
				continue
			}
			s.stats.TornTail = true
			return good
		}
		payload := b[off+hdrLen : end]
		var o op
		if crc32.Checksum(payload, crcTab) != sum || json.Unmarshal(payload, &o) != nil {
			s.stats.Damaged++
			if next := bytes.Index(b[off+4:], magic); next >= 0 {
				off += 4 + next
				continue
			}
			return good
		}
		s.apply(o)
		off, good = end, end
	}
	return good
}

// apply changes recs by one op. Caller holds mu (or is Open).
func (s *Store) apply(o op) {
	switch o.Op {
	case "set":
		if o.Rec != nil {
			s.recs[o.Key] = *o.Rec
		}
	case "del":
		delete(s.recs, o.Key)
		for _, k := range o.Keys {
			delete(s.recs, k)
		}
	case "mv1":
		r, ok := s.recs[o.Key]
		delete(s.recs, o.To)
		if ok {
			delete(s.recs, o.Key)
			s.recs[o.To] = r
		}
	case "mv":
		moved := map[string]Record{}
		for k, r := range s.recs {
			if rest, ok := under(k, o.Key); ok {
				moved[o.To+rest] = r
				delete(s.recs, k)
			}
		}
		for k := range s.recs {
			if _, ok := under(k, o.To); ok {
				delete(s.recs, k)
			}
		}
		for k, r := range moved {
			s.recs[k] = r
		}
	}
}

// under reports whether k is p or below p, and the rest of k after p.
func under(k, p string) (string, bool) {
	if k == p {
		return "", true
	}
	if strings.HasPrefix(k, p+"/") {
		return k[len(p):], true
	}
	return "", false
}

// Stats reports the store's state.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Records = len(s.recs)
	st.LogBytes = s.logBytes
	return st
}

// Get returns key's record.
func (s *Store) Get(key string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[key]
	return r, ok
}

// Set stores key's record, replacing any.
func (s *Store) Set(key string, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.recs[key]; ok && old == r {
		return nil
	}
	return s.appendLocked(op{Op: "set", Key: key, Rec: &r})
}

// Delete removes key's record (and nothing below it).
func (s *Store) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[key]; !ok {
		return nil
	}
	return s.appendLocked(op{Op: "del", Key: key})
}

// MoveOne moves the record of from (only) to to, replacing to's. It costs
// the same whatever the store's size (use it for files).
func (s *Store) MoveOne(from, to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, src := s.recs[from]
	_, dst := s.recs[to]
	if from == to || !src && !dst {
		return nil
	}
	return s.appendLocked(op{Op: "mv1", Key: from, To: to})
}

// Move moves from and every key under from+"/" to to (see the package
// doc), replacing what was there. It looks at every record (use it for folders).
func (s *Store) Move(from, to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from == to {
		return nil
	}
	any := false
	for k := range s.recs {
		if _, ok := under(k, from); ok {
			any = true
			break
		}
		if _, ok := under(k, to); ok {
			any = true
			break
		}
	}
	if !any {
		return nil
	}
	return s.appendLocked(op{Op: "mv", Key: from, To: to})
}

// Range calls fn for each record, in key order, without the lock held.
func (s *Store) Range(fn func(key string, r Record)) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.recs))
	for k := range s.recs {
		keys = append(keys, k)
	}
	snap := make(map[string]Record, len(s.recs))
	for k, r := range s.recs {
		snap[k] = r
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		fn(k, snap[k])
	}
}

// Retain deletes every record keep refuses (cleanup after remote deletions).
func (s *Store) Retain(keep func(key string, r Record) bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var drop []string
	for k, r := range s.recs {
		if !keep(k, r) {
			drop = append(drop, k)
		}
	}
	if len(drop) == 0 {
		return 0, nil
	}
	sort.Strings(drop)
	return len(drop), s.appendLocked(op{Op: "del", Keys: drop})
}

func encode(o op) ([]byte, error) {
	payload, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	if len(payload) > maxEntry {
		return nil, fmt.Errorf("metadata record of %d bytes is too large", len(payload))
	}
	buf := make([]byte, hdrLen+len(payload))
	copy(buf, magic)
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[8:], crc32.Checksum(payload, crcTab))
	copy(buf[hdrLen:], payload)
	return buf, nil
}

// appendLocked writes one entry and applies it; it compacts a log that
// outgrew its live records.
func (s *Store) appendLocked(o op) error {
	if s.f == nil {
		return os.ErrClosed
	}
	buf, err := encode(o)
	if err != nil {
		return err
	}
	n, err := s.f.Write(buf)
	s.logBytes += int64(n)
	if err != nil {
		// a partial entry is a torn tail for the next open; cut it now if we can
		if terr := s.f.Truncate(s.logBytes - int64(n)); terr == nil {
			s.logBytes -= int64(n)
			s.f.Seek(s.logBytes, 0)
		}
		return fmt.Errorf("metadata store: %w", err)
	}
	s.apply(o)
	s.dirty = true
	if o.Op == "set" {
		s.live += int64(len(buf))
	}
	if s.logBytes > 1<<20 && s.logBytes > 4*s.live {
		return s.compactLocked()
	}
	return nil
}

// compactLocked rewrites the log as one set entry per live record
// (write-temp, fsync, rename, fsync folder).
func (s *Store) compactLocked() error {
	keys := make([]string, 0, len(s.recs))
	for k := range s.recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out bytes.Buffer
	for _, k := range keys {
		r := s.recs[k]
		buf, err := encode(op{Op: "set", Key: k, Rec: &r})
		if err != nil {
			return err
		}
		out.Write(buf)
	}
	tmp := filepath.Join(s.dir, tmpName)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(out.Bytes()); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, logName))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("metadata store: compacting: %w", err)
	}
	syncDir(s.dir)
	s.f.Close()
	s.f = f
	s.logBytes = int64(out.Len())
	s.live = s.logBytes
	_, err = f.Seek(s.logBytes, 0)
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Sync makes every record so far durable. The fsync runs without the
// lock, so writers do not wait for the disk (a compaction meanwhile has
// fsynced what it wrote itself).
func (s *Store) Sync() error {
	s.mu.Lock()
	f, dirty := s.f, s.dirty
	s.dirty = false
	s.mu.Unlock()
	if f == nil || !dirty {
		return nil
	}
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

// Close fsyncs and closes the log.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

package writeback

// The journal is one JSON file per job in Config.Dir, named "<job id>.json".
//
// Why a file per job, replaced by write-temp + fsync + rename + fsync(dir):
//   - atomic per job: rename(2) replaces the record in one step, so a reader
//     (the next New) sees either the old or the new record, never a torn one,
//     even after kill -9 or a power cut (the fsyncs order data before name);
//   - no shared log to compact or replay, no partial-tail repair: a job's
//     record is updated in place a handful of times (enqueued, registered,
//     retried, published) and removed when the job is done;
//   - jobs do not contend: updates of different jobs touch different files.
// Temp files left by a crash (".tmp-*") are removed by New.
//
// Group commit: the fsync of the directory, which makes renames and removals
// durable, is shared. A committer runs one fsync(dir) at a time; every
// caller that changed the directory before that fsync started is served by
// it, so closes and workers that arrive together pay one directory sync
// (journal.commit). A record's own fsync cannot be shared (one fsync per
// file), but it runs in parallel with the staging file's (Enqueue).
//
// Which changes are durable (the others are made, so a kill -9 keeps them,
// but a power cut may lose them, which a restart must and does tolerate;
// crash_test.go kills a child process at points of this path, and replays
// a power cut):
//   - a new job's record (Enqueue): fsync + rename + commit, or for a small
//     file fsync of the record (bytes included) + commit; the close promise;
//   - the registered ticket (OnRegistered): fsync + rename + commit; a
//     restart must resume that version, not mistake it for someone else's;
//   - re-based, retried, failed, renamed and block-acked records: durable;
//   - a cancelled or released job's removal: commit (it must not come back);
//   - the published state: journaled (durably) only when a DeleteAfter step
//     is left (that step must run after a restart); otherwise it is kept in
//     memory only: a restart finds the registered record, re-registers its
//     version, learns it is committed and only cleans up;
//   - removal of a finished job's record and of one a newer Enqueue
//     replaced: no commit. A finished job comes back (after a power cut) as
//     registered and resumes as above, with or without its staging file; a
//     replaced one comes back older (smaller Seq) than the record that
//     replaced it, which New installs over it. Any later commit makes such a
//     removal durable too;
//   - the cache's adoption of the published file (cache.Adopt): no sync; a
//     lost cache entry is fetched again.
//
// Small files (at most InlineMax bytes): the record carries the file's
// bytes (Inline) and is created in place (createRecord: no temp file, no
// rename), so a close costs one fsync plus the shared directory sync, and
// the staging file is never synced. Invariant: a job's staging file is not
// written while the job is queued (its writer takes it back first, Take,
// which syncs the file and rewrites the record without the bytes), so
// whenever a record carries bytes they are the staging file's; rewrites of
// the record (ticket, retries, rename) read them back from it. New restores
// a staging file that a power cut lost, emptied or garbled from its record
// (the newest record naming that file only), and removes a record cut
// short by a crash before its write ended (its Enqueue never returned).
//
// Per small file that is 2 fsyncs on close (the record, then a shared
// directory sync) and 2 while publishing (the ticket, then a shared
// directory sync); larger files take 3 on close (staging and record at
// once, then the directory). It was 3 + 8.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// recordFormat is the journal record version; bump on incompatible changes.
// A record carrying its file's bytes (Inline) is written as formatInline, so
// that an evofs too old to know the field leaves it alone instead of
// trusting a staging file that was never synced.
const (
	recordFormat = 1
	formatInline = 2
	maxFormat    = formatInline
)

// InlineMax is the largest file whose bytes Enqueue journals inside its
// record (see "Small files" at the top of this file).
const InlineMax = 64 << 10

const (
	recordExt  = ".json"
	tempPrefix = ".tmp-"
)

// target is the publish target chosen for a job once it registered; a resumed
// publish must reuse it (re-checking for a conflict after our own version
// committed would mistake it for someone else's).
type target struct {
	Path   string    `json:"path"`
	FileID uuid.UUID `json:"file_id"`
}

func (t target) remote() remote.Target { return remote.Target{Path: t.Path, FileID: t.FileID} }

// ticket is the part of an UploadTicket worth keeping: the pre-signed upload
// URL is a credential and is never written to disk (a resume re-registers
// with the version id and gets a fresh one).
type ticket struct {
	FileID    uuid.UUID        `json:"file_id"`
	VersionID remote.VersionID `json:"version_id"`
}

// record is the journaled state of one job.
type record struct {
	Format    int       `json:"format"`
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq"` // enqueue order; orders a key's jobs on reload
	Job       Job       `json:"job"`
	State     State     `json:"state"`
	Size      int64     `json:"size"`
	Tries     int       `json:"tries"`
	LastError string    `json:"last_error,omitempty"`
	Queued    time.Time `json:"queued"`

	// Set by OnRegistered: where this job publishes and the version it reserved.
	Target       *target `json:"target,omitempty"`
	ConflictPath string  `json:"conflict_path,omitempty"`
	Ticket       *ticket `json:"ticket,omitempty"`
	// Blocks staged for Ticket's version (with the block size used), so a
	// resumed upload sends only the rest.
	Acked          []string `json:"acked,omitempty"`
	AckedBlockSize int64    `json:"acked_block_size,omitempty"`
	// Streamed: Ticket was registered and Acked staged by a Stream while the
	// file was being written. Streaming: it still was when this was
	// journaled, so Size is not final and Acked holds only whole blocks.
	Streamed  bool `json:"streamed,omitempty"`
	Streaming bool `json:"streaming,omitempty"`

	// Set once published (State == StatePublished), download URL stripped, so
	// the remaining steps (adopt, OnPublished, DeleteAfter, clean-up) can be
	// finished after a restart without publishing again.
	Meta *remote.FileMeta `json:"meta,omitempty"`

	// Inline: the staging file's bytes (at most InlineMax), journaled with
	// the record so that the staging file itself need not be synced. Only
	// in the file; jobs in memory re-read them when rewriting the record.
	Inline []byte `json:"inline,omitempty"`
	// What New keeps of Inline (loadRecords drops the bytes).
	inlineLen int
	inlineCRC uint32
}

func recordPath(dir, id string) string { return filepath.Join(dir, id+recordExt) }

// putRecord replaces the record of r.ID by write-temp (+ fsync if durable)
// + rename. The rename is durable only after a commit.
func putRecord(dir string, r *record, durable bool) error {
	tmp, err := writeTemp(dir, r, durable)
	if err != nil {
		return err
	}
	return installRecord(dir, tmp, r.ID)
}

// prepareRecord writes r to a temp file and fsyncs it; installRecord then
// renames it into place.
func prepareRecord(dir string, r *record) (string, error) { return writeTemp(dir, r, true) }

func writeTemp(dir string, r *record, durable bool) (string, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, tempPrefix+r.ID+"-*")
	if err != nil {
		return "", fmt.Errorf("journal: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("journal: write %s: %w", r.ID, err)
	}
	return tmp, nil
}

// createRecord writes a new job's record in place and fsyncs it: no temp
// file and no rename, so that the directory sync that follows (a commit)
// finds the file's creation already flushed with it. A crash (kill -9 or a
// power cut) before the write ends leaves a record cut short, which New
// removes (unfinished): its Enqueue never returned. A power cut may also
// leave a full-length record with garbage, which New sets aside as corrupt.
// r.ID is new, so the name is too (O_EXCL).
func createRecord(dir string, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	p := recordPath(dir, r.ID)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("journal: write %s: %w", r.ID, err)
	}
	return nil
}

// unfinished reports whether b, which does not parse, is the start of a
// record whose write never ended (empty, or cut before the closing brace)
// rather than a damaged one. Only createRecord writes a record in place;
// the other writes rename a complete temp file over it.
func unfinished(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || b[0] == '{' && b[len(b)-1] != '}'
}

// readInline reads a staging file for a record's Inline; its size must be
// size (a staging file is not written while its job is queued).
func readInline(path string, size int64) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%s is %d bytes, its job says %d", path, len(b), size)
	}
	return b, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// restoreInline makes r's staging file hold its record's bytes again
// (durably) if it does not: a power cut may lose a staging file that was
// never synced, but its record kept the bytes. loadRecords kept only their
// length and checksum (a journal of many small files is not held in memory
// at once), so the record is read again when the file must be rewritten.
// It reports whether it rewrote the file.
func restoreInline(dir string, r *record) (bool, error) {
	if b, err := os.ReadFile(r.Job.Staging); err == nil && len(b) == r.inlineLen && crc32.Checksum(b, castagnoli) == r.inlineCRC {
		return false, nil
	}
	raw, err := os.ReadFile(recordPath(dir, r.ID))
	if err != nil {
		return false, err
	}
	var full record
	if err := json.Unmarshal(raw, &full); err != nil {
		return false, err
	}
	f, err := os.OpenFile(r.Job.Staging, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.Write(full.Inline)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(r.Job.Staging))
	}
	return true, err
}

// installRecord renames a temp file from writeTemp into place as id's record.
func installRecord(dir, tmp, id string) error {
	if err := os.Rename(tmp, recordPath(dir, id)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: write %s: %w", id, err)
	}
	return nil
}

// crashHook, when set (tests), is called at named points of the journal and
// worker path; a test child process kills itself there.
var crashHook func(point string)

func crashPoint(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}

// dropRecord removes the record of id (missing is fine); durable only after
// a commit.
func dropRecord(dir, id string) error {
	if err := os.Remove(recordPath(dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("journal: remove %s: %w", id, err)
	}
	return nil
}

// committer makes the journal directory's changes durable, one fsync(dir)
// for all the changes made before it started (group commit).
type committer struct {
	dir string

	mu      sync.Mutex
	cond    *sync.Cond // signalled when a sync ends
	started uint64     // guarded by mu; syncs started
	done    uint64     // guarded by mu; syncs finished (in order: one at a time)
	running bool       // guarded by mu
	err     error      // guarded by mu; the last finished sync's error
	syncs   int        // guarded by mu; fsyncs run (tests)
	waiting int        // guarded by mu; callers waiting for a sync (tests)

	syncFn func(dir string) error // syncDir; replaced by tests
}

func newCommitter(dir string) *committer {
	c := &committer{dir: dir, syncFn: syncDir}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// commit returns once a directory sync that started after the call has
// finished: every change the caller made before calling is then durable.
// Callers that arrive while a sync runs share the next one.
func (c *committer) commit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := c.started + 1 // a sync that starts from now on
	for c.done < want {
		if c.running {
			c.waiting++
			c.cond.Wait()
			c.waiting--
			continue
		}
		c.running = true
		c.started++
		gen := c.started
		c.mu.Unlock()
		err := c.syncFn(c.dir)
		c.mu.Lock()
		c.running = false
		c.done, c.err = gen, err
		c.syncs++
		c.cond.Broadcast()
	}
	return c.err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("journal: sync dir: %w", err)
	}
	return nil
}

// loadRecords reads every record in dir, removing torn temp files. A record
// that does not parse (which the rename protocol never leaves behind, so it
// means outside damage) is renamed to "*.corrupt" and reported in bad, not
// deleted.
func loadRecords(dir string) (recs []*record, bad []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case e.IsDir():
			continue
		case strings.HasPrefix(name, tempPrefix):
			os.Remove(filepath.Join(dir, name))
			continue
		case !strings.HasSuffix(name, recordExt):
			continue
		}
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("journal: %w", err)
		}
		r := new(record)
		err = json.Unmarshal(b, r)
		if err != nil && unfinished(b) {
			// createRecord was stopped (kill -9, power cut) before its write
			// ended: that Enqueue never returned, there is nothing to resume.
			os.Remove(p)
			continue
		}
		if err != nil || r.ID+recordExt != name || r.Job.Key == "" {
			os.Rename(p, p+".corrupt")
			bad = append(bad, name)
			continue
		}
		if r.Format > maxFormat {
			// written by a newer evofs: leave it for that version
			bad = append(bad, name+" (newer record format; kept)")
			continue
		}
		if r.Format == formatInline {
			r.inlineLen, r.inlineCRC = len(r.Inline), crc32.Checksum(r.Inline, castagnoli)
			r.Inline = nil
		}
		recs = append(recs, r)
	}
	return recs, bad, nil
}

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
//   - a new job's record (Enqueue): fsync + rename + commit; the close promise;
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
// Per small file that is 3 fsyncs on close (staging and record at once, then
// a shared directory sync) and 2 while publishing (the ticket, then a shared
// directory sync), down from 3 + 8.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// recordFormat is the journal record version; bump on incompatible changes.
const recordFormat = 1

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
		if err := json.Unmarshal(b, r); err != nil || r.ID+recordExt != name || r.Job.Key == "" {
			os.Rename(p, p+".corrupt")
			bad = append(bad, name)
			continue
		}
		if r.Format > recordFormat {
			// written by a newer evofs: leave it for that version
			bad = append(bad, name+" (newer record format; kept)")
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad, nil
}

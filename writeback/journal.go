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

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// writeRecord durably replaces the record of r.ID.
func writeRecord(dir string, r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+r.ID+"-*")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, recordPath(dir, r.ID))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: write %s: %w", r.ID, err)
	}
	return syncDir(dir)
}

// removeRecord durably removes the record of id (missing is fine).
func removeRecord(dir, id string) error {
	if err := os.Remove(recordPath(dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("journal: remove %s: %w", id, err)
	}
	return syncDir(dir)
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

package vfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// The last listing the mount knew is kept in Config.ListingFile, so that a
// mount started while the service is unreachable shows the workspace as it
// was (cached files readable, writes queued) and catches up once the
// service answers. Only clean listed files are saved: files with local
// content come back from the publish journal.

type listedFile struct {
	ID       uuid.UUID        `json:"id"`
	Version  remote.VersionID `json:"version"`
	Path     string           `json:"path"`
	Size     int64            `json:"size"`
	ETag     string           `json:"etag,omitempty"`
	Modified time.Time        `json:"modified"`
}

type listingFile struct {
	Saved time.Time    `json:"saved"`
	Files []listedFile `json:"files"`
}

// snapshotLocked is the tree's clean remote files.
func (f *FS) snapshotLocked() listingFile {
	out := listingFile{Saved: time.Now().UTC(), Files: make([]listedFile, 0, len(f.byID))}
	for id, n := range f.byID {
		if n.local != nil || n.removed || n.remotePath == "" {
			continue
		}
		out.Files = append(out.Files, listedFile{ID: id, Version: n.version, Path: n.remotePath, Size: n.size, ETag: n.etag, Modified: n.mtime})
	}
	return out
}

// saveListing writes the tree's listing when it changed since the last
// save (atomically: a crash keeps the old one).
func (f *FS) saveListing() {
	if f.cfg.ListingFile == "" {
		return
	}
	f.saveMu.Lock()
	defer f.saveMu.Unlock()
	f.mu.Lock()
	if f.saved == f.listGen+1 {
		f.mu.Unlock()
		return
	}
	f.saved = f.listGen + 1
	snap := f.snapshotLocked()
	f.mu.Unlock()
	b, err := json.Marshal(snap)
	if err == nil {
		tmp := f.cfg.ListingFile + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, f.cfg.ListingFile)
		}
	}
	if err != nil {
		f.log.WithError(err).Warn("saving the listing for offline starts")
	}
}

// loadListing reads the saved listing as listing rows.
func (f *FS) loadListing() ([]remote.FileMeta, time.Time, error) {
	if f.cfg.ListingFile == "" {
		return nil, time.Time{}, os.ErrNotExist
	}
	b, err := os.ReadFile(f.cfg.ListingFile)
	if err != nil {
		return nil, time.Time{}, err
	}
	var l listingFile
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, time.Time{}, fmt.Errorf("%s: %w", filepath.Base(f.cfg.ListingFile), err)
	}
	out := make([]remote.FileMeta, len(l.Files))
	for i, r := range l.Files {
		dir, name := path.Split(r.Path)
		out[i] = remote.FileMeta{Name: name, Path: "/" + dir, FileID: r.ID, VersionID: r.Version, Size: r.Size, ETag: r.ETag,
			CreatedAt: remote.Time{Time: r.Modified}, ModifiedAt: remote.Time{Time: r.Modified}}
	}
	return out, l.Saved, nil
}

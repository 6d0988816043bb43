// Package control is a mount's control socket: a unix socket in the cache
// dir, mode 0600 and answering only the mount's own user (checked again with
// SO_PEERCRED), that serves the mount's status as JSON over HTTP. It is what
// `evofs status` reads; unlike an extended attribute it has no size limit,
// so it reports any number of queued files.
//
// The client finds the socket from the mountpoint: the root of the mount
// serves the socket's path as the user.evofs.control extended attribute
// (vfs.XattrControl). That needs no registry that could go stale or disagree
// with what is mounted where, and follows the mount through bind mounts and
// symlinks; a mount that is gone or hung answers nothing either way.
//
// # Schema (version 1)
//
// Report is the public, stable schema of `evofs status --json`: snake_case
// fields, none of them internal (no staging paths, keys or file ids). Fields
// are only ever added; a change that is not an addition gets a new Version.
package control

import (
	"time"

	"evofs/fusefs/vfs"
	"evofs/writeback"
)

// SchemaVersion is Report.Version.
const SchemaVersion = 1

// Report is a mount's status.
type Report struct {
	// Version is the schema version (SchemaVersion).
	Version int `json:"version"`
	// Mountpoint is where the workspace is mounted.
	Mountpoint string `json:"mountpoint"`
	// Online is false while the File API cannot be reached: cached files
	// stay readable and writes queue up until it is back.
	Online bool `json:"online"`
	// OfflineReason says why, when Online is false ("" otherwise).
	OfflineReason string `json:"offline_reason"`
	// Pending, Uploading and Failed count the files not yet published.
	Pending   int `json:"pending"`
	Uploading int `json:"uploading"`
	Failed    int `json:"failed"`
	// UnpublishedBytes is the size of those files less what is uploaded.
	UnpublishedBytes int64       `json:"unpublished_bytes"`
	Cache            CacheReport `json:"cache"`
	// Files lists the unpublished files, oldest first; empty when the
	// request asked for the summary only.
	Files []FileReport `json:"files"`
}

// CacheReport is the content cache's usage.
type CacheReport struct {
	UsedBytes    int64 `json:"used_bytes"`
	MaxBytes     int64 `json:"max_bytes"`
	Entries      int   `json:"entries"`
	StagingBytes int64 `json:"staging_bytes"`
}

// FileReport is one file waiting to be published.
type FileReport struct {
	Path string `json:"path"`
	// State is "pending", "uploading" or "failed".
	State         string    `json:"state"`
	SizeBytes     int64     `json:"size_bytes"`
	UploadedBytes int64     `json:"uploaded_bytes"`
	Tries         int       `json:"tries"`
	LastError     string    `json:"last_error"`
	QueuedAt      time.Time `json:"queued_at"`
}

// Done reports whether every closed file is published.
func (r *Report) Done() bool { return r.Pending+r.Uploading+r.Failed == 0 }

// NewReport converts the core's status to the public schema; withFiles
// includes the per-file list.
func NewReport(mountpoint string, st vfs.Status, withFiles bool) *Report {
	r := &Report{
		Version: SchemaVersion, Mountpoint: mountpoint, Online: st.Online,
		Cache: CacheReport{UsedBytes: st.Cache.Bytes, MaxBytes: st.Cache.MaxBytes, Entries: st.Cache.Entries, StagingBytes: st.Cache.Staging},
		Files: []FileReport{},
	}
	if !st.Online {
		r.OfflineReason = st.LastError
		if r.OfflineReason == "" {
			r.OfflineReason = "the service cannot be reached"
		}
	}
	for _, j := range st.Jobs {
		switch j.State {
		case writeback.StateUploading:
			r.Uploading++
		case writeback.StateFailed:
			r.Failed++
		default:
			r.Pending++
		}
		r.UnpublishedBytes += max(0, j.Size-j.Done)
		if withFiles {
			r.Files = append(r.Files, FileReport{
				Path: j.Path, State: string(j.State), SizeBytes: j.Size, UploadedBytes: j.Done,
				Tries: j.Tries, LastError: j.LastError, QueuedAt: j.Queued.UTC(),
			})
		}
	}
	return r
}

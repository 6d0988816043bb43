package vfs

import (
	"context"
	"os"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
	"evofs/writeback"
)

// insertRemoteLocked adds or refreshes the node of a listed file. It returns
// the node, or nil when local state takes precedence.
func (f *FS) insertRemoteLocked(m *remote.FileMeta) *Node {
	full := m.FullPath()
	if f.doomed[m.FileID] != nil {
		return nil // renamed away here; deleted once the rename's publish lands
	}
	if n := f.byID[m.FileID]; n != nil {
		if n.handles == 0 { // without Node.io: only when no handle can be reading it
			f.dropCleanLocalLocked(n)
		}
		if n.local != nil || remote.FoldPath(n.remotePath) != remote.FoldPath(full) {
			return n // local edits or a local rename win until published
		}
		if n.version != m.VersionID {
			f.setRemoteLocked(n, m) // another client's version: its modified_at
			f.resaveMetaLocked(n)
			f.notifier().InvalidateContent(n.ino)
			if n.parent != nil {
				f.notifier().InvalidateEntry(n.parent.ino, n.name)
			}
		}
		return n
	}
	segs := splitPath(full)
	if len(segs) == 0 {
		return nil
	}
	dir := f.mkdirAllLocked(segs[:len(segs)-1])
	name := segs[len(segs)-1]
	if cur := dir.children[remote.FoldName(name)]; cur != nil {
		switch {
		case cur.dir:
			return nil // a local folder occupies the name; keep it
		case cur.local != nil || cur.touched > 0 && cur.fileID == uuid.Nil:
			return nil // our own unpublished file; its publish will land here
		case cur.kind != "":
			return nil // a local-only node holds the name
		default: // the remote file was replaced by another one
			f.deleteMetaLocked(cur)
			f.detachLocked(cur)
			f.forgetLocked(cur)
			f.notifier().EntryDeleted(dir.ino, cur.name, cur.ino)
		}
	}
	n := f.newNodeLocked(false)
	n.key = m.FileID.String()
	f.attachLocked(dir, name, n)
	f.setRemoteLocked(n, m)
	f.loadMetaLocked(n)
	f.byKey[n.key] = n
	f.notifier().InvalidateEntry(dir.ino, name)
	return n
}

// setRemoteLocked makes n describe the clean remote version m.
func (f *FS) setRemoteLocked(n *Node, m *remote.FileMeta) {
	f.listGen++
	if n.fileID != m.FileID && n.fileID != uuid.Nil && f.byID[n.fileID] == n {
		delete(f.byID, n.fileID)
	}
	n.fileID = m.FileID
	f.byID[m.FileID] = n
	n.version = m.VersionID
	n.remotePath = m.FullPath()
	n.size = m.Size
	n.etag = m.ETag
	n.mtime = m.ModifiedAt.Time
	n.ctime = m.ModifiedAt.Time
	if n.mtime.IsZero() {
		n.mtime = m.CreatedAt.Time
		n.ctime = n.mtime
	}
	n.blob = nil
	if m.Download != "" {
		n.blob = f.client.NewBlob(m)
	}
}

// overlayJobLocked shows a journaled, still pending publish in the tree.
func (f *FS) overlayJobLocked(st writeback.JobStatus) {
	fi, err := os.Stat(st.Staging)
	if err != nil {
		f.log.WithField("path", st.Path).WithError(err).Warn("pending publish has no staging file")
		return
	}
	var n *Node
	if st.FileID != uuid.Nil {
		n = f.byID[st.FileID]
	}
	if n == nil {
		segs := splitPath(st.Path)
		if len(segs) == 0 {
			return
		}
		dir := f.mkdirAllLocked(segs[:len(segs)-1])
		name := segs[len(segs)-1]
		if cur := dir.children[remote.FoldName(name)]; cur != nil && !cur.dir {
			n = cur
		} else if cur == nil {
			n = f.newNodeLocked(false)
			f.attachLocked(dir, name, n)
		} else {
			return
		}
	}
	if n.key != "" && f.byKey[n.key] == n {
		delete(f.byKey, n.key)
	}
	n.key = st.Key
	f.byKey[n.key] = n
	file, err := os.OpenFile(st.Staging, os.O_RDWR, 0)
	if err != nil {
		f.log.WithField("path", st.Path).WithError(err).Warn("cannot open pending staging file")
		return
	}
	if n.local != nil { // an older job of the same key: the newest content shows
		n.local.f.Close()
	}
	n.local = &staging{path: st.Staging, f: file, queued: true}
	n.size = fi.Size()
	n.mtime = fi.ModTime()
	f.loadMetaLocked(n)
	n.touched = f.gen
	f.log.WithField("path", st.Path).Info("resuming pending publish")
}

// onPublished is writeback's completion callback. It reports whether a live
// node now shows the published file (writeback then never undoes it).
func (f *FS) onPublished(r writeback.Result) (adopted bool) {
	f.mu.Lock()
	n := f.byKey[r.Job.Key]
	f.mu.Unlock()
	log := f.log.WithField("path", r.Job.Path).WithField("file_id", r.Meta.FileID).WithField("version", r.Meta.VersionID)
	if r.ConflictPath != "" {
		log.WithField("conflict_copy", r.ConflictPath).Warn("file changed on the service meanwhile; published ours as a conflict copy")
	} else {
		log.Info("published")
	}
	if n == nil {
		f.kickPoll()
		return false
	}
	var theirs *remote.FileMeta
	if r.ConflictPath != "" {
		// The node shows the service's version again: fetch it now, so no
		// read in between mixes their bytes with our size.
		ctx, cancel := f.bg(metaTimeout)
		theirs, _ = f.client.GetByID(ctx, r.Job.FileID, remote.GetOptions{})
		cancel()
	}
	n.io.Lock()
	defer n.io.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.removed {
		return false
	}
	f.gen++
	n.touched = f.gen
	if r.ConflictPath != "" {
		// Our bytes live on in the conflict copy, with our mode, owner and times.
		rec := f.recordLocked(n)
		rec.Version = string(r.Meta.VersionID)
		if err := f.meta.Set(r.Meta.FullPath(), rec); err != nil {
			log.WithError(err).Warn("the conflict copy does not keep the file's mode")
		}
		if n.local != nil && n.local.path == r.Job.Staging && n.writers > 0 {
			n.staleBase = true // the last close decides (handle.go Release)
		}
		if n.local != nil && n.local.path == r.Job.Staging && !n.local.dirty && n.writers == 0 {
			if theirs != nil {
				f.dropLocalLocked(n)
				f.setRemoteLocked(n, theirs)
				f.notifier().InvalidateContent(n.ino)
			} else {
				// Keep showing our bytes until the next listing, from a
				// private copy: the published staging file now backs the
				// cache entry of the conflict copy and must not be written.
				f.keepPrivateCopyLocked(n)
			}
		}
		f.kickPoll()
		return true // the conflict copy holds our bytes: never undo it
	}
	if n.fileID != r.Meta.FileID && n.fileID != uuid.Nil && f.byID[n.fileID] == n {
		delete(f.byID, n.fileID)
	}
	n.fileID = r.Meta.FileID
	f.byID[n.fileID] = n
	f.listGen++
	n.version = r.Meta.VersionID
	n.remotePath = r.Meta.FullPath()
	n.etag = r.Meta.ETag
	if r.Job.DeleteAfter != uuid.Nil && n.deleteNext == r.Job.DeleteAfter {
		f.undoomLocked(n)
	}
	if n.local != nil && n.local.path == r.Job.Staging && !n.local.dirty && n.writers == 0 {
		f.dropLocalLocked(n)
		n.size = r.Meta.Size
		n.blob = nil
		if r.Meta.Download != "" {
			n.blob = f.client.NewBlob(r.Meta)
		}
	}
	f.dropCleanLocalLocked(n) // an unmodified copy of what was just published
	n.localVer = r.Meta.VersionID
	n.openVer = n.version // the kernel's pages already hold these bytes
	f.saveMetaLocked(n)   // the times now belong to the published version
	return true
}

// keepPrivateCopyLocked replaces n's published staging file by an unqueued,
// clean private copy (the next listing replaces it), or drops it when no
// copy can be made.
func (f *FS) keepPrivateCopyLocked(n *Node) {
	file, err := f.cache.NewStaging()
	if err == nil {
		if err = copyFile(file, n.local.f); err != nil {
			file.Close()
			os.Remove(file.Name())
		}
	}
	f.dropLocalLocked(n)
	if err != nil {
		f.log.WithError(err).Warn("cannot keep a local copy after a conflict; the file shows again after the next listing")
		return
	}
	n.local = &staging{path: file.Name(), f: file}
}

// dropLocalLocked closes a node's staging file (writeback owns its removal).
func (f *FS) dropLocalLocked(n *Node) {
	if n.local == nil {
		return
	}
	if n.local.f != nil {
		n.local.f.Close()
	}
	n.local = nil
}

func (f *FS) kickPoll() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// pollLoop refreshes the namespace every PollInterval.
func (f *FS) pollLoop() {
	defer f.pollWG.Done()
	t := time.NewTicker(f.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
		var err error
		if time.Since(f.lastFull) >= f.cfg.FullRelistInterval {
			if err = f.Refresh(f.ctx); err == nil {
				f.lastFull = time.Now()
			}
		} else {
			err = f.Poll(f.ctx)
		}
		if f.ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		wasOnline := f.pollErr == ""
		f.pollErr = ""
		if err != nil {
			f.pollErr = err.Error()
		}
		f.mu.Unlock()
		switch {
		case err != nil && wasOnline:
			f.log.WithError(err).Warn("the service is unreachable: cached files stay readable, writes queue up")
		case err == nil && !wasOnline:
			f.log.Info("the service is reachable again")
			f.queue.RetryNow()
		}
		if err == nil {
			f.saveListing()
		}
	}
}

// Poll asks the service only for what changed since the newest change seen
// (minus PollOverlap): one listing of files modified since then and one of
// files deleted since then, merged into the tree.
func (f *FS) Poll(ctx context.Context) error {
	f.mu.Lock()
	startGen := f.gen
	since := f.modMark.Add(-f.cfg.PollOverlap)
	delSince := f.delMark.Add(-f.cfg.PollOverlap)
	f.mu.Unlock()
	changed, err := f.client.ListAll(ctx, remote.ListOptions{ModifiedAt: []remote.TimeFilter{{Op: "gte", At: since}}})
	if err != nil {
		return err
	}
	deleted, err := f.client.ListAll(ctx, remote.ListOptions{Deleted: true, DeletedAt: []remote.TimeFilter{{Op: "gte", At: delSince}}})
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteDeletedLocked(deleted)
	f.noteLiveLocked(changed, false)
	for i := range deleted {
		m := &deleted[i]
		if m.DeletedAt != nil {
			f.delMark = later(f.delMark, m.DeletedAt.Time)
		}
		if n := f.byID[m.FileID]; n != nil {
			f.removeRemoteLocked(n, startGen)
		}
	}
	for i := range changed {
		m := &changed[i]
		f.modMark = later(f.modMark, m.ModifiedAt.Time)
		if n := f.byID[m.FileID]; n != nil && n.touched > startGen {
			continue // changed locally while listing; the listing may predate it
		}
		f.insertRemoteLocked(m)
	}
	return nil
}

// removeRemoteLocked drops a node whose file was deleted on the service,
// unless it holds local changes, changed locally since the listing began
// (startGen), or is parked under a local-only name.
func (f *FS) removeRemoteLocked(n *Node, startGen uint64) {
	if n.local != nil || n.touched > startGen || n.removed {
		return
	}
	if remote.FoldPath(n.remotePath) != remote.FoldPath(f.pathLocked(n)) {
		return
	}
	parent := n.parent
	f.listGen++
	f.deleteMetaLocked(n)
	f.detachLocked(n)
	f.forgetLocked(n)
	if parent != nil {
		f.notifier().EntryDeleted(parent.ino, n.name, n.ino)
		f.pruneLocked(parent)
	}
}

// Refresh lists the workspace and merges it into the tree: new and changed
// files appear, files deleted on the service disappear (unless they have
// local changes or changed locally after the listing began).
func (f *FS) Refresh(ctx context.Context) error {
	f.mu.Lock()
	startGen := f.gen
	f.mu.Unlock()
	files, err := f.client.ListAll(ctx, remote.ListOptions{})
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noteLiveLocked(files, true)
	seen := make(map[uuid.UUID]bool, len(files))
	for i := range files {
		seen[files[i].FileID] = true
		f.modMark = later(f.modMark, files[i].ModifiedAt.Time)
		if n := f.byID[files[i].FileID]; n != nil && n.touched > startGen {
			continue // changed locally while listing; the listing may predate it
		}
		f.insertRemoteLocked(&files[i])
	}
	for id, n := range f.byID {
		if !seen[id] {
			f.removeRemoteLocked(n, startGen)
		}
	}
	return nil
}

// bg returns a context for remote calls made on behalf of a kernel request:
// bounded, and detached from the request's own cancellation (any signal to
// the caller cancels that one).
func (f *FS) bg(timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.ctx, timeout)
}

package vfs

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// Mkdir makes a local folder; it exists on the service once a file lands in it.
func (f *FS) Mkdir(dir *Node, name string) (*Node, error) {
	return f.MkdirAs(dir, name, f.defaultNewAttr(true))
}

// checkNewEntryLocked refuses a new entry name in dir: dir is not a
// folder, the name is taken, or the path would be too long.
// LOCKS_REQUIRED(f.mu)
func (f *FS) checkNewEntryLocked(dir *Node, name string) error {
	if !dir.dir {
		return ErrNotDir
	}
	if dir.view.Load() != nil {
		return ErrReadOnly
	}
	if dir.children[remote.FoldName(name)] != nil || dir == f.root && f.controlNameLocked(name) {
		return ErrExist
	}
	return checkPath(joinPath(f.pathLocked(dir), name))
}

// MkdirAs is Mkdir with the new folder's mode and owner.
func (f *FS) MkdirAs(dir *Node, name string, a NewAttr) (*Node, error) {
	if f.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkNewEntryLocked(dir, name); err != nil {
		return nil, err
	}
	n := f.newNodeLocked(true)
	n.explicitDir = true
	f.setNewAttrLocked(dir, n, a)
	f.attachLocked(dir, name, n)
	f.gen++
	dir.mtime, dir.ctime = n.mtime, n.mtime
	f.saveMetaLocked(n)
	return n, nil
}

// Rmdir removes an empty folder.
func (f *FS) Rmdir(dir *Node, name string) error {
	if f.cfg.ReadOnly || dir.view.Load() != nil {
		return ErrReadOnly
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := dir.children[remote.FoldName(name)]
	switch {
	case n == nil && dir == f.root && f.controlNameLocked(name):
		return ErrReadOnly
	case n == nil:
		return ErrNotExist
	case !n.dir:
		return ErrNotDir
	case len(n.children) > 0:
		return ErrNotEmpty
	}
	f.deleteMetaLocked(n)
	f.detachLocked(n)
	n.removed = true
	f.gen++
	dir.mtime, dir.ctime = time.Now(), time.Now()
	return nil
}

// Unlink deletes a file: on the service (soft delete) if it was published,
// and its pending publish if it was not.
func (f *FS) Unlink(ctx context.Context, dir *Node, name string) error {
	if f.cfg.ReadOnly || dir.view.Load() != nil {
		return ErrReadOnly
	}
	f.mu.Lock()
	n := dir.children[remote.FoldName(name)]
	if n == nil {
		ctl := dir == f.root && f.controlNameLocked(name)
		f.mu.Unlock()
		if ctl {
			return ErrReadOnly
		}
		return ErrNotExist
	}
	if n.dir {
		f.mu.Unlock()
		return ErrIsDir
	}
	var doomed []uuid.UUID
	var trashRow *remote.FileMeta
	if n.fileID != uuid.Nil && f.byID[n.fileID] == n {
		doomed = append(doomed, n.fileID)
		trashRow = f.trashRowLocked(n)
	}
	if n.deleteNext != uuid.Nil {
		doomed = append(doomed, n.deleteNext)
		f.undoomLocked(n)
	}
	path := f.pathLocked(n)
	f.deleteMetaLocked(n)
	f.detachLocked(n)
	f.forgetLocked(n)
	f.gen++
	dir.mtime = time.Now()
	dir.ctime = dir.mtime
	n.ctime = dir.mtime
	loc := n.local
	if loc != nil && n.handles == 0 { // else the last Release closes it
		loc.f.Close()
		if !loc.queued {
			os.Remove(loc.path)
		}
		n.local = nil
	}
	f.mu.Unlock()

	if n.kind == "" {
		f.queue.Cancel(n.key)
	}
	for _, id := range doomed {
		dctx, cancel := f.bg(metaTimeout)
		err := f.client.DeleteByID(dctx, id)
		cancel()
		if err != nil {
			f.log.WithError(err).WithField("path", path).WithField("file_id", id).Error("deleting on the service failed; the file will reappear")
			f.kickPoll()
			return err
		}
	}
	if len(doomed) > 0 {
		f.mu.Lock()
		if trashRow != nil {
			f.trashPutLocked(*trashRow) // shows in .evofs/trash at once
		} else if f.hist.trashLoaded {
			f.kickPoll() // the service's row comes with the next poll
		}
		f.mu.Unlock()
	}
	f.log.WithField("path", path).Debug("deleted")
	return nil
}

// Rename moves a file or folder. See renameFile and renameDir.
func (f *FS) Rename(ctx context.Context, oldDir *Node, oldName string, newDir *Node, newName string, flags uint32) error {
	if f.cfg.ReadOnly {
		return ErrReadOnly
	}
	if oldDir.view.Load() != nil || newDir.view.Load() != nil {
		return f.renameView(ctx, oldDir, oldName, newDir, newName, flags)
	}
	const renameNoReplace, renameExchange = 1, 2
	if flags&renameExchange != 0 {
		return syscall.ENOTSUP
	}
	if err := checkName(newName); err != nil {
		return err
	}
	f.mu.Lock()
	src := oldDir.children[remote.FoldName(oldName)]
	dst := newDir.children[remote.FoldName(newName)]
	switch {
	case src == nil && oldDir == f.root && f.controlNameLocked(oldName),
		dst == nil && newDir == f.root && f.controlNameLocked(newName):
		f.mu.Unlock()
		return ErrReadOnly // the control folder never moves, nor is replaced
	case src == nil:
		f.mu.Unlock()
		return ErrNotExist
	case !newDir.dir:
		f.mu.Unlock()
		return ErrNotDir
	case dst == src:
		// same entry (maybe a case change): only the display name changes
		if src.name != newName {
			from := f.pathLocked(src)
			delete(oldDir.children, remote.FoldName(oldName))
			f.attachLocked(newDir, newName, src)
			f.moveMetaLocked(src, from)
			f.gen++
		}
		f.mu.Unlock()
		return nil
	case dst != nil && flags&renameNoReplace != 0:
		f.mu.Unlock()
		return ErrExist
	case dst != nil && dst.dir && !src.dir:
		f.mu.Unlock()
		return ErrIsDir
	case dst != nil && !dst.dir && src.dir:
		f.mu.Unlock()
		return ErrNotDir
	case dst != nil && dst.dir && len(dst.children) > 0:
		f.mu.Unlock()
		return ErrNotEmpty
	}
	for d := newDir; d != nil; d = d.parent {
		if d == src {
			f.mu.Unlock()
			return ErrInvalid // into itself
		}
	}
	if err := checkPath(joinPath(f.pathLocked(newDir), newName)); err != nil {
		f.mu.Unlock()
		return err
	}
	f.mu.Unlock()
	if src.kind != "" {
		return f.renameLocalNode(ctx, src, dst, newDir, newName)
	}
	if src.dir {
		return f.renameDir(ctx, src, dst, newDir, newName)
	}
	return f.renameFile(ctx, src, dst, newDir, newName)
}

// renameFile moves a file node. The content must end up at the new path:
// as a new version of the file it replaces (keeping that file's identity and
// history), or as a new file; the old identity is deleted once that publish
// lands. Under a local-only name nothing happens remotely (the node is
// "parked"), so editors' backup renames cost nothing.
func (f *FS) renameFile(ctx context.Context, src, dst, newDir *Node, newName string) error {
	if dst != nil {
		// Settle the target first: a publish of it that is running decides
		// the identity our content takes over; a queued one is superseded.
		dst.io.Lock()
		err := f.settleIO(ctx, dst)
		dst.io.Unlock()
		if err != nil {
			return err
		}
	}
	src.io.Lock()
	defer src.io.Unlock()
	src.stream.Break("renamed")
	src.stream = nil
	if err := f.settleIO(ctx, src); err != nil {
		return err
	}
	// Copy clean content first, while the node still has its old identity.
	f.mu.Lock()
	needCopy := !f.isLocalOnly(newName) && src.local == nil && src.fileID != uuid.Nil
	f.mu.Unlock()
	if needCopy {
		if err := f.makeLocalIO(ctx, src, false); err != nil {
			return err
		}
	}
	f.mu.Lock()
	if src.removed || src.parent == nil {
		f.mu.Unlock()
		return ErrNotExist
	}
	if cur := newDir.children[remote.FoldName(newName)]; cur != dst {
		f.mu.Unlock()
		return syscall.EAGAIN // raced with another change; the caller may retry
	}
	newPath := joinPath(f.pathLocked(newDir), newName)
	targetID, targetVer := uuid.Nil, remote.VersionID("")
	if dst != nil {
		if dst.fileID != uuid.Nil && remote.FoldPath(dst.remotePath) == remote.FoldPath(newPath) {
			targetID, targetVer = dst.fileID, dst.version
		}
		f.detachLocked(dst)
		f.forgetLocked(dst)
		if dst.deleteNext != uuid.Nil {
			f.deleteLater(dst.deleteNext, dst.deleteVer, dst.deletePath)
			f.undoomLocked(dst)
		}
		if l := dst.local; l != nil && dst.handles == 0 && !l.queued {
			l.f.Close()
			os.Remove(l.path)
			dst.local = nil
		}
	}
	oldParent := src.parent
	from := f.pathLocked(src)
	f.detachLocked(src)
	f.attachLocked(newDir, newName, src)
	f.moveMetaLocked(src, from)
	f.gen++
	src.touched = f.gen
	src.ctime = time.Now()
	oldParent.mtime, newDir.mtime = src.ctime, src.ctime
	if targetID == uuid.Nil {
		// a file parked away from this path (editor backup) gives it its identity back
		f.claimParkedLocked(src)
		if src.fileID != uuid.Nil && remote.FoldPath(src.remotePath) == remote.FoldPath(newPath) {
			targetID, targetVer = src.fileID, src.version
		}
	}
	if targetID == uuid.Nil && src.fileID == uuid.Nil && src.deleteNext != uuid.Nil &&
		remote.FoldPath(src.deletePath) == remote.FoldPath(newPath) {
		// renamed back to where its file still lives, before the move was published
		targetID, targetVer = src.deleteNext, src.deleteVer
		src.fileID, src.version, src.remotePath = targetID, targetVer, src.deletePath
		f.undoomLocked(src)
		f.byID[targetID] = src
	}
	if f.isLocalOnly(newName) || (src.fileID != uuid.Nil && targetID == src.fileID) {
		// parked under a local-only name, or back where its file lives
		if f.isLocalOnly(newName) && src.fileID != uuid.Nil {
			f.parked[src] = struct{}{}
		}
		f.pruneLocked(oldParent)
		f.dropCleanLocalLocked(src)
		changed := src.local != nil && src.local.dirty && !f.isLocalOnly(newName)
		f.mu.Unlock()
		if dst != nil {
			f.queue.Cancel(dst.key)
		}
		if changed {
			return f.republishIO(ctx, src) // edited while parked, or taken back from the queue
		}
		return nil
	}
	if src.fileID != uuid.Nil && src.fileID != targetID && f.byID[src.fileID] == src {
		f.doomLocked(src)
	}
	src.fileID, src.version, src.remotePath = targetID, targetVer, ""
	if targetID != uuid.Nil {
		src.remotePath = newPath
		f.byID[targetID] = src
	}
	hadLocal := src.local != nil
	f.pruneLocked(oldParent)
	f.mu.Unlock()
	if dst != nil {
		f.queue.Cancel(dst.key)
	}
	if hadLocal {
		f.queue.Rename(src.key, newPath)
	}
	return f.republishIO(ctx, src)
}

// republishIO makes src's content (local, or copied from the cache) due for
// publishing at its current path and identity. Caller holds src.io.
func (f *FS) republishIO(ctx context.Context, src *Node) error {
	if err := f.makeLocalIO(ctx, src, false); err != nil {
		return err
	}
	f.mu.Lock()
	if src.local != nil {
		src.local.dirty = true
	}
	writers := src.writers
	f.mu.Unlock()
	if writers > 0 {
		return nil // the last close publishes it
	}
	return f.handOverIO(src)
}

// settleIO makes sure no publish of n is running before its identity
// changes: a queued one is taken back; a running one is waited for (with
// n.io released, since its completion takes n.io), so that the new identity
// is decided on the file it produced. Caller holds n.io; it is held again on return.
func (f *FS) settleIO(ctx context.Context, n *Node) error {
	for {
		f.mu.Lock()
		loc := n.local
		f.mu.Unlock()
		if loc == nil || !loc.queued {
			return nil
		}
		if f.takeBackIO(n, loc) {
			return nil
		}
		if _, pending := f.queue.Pending(n.key); !pending {
			return nil // already published; onPublished has run or the copy is clean
		}
		n.io.Unlock()
		err := f.queue.Wait(ctx, n.key)
		n.io.Lock()
		if err != nil {
			return err
		}
	}
}

// doomLocked turns n's remote identity into "delete once n's next publish
// lands" (n is moving away from where its file lives). An identity doomed
// by an earlier move is deleted now, if unchanged.
func (f *FS) doomLocked(n *Node) {
	if n.deleteNext != uuid.Nil {
		f.deleteLater(n.deleteNext, n.deleteVer, n.deletePath)
		f.undoomLocked(n)
	}
	n.deleteNext, n.deleteVer, n.deletePath = n.fileID, n.version, n.remotePath
	f.doomed[n.fileID] = n
	delete(f.byID, n.fileID)
}

// undoomLocked forgets n's pending delete.
func (f *FS) undoomLocked(n *Node) {
	if f.doomed[n.deleteNext] == n {
		delete(f.doomed, n.deleteNext)
	}
	n.deleteNext, n.deleteVer, n.deletePath = uuid.Nil, "", ""
}

// deleteLater deletes a superseded remote identity in the background,
// unless it changed since version ver.
func (f *FS) deleteLater(id uuid.UUID, ver remote.VersionID, path string) {
	go func() {
		ctx, cancel := f.bg(metaTimeout)
		defer cancel()
		m, err := f.client.GetByID(ctx, id, remote.GetOptions{})
		if err == nil && m.VersionID != ver {
			return // someone wrote to it since: keep it
		}
		if err == nil {
			err = f.client.DeleteByID(ctx, id)
		}
		if err != nil && !errIs(err, remote.ErrNotFound, remote.ErrGone) {
			f.log.WithError(err).WithField("file_id", id).WithField("path", path).Error("deleting a replaced file failed")
		}
	}()
}

// renameDir moves a folder and every file under it. Each published file is
// republished at its new path (and deleted at the old one), so the total
// size is bounded; above the bound EXDEV makes mv fall back to copying.
func (f *FS) renameDir(ctx context.Context, src, dst, newDir *Node, newName string) error {
	f.mu.Lock()
	var files []*Node
	var total int64
	var walk func(d *Node)
	walk = func(d *Node) {
		for _, c := range d.children {
			if c.dir {
				walk(c)
			} else if c.kind == "" {
				files = append(files, c)
				total += c.size
			}
		}
	}
	walk(src)
	if total > f.cfg.MaxDirRenameBytes {
		f.mu.Unlock()
		return ErrXDev
	}
	if cur := newDir.children[remote.FoldName(newName)]; cur != dst {
		f.mu.Unlock()
		return syscall.EAGAIN
	}
	if dst != nil {
		f.detachLocked(dst)
		dst.removed = true
	}
	oldParent := src.parent
	from := f.pathLocked(src)
	f.detachLocked(src)
	f.attachLocked(newDir, newName, src)
	f.moveMetaLocked(src, from)
	src.ctime = time.Now()
	oldParent.mtime, newDir.mtime = src.ctime, src.ctime
	src.explicitDir = true // keep it even if it holds no files
	f.gen++
	f.pruneLocked(oldParent)
	f.mu.Unlock()

	var firstErr error
	for _, n := range files {
		if err := f.moveIdentity(ctx, n); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// moveIdentity republishes a file whose path changed under a renamed folder.
func (f *FS) moveIdentity(ctx context.Context, n *Node) error {
	n.io.Lock()
	defer n.io.Unlock()
	if err := f.settleIO(ctx, n); err != nil {
		return err
	}
	f.mu.Lock()
	skip := n.removed || f.isLocalOnly(n.name)
	f.mu.Unlock()
	if skip {
		return nil
	}
	// copy clean content while the node still has its old identity
	if err := f.makeLocalIO(ctx, n, false); err != nil {
		return err
	}
	f.mu.Lock()
	newPath := f.pathLocked(n)
	if n.fileID != uuid.Nil && f.byID[n.fileID] == n {
		f.doomLocked(n)
	}
	n.fileID, n.version, n.remotePath = uuid.Nil, "", ""
	f.gen++
	n.touched = f.gen
	hadLocal := n.local != nil
	f.mu.Unlock()
	if hadLocal {
		f.queue.Rename(n.key, newPath)
	}
	return f.republishIO(ctx, n)
}

// dropCleanLocalLocked forgets an unmodified, unqueued local copy of a
// published file that no writer holds (the cache has the same bytes).
func (f *FS) dropCleanLocalLocked(n *Node) {
	if l := n.local; l != nil && !l.dirty && !l.queued && n.writers == 0 && n.fileID != uuid.Nil {
		l.f.Close()
		os.Remove(l.path)
		n.local = nil
	}
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Statfs reports the cache file system's space.
func (f *FS) Statfs() (syscall.Statfs_t, error) {
	var st syscall.Statfs_t
	err := syscall.Statfs(f.cache.Dir(), &st)
	return st, err
}

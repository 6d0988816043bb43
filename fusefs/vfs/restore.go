package vfs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// # Restoring from the trash
//
// A rename out of the trash is a restore (PUT deleted=false), allowed only to
// the entry's old path (else ErrNotOldPath, EINVAL) and only where that path
// is free: a taken path answers EEXIST (a folder: ENOTEMPTY) before any
// request, and the service's 409 (a file there we have not seen yet) is
// EEXIST too; nothing changes on either side then. A trash folder restores
// every file below it that sits at its old path (the newest deleted file of
// each path).
//
// On success the kernel moves its dentry of the trash entry to the new name,
// so the trash node itself becomes the tree node (same inode): its view is
// cleared and it takes the file's remote identity. If some files of a folder
// cannot be restored the rename fails (the kernel moves nothing): those
// restored appear in the tree as new nodes, the others stay in the trash.
// A 303 (restored, but elsewhere) puts the file where the service says and
// tells the kernel to forget the name it moved.

// ErrPathTaken wraps the errno of a restore onto a path that is taken.
var ErrPathTaken = fmt.Errorf("the path is taken by another file: %w", syscall.EEXIST)

// renameView is a rename from or into the control folder.
func (f *FS) renameView(ctx context.Context, oldDir *Node, oldName string, newDir *Node, newName string, flags uint32) error {
	const renameExchange = 2
	ov := oldDir.view.Load()
	if newDir.view.Load() != nil || ov == nil || ov.kind != viewTrashDir || flags&renameExchange != 0 {
		return ErrReadOnly
	}
	src, err := f.viewLookup(oldDir, ov, oldName)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if !newDir.dir || newDir.removed {
		f.mu.Unlock()
		return ErrNotExist
	}
	if newDir == f.root && f.controlNameLocked(newName) {
		f.mu.Unlock()
		return ErrReadOnly
	}
	want := f.trashPathLocked(src)
	if v := src.view.Load(); v != nil && v.kind == viewTrashFile {
		want = v.row.FullPath() // an older deletion's entry has another name
	}
	to := joinPath(f.pathLocked(newDir), newName)
	f.mu.Unlock()
	if remote.FoldPath(to) != remote.FoldPath(want) {
		return fmt.Errorf("restore %s: only to %s, not %s: %w", want, want, to, ErrNotOldPath)
	}
	if src.dir {
		return f.restoreDir(ctx, src, newDir, newName)
	}
	return f.restoreFile(ctx, src, newDir, newName)
}

// restoreFile restores one trash file to newDir/newName (its old path).
func (f *FS) restoreFile(ctx context.Context, src, newDir *Node, newName string) error {
	f.mu.Lock()
	v := src.view.Load()
	if v == nil || v.kind != viewTrashFile || src.removed {
		f.mu.Unlock()
		return ErrNotExist
	}
	if newDir.children[remote.FoldName(newName)] != nil {
		f.mu.Unlock()
		return fmt.Errorf("restore %s: %w", joinPath(f.pathLocked(newDir), newName), ErrPathTaken)
	}
	row := v.row
	f.mu.Unlock()
	moved, err := f.restoreRemote(ctx, row)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if moved != nil {
		f.restoredElsewhereLocked(src, moved, newDir, newName)
		return nil
	}
	if newDir.children[remote.FoldName(newName)] != nil || src.view.Load() == nil {
		// Raced with a new local file of that name (or another restore):
		// the file is live again on the service; the next listing shows it.
		f.trashDropLocked(row.FileID)
		f.kickPoll()
		return fmt.Errorf("restore %s: %w", row.FullPath(), ErrPathTaken)
	}
	f.adoptLocked(src, &row, newDir, newName)
	return nil
}

// restoreDir restores a trash folder: every file below it at its old path.
func (f *FS) restoreDir(ctx context.Context, src, newDir *Node, newName string) error {
	f.mu.Lock()
	if src.removed {
		f.mu.Unlock()
		return ErrNotExist
	}
	dst := newDir.children[remote.FoldName(newName)]
	switch {
	case dst != nil && !dst.dir:
		f.mu.Unlock()
		return fmt.Errorf("restore %s: %w", joinPath(f.pathLocked(newDir), newName), ErrPathTaken)
	case dst != nil && (len(dst.children) > 0 || dst.kind != ""):
		f.mu.Unlock()
		return fmt.Errorf("restore %s: the folder is not empty: %w", joinPath(f.pathLocked(newDir), newName), syscall.ENOTEMPTY)
	}
	type item struct {
		n   *Node
		row remote.FileMeta
	}
	var items []item
	var walk func(d *Node)
	walk = func(d *Node) {
		for _, c := range d.children {
			if c.dir {
				walk(c)
				continue
			}
			if v := c.view.Load(); v != nil && v.kind == viewTrashFile && remote.FoldPath(f.trashPathLocked(c)) == remote.FoldPath(v.row.FullPath()) {
				items = append(items, item{c, v.row})
			}
		}
	}
	walk(src)
	f.mu.Unlock()

	var firstErr error
	failed := false
	moved := map[*Node]*remote.FileMeta{}
	done := make([]bool, len(items))
	for i, it := range items {
		m, err := f.restoreRemote(ctx, it.row)
		if err != nil {
			failed = true
			if firstErr == nil || errors.Is(err, syscall.EEXIST) && !errors.Is(firstErr, syscall.EEXIST) {
				firstErr = err
			}
			continue
		}
		done[i] = true
		if m != nil {
			moved[it.n] = m
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	cur := newDir.children[remote.FoldName(newName)]
	if !failed && cur == dst && !src.removed && src.view.Load() != nil && (cur == nil || len(cur.children) == 0) {
		if cur != nil { // an empty folder is replaced, as rename(2) does
			f.deleteMetaLocked(cur)
			f.detachLocked(cur)
			cur.removed = true
		}
		restored := map[*Node]bool{}
		for i, it := range items {
			if done[i] && moved[it.n] == nil {
				restored[it.n] = true
			}
		}
		for n, m := range moved {
			f.restoredElsewhereLocked(n, m, nil, "")
		}
		f.adoptDirLocked(src, newDir, newName, restored)
		return nil
	}
	// Partial: what was restored shows in the tree as new nodes; the rename fails.
	for i, it := range items {
		if !done[i] {
			continue
		}
		m := moved[it.n]
		if m == nil {
			m = &it.row
		}
		f.trashDropLocked(it.row.FileID)
		f.gen++
		if n := f.insertRemoteLocked(m); n != nil {
			n.touched = f.gen
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("restore %s: %w", joinPath(f.pathLocked(newDir), newName), ErrPathTaken)
	}
	return firstErr
}

// restoreRemote asks the service to restore row's file. It returns the new
// metadata when the service restored it elsewhere (303), nil when in place.
func (f *FS) restoreRemote(ctx context.Context, row remote.FileMeta) (*remote.FileMeta, error) {
	rctx, cancel := f.bg(metaTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	m, err := f.client.Restore(rctx, row.FileID)
	log := f.log.WithField("path", row.FullPath()).WithField("file_id", row.FileID)
	switch {
	case errors.Is(err, remote.ErrConflict):
		log.Info("restore refused: another file now lives at that path")
		return nil, fmt.Errorf("restore %s: %w (%w)", row.FullPath(), ErrPathTaken, err)
	case err != nil:
		log.WithError(err).Warn("restore failed")
		return nil, err
	}
	if m != nil && remote.FoldPath(m.FullPath()) == remote.FoldPath(row.FullPath()) {
		m = nil
	}
	if m != nil {
		log.WithField("restored_at", m.FullPath()).Warn("the service restored the file at another path")
	} else {
		log.Info("restored from the trash")
	}
	return m, nil
}

// adoptLocked turns trash file t into the tree node of its restored file
// at dir/name (the kernel already shows it there under t's inode).
func (f *FS) adoptLocked(t *Node, row *remote.FileMeta, dir *Node, name string) {
	f.forgetTrashNodeLocked(t, row.FileID)
	t.view.Store(nil)
	t.removed = false
	t.blob = nil
	t.key = row.FileID.String()
	f.attachLocked(dir, name, t)
	f.setRemoteLocked(t, row)
	f.byKey[t.key] = t
	f.loadMetaLocked(t)
	f.gen++
	t.touched = f.gen
	dir.mtime, dir.ctime = time.Now(), time.Now()
}

// adoptDirLocked turns trash folder d into a tree folder at dir/name; the
// restored files below it become tree files, anything else below it goes
// back to the trash (rebuilt).
func (f *FS) adoptDirLocked(d *Node, dir *Node, name string, restored map[*Node]bool) {
	var convert func(n *Node)
	convert = func(n *Node) {
		kids := make([]*Node, 0, len(n.children))
		for _, c := range n.children {
			kids = append(kids, c)
		}
		for _, c := range kids {
			v := c.view.Load()
			switch {
			case c.dir:
				convert(c)
				if len(c.children) == 0 {
					f.detachLocked(c)
					c.removed = true
				}
			case v != nil && restored[c]:
				row := v.row
				name := c.name
				f.adoptLocked(c, &row, n, name)
			default:
				f.detachLocked(c) // not restored: stays in the trash
			}
		}
		f.forgetTrashDirLocked(n)
		n.view.Store(nil)
		n.explicitDir = false
	}
	f.detachLocked(d)
	convert(d)
	f.attachLocked(dir, name, d)
	f.gen++
	dir.mtime, dir.ctime = time.Now(), time.Now()
	f.hist.trashDirty = true
}

// restoredElsewhereLocked shows a file the service restored at another path
// (303) there, drops it from the trash and, when the kernel moved trash
// node t to dir/name, tells it to forget that name.
func (f *FS) restoredElsewhereLocked(t *Node, m *remote.FileMeta, dir *Node, name string) {
	f.forgetTrashNodeLocked(t, m.FileID)
	t.removed = true
	f.detachLocked(t)
	f.gen++
	if n := f.insertRemoteLocked(m); n != nil {
		n.touched = f.gen
	}
	if dir != nil {
		f.notifier().EntryDeleted(dir.ino, name, t.ino)
	}
}

// forgetTrashNodeLocked drops a trash file's row and node.
func (f *FS) forgetTrashNodeLocked(t *Node, id uuid.UUID) {
	f.trashDropLocked(id)
	if f.hist.trashFiles[id] == t {
		delete(f.hist.trashFiles, id)
	}
	f.detachLocked(t)
}

// forgetTrashDirLocked drops a trash folder from the nodes reused by rebuilds.
func (f *FS) forgetTrashDirLocked(d *Node) {
	for k, n := range f.hist.trashDirs {
		if n == d {
			delete(f.hist.trashDirs, k)
		}
	}
}

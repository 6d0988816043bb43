package vfs

import (
	"context"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"evofs/fusefs/meta"
	"evofs/remote"
)

// # Metadata kept on this machine
//
// The service stores no times a program set, modes, owners or special
// nodes, so the core keeps them in a meta.Store in the cache folder, keyed
// by the node's workspace path (pathLocked, display case). The key follows
// the tree under FS.mu: every rename moves the record (a folder's with
// everything below it), every removal deletes it, and each change of a kept
// field writes it, so after any operation store key == node path. The
// store is opened in New and written with FS.mu held (lock order FS.mu →
// the store's own lock; the store calls nothing back).
//
// A record's times apply while the node shows the version the record
// names: a new version published by another client brings its own
// modified_at. Modes and owners stay until the node goes. Nodes without a
// stored mode show Config.FileMode/DirMode less Config.Umask; without a
// stored owner, Config.UID/GID.

// NewAttr is what a new node starts with: the mode the caller asked for
// (the kernel has applied the caller's umask already) and its owner.
type NewAttr struct {
	Mode     uint32 // permission bits
	UID, GID uint32
}

// Caller is who asks for an attribute change.
type Caller struct{ UID, GID uint32 }

// SetAttr is a setattr without the size (see Truncate). Nil fields stay.
type SetAttr struct {
	Mode         *uint32
	UID, GID     *uint32
	Atime, Mtime *time.Time
}

// checkName refuses names the service would refuse; a component over
// remote.MaxNameLength characters matches remote.ErrNameTooLong, which
// fusefs answers with ENAMETOOLONG. (The limit counts characters, as the
// service does, so names other clients made are always reachable.)
func checkName(name string) error { return remote.ValidateName(name) }

// nameTooLong reports a component no node can have.
func nameTooLong(name string) bool {
	return len(name) > 4*remote.MaxNameLength || utf8.RuneCountInString(name) > remote.MaxNameLength
}

// checkPath refuses paths the service would refuse; an overlong one is ENAMETOOLONG.
func checkPath(p string) error {
	if len(strings.TrimPrefix(p, "/")) > remote.MaxPathBytes {
		return syscall.ENAMETOOLONG
	}
	return remote.ValidatePath(p)
}

// defaultNewAttr is what nodes made without a caller (tests, tools) get.
func (f *FS) defaultNewAttr(dir bool) NewAttr {
	return NewAttr{Mode: f.defaultPerm(dir), UID: f.cfg.UID, GID: f.cfg.GID}
}

func (f *FS) defaultPerm(dir bool) uint32 {
	if dir {
		return f.cfg.DirMode &^ (f.cfg.Umask & 0o777)
	}
	return f.cfg.FileMode &^ (f.cfg.Umask & 0o777)
}

// setNewAttrLocked gives a new node under dir its mode and owner. In a
// set-group-ID folder the node takes the folder's group, and a folder
// the set-group-ID bit too, as on a local disk.
func (f *FS) setNewAttrLocked(dir, n *Node, a NewAttr) {
	if da := f.attrNoLinksLocked(dir); da.Mode&syscall.S_ISGID != 0 {
		a.GID = da.GID
		if n.dir {
			a.Mode |= syscall.S_ISGID
		}
	}
	n.perm = a.Mode & 0o7777
	n.has |= meta.HasMode
	n.uid, n.gid = a.UID, a.GID
	n.has |= meta.HasOwner
	n.atime = n.mtime
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// recordLocked is what the store keeps for n.
func (f *FS) recordLocked(n *Node) meta.Record {
	return meta.Record{
		Version: string(n.version),
		Mtime:   unixNano(n.mtime), Atime: unixNano(n.atime), Ctime: unixNano(n.ctime),
		Has: n.has, Mode: n.perm, UID: n.uid, GID: n.gid,
		Kind: n.kind, Target: n.target, Rdev: n.rdev,
	}
}

// saveMetaLocked writes n's record.
func (f *FS) saveMetaLocked(n *Node) error {
	if n.removed {
		return nil
	}
	err := f.meta.Set(f.pathLocked(n), f.recordLocked(n))
	if err != nil {
		f.log.WithError(err).WithField("path", f.pathLocked(n)).Warn("cannot keep the file's times and mode")
	}
	return err
}

// resaveMetaLocked rewrites n's record if it has one (its version changed).
func (f *FS) resaveMetaLocked(n *Node) {
	if _, ok := f.meta.Get(f.pathLocked(n)); ok {
		f.saveMetaLocked(n)
	}
}

// loadMetaLocked applies the stored record of n's path to n.
func (f *FS) loadMetaLocked(n *Node) {
	r, ok := f.meta.Get(f.pathLocked(n))
	if !ok {
		return
	}
	n.has, n.perm, n.uid, n.gid = r.Has, r.Mode&0o7777, r.UID, r.GID
	if r.Version != string(n.version) {
		return // the times belong to another version
	}
	if r.Mtime != 0 {
		n.mtime = time.Unix(0, r.Mtime)
	}
	if r.Atime != 0 {
		n.atime = time.Unix(0, r.Atime)
	}
	if r.Ctime != 0 {
		n.ctime = time.Unix(0, r.Ctime)
	}
}

// deleteMetaLocked removes the record of n's current path.
func (f *FS) deleteMetaLocked(n *Node) {
	if err := f.meta.Delete(f.pathLocked(n)); err != nil {
		f.log.WithError(err).WithField("path", f.pathLocked(n)).Warn("cannot forget the file's times and mode")
	}
}

// moveMetaLocked moves the records of a renamed node (and, for a folder,
// what is below it) from path from to n's path.
func (f *FS) moveMetaLocked(n *Node, from string) {
	to := f.pathLocked(n)
	var err error
	if n.dir {
		err = f.meta.Move(from, to)
	} else {
		err = f.meta.MoveOne(from, to)
	}
	if err != nil {
		f.log.WithError(err).WithField("path", from).Warn("the times and modes did not follow the rename")
	}
}

// syncMetaLoop makes the metadata store durable every second (a kill -9
// loses nothing without it; a power cut loses at most that second).
func (f *FS) syncMetaLoop() {
	defer f.pollWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
			if err := f.meta.Sync(); err != nil {
				f.log.WithError(err).Warn("metadata store: fsync")
			}
		}
	}
}

// findLocked resolves a workspace path in the tree (nil if absent).
func (f *FS) findLocked(p string) *Node {
	n := f.root
	for _, s := range splitPath(p) {
		if !n.dir {
			return nil
		}
		if n = n.children[remote.FoldName(s)]; n == nil {
			return nil
		}
	}
	return n
}

// restoreMetaLocked runs in Start once the tree is built: local-only nodes
// come back from the store, and records of nodes that are gone (deleted on
// the service while unmounted, or empty folders) are dropped.
func (f *FS) restoreMetaLocked() {
	if st := f.meta.Stats(); st.Damaged > 0 || st.TornTail {
		f.log.WithField("damaged", st.Damaged).WithField("torn_tail", st.TornTail).Warn("metadata store: skipped damaged records (their files show default times and modes)")
	}
	f.loadMetaLocked(f.root)
	f.meta.Range(func(key string, r meta.Record) {
		if r.Kind == "" {
			return
		}
		segs := splitPath(key)
		if len(segs) == 0 {
			return
		}
		for d, i := f.root, 0; i < len(segs)-1 && d != nil; i++ {
			if d = d.children[remote.FoldName(segs[i])]; d != nil && !d.dir {
				return // a file of the service holds the folder's name: the node goes
			}
		}
		dir := f.mkdirAllLocked(segs[:len(segs)-1])
		name := segs[len(segs)-1]
		if dir.children[remote.FoldName(name)] != nil {
			return // a file of the service took the name
		}
		n := f.newNodeLocked(false)
		n.kind, n.target, n.rdev = r.Kind, r.Target, r.Rdev
		f.attachLocked(dir, name, n)
		f.loadMetaLocked(n)
	})
	dropped, err := f.meta.Retain(func(key string, r meta.Record) bool {
		n := f.findLocked(key)
		return n != nil && (n.kind == r.Kind)
	})
	if err != nil {
		f.log.WithError(err).Warn("metadata store: cleanup")
	} else if dropped > 0 {
		f.log.WithField("count", dropped).Debug("metadata store: dropped records of files no longer here")
	}
}

// Setattr changes mode, owner and times; a non-root caller may not give a
// file away (EPERM), nor change its group to one other than its own.
func (f *FS) Setattr(n *Node, s SetAttr, c Caller) error {
	if f.cfg.ReadOnly || n.view.Load() != nil {
		return ErrReadOnly
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.attrLocked(n)
	if s.UID != nil && *s.UID != a.UID && c.UID != 0 {
		return syscall.EPERM
	}
	if s.GID != nil && *s.GID != a.GID && c.UID != 0 && (c.UID != a.UID || *s.GID != c.GID) {
		return syscall.EPERM
	}
	now := time.Now()
	if s.Mode != nil {
		n.perm = *s.Mode & 0o7777
		n.has |= meta.HasMode
	}
	if s.UID != nil || s.GID != nil {
		n.uid, n.gid = a.UID, a.GID
		if s.UID != nil {
			n.uid = *s.UID
		}
		if s.GID != nil {
			n.gid = *s.GID
		}
		n.has |= meta.HasOwner
		if c.UID != 0 && !n.dir {
			n.perm, n.has = a.Mode&0o7777&^(syscall.S_ISUID|syscall.S_ISGID), n.has|meta.HasMode
		}
	}
	if s.Atime != nil {
		n.atime = *s.Atime
	}
	if s.Mtime != nil {
		n.mtime = *s.Mtime
	}
	if n.atime.IsZero() {
		n.atime = a.Atime
	}
	n.ctime = now
	f.gen++
	return f.saveMetaLocked(n)
}

// Symlink makes a symbolic link, kept on this machine only.
func (f *FS) Symlink(dir *Node, name, target string, a NewAttr) (*Node, error) {
	a.Mode = 0o777
	return f.makeLocalNode(dir, name, meta.KindSymlink, target, 0, a)
}

// Mknod makes a FIFO, socket or device node, kept on this machine only.
func (f *FS) Mknod(dir *Node, name string, kind meta.Kind, rdev uint32, a NewAttr) (*Node, error) {
	return f.makeLocalNode(dir, name, kind, "", rdev, a)
}

func (f *FS) makeLocalNode(dir *Node, name string, kind meta.Kind, target string, rdev uint32, a NewAttr) (*Node, error) {
	if f.cfg.ReadOnly || dir.view.Load() != nil {
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
	n := f.newNodeLocked(false)
	n.kind, n.target, n.rdev = kind, target, rdev
	f.setNewAttrLocked(dir, n, a)
	f.attachLocked(dir, name, n)
	f.gen++
	n.touched = f.gen
	dir.mtime = n.mtime
	dir.ctime = n.mtime
	if err := f.saveMetaLocked(n); err != nil {
		f.detachLocked(n)
		n.removed = true
		return nil, err
	}
	return n, nil
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(n *Node) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.kind != meta.KindSymlink {
		return "", ErrInvalid
	}
	return n.target, nil
}

// Kind is the node's local-only kind ("" for files and folders).
func (n *Node) Kind() meta.Kind { return n.kind }

func kindBits(k meta.Kind) uint32 {
	switch k {
	case meta.KindSymlink:
		return syscall.S_IFLNK
	case meta.KindFIFO:
		return syscall.S_IFIFO
	case meta.KindSocket:
		return syscall.S_IFSOCK
	case meta.KindChar:
		return syscall.S_IFCHR
	case meta.KindBlock:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

// KindOfMode maps mknod's file type bits to a kind ("" for a regular file).
func KindOfMode(mode uint32) (meta.Kind, bool) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO:
		return meta.KindFIFO, true
	case syscall.S_IFSOCK:
		return meta.KindSocket, true
	case syscall.S_IFCHR:
		return meta.KindChar, true
	case syscall.S_IFBLK:
		return meta.KindBlock, true
	case syscall.S_IFREG, 0:
		return "", true
	}
	return "", false
}

// renameLocalNode moves a local-only node; nothing happens on the service
// unless it replaces a published file, which is deleted first.
func (f *FS) renameLocalNode(ctx context.Context, src, dst, newDir *Node, newName string) error {
	if dst != nil && dst.kind == "" && !dst.dir {
		if err := f.Unlink(ctx, newDir, newName); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if src.removed || src.parent == nil {
		return ErrNotExist
	}
	cur := newDir.children[remote.FoldName(newName)]
	switch {
	case cur != nil && cur.kind == "" && cur.dir:
		return ErrIsDir
	case cur != nil && cur.kind == "":
		return syscall.EAGAIN // raced with another change; the caller may retry
	case cur != nil:
		f.detachLocked(cur)
		cur.removed = true
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
	f.pruneLocked(oldParent)
	return nil
}

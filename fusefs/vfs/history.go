package vfs

// # History and trash: the control folder
//
// The File API keeps every version of a file and soft-deletes; the mount
// shows both in a read-only control folder at its root:
//
//	.evofs/versions/PATH/        one folder per published file PATH; in it
//	                             one file per version, "STAMP NAME", STAMP
//	                             being the version's created_at in UTC as
//	                             2026-11-30T00-22-46.123Z (so that sorting by
//	                             name sorts by time)
//	.evofs/trash/PATH            the deleted files, by the path they had
//
// Invariants:
//
//   - The control folder is not a child of the root: it never shows in a
//     listing of the root (so find, rsync, du and backups never walk the
//     history) and is reached by its name only. A name of the workspace
//     always wins: if the workspace has its own ".evofs" at its root, that is
//     shown as it is and the control folder is reached as ".evofs-history".
//     Nothing under it is ever published, and nothing named after it is made
//     at the root (EEXIST).
//   - View nodes are Nodes whose view is set. They are never in byID, byKey
//     or the metadata store. Every change to or inside a view answers EROFS,
//     except a rename out of the trash to the entry's old path, which
//     restores the file (see restore.go).
//   - Entering costs nothing until a file's versions or the trash are listed:
//     the control folder, .evofs/versions and its folders mirror the tree
//     from memory. Listing the versions of one file is one request (get by
//     id with include_versions); the list is kept while it contains the
//     version the tree shows for that file, so it is fresh exactly as the
//     tree is (delta polls, our own publishes) and is fetched again only
//     when the tree has moved on. The trash is listed when first entered
//     (paged, newest deletions first, at most Config.TrashLimit files), then
//     kept fresh by what the delta polls already fetch (deleted files are
//     added, files listed live again are dropped) and by our own deletes and
//     restores; a full relisting of the tree (hourly) makes the next entry
//     list it again.
//   - A version or trash entry is clean content (fileID, version): it is read
//     through the content cache keyed by (file id, version id) like any file.
//     Versions are immutable, so a cached one is never revalidated.
//
// Locking: Node.view is atomic (set once, cleared only when a restore turns a
// trash node into a tree node, under FS.mu); everything else in a view is
// guarded by FS.mu. A version list's fetch mutex and history.trashLoad are
// taken before FS.mu and never with it held; no lock is held across a
// request except those two.

import (
	"context"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
)

// Names of the control folder: ControlName, or ControlAltName while the
// workspace has its own ControlName at its root.
const (
	ControlName    = ".evofs"
	ControlAltName = ".evofs-history"
)

// Extended attributes of view nodes.
const (
	// XattrView names what a folder of the control folder is: control,
	// versions or trash.
	XattrView = "user.evofs.view"
	// XattrPath, on a trash entry, is the path a restore puts it back at.
	XattrPath = "user.evofs.path"
)

// XattrNames are every extended attribute name the core serves, in listing order.
var XattrNames = []string{XattrFileID, XattrVersionID, XattrState, XattrPath, XattrView, XattrControl}

// ErrNotOldPath: a trash entry can only be renamed to the path it was deleted
// from. EINVAL rather than EXDEV: EXDEV would make mv copy the bytes to a new
// file (a new identity without history) and then fail to remove the entry.
var ErrNotOldPath = syscall.EINVAL

// DefaultTrashLimit bounds the trash listing.
const DefaultTrashLimit = 10000

type viewKind uint8

const (
	viewControl     viewKind = iota + 1
	viewMirror               // .evofs/versions and its folders: a tree folder's published files
	viewVersionList          // the versions of one file (a folder)
	viewVersion              // one version (a file)
	viewTrashDir             // a folder of the trash (its root included)
	viewTrashFile            // a deleted file
)

// view is what makes a Node part of the control folder. kind and the ids
// never change; the rest is guarded by FS.mu.
type view struct {
	kind   viewKind
	target *Node     // viewMirror: the tree folder shown
	fileID uuid.UUID // viewVersionList, viewTrashFile

	fetch   sync.Mutex                 // viewVersionList: one fetch at a time; before FS.mu
	fetched bool                       // viewVersionList: the list below is what the service said
	has     map[remote.VersionID]*Node // viewVersionList: entries by version
	row     remote.FileMeta            // viewTrashFile: the deleted file's listing row
}

// history is the control folder's state, guarded by FS.mu except trashLoad.
type history struct {
	control, versions, trash *Node

	mirrors map[*Node]*Node     // tree folder → its mirror under .evofs/versions
	lists   map[uuid.UUID]*Node // file id → its version list folder

	trashLoad    sync.Mutex // one trash listing at a time; before FS.mu
	trashLoaded  bool       // trashRows is the service's trash (kept fresh since)
	trashStale   bool       // list it again at the next entry
	trashLoading bool       // a listing runs: changes are also logged in trashLog
	trashLog     []trashChange
	trashRows    map[uuid.UUID]remote.FileMeta
	trashDirty   bool                // rows changed since the trash tree was built
	trashFiles   map[uuid.UUID]*Node // by file id, reused across rebuilds
	trashDirs    map[string]*Node    // by folded path, reused across rebuilds
}

type trashChange struct {
	put  *remote.FileMeta // added or updated
	drop uuid.UUID        // live again
}

// initHistory makes the control folder's fixed nodes (from New).
func (f *FS) initHistory() {
	mk := func(k viewKind, parent *Node, name string) *Node {
		n := f.newNodeLocked(true)
		n.view.Store(&view{kind: k})
		n.parent, n.name = parent, name
		if parent != f.root {
			parent.children[remote.FoldName(name)] = n
		}
		return n
	}
	h := &f.hist
	h.control = mk(viewControl, f.root, ControlName)
	h.versions = mk(viewMirror, h.control, "versions")
	h.versions.view.Load().target = f.root
	h.trash = mk(viewTrashDir, h.control, "trash")
	h.mirrors = map[*Node]*Node{f.root: h.versions}
	h.lists = map[uuid.UUID]*Node{}
	h.trashRows = map[uuid.UUID]remote.FileMeta{}
	h.trashFiles = map[uuid.UUID]*Node{}
	h.trashDirs = map[string]*Node{}
}

// IsView reports whether n is in the control folder (read-only).
func (n *Node) IsView() bool { return n.view.Load() != nil }

// controlNameLocked reports whether name at the root names the control folder.
func (f *FS) controlNameLocked(name string) bool {
	k := remote.FoldName(name)
	taken := f.root.children[remote.FoldName(ControlName)] != nil
	switch k {
	case remote.FoldName(ControlName):
		return !taken
	case remote.FoldName(ControlAltName):
		return taken && f.root.children[k] == nil
	}
	return false
}

// loadView fetches what a view folder lists, if it is fetched at all: the
// versions of one file, or the trash (no lock held).
func (f *FS) loadView(dir *Node, v *view) error {
	switch v.kind {
	case viewVersionList:
		return f.loadVersions(dir, v)
	case viewTrashDir:
		return f.loadTrash()
	}
	return nil
}

// viewLookup resolves name in a view folder. It may list the trash or the
// versions of a file (no lock held).
func (f *FS) viewLookup(dir *Node, v *view, name string) (*Node, error) {
	if err := f.loadView(dir, v); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !dir.dir {
		return nil, ErrNotDir
	}
	switch v.kind {
	case viewMirror:
		t := v.target
		if t.removed {
			return nil, ErrNotExist
		}
		c := t.children[remote.FoldName(name)]
		if c == nil {
			return nil, ErrNotExist
		}
		if c.dir {
			return f.mirrorLocked(c), nil
		}
		if c.kind != "" || c.fileID == uuid.Nil {
			return nil, ErrNotExist
		}
		return f.versionListLocked(c), nil
	case viewTrashDir:
		f.rebuildTrashLocked()
	}
	if dir.removed {
		return nil, ErrNotExist
	}
	c := dir.children[remote.FoldName(name)]
	if c == nil {
		return nil, ErrNotExist
	}
	return c, nil
}

// viewReaddir lists a view folder.
func (f *FS) viewReaddir(dir *Node, v *view) ([]DirEntry, error) {
	if err := f.loadView(dir, v); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []DirEntry
	switch v.kind {
	case viewMirror:
		if v.target.removed {
			return nil, ErrNotExist
		}
		for _, c := range v.target.children {
			switch {
			case c.dir:
				m := f.mirrorLocked(c)
				out = append(out, DirEntry{Name: c.name, Ino: m.ino, Dir: true, Mode: syscall.S_IFDIR})
			case c.kind == "" && c.fileID != uuid.Nil:
				l := f.versionListLocked(c)
				out = append(out, DirEntry{Name: c.name, Ino: l.ino, Dir: true, Mode: syscall.S_IFDIR})
			}
		}
	default:
		if v.kind == viewTrashDir {
			f.rebuildTrashLocked()
		}
		if dir.removed {
			return nil, ErrNotExist
		}
		for _, c := range dir.children {
			mode := uint32(syscall.S_IFREG)
			if c.dir {
				mode = syscall.S_IFDIR
			}
			out = append(out, DirEntry{Name: c.name, Ino: c.ino, Dir: c.dir, Mode: mode})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// mirrorLocked is the folder of .evofs/versions showing tree folder t.
func (f *FS) mirrorLocked(t *Node) *Node {
	if m := f.hist.mirrors[t]; m != nil {
		return m
	}
	m := f.newNodeLocked(true)
	m.view.Store(&view{kind: viewMirror, target: t})
	parent := f.hist.versions
	if t.parent != nil {
		parent = f.mirrorLocked(t.parent)
	}
	m.parent, m.name = parent, t.name // never in a children map: listed from t
	m.mtime, m.ctime = t.mtime, t.ctime
	f.hist.mirrors[t] = m
	return m
}

// versionListLocked is the folder listing the versions of tree file c.
func (f *FS) versionListLocked(c *Node) *Node {
	if l := f.hist.lists[c.fileID]; l != nil {
		l.parent, l.name = f.mirrorLocked(c.parent), c.name // the file may have moved since
		return l
	}
	l := f.newNodeLocked(true)
	l.view.Store(&view{kind: viewVersionList, fileID: c.fileID, has: map[remote.VersionID]*Node{}})
	l.parent, l.name = f.mirrorLocked(c.parent), c.name
	l.mtime, l.ctime = c.mtime, c.ctime
	f.hist.lists[c.fileID] = l
	return l
}

// loadVersions fetches the versions of a version list's file (one request)
// unless the list it has is still fresh: it holds the version the tree
// shows for that file (or the file left the tree: its history is final).
func (f *FS) loadVersions(l *Node, v *view) error {
	v.fetch.Lock()
	defer v.fetch.Unlock()
	f.mu.Lock()
	fresh := v.fetched
	if n := f.byID[v.fileID]; fresh && n != nil && n.version != "" && v.has[n.version] == nil {
		fresh = false
	}
	f.mu.Unlock()
	if fresh {
		return nil
	}
	ctx, cancel := f.bg(metaTimeout)
	defer cancel()
	m, err := f.client.GetByID(ctx, v.fileID, remote.GetOptions{IncludeVersions: true, Deleted: true})
	if err != nil {
		f.log.WithError(err).WithField("file_id", v.fileID).Debug("listing the versions of a file")
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setVersionsLocked(l, v, m)
	return nil
}

// VersionStamp is how a version's time starts its name in a version list.
func VersionStamp(t time.Time) string { return t.UTC().Format("2006-01-02T15-04-05.000Z") }

// setVersionsLocked makes l's entries the versions of m.
func (f *FS) setVersionsLocked(l *Node, v *view, m *remote.FileMeta) {
	vs := append([]remote.FileVersion(nil), m.Versions...)
	if len(vs) == 0 { // a service that leaves out versions still has the latest
		vs = []remote.FileVersion{{VersionID: m.VersionID, CreatedAt: m.ModifiedAt, FileID: m.FileID, Name: m.Name, Path: m.Path, Size: m.Size}}
	}
	sort.SliceStable(vs, func(i, j int) bool {
		if !vs[i].CreatedAt.Equal(vs[j].CreatedAt.Time) {
			return vs[i].CreatedAt.Before(vs[j].CreatedAt.Time)
		}
		return vs[i].VersionID.Less(vs[j].VersionID)
	})
	l.children = make(map[string]*Node, len(vs))
	for _, fv := range vs {
		n := v.has[fv.VersionID]
		if n == nil {
			n = f.newNodeLocked(false)
			n.view.Store(&view{kind: viewVersion, fileID: m.FileID})
			n.fileID, n.version = m.FileID, fv.VersionID
			v.has[fv.VersionID] = n
		}
		n.size = fv.Size
		n.mtime, n.ctime = fv.CreatedAt.Time, fv.CreatedAt.Time
		if fv.VersionID == m.VersionID && m.Download != "" && n.blob == nil {
			n.blob = f.client.NewBlob(m)
		}
		name := fv.Name
		if name == "" {
			name = m.Name
		}
		stamp := VersionStamp(fv.CreatedAt.Time)
		entry := stamp + " " + name
		for i := 2; l.children[remote.FoldName(entry)] != nil; i++ {
			entry = stamp + "-" + itoa(i) + " " + name
		}
		f.attachLocked(l, entry, n)
	}
	v.fetched = true
}

func itoa(i int) string {
	var b [20]byte
	p := len(b)
	for {
		p--
		b[p] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(b[p:])
		}
	}
}

// ---- trash ----

// loadTrash lists the trash when it is entered first (or again after a full
// relisting of the tree): deleted files, newest deletions first, paged, at
// most Config.TrashLimit of them.
func (f *FS) loadTrash() error {
	h := &f.hist
	h.trashLoad.Lock()
	defer h.trashLoad.Unlock()
	f.mu.Lock()
	if h.trashLoaded && !h.trashStale {
		f.mu.Unlock()
		return nil
	}
	h.trashLoading, h.trashLog = true, nil
	f.mu.Unlock()
	ctx, cancel := f.bg(metaTimeout)
	defer cancel()
	rows, more, err := f.listTrash(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	h.trashLoading = false
	log := h.trashLog
	h.trashLog = nil
	if err != nil {
		f.log.WithError(err).Warn("listing the trash")
		return err
	}
	if more {
		f.log.WithField("shown", len(rows)).Info("the trash holds more deleted files than are shown (the newest deletions are)")
	}
	h.trashRows = make(map[uuid.UUID]remote.FileMeta, len(rows))
	for _, r := range rows {
		h.trashRows[r.FileID] = r
	}
	for _, c := range log {
		if c.put != nil {
			h.trashRows[c.put.FileID] = *c.put
		} else {
			delete(h.trashRows, c.drop)
		}
	}
	h.trashLoaded, h.trashStale, h.trashDirty = true, false, true
	return nil
}

// listTrash pages through the deleted files, newest deletions first.
func (f *FS) listTrash(ctx context.Context) (rows []remote.FileMeta, more bool, err error) {
	limit := f.cfg.TrashLimit
	const page = 1000
	seen := map[uuid.UUID]bool{}
	for off := 0; ; {
		p, err := f.client.List(ctx, remote.ListOptions{Deleted: true, Limit: min(page, limit-len(rows)), Offset: off, OrderBy: "desc:deleted_at"})
		if err != nil {
			return nil, false, err
		}
		for _, r := range p.Files {
			if !seen[r.FileID] {
				seen[r.FileID] = true
				rows = append(rows, r)
			}
		}
		off += p.Count
		if p.Count <= 0 || len(p.Files) == 0 || off >= p.Total {
			return rows, false, nil
		}
		if len(rows) >= limit {
			return rows, true, nil
		}
	}
}

// trashPutLocked records a deleted file (from a poll or our own delete).
func (f *FS) trashPutLocked(m remote.FileMeta) {
	h := &f.hist
	if h.trashLoading {
		h.trashLog = append(h.trashLog, trashChange{put: &m})
	}
	if !h.trashLoaded {
		return
	}
	if old, ok := h.trashRows[m.FileID]; ok && old.VersionID == m.VersionID && deletedAt(&old).Equal(deletedAt(&m)) && old.FullPath() == m.FullPath() {
		return
	}
	h.trashRows[m.FileID] = m
	h.trashDirty = true
}

// trashDropLocked records that a file is live again (restored).
func (f *FS) trashDropLocked(id uuid.UUID) {
	h := &f.hist
	if h.trashLoading {
		h.trashLog = append(h.trashLog, trashChange{drop: id})
	}
	if _, ok := h.trashRows[id]; ok {
		delete(h.trashRows, id)
		h.trashDirty = true
	}
}

// noteDeletedLocked merges the deleted files a delta poll listed.
func (f *FS) noteDeletedLocked(rows []remote.FileMeta) {
	for i := range rows {
		if rows[i].DeletedAt != nil {
			f.trashPutLocked(rows[i])
		}
	}
}

// noteLiveLocked drops files a listing showed live from the trash; a full
// listing also makes the next entry list the trash again.
func (f *FS) noteLiveLocked(rows []remote.FileMeta, full bool) {
	for i := range rows {
		f.trashDropLocked(rows[i].FileID)
	}
	if full && f.hist.trashLoaded {
		f.hist.trashStale = true
	}
}

// trashRowLocked is the trash row of a file node we delete, when its content
// is what the service has (nil otherwise: a poll brings it).
func (f *FS) trashRowLocked(n *Node) *remote.FileMeta {
	if n.fileID == uuid.Nil || n.remotePath == "" || n.local != nil {
		return nil
	}
	dir, name := path.Split(n.remotePath)
	now := remote.Time{Time: time.Now().UTC()}
	return &remote.FileMeta{Name: name, Path: "/" + dir, FileID: n.fileID, VersionID: n.version, Size: n.size, ETag: n.etag,
		CreatedAt: remote.Time{Time: n.mtime}, ModifiedAt: remote.Time{Time: n.mtime}, DeletedAt: &now}
}

// rebuildTrashLocked lays the trash rows out as a tree: every folder of an
// old path, then the files, newest deletion first. The newest deleted file
// of a path takes the plain name; older ones (and a file whose name a
// folder took) are "NAME (deleted YYYY-MM-DD hhmmss).EXT". Nodes are reused
// by folder path and by file id, so inode numbers stay while entries stay.
func (f *FS) rebuildTrashLocked() {
	h := &f.hist
	if !h.trashDirty {
		return
	}
	h.trashDirty = false
	rows := make([]remote.FileMeta, 0, len(h.trashRows))
	for _, r := range h.trashRows {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := deletedAt(&rows[i]), deletedAt(&rows[j])
		if !a.Equal(b) {
			return a.After(b)
		}
		return rows[i].FileID.String() < rows[j].FileID.String()
	})
	h.trash.children = map[string]*Node{}
	dirs := map[string]*Node{"": h.trash}
	var dirOf func(segs []string) *Node
	dirOf = func(segs []string) *Node {
		key := remote.FoldPath(strings.Join(segs, "/"))
		if d := dirs[key]; d != nil {
			return d
		}
		parent := dirOf(segs[:len(segs)-1])
		d := h.trashDirs[key]
		if d == nil {
			d = f.newNodeLocked(true)
			d.view.Store(&view{kind: viewTrashDir})
		}
		d.children = map[string]*Node{}
		d.removed = false
		f.attachLocked(parent, segs[len(segs)-1], d)
		dirs[key] = d
		return d
	}
	for i := range rows {
		if segs := splitPath(rows[i].FullPath()); len(segs) > 1 {
			d := dirOf(segs[:len(segs)-1])
			at := deletedAt(&rows[i])
			if at.After(d.mtime) {
				d.mtime, d.ctime = at, at
			}
		}
	}
	files := map[uuid.UUID]*Node{}
	for i := range rows {
		r := rows[i]
		segs := splitPath(r.FullPath())
		if len(segs) == 0 {
			continue
		}
		d := dirOf(segs[:len(segs)-1])
		name := segs[len(segs)-1]
		if d.children[remote.FoldName(name)] != nil {
			base := deletedName(name, deletedAt(&r))
			name = base
			for k := 2; d.children[remote.FoldName(name)] != nil; k++ {
				name = strings.Replace(base, ")", " "+itoa(k)+")", 1)
			}
		}
		n := h.trashFiles[r.FileID]
		if n == nil {
			n = f.newNodeLocked(false)
			n.view.Store(&view{kind: viewTrashFile, fileID: r.FileID})
		}
		v := n.view.Load()
		if v.row.VersionID != r.VersionID {
			n.blob = nil
		}
		v.row = r
		n.fileID, n.version, n.size, n.etag = r.FileID, r.VersionID, r.Size, r.ETag
		n.mtime, n.ctime = r.ModifiedAt.Time, deletedAt(&r)
		n.removed = false
		f.attachLocked(d, name, n)
		files[r.FileID] = n
	}
	for id, n := range h.trashFiles {
		if files[id] == nil {
			n.removed, n.parent = true, nil
		}
	}
	for k, d := range h.trashDirs {
		if dirs[k] == nil {
			d.removed, d.parent, d.children = true, nil, map[string]*Node{}
		}
	}
	delete(dirs, "")
	h.trashFiles, h.trashDirs = files, dirs
}

func deletedAt(m *remote.FileMeta) time.Time {
	if m.DeletedAt != nil {
		return m.DeletedAt.Time
	}
	return m.ModifiedAt.Time
}

// deletedName is "NAME (deleted YYYY-MM-DD hhmmss).EXT" (the conflict copies' style).
func deletedName(name string, at time.Time) string {
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if stem == "" { // ".bashrc"
		stem, ext = name, ""
	}
	return stem + " (deleted " + at.UTC().Format("2006-01-02 150405") + ")" + ext
}

// trashPathLocked is a trash node's path below the trash folder.
func (f *FS) trashPathLocked(n *Node) string {
	var segs []string
	for m := n; m != nil && m != f.hist.trash; m = m.parent {
		segs = append(segs, m.name)
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/")
}

// viewPerm is a view node's permission bits: read-only.
func viewPerm(n *Node) uint32 {
	if n.dir {
		return 0o555
	}
	return 0o444
}

// viewXattrsLocked are a view node's extended attributes.
func (f *FS) viewXattrsLocked(n *Node, v *view) map[string]string {
	switch v.kind {
	case viewControl:
		return map[string]string{XattrView: "control"}
	case viewMirror:
		return map[string]string{XattrView: "versions"}
	case viewVersionList:
		return map[string]string{XattrView: "versions", XattrFileID: v.fileID.String()}
	case viewTrashDir:
		return map[string]string{XattrView: "trash"}
	case viewVersion:
		return map[string]string{XattrFileID: n.fileID.String(), XattrVersionID: string(n.version), XattrState: "published"}
	case viewTrashFile:
		return map[string]string{XattrFileID: n.fileID.String(), XattrVersionID: string(n.version), XattrState: "deleted",
			XattrPath: v.row.FullPath()}
	}
	return nil
}

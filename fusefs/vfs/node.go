package vfs

import (
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"evofs/cache"
	"evofs/fusefs/meta"
	"evofs/remote"
	"evofs/writeback"
)

// Node is a file or folder of the mount. ino and dir never change; every
// other field is guarded by FS.mu, except that local.f's bytes are guarded by io.
type Node struct {
	ino uint64
	dir bool
	io  sync.RWMutex // content I/O vs staging swaps; taken before FS.mu

	view atomic.Pointer[view] // set: a read-only node of the control folder (history.go)

	parent      *Node
	name        string           // display name (case preserved)
	children    map[string]*Node // folders: by folded name
	explicitDir bool             // made by mkdir (kept while the mount lives)
	removed     bool             // unlinked/replaced; open handles may still use it

	key        string    // writeback key; the file id for listed files, a fresh uuid for new ones
	fileID     uuid.UUID // remote identity; Nil until first published
	version    remote.VersionID
	remotePath string // where fileID lives on the service ("" if unpublished)
	etag       string
	blob       *remote.Blob // download handle for (fileID, version); nil until needed
	size       int64
	mtime      time.Time
	atime      time.Time // zero: shows mtime
	ctime      time.Time

	// kept in the meta store (attrs.go)
	has    meta.Has  // which of perm and uid/gid are set
	perm   uint32    // permission bits
	uid    uint32    //
	gid    uint32    //
	kind   meta.Kind // local-only node (symlink, FIFO, ...); "" for files and folders
	target string    // symlink target
	rdev   uint32    // device number of a device node

	local      *staging                 // non-nil while the content is local
	stream     *writeback.Stream        // guarded by io; the streaming publish of a file written in sequence (nil-safe)
	writers    int                      // open writable handles
	handles    int                      // open handles of any kind (a staging file is closed only when none is left)
	staleBase  bool                     // our last publish became a conflict copy while a writer held the file
	openVer    remote.VersionID         // version at the last open (the kernel's pages hold it)
	localVer   remote.VersionID         // version our own last publish produced
	readers    map[remote.VersionID]int // open clean read handles by the version they opened
	deleteNext uuid.UUID                // a file to delete once this node's next publish lands (renamed-away identity)
	deleteVer  remote.VersionID         // the version deleteNext had; a changed file is kept
	deletePath string                   // where deleteNext lives on the service
	touched    uint64                   // FS.gen of the last local change (guards against stale listings)
	failed     string                   // last permanent publish failure, for status
}

// staging is a node's local content.
type staging struct {
	path   string
	f      *os.File // open read-write while the node is local
	queued bool     // handed to writeback; a write must take it back first
	dirty  bool     // changed since last handed to writeback
}

// Ino is the node's inode number, stable while mounted.
func (n *Node) Ino() uint64 { return n.ino }

// IsDir reports whether the node is a folder.
func (n *Node) IsDir() bool { return n.dir }

// Attr is what stat shows.
type Attr struct {
	Ino   uint64
	Size  int64
	Mode  uint32 // including the file type bits
	Mtime time.Time
	Atime time.Time
	Ctime time.Time
	UID   uint32
	GID   uint32
	Nlink uint32
	Rdev  uint32
}

// Blocks is st_blocks (512-byte units).
func (a Attr) Blocks() uint64 { return uint64((a.Size + 511) / 512) }

// Attr returns the node's attributes.
func (f *FS) Attr(n *Node) Attr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attrLocked(n)
}

func (f *FS) attrLocked(n *Node) Attr {
	a := f.attrNoLinksLocked(n)
	if n.dir {
		for _, c := range n.children {
			if c.dir {
				a.Nlink++
			}
		}
	}
	return a
}

// attrNoLinksLocked is attrLocked without a folder's subfolders in Nlink,
// which cost a pass over its children (a create in a big folder asks for
// the folder's mode and group only).
func (f *FS) attrNoLinksLocked(n *Node) Attr {
	a := Attr{Ino: n.ino, Size: n.size, Mtime: n.mtime, Atime: n.atime, Ctime: n.ctime, UID: f.cfg.UID, GID: f.cfg.GID, Nlink: 1}
	if a.Atime.IsZero() {
		a.Atime = a.Mtime
	}
	perm := f.defaultPerm(n.dir)
	if n.has&meta.HasMode != 0 {
		perm = n.perm
	}
	if n.has&meta.HasOwner != 0 {
		a.UID, a.GID = n.uid, n.gid
	}
	switch {
	case n.dir:
		a.Mode = syscall.S_IFDIR
		a.Size = 4096
		a.Nlink = 2
	case n.kind != "":
		a.Mode = kindBits(n.kind)
		a.Rdev = n.rdev
		if n.kind == meta.KindSymlink {
			a.Size, perm = int64(len(n.target)), 0o777
		}
	default:
		a.Mode = syscall.S_IFREG
	}
	if n.removed && !n.dir {
		a.Nlink = 0
	}
	if f.cfg.ReadOnly {
		perm &^= 0o222
	}
	if n.view.Load() != nil {
		perm = viewPerm(n)
	}
	a.Mode |= perm & 0o7777
	return a
}

// pathLocked is the node's workspace path, "A/B/c" ("" for the root).
func (f *FS) pathLocked(n *Node) string {
	var segs []string
	for m := n; m != nil && m != f.root; m = m.parent {
		segs = append(segs, m.name)
	}
	for i, j := 0, len(segs)-1; i < j; i, j = i+1, j-1 {
		segs[i], segs[j] = segs[j], segs[i]
	}
	return strings.Join(segs, "/")
}

// Path returns the node's workspace path.
func (f *FS) Path(n *Node) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pathLocked(n)
}

func (f *FS) newNodeLocked(dir bool) *Node {
	n := &Node{ino: f.nextIno, dir: dir}
	f.nextIno++
	if dir {
		n.children = map[string]*Node{}
	}
	now := time.Now()
	n.mtime, n.ctime = now, now
	return n
}

// attachLocked links child under parent by name.
func (f *FS) attachLocked(parent *Node, name string, child *Node) {
	child.parent = parent
	child.name = name
	parent.children[remote.FoldName(name)] = child
}

// detachLocked unlinks n from its parent.
func (f *FS) detachLocked(n *Node) {
	if n.parent != nil {
		if cur := n.parent.children[remote.FoldName(n.name)]; cur == n {
			delete(n.parent.children, remote.FoldName(n.name))
		}
	}
	n.parent = nil
}

// forgetLocked drops a removed file node's indexes.
func (f *FS) forgetLocked(n *Node) {
	n.removed = true
	if n.fileID != uuid.Nil && f.byID[n.fileID] == n {
		delete(f.byID, n.fileID)
	}
	if f.byKey[n.key] == n {
		delete(f.byKey, n.key)
	}
}

// pruneLocked removes implicit folders left empty, walking up from dir.
func (f *FS) pruneLocked(dir *Node) {
	for d := dir; d != nil && d != f.root && !d.explicitDir && len(d.children) == 0; {
		p := d.parent
		f.deleteMetaLocked(d)
		f.detachLocked(d)
		d.removed = true
		if p != nil {
			f.notifier().EntryDeleted(p.ino, d.name, d.ino)
		}
		d = p
	}
}

// mkdirAllLocked returns the folder at segs, creating implicit ones.
func (f *FS) mkdirAllLocked(segs []string) *Node {
	d := f.root
	for _, s := range segs {
		c := d.children[remote.FoldName(s)]
		if c == nil || !c.dir {
			if c != nil { // a file where a folder must be: the listing wins for folders
				f.detachLocked(c)
				f.forgetLocked(c)
				f.notifier().EntryDeleted(d.ino, c.name, c.ino)
				if c.local != nil {
					f.log.WithField("path", f.pathLocked(d)+"/"+c.name).Warn("a folder on the service replaced a local file of the same name; its unpublished content stays in the cache's staging folder")
				}
			}
			c = f.newNodeLocked(true)
			f.attachLocked(d, s, c)
			f.loadMetaLocked(c)
		}
		d = c
	}
	return d
}

// Lookup finds name in dir, case-insensitively.
func (f *FS) Lookup(dir *Node, name string) (*Node, error) {
	if !dir.dir {
		return nil, ErrNotDir
	}
	if nameTooLong(name) {
		return nil, syscall.ENAMETOOLONG
	}
	if v := dir.view.Load(); v != nil {
		return f.viewLookup(dir, v, name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := dir.children[remote.FoldName(name)]
	if c == nil {
		if dir == f.root && f.controlNameLocked(name) {
			return f.hist.control, nil
		}
		return nil, ErrNotExist
	}
	return c, nil
}

// DirEntry is one readdir row.
type DirEntry struct {
	Name string
	Ino  uint64
	Dir  bool
	Mode uint32 // file type bits
}

// Readdir lists a folder, sorted by name.
func (f *FS) Readdir(dir *Node) ([]DirEntry, error) {
	if !dir.dir {
		return nil, ErrNotDir
	}
	if v := dir.view.Load(); v != nil {
		return f.viewReaddir(dir, v)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]DirEntry, 0, len(dir.children))
	for _, c := range dir.children {
		mode := uint32(syscall.S_IFREG)
		switch {
		case c.dir:
			mode = syscall.S_IFDIR
		case c.kind != "":
			mode = kindBits(c.kind)
		}
		out = append(out, DirEntry{Name: c.name, Ino: c.ino, Dir: c.dir, Mode: mode})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Xattr names the core serves.
const (
	XattrFileID    = "user.evofs.file_id"
	XattrVersionID = "user.evofs.version_id"
	XattrState     = "user.evofs.state"
	// XattrControl, on the root only, names the mount's control socket
	// (fusefs/control), which serves its status; absent without one.
	XattrControl = "user.evofs.control"
)

// Status is the mount's state as the control socket reports it.
type Status struct {
	// Online is false while the service cannot be reached (the last
	// listing failed); cached files stay readable and writes queue up.
	Online    bool                  `json:"online"`
	LastError string                `json:"last_error,omitempty"`
	Jobs      []writeback.JobStatus `json:"jobs"`
	Cache     cache.Usage           `json:"cache"`
}

// Status reports reachability, pending publishes and cache usage.
func (f *FS) Status() Status {
	f.mu.Lock()
	online, why := f.pollErr == "", f.pollErr
	f.mu.Unlock()
	return Status{Online: online, LastError: why, Jobs: f.queue.Status(), Cache: f.cache.Usage()}
}

// Xattrs returns the node's extended attributes.
func (f *FS) Xattrs(n *Node) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v := n.view.Load(); v != nil {
		return f.viewXattrsLocked(n, v)
	}
	if n == f.root {
		if f.cfg.ControlSocket == "" {
			return nil
		}
		return map[string]string{XattrControl: f.cfg.ControlSocket}
	}
	if n.dir {
		return nil
	}
	out := map[string]string{}
	if n.fileID != uuid.Nil {
		out[XattrFileID] = n.fileID.String()
		out[XattrVersionID] = string(n.version)
	}
	out[XattrState] = f.stateLocked(n)
	return out
}

// stateLocked is pending/uploading/published/failed/local.
func (f *FS) stateLocked(n *Node) string {
	if n.kind != "" {
		return "local"
	}
	if n.local != nil && f.isLocalOnly(n.name) {
		return "local"
	}
	if n.local != nil {
		if st, ok := f.queue.Pending(n.key); ok {
			return string(st.State)
		}
		return "pending"
	}
	return "published"
}

// Package fusefs is the thin FUSE adapter of evofs: it is the only package
// that imports go-fuse. Each kernel call becomes one call on the core
// (fusefs/vfs) and its error becomes an errno through errno(); no HTTP,
// retries or disk I/O happen here.
//
// Kernel notifications (the core telling the kernel that entries or pages
// changed) are queued and sent from one goroutine, never from inside an
// operation, because notifying the kernel about a directory it has locked
// for the operation in progress deadlocks.
package fusefs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"evofs/fusefs/vfs"
)

// Options configures the mount.
type Options struct {
	// Attribute and entry cache lifetimes in the kernel. Remote changes are
	// also pushed by invalidation, so these bound staleness only for misses.
	AttrTimeout     time.Duration // default 1 s
	EntryTimeout    time.Duration // default 1 s
	NegativeTimeout time.Duration // default 0: new remote files show up at once
	// AllowOther lets other users in; the kernel then enforces the
	// stored modes (default_permissions), as on a local disk.
	AllowOther bool
	Debug      bool // log every FUSE request
	// Observe, if set, hears each timed kernel operation's name and duration (metrics).
	Observe func(op string, d time.Duration)
	Logger  *logrus.Entry
}

// Mount serves core at dir. The caller unmounts with server.Unmount and
// waits with server.Wait.
func Mount(dir string, core *vfs.FS, o Options) (*fuse.Server, error) {
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(os.Stderr)
		o.Logger = logrus.NewEntry(l)
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = time.Second
	}
	if o.EntryTimeout == 0 {
		o.EntryTimeout = time.Second
	}
	m := &mount{core: core, log: o.Logger, observe: o.Observe, inodes: map[uint64]*fs.Inode{}, events: make(chan event, 4096)}
	root := &node{m: m, n: core.Root()}
	neg := o.NegativeTimeout
	var mopts []string
	if o.AllowOther {
		mopts = append(mopts, "default_permissions")
	}
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      "evofs",
			Name:        "evofs",
			DirectMount: os.Geteuid() == 0,
			AllowOther:  o.AllowOther,
			Options:     mopts,
			MaxWrite:    1 << 20,
			// let the kernel read ahead up to 1 MiB per request (the core
			// reads further ahead from the service on its own)
			MaxReadAhead:  1 << 20,
			DisableSplice: true,
			Debug:         o.Debug,
		},
		EntryTimeout:    &o.EntryTimeout,
		AttrTimeout:     &o.AttrTimeout,
		NegativeTimeout: &neg,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mounting %s: %w", dir, err)
	}
	m.remember(root.EmbeddedInode())
	raiseReadAhead(dir, o.Logger)
	go m.deliver()
	core.SetNotifier(m)
	go func() {
		server.Wait()
		close(m.stop())
	}()
	return server, nil
}

// raiseReadAhead lets the kernel read ahead 1 MiB at a time on this mount.
// FUSE caps a new mount's read-ahead at the system default (usually 128 KiB,
// i.e. 8 round trips per MiB); only root may raise it, through sysfs, so
// this is best effort.
//
// The device number comes from /proc/self/mountinfo, never from a stat of
// the mount: a thread of the serving process blocked in a request to its
// own mount cannot finish when the process is killed (the kernel waits for
// an answer no thread is left to give), so kill -9 would hang.
func raiseReadAhead(dir string, log *logrus.Entry) {
	dev, ok := MountedAt(dir)
	if !ok {
		return
	}
	p := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	if err := os.WriteFile(p, []byte("1024"), 0); err != nil {
		log.WithError(err).Debug("kernel read-ahead left at its default")
	}
}

// MountedAt reports whether dir (absolute, symlinks resolved) is a mount
// point in this mount namespace and, if so, the "major:minor" of the top
// mount there, from /proc/self/mountinfo (never a stat: see
// raiseReadAhead).
func MountedAt(dir string) (dev string, ok bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint ...; the last match is the top mount
		if f := strings.Fields(line); len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			dev, ok = f[2], true
		}
	}
	return dev, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mount holds what the adapter needs across nodes.
type mount struct {
	core    *vfs.FS
	log     *logrus.Entry
	observe func(op string, d time.Duration) // nil: not timed

	mu     sync.Mutex           // guards inodes and done
	inodes map[uint64]*fs.Inode // known kernel inodes by number, for notifications
	done   chan struct{}

	events chan event
}

type event struct {
	kind      int // evContent, evEntry, evDelete
	ino, pino uint64
	name      string
}

const (
	evContent = iota
	evEntry
	evDelete
)

// timed starts timing op; call the result when it ends (defer m.timed("x")()).
func (m *mount) timed(op string) func() {
	if m.observe == nil {
		return func() {}
	}
	start := time.Now()
	return func() { m.observe(op, time.Since(start)) }
}

func (m *mount) stop() chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		m.done = make(chan struct{})
	}
	return m.done
}

func (m *mount) remember(in *fs.Inode) {
	m.mu.Lock()
	m.inodes[in.StableAttr().Ino] = in
	m.mu.Unlock()
}

func (m *mount) inode(ino uint64) *fs.Inode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inodes[ino]
}

func (m *mount) post(e event) {
	select {
	case m.events <- e:
	default: // the kernel caches expire on their own; never block the core
	}
}

// InvalidateContent implements vfs.Notifier.
func (m *mount) InvalidateContent(ino uint64) { m.post(event{kind: evContent, ino: ino}) }

// InvalidateEntry implements vfs.Notifier.
func (m *mount) InvalidateEntry(pino uint64, name string) {
	m.post(event{kind: evEntry, pino: pino, name: name})
}

// EntryDeleted implements vfs.Notifier.
func (m *mount) EntryDeleted(pino uint64, name string, ino uint64) {
	m.post(event{kind: evDelete, pino: pino, name: name, ino: ino})
}

// deliver sends queued notifications to the kernel.
func (m *mount) deliver() {
	done := m.stop()
	for {
		select {
		case <-done:
			return
		case e := <-m.events:
			switch e.kind {
			case evContent:
				if in := m.inode(e.ino); in != nil {
					in.NotifyContent(0, 0)
				}
			case evEntry:
				if p := m.inode(e.pino); p != nil {
					p.NotifyEntry(e.name)
				}
			case evDelete:
				p := m.inode(e.pino)
				if p == nil {
					continue
				}
				if c := m.inode(e.ino); c != nil {
					p.NotifyDelete(e.name, c)
				} else {
					p.NotifyEntry(e.name)
				}
				if ch := p.GetChild(e.name); ch != nil && ch.StableAttr().Ino == e.ino {
					p.RmChild(e.name)
				}
			}
		}
	}
}

// node is the kernel's view of a vfs.Node.
type node struct {
	fs.Inode
	m *mount
	n *vfs.Node
}

var (
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeReaddirer   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeMkdirer     = (*node)(nil)
	_ fs.NodeRmdirer     = (*node)(nil)
	_ fs.NodeUnlinker    = (*node)(nil)
	_ fs.NodeRenamer     = (*node)(nil)
	_ fs.NodeGetxattrer  = (*node)(nil)
	_ fs.NodeSetxattrer  = (*node)(nil)
	_ fs.NodeListxattrer = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)
	_ fs.NodeOnForgetter = (*node)(nil)
	_ fs.NodeSymlinker   = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeMknoder     = (*node)(nil)
	_ fs.NodeLinker      = (*node)(nil)
)

func (n *node) fill(a vfs.Attr, out *fuse.Attr) {
	out.Ino = a.Ino
	out.Size = uint64(a.Size)
	out.Blocks = a.Blocks()
	out.Blksize = 1 << 20
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Owner = fuse.Owner{Uid: a.UID, Gid: a.GID}
	out.Rdev = a.Rdev
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

// caller is who makes a kernel request (the mount's owner if unknown).
func caller(ctx context.Context) vfs.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return vfs.Caller{UID: c.Uid, GID: c.Gid}
	}
	return vfs.Caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
}

// newAttr is a new node's mode (the kernel has taken the caller's umask
// off: go-fuse does not claim FUSE_DONT_MASK) and owner (the caller).
func newAttr(ctx context.Context, mode uint32) vfs.NewAttr {
	c := caller(ctx)
	return vfs.NewAttr{Mode: mode & 0o7777, UID: c.UID, GID: c.GID}
}

// child wraps a core node as a kernel inode under n.
func (n *node) child(ctx context.Context, c *vfs.Node, out *fuse.EntryOut) *fs.Inode {
	a := n.m.core.Attr(c)
	n.fill(a, &out.Attr)
	in := n.NewInode(ctx, &node{m: n.m, n: c}, fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: c.Ino()})
	n.m.remember(in)
	return in
}

// OnForget drops an inode the kernel forgot from the notification map, so
// it does not grow with every file ever looked up. (A spurious forget only
// costs a missed invalidation; the next lookup remembers the inode again.)
func (n *node) OnForget() {
	n.m.mu.Lock()
	if n.m.inodes[n.n.Ino()] == n.EmbeddedInode() {
		delete(n.m.inodes, n.n.Ino())
	}
	n.m.mu.Unlock()
}

// Lookup resolves a name (case-insensitively, as the service does).
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.m.timed("lookup")()
	c, err := n.m.core.Lookup(n.n, name)
	if err != nil {
		return nil, n.m.errno("lookup", name, err)
	}
	return n.child(ctx, c, out), 0
}

// Getattr reports size, times and mode.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	defer n.m.timed("getattr")()
	n.fill(n.m.core.Attr(n.n), &out.Attr)
	return 0
}

// Setattr handles truncate, and mode, owner and times (kept on this machine).
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		var h *vfs.Handle
		if fh, ok := f.(*handle); ok {
			h = fh.h
		}
		if err := n.m.core.Truncate(ctx, n.n, h, int64(size)); err != nil {
			return n.m.errno("truncate", n.m.core.Path(n.n), err)
		}
	}
	var s vfs.SetAttr
	if mode, ok := in.GetMode(); ok {
		s.Mode = &mode
	}
	if uid, ok := in.GetUID(); ok {
		s.UID = &uid
	}
	if gid, ok := in.GetGID(); ok {
		s.GID = &gid
	}
	// UTIME_NOW comes resolved (FATTR_*_NOW); UTIME_OMIT leaves the flag unset
	if at, ok := in.GetATime(); ok {
		s.Atime = &at
	}
	if mt, ok := in.GetMTime(); ok {
		s.Mtime = &mt
	}
	if s != (vfs.SetAttr{}) {
		if err := n.m.core.Setattr(n.n, s, caller(ctx)); err != nil {
			return n.m.errno("setattr", n.m.core.Path(n.n), err)
		}
	}
	n.fill(n.m.core.Attr(n.n), &out.Attr)
	return 0
}

// Symlink makes a symbolic link (kept on this machine only).
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := n.m.core.Symlink(n.n, name, target, newAttr(ctx, 0o777))
	if err != nil {
		return nil, n.m.errno("symlink", name, err)
	}
	return n.child(ctx, c, out), 0
}

// Link is refused with EPERM (what Linux file systems without hard links
// answer): a node has exactly one name, and the service has no links.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.m.core.Readlink(n.n)
	if err != nil {
		return nil, n.m.errno("readlink", n.m.core.Path(n.n), err)
	}
	return []byte(t), 0
}

// Mknod makes a FIFO, socket or device node (kept on this machine only),
// or an empty regular file.
func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	kind, ok := vfs.KindOfMode(mode)
	if !ok {
		return nil, syscall.EINVAL
	}
	if kind == "" {
		c, h, _, err := n.m.core.CreateAs(ctx, n.n, name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, newAttr(ctx, mode))
		if err != nil {
			return nil, n.m.errno("mknod", name, err)
		}
		if err := h.Flush(ctx); err != nil {
			n.m.log.WithError(err).WithField("path", name).Warn("mknod: queueing the empty file")
		}
		h.Release()
		return n.child(ctx, c, out), 0
	}
	c, err := n.m.core.Mknod(n.n, name, kind, dev, newAttr(ctx, mode))
	if err != nil {
		return nil, n.m.errno("mknod", name, err)
	}
	return n.child(ctx, c, out), 0
}

// Readdir lists a folder.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	defer n.m.timed("readdir")()
	ents, err := n.m.core.Readdir(n.n)
	if err != nil {
		return nil, n.m.errno("readdir", n.m.core.Path(n.n), err)
	}
	out := make([]fuse.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode}
	}
	return fs.NewListDirStream(out), 0
}

// Open opens a file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	defer n.m.timed("open")()
	h, mode, err := n.m.core.Open(ctx, n.n, int(flags))
	if err != nil {
		return nil, 0, n.m.errno("open", n.m.core.Path(n.n), err)
	}
	fh, ff := n.m.newHandle(h, mode)
	return fh, ff, 0
}

// newHandle wraps a core handle and turns its open mode into FOPEN flags.
func (m *mount) newHandle(h *vfs.Handle, mode vfs.OpenMode) (*handle, uint32) {
	var ff uint32
	if mode.KeepCache {
		ff |= fuse.FOPEN_KEEP_CACHE
	}
	if mode.DirectIO {
		ff |= fuse.FOPEN_DIRECT_IO
	}
	return &handle{m: m, h: h}, ff
}

// Create makes and opens a new file.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	c, h, om, err := n.m.core.CreateAs(ctx, n.n, name, int(flags), newAttr(ctx, mode))
	if err != nil {
		return nil, nil, 0, n.m.errno("create", name, err)
	}
	fh, ff := n.m.newHandle(h, om)
	return n.child(ctx, c, out), fh, ff, 0
}

// Mkdir makes a folder.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, err := n.m.core.MkdirAs(n.n, name, newAttr(ctx, mode))
	if err != nil {
		return nil, n.m.errno("mkdir", name, err)
	}
	return n.child(ctx, c, out), 0
}

// Rmdir removes an empty folder.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.m.errno("rmdir", name, n.m.core.Rmdir(n.n, name))
}

// Unlink deletes a file.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.m.errno("unlink", name, n.m.core.Unlink(ctx, n.n, name))
}

// Rename moves a file or folder.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	return n.m.errno("rename", name, n.m.core.Rename(ctx, n.n, name, np.n, newName, flags))
}

// Getxattr serves the core's user.evofs.* attributes (vfs.XattrNames).
// Other namespaces (security., system., trusted.) are not supported at all:
// ENOTSUP, not ENODATA, lets ls -l stop asking every file for an SELinux
// label and an ACL (coreutils remembers an unsupported device), which was a
// third of the FUSE requests of a warm ls -lR.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !strings.HasPrefix(attr, "user.") {
		return 0, syscall.ENOTSUP
	}
	v, ok := n.m.core.Xattrs(n.n)[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Setxattr is refused: the service stores no extended attributes.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

// Listxattr lists the names Getxattr serves.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var buf []byte
	attrs := n.m.core.Xattrs(n.n)
	for _, k := range vfs.XattrNames {
		if _, ok := attrs[k]; ok {
			buf = append(append(buf, k...), 0)
		}
	}
	if len(dest) < len(buf) {
		return uint32(len(buf)), syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

// Statfs reports the cache file system's space.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.m.core.Statfs()
	if err != nil {
		return n.m.errno("statfs", "", err)
	}
	out.FromStatfsT(&st)
	out.NameLen = 255
	return 0
}

// handle is an open file.
type handle struct {
	m *mount
	h *vfs.Handle
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileWriter   = (*handle)(nil)
	_ fs.FileFlusher  = (*handle)(nil)
	_ fs.FileFsyncer  = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

func (h *handle) path() string { return h.m.core.Path(h.h.Node()) }

// Read reads from the file.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	defer h.m.timed("read")()
	n, err := h.h.Read(ctx, dest, off)
	if err != nil {
		return nil, h.m.errno("read", h.path(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes to the staging copy.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	defer h.m.timed("write")()
	n, err := h.h.Write(ctx, data, off)
	if err != nil {
		return uint32(n), h.m.errno("write", h.path(), err)
	}
	return uint32(n), 0
}

// Flush queues the written file for publishing (each close of a descriptor).
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	defer h.m.timed("flush")()
	return h.m.errno("flush", h.path(), h.h.Flush(ctx))
}

// Fsync waits until the file is published.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	defer h.m.timed("fsync")()
	return h.m.errno("fsync", h.path(), h.h.Fsync(ctx))
}

// Release ends the handle.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.h.Release()
	return 0
}

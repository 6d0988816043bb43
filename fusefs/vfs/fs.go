// Package vfs is the filesystem core behind the FUSE adapter in fusefs: the
// namespace built from the workspace listing, per-file content state (clean
// in the cache, or local in a staging file) and the POSIX semantics of open,
// read, write, close, rename and delete on top of the File API. It does not
// import go-fuse, so it is tested without a mount.
//
// # Content states of a file node
//
//   - clean: the content is remote version (fileID, version), read through a
//     cache entry filled on demand from the download URL.
//   - local: the content is a staging file (node.local). It is "owned" while
//     writers modify it and "queued" once handed to writeback on close; a
//     write to queued content takes it back (writeback.Take) or, when the
//     upload is already running, continues on a copy. When writeback reports
//     the publish of the node's current staging file, the node is clean again
//     at the new version (the staged bytes were adopted by the cache).
//
// # Identity
//
// A node's remote identity is (fileID, version, remotePath). remotePath is
// where that file lives on the service; it differs from the node's own path
// only while the node sits under a local-only name (lock, swap and backup
// files), so that the editor pattern "rename file to backup, write new file,
// delete backup" publishes a new version of the same file (FS.parked indexes
// such nodes). A node moved away from its file keeps that file as
// deleteNext ("doomed", FS.doomed): it is deleted once the node's publish at
// the new path lands, and only if nobody changed it meanwhile; the listing
// does not bring it back in between.
//
// A node's staging file is closed only when no handle is open on it
// (Node.handles), so reads of an unlinked or replaced file keep working.
//
// # The control folder
//
// .evofs (hidden, reached by name) shows every version of each published
// file and the trash, read-only; a rename out of the trash restores. Its
// invariants are in history.go and restore.go.
//
// # Locking
//
// Lock order: Node.io → FS.mu, and Handle.mu → FS.mu (Handle.mu guards a
// read handle's cache entry, read-ahead state and download URL; it is held
// across the get-by-id that renews that URL, never across a download).
// FS.mu guards the tree and every node field
// except the staging file's bytes; Node.io serialises content I/O against
// staging swaps (writers and swaps take it exclusively, readers shared).
// Neither lock is held while calling the remote service, except Node.io
// during a content copy of that node. The metadata store (fusefs/meta;
// see attrs.go) is written with FS.mu held: FS.mu → the store's own lock,
// and the store calls nothing back. writeback calls onPublished without
// its own lock held, so FS.mu → writeback calls are safe.
package vfs

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/fusefs/meta"
	"evofs/remote"
	"evofs/writeback"
)

// Config configures the core.
type Config struct {
	UID, GID uint32
	ReadOnly bool
	// PollInterval is how often the listing is refreshed; 0 disables polling.
	PollInterval time.Duration
	// LocalPatterns are shell patterns (path.Match) on a base name; matching
	// files stay local and are never uploaded.
	LocalPatterns []string
	// MaxDirRenameBytes bounds a folder rename (sum of file sizes); above it
	// rename answers EXDEV so mv falls back to copy. 0 = 1 GiB.
	MaxDirRenameBytes int64
	// SyncClose makes the last close of a written file wait until it is published.
	SyncClose bool
	// FileMode and DirMode are the permission bits of files and folders
	// that have no mode of their own (never chmod-ed, or from the service);
	// 0 means 0644 and 0755. Umask is taken off them.
	FileMode, DirMode uint32
	Umask             uint32
	// MetaDir holds the metadata store (times, modes, owners, local-only
	// nodes; see attrs.go). Default: "meta" in the cache folder.
	MetaDir string
	// PollOverlap is how far back each delta poll looks before the newest
	// change it has seen, so that versions whose upload took a while (their
	// modified_at is the registration time) are not missed. Default 15 min.
	PollOverlap time.Duration
	// FullRelistInterval is a backstop: the whole listing is fetched again
	// this often (default 1 h); every other poll asks only for changes.
	FullRelistInterval time.Duration
	// ListingFile keeps the last listing known, for a start while the
	// service is unreachable ("" = none: such a start fails).
	ListingFile string
	// TrashLimit bounds the trash listing (.evofs/trash): the newest
	// deletions are shown. 0 = DefaultTrashLimit.
	TrashLimit int
	// ControlSocket is the path of the mount's control socket, named by the
	// root's XattrControl so that a client finds it from the mountpoint.
	ControlSocket string
	// Writeback configures the publish queue; OnPublished is set by the core.
	Writeback writeback.Config
	Logger    *logrus.Entry
}

// DefaultLocalPatterns keep editor and office lock, swap and backup files local.
var DefaultLocalPatterns = []string{
	".~lock.*#", // LibreOffice lock
	"~$*",       // MS Office owner file
	".*.sw?",    // vim swap
	"*.swp",     //
	"*~",        // editor backups
	"4913",      // vim's write test
	".#*",       // emacs lock
	"#*#",       // emacs autosave
	".DS_Store", //
}

// Notifier lets the core tell the kernel what changed behind its back.
// Implementations must not call back into the core.
type Notifier interface {
	InvalidateContent(ino uint64)
	InvalidateEntry(parentIno uint64, name string)
	EntryDeleted(parentIno uint64, name string, ino uint64)
}

type nopNotifier struct{}

func (nopNotifier) InvalidateContent(uint64)            {}
func (nopNotifier) InvalidateEntry(uint64, string)      {}
func (nopNotifier) EntryDeleted(uint64, string, uint64) {}

// FS is the filesystem core. Safe for concurrent use.
type FS struct {
	// dependencies
	client *remote.Client
	cache  *cache.Cache
	queue  *writeback.Queue
	meta   *meta.Store // written under mu (attrs.go)
	log    *logrus.Entry

	// immutable after New
	cfg    Config
	ctx    context.Context // the core's own context (never a kernel request's)
	cancel context.CancelFunc
	pollWG sync.WaitGroup
	kick   chan struct{} // asks the poller for an immediate refresh

	saveMu sync.Mutex // serialises saveListing's writes; taken before mu

	notifyMu sync.RWMutex
	notify   Notifier

	mu      sync.Mutex // guards everything below and Node fields (see package doc)
	root    *Node
	nextIno uint64 // next inode number to hand out; inos are never reused while mounted
	byID    map[uuid.UUID]*Node
	byKey   map[string]*Node
	doomed  map[uuid.UUID]*Node // ids a node will delete once its publish lands (renamed away)
	parked  map[*Node]struct{}  // nodes that may sit under a local-only name away from their file (pruned lazily)
	gen     uint64              // bumped on each local namespace or content change
	pollErr string              // why the last listing failed ("" = online)
	listGen uint64              // bumped on each change of remote identity in the tree
	saved   uint64              // listGen at the last saveListing (0: never saved)

	modMark time.Time // newest modified_at seen
	delMark time.Time // newest deleted_at seen (or the mount's start)

	lastFull time.Time // last full listing; only Start and the poll goroutine touch it

	hist history // the control folder: versions and trash (history.go)
}

// New builds the core and its writeback queue (which resumes journaled
// publishes). Call Start to load the namespace.
func New(cfg Config, client *remote.Client, c *cache.Cache) (*FS, error) {
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		cfg.Logger = logrus.NewEntry(l)
	}
	if cfg.LocalPatterns == nil {
		cfg.LocalPatterns = DefaultLocalPatterns
	}
	for _, p := range cfg.LocalPatterns {
		if _, err := path.Match(p, "x"); err != nil {
			return nil, fmt.Errorf("local pattern %q: %w", p, err)
		}
	}
	if cfg.PollOverlap == 0 {
		cfg.PollOverlap = 15 * time.Minute
	}
	if cfg.FullRelistInterval == 0 {
		cfg.FullRelistInterval = time.Hour
	}
	if cfg.MaxDirRenameBytes == 0 {
		cfg.MaxDirRenameBytes = 1 << 30
	}
	if cfg.FileMode == 0 {
		cfg.FileMode = 0o644
	}
	if cfg.DirMode == 0 {
		cfg.DirMode = 0o755
	}
	if cfg.TrashLimit <= 0 {
		cfg.TrashLimit = DefaultTrashLimit
	}
	if cfg.MetaDir == "" {
		cfg.MetaDir = filepath.Join(c.Dir(), "meta")
	}
	store, err := meta.Open(cfg.MetaDir)
	if err != nil {
		return nil, fmt.Errorf("opening the metadata store: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &FS{
		client: client, cache: c, meta: store, log: cfg.Logger, cfg: cfg,
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		notify:  nopNotifier{},
		nextIno: 2,
		byID:    map[uuid.UUID]*Node{},
		byKey:   map[string]*Node{},
		doomed:  map[uuid.UUID]*Node{},
		parked:  map[*Node]struct{}{},
	}
	f.root = &Node{ino: 1, dir: true, children: map[string]*Node{}, explicitDir: true, mtime: time.Now()}
	f.root.ctime = f.root.mtime
	f.initHistory()
	wcfg := cfg.Writeback
	wcfg.Cache = c
	wcfg.OnPublished = f.onPublished
	if wcfg.Logger == nil {
		wcfg.Logger = cfg.Logger
	}
	// Hold mu until Start has built the tree, so early publish callbacks
	// from resumed jobs wait for it.
	f.mu.Lock()
	q, err := writeback.New(wcfg, client)
	if err != nil {
		f.mu.Unlock()
		cancel()
		store.Close()
		return nil, err
	}
	f.queue = q
	return f, nil
}

// SetNotifier installs the kernel notifier (after the mount exists).
func (f *FS) SetNotifier(n Notifier) {
	f.notifyMu.Lock()
	f.notify = n
	f.notifyMu.Unlock()
}

func (f *FS) notifier() Notifier {
	f.notifyMu.RLock()
	defer f.notifyMu.RUnlock()
	return f.notify
}

// Queue exposes the writeback queue (status, drain).
func (f *FS) Queue() *writeback.Queue { return f.queue }

// Cache exposes the content cache.
func (f *FS) Cache() *cache.Cache { return f.cache }

// Root returns the root directory node.
func (f *FS) Root() *Node { return f.root }

// Start loads the whole listing, overlays publishes still pending from the
// journal, and starts polling. It must be called exactly once after New.
func (f *FS) Start(ctx context.Context) error {
	defer f.mu.Unlock() // taken in New
	f.delMark = time.Now().Add(-f.cfg.PollOverlap)
	f.lastFull = time.Now()
	files, err := f.client.ListAll(ctx, remote.ListOptions{})
	online := err == nil
	if err != nil {
		saved, at, lerr := f.loadListing()
		if !remote.Retryable(err) || lerr != nil {
			return fmt.Errorf("listing the workspace: %w", err)
		}
		// Offline: the last listing known; the first poll that answers
		// lists everything again (lastFull is zero).
		files, f.lastFull = saved, time.Time{}
		f.pollErr = "unreachable since the mount started: " + err.Error()
		f.log.WithError(err).WithField("listing_saved", at).Warn("the service is unreachable: serving the last listing known; cached files stay readable, writes queue up")
	}
	for i := range files {
		f.insertRemoteLocked(&files[i])
		f.modMark = later(f.modMark, files[i].ModifiedAt.Time)
	}
	inJournal := map[string]bool{}
	for _, st := range f.queue.Status() {
		f.overlayJobLocked(st)
		inJournal[filepath.Clean(st.Staging)] = true
	}
	f.restoreMetaLocked()
	// Staging files nobody journaled were never closed before a crash: not data anyone was promised.
	if n, err := f.cache.PruneStaging(func(p string) bool { return inJournal[filepath.Clean(p)] }); err != nil {
		f.log.WithError(err).Warn("cleaning staging files")
	} else if n > 0 {
		f.log.WithField("count", n).Info("removed staging files of writes never closed before the last stop")
	}
	if online {
		go f.saveListing() // waits for mu, which Start holds
	}
	if f.cfg.PollInterval > 0 {
		f.pollWG.Add(1)
		go f.pollLoop()
	}
	f.pollWG.Add(1)
	go f.syncMetaLoop()
	return nil
}

// Close stops polling and the writeback workers (pending jobs stay journaled).
func (f *FS) Close() error {
	f.cancel()
	f.pollWG.Wait()
	f.mu.Lock()
	online := f.pollErr == ""
	f.mu.Unlock()
	if online {
		f.saveListing()
	}
	err := f.queue.Close()
	if merr := f.meta.Close(); err == nil {
		err = merr
	}
	return err
}

// Drain publishes everything pending, waiting until ctx ends.
func (f *FS) Drain(ctx context.Context) error { return f.queue.Drain(ctx) }

// Errors the core returns besides remote's classes; fusefs maps them to errnos.
var (
	ErrNotEmpty = syscall.ENOTEMPTY
	ErrExist    = syscall.EEXIST
	ErrNotExist = syscall.ENOENT
	ErrIsDir    = syscall.EISDIR
	ErrNotDir   = syscall.ENOTDIR
	ErrReadOnly = syscall.EROFS
	ErrXDev     = syscall.EXDEV
	ErrInvalid  = syscall.EINVAL
)

// isLocalOnly reports whether a base name matches a local-only pattern.
func (f *FS) isLocalOnly(name string) bool {
	for _, p := range f.cfg.LocalPatterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// splitPath splits "A/B/c" into its segments ("" → none).
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// errIs is a small helper for classification.
func errIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

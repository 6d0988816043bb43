package emulator

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ---- metadata model (all guarded by Server.mu) ----

type workspace struct {
	org, ws uuid.UUID
	files   map[uuid.UUID]*file
	index   map[string]*file  // lower-cased full path → non-deleted file
	folders map[string]string // lower-cased folder path → display segment of first creation
}

type file struct {
	id        uuid.UUID
	path      string // display full path without leading slash, e.g. "A/b.txt"
	created   *version
	deletedAt time.Time // zero = live
	deletedBy *User
	versions  []*version // ascending by id
}

type block struct {
	part part
}

type version struct {
	id        int64
	createdAt time.Time
	createdBy User

	// upload state (pending only)
	blocks   map[string]block
	blockLen int // length of the decoded block ids; 0 = none yet

	committed bool
	commitAt  time.Time
	visibleAt time.Time
	size      int64
	etag      string
	md5       []byte
	blob      part
}

func (f *file) deleted() bool { return !f.deletedAt.IsZero() }

func (f *file) name() string {
	i := strings.LastIndexByte(f.path, '/')
	return f.path[i+1:]
}

// parent is the slash-terminated folder of f: "/" or "/A/B/".
func (f *file) parent() string {
	i := strings.LastIndexByte(f.path, '/')
	if i < 0 {
		return "/"
	}
	return "/" + f.path[:i+1]
}

func (v *version) visible(now time.Time) bool {
	return v.committed && !now.Before(v.visibleAt)
}

// latest is the visible version with the highest id, or nil.
func (f *file) latest(now time.Time) *version {
	for i := len(f.versions) - 1; i >= 0; i-- {
		if f.versions[i].visible(now) {
			return f.versions[i]
		}
	}
	return nil
}

func (f *file) version(id int64) *version {
	i := sort.Search(len(f.versions), func(i int) bool { return f.versions[i].id >= id })
	if i < len(f.versions) && f.versions[i].id == id {
		return f.versions[i]
	}
	return nil
}

func (f *file) addVersion(v *version) {
	i := sort.Search(len(f.versions), func(i int) bool { return f.versions[i].id >= v.id })
	f.versions = append(f.versions, nil)
	copy(f.versions[i+1:], f.versions[i:])
	f.versions[i] = v
}

func (s *Server) workspaceLocked(org, ws uuid.UUID) *workspace {
	k := [2]uuid.UUID{org, ws}
	w := s.workspaces[k]
	if w == nil {
		w = &workspace{org: org, ws: ws, files: map[uuid.UUID]*file{}, index: map[string]*file{}, folders: map[string]string{}}
		s.workspaces[k] = w
	}
	return w
}

// displayPathLocked rewrites the folders of segs to the case of their first
// creation and records new folders.
func (w *workspace) displayPath(segs []string) string {
	out := make([]string, len(segs))
	lower := ""
	for i, sg := range segs {
		if i == len(segs)-1 {
			out[i] = sg
			break
		}
		if lower != "" {
			lower += "/"
		}
		lower += strings.ToLower(sg)
		if d, ok := w.folders[lower]; ok {
			out[i] = d
		} else {
			w.folders[lower] = sg
			out[i] = sg
		}
	}
	return strings.Join(out, "/")
}

func (s *Server) newVersionIDLocked() int64 {
	id := s.nowFn().UnixNano()
	if id <= s.lastVID {
		id = s.lastVID + 1
	}
	s.lastVID = id
	return id
}

// commitLocked marks v committed with blob p and logs it.
func (s *Server) commitLocked(w *workspace, f *file, v *version, p part, md5sum []byte, immediate bool) error {
	now := s.nowLocked()
	v.committed = true
	v.commitAt = now
	v.visibleAt = now
	if !immediate {
		v.visibleAt = now.Add(s.delay)
	}
	v.size = p.size
	v.blob = p
	v.md5 = md5sum
	v.etag = fmt.Sprintf("\"0x%X\"", uint64(v.id)^0x8D0000000000000)
	for id, b := range v.blocks {
		if !b.part.same(p) {
			s.store.discard(b.part)
		}
		delete(v.blocks, id)
	}
	v.blocks = nil
	if f.created == nil || v.id < f.created.id {
		f.created = v
	}
	if s.meta != nil {
		cb := v.createdBy
		return s.meta.append(&logRec{Op: "commit", Org: w.org, WS: w.ws, File: f.id, Path: f.path, Version: v.id,
			CreatedAt: v.createdAt, CreatedBy: &cb, CommitAt: v.commitAt, VisibleAt: v.visibleAt, Size: v.size,
			ETag: v.etag, MD5: v.md5})
	}
	return nil
}

// ---- metadata log ----

type logRec struct {
	Op        string    `json:"op"` // commit | delete | restore
	Org       uuid.UUID `json:"org"`
	WS        uuid.UUID `json:"ws"`
	File      uuid.UUID `json:"file"`
	Path      string    `json:"path,omitempty"`
	Version   int64     `json:"version,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	CreatedBy *User     `json:"created_by,omitempty"`
	CommitAt  time.Time `json:"commit_at,omitzero"`
	VisibleAt time.Time `json:"visible_at,omitzero"`
	Size      int64     `json:"size,omitempty"`
	ETag      string    `json:"etag,omitempty"`
	MD5       []byte    `json:"md5,omitempty"`
	At        time.Time `json:"at,omitzero"`
	By        *User     `json:"by,omitempty"`
}

type metaLog struct {
	f *os.File
}

// openMetaLog replays dir/meta.log through apply, drops a torn or corrupt
// tail (truncating the file to the last good record) and opens it for append.
func openMetaLog(dir string, apply func(*logRec) error) (*metaLog, error) {
	name := filepath.Join(dir, "meta.log")
	// O_APPEND: every record goes to the end of the file, whatever else
	// wrote to it (the data dir lock keeps other writers out anyway).
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(f)
	var good int64
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break // a last line without '\n' is torn: ignore it
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		var rec logRec
		if json.Unmarshal(bytes.TrimSpace(line), &rec) != nil {
			break // corrupt record: keep what came before
		}
		if err := apply(&rec); err != nil {
			f.Close()
			return nil, fmt.Errorf("replay %s at offset %d: %w", name, good, err)
		}
		good += int64(len(line))
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, err
	}
	return &metaLog{f: f}, nil
}

func (m *metaLog) append(r *logRec) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := m.f.Write(b); err != nil {
		return err
	}
	return m.f.Sync()
}

func (m *metaLog) close() error { return m.f.Close() }

// replay applies one log record (called from New, no lock needed).
func (s *Server) replay(r *logRec) error {
	w := s.workspaceLocked(r.Org, r.WS)
	switch r.Op {
	case "commit":
		f := w.files[r.File]
		if f == nil {
			segs := strings.Split(r.Path, "/")
			f = &file{id: r.File, path: w.displayPath(segs)}
			w.files[f.id] = f
			if _, taken := w.index[strings.ToLower(f.path)]; !taken {
				w.index[strings.ToLower(f.path)] = f
			}
		}
		v := &version{id: r.Version, createdAt: r.CreatedAt, committed: true, commitAt: r.CommitAt,
			visibleAt: r.VisibleAt, size: r.Size, etag: r.ETag, md5: r.MD5}
		if r.CreatedBy != nil {
			v.createdBy = *r.CreatedBy
		}
		v.blob = s.store.load(r.File, r.Version, r.Size)
		f.addVersion(v)
		if f.created == nil || v.id < f.created.id {
			f.created = v
		}
		if v.id > s.lastVID {
			s.lastVID = v.id
		}
	case "delete":
		f := w.files[r.File]
		if f == nil {
			return errors.New("delete of unknown file")
		}
		f.deletedAt = r.At
		if r.By != nil {
			u := *r.By
			f.deletedBy = &u
		}
		if w.index[strings.ToLower(f.path)] == f {
			delete(w.index, strings.ToLower(f.path))
		}
	case "restore":
		f := w.files[r.File]
		if f == nil {
			return errors.New("restore of unknown file")
		}
		f.deletedAt, f.deletedBy = time.Time{}, nil
		w.index[strings.ToLower(f.path)] = f
	default:
		return fmt.Errorf("unknown record %q", r.Op)
	}
	return nil
}

// ---- blob storage ----

// part is staged or committed blob content: memory segments or a file.
type part struct {
	segs [][]byte
	path string
	size int64
}

func (p part) same(q part) bool {
	if p.path != "" || q.path != "" {
		return p.path == q.path
	}
	return len(p.segs) > 0 && len(q.segs) > 0 && &p.segs[0] == &q.segs[0]
}

// blobStore keeps blob content. stage/join run without Server.mu; publish,
// discard and load are cheap.
type blobStore interface {
	// stage reads exactly n bytes of r into a new part and returns its MD5.
	stage(r io.Reader, n int64) (part, []byte, error)
	// join concatenates parts into one durable part (the inputs stay valid).
	join(parts []part) (part, error)
	// publish makes p the committed blob of (fid, vid).
	publish(p part, fid uuid.UUID, vid int64) (part, error)
	discard(p part)
	open(p part) (io.ReaderAt, io.Closer, error)
	load(fid uuid.UUID, vid int64, size int64) part
}

type memStore struct{}

func (memStore) stage(r io.Reader, n int64) (part, []byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return part{}, nil, err
	}
	sum := md5.Sum(b)
	p := part{size: n}
	if n > 0 {
		p.segs = [][]byte{b}
	}
	return p, sum[:], nil
}

func (memStore) join(parts []part) (part, error) {
	var out part
	for _, p := range parts {
		out.segs = append(out.segs, p.segs...)
		out.size += p.size
	}
	return out, nil
}

func (memStore) publish(p part, _ uuid.UUID, _ int64) (part, error) { return p, nil }
func (memStore) discard(part)                                       {}
func (memStore) load(uuid.UUID, int64, int64) part                  { return part{} }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func (memStore) open(p part) (io.ReaderAt, io.Closer, error) { return segReader(p), nopCloser{}, nil }

type segReader part

func (s segReader) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for _, sg := range s.segs {
		if len(b) == 0 {
			break
		}
		if off >= int64(len(sg)) {
			off -= int64(len(sg))
			continue
		}
		c := copy(b, sg[off:])
		n += c
		b = b[c:]
		off = 0
	}
	if len(b) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// section returns [off, off+n) of a blob opened by open. For a memory blob
// it is a reader that writes the stored bytes straight to its destination
// (io.WriterTo) instead of copying them through a buffer: in-process, the
// service's CPU is taken from the client it serves.
func section(ra io.ReaderAt, off, n int64) io.Reader {
	if s, ok := ra.(segReader); ok {
		return &segSection{r: s, off: off, end: off + n}
	}
	return io.NewSectionReader(ra, off, n)
}

type segSection struct {
	r        segReader
	off, end int64 // what is left to read
}

func (s *segSection) Read(b []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), s.end-s.off)]
	n, err := s.r.ReadAt(b, s.off)
	s.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (s *segSection) WriteTo(w io.Writer) (int64, error) {
	var total int64
	pos := int64(0) // start of sg in the blob
	for _, sg := range s.r.segs {
		next := pos + int64(len(sg))
		if s.off < s.end && s.off < next {
			b := sg[s.off-pos : min(next, s.end)-pos]
			n, err := w.Write(b)
			total += int64(n)
			s.off += int64(n)
			if err != nil {
				return total, err
			}
		}
		pos = next
	}
	return total, nil
}

type diskStore struct {
	staging, blobs string
}

func newDiskStore(dir string) (*diskStore, error) {
	d := &diskStore{staging: filepath.Join(dir, "staging"), blobs: filepath.Join(dir, "blobs")}
	// Uncommitted blocks do not survive a restart.
	if err := os.RemoveAll(d.staging); err != nil {
		return nil, err
	}
	for _, p := range []string{d.staging, d.blobs} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *diskStore) stage(r io.Reader, n int64) (part, []byte, error) {
	f, err := os.CreateTemp(d.staging, "part-")
	if err != nil {
		return part{}, nil, err
	}
	h := md5.New()
	_, err = io.CopyN(io.MultiWriter(f, h), r, n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return part{}, nil, err
	}
	return part{path: f.Name(), size: n}, h.Sum(nil), nil
}

func (d *diskStore) join(parts []part) (part, error) {
	if len(parts) == 1 {
		f, err := os.Open(parts[0].path)
		if err != nil {
			return part{}, err
		}
		err = f.Sync()
		f.Close()
		return parts[0], err
	}
	out, err := os.CreateTemp(d.staging, "blob-")
	if err != nil {
		return part{}, err
	}
	var size int64
	fail := func(err error) (part, error) {
		out.Close()
		os.Remove(out.Name())
		return part{}, err
	}
	for _, p := range parts {
		in, err := os.Open(p.path)
		if err != nil {
			return fail(err)
		}
		n, err := io.Copy(out, in)
		in.Close()
		if err != nil {
			return fail(err)
		}
		size += n
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		os.Remove(out.Name())
		return part{}, err
	}
	return part{path: out.Name(), size: size}, nil
}

func (d *diskStore) publish(p part, fid uuid.UUID, vid int64) (part, error) {
	dir := filepath.Join(d.blobs, fid.String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return part{}, err
	}
	dst := filepath.Join(dir, strconv.FormatInt(vid, 10))
	if p.path == "" { // empty blob: nothing staged
		if err := os.WriteFile(dst+".tmp", nil, 0o644); err != nil {
			return part{}, err
		}
		p.path = dst + ".tmp"
	}
	if err := os.Rename(p.path, dst); err != nil {
		return part{}, err
	}
	if df, err := os.Open(dir); err == nil {
		df.Sync()
		df.Close()
	}
	return part{path: dst, size: p.size}, nil
}

func (d *diskStore) discard(p part) {
	if p.path != "" && strings.HasPrefix(p.path, d.staging) {
		os.Remove(p.path)
	}
}

func (d *diskStore) open(p part) (io.ReaderAt, io.Closer, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return nil, nil, err
	}
	return f, f, nil
}

func (d *diskStore) load(fid uuid.UUID, vid int64, size int64) part {
	return part{path: filepath.Join(d.blobs, fid.String(), strconv.FormatInt(vid, 10)), size: size}
}

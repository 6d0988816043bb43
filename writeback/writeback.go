// Package writeback publishes closed files to the File API durably.
//
// A Job names a staged copy of a file and where it goes. Enqueue journals
// the job (fsync) before returning; workers publish it (register → upload →
// poll) on the queue's own context, retrying transient failures with capped
// backoff for as long as the queue lives; a restart with the same Dir
// resumes every journaled job. The package never calls back into fusefs
// except through Config.OnPublished, and never while holding its lock.
//
// # Jobs of a key
//
// Each key has a short FIFO of jobs (oldest first). Only the head may run.
// A new Enqueue replaces the tail if that one has not started (no upload
// ticket yet, or failed); otherwise it queues behind it, and when the one
// ahead publishes, the one behind is re-based on the file and version it
// produced (unless that was a conflict copy, see below). A job that has registered a version (has a ticket) is never
// replaced: it is resumed, so its version is never mistaken for someone
// else's edit.
//
// # Taken-back jobs
//
// Take hands an unstarted job back to its caller (who is writing the file
// again) but leaves its record in the journal, held, until the caller's next
// Enqueue of the key replaces it (new record first, then the held one is
// removed), Cancel forgets the key or Release lets it go. Held jobs are not
// in Status, Wait or Drain: the caller owns them. A crash meanwhile
// publishes the staging file as it is then: the close that queued it was
// promised its bytes, and newer ones only add to them. Rename follows held
// jobs too.
//
// # Streaming publish
//
// A file written in sequence from offset 0 (new, or opened with O_TRUNC)
// may be uploaded while it is written: Stream, told of every write
// (BeginWrite/EndWrite), registers a version once StreamThreshold bytes are
// written, journals it (a record with Streamed and Streaming set, its ticket
// and target) and stages whole blocks behind the writer, StreamBlocks at a
// time, reading them back from the staging file (memory stays bounded), each
// staged id journaled as Acked. Enqueue of the key hands the record to the
// job: the stream goes on with the rest of the file, the tail included, and
// the job, once its delay is over, waits for it, then resumes the version
// (remote.Publish with the staged blocks skipped): only the block list and
// the poll are left. Invariants:
//   - a block is staged only once written and never while being rewritten;
//     a write over a staged block breaks the stream, and the record loses
//     its version and blocks durably before that write lands (a crash never
//     reuses them). A broken stream's record stays, held as by Take.
//   - a crash at any point resumes the journaled version with the blocks it
//     lists (those within the file, whole, while Streaming), so at most one
//     version is published, with the file's bytes as they were left.
//   - a version registered by a stream is committed only by its job's
//     publish. Until that job first starts it is "fresh" and may be dropped
//     (it never shows: an uncommitted version is invisible): Take, Rename
//     and a newer Enqueue drop it and the file publishes the normal way;
//     Cancel drops it with the job. The first attempt checks the file did
//     not move on since BaseVersion (the stream may have registered long
//     ago); if it did, the version is dropped and a conflict copy is made.
//   - Break, Cancel, Rename and Release stop a stream (a debug line says
//     why); failures while staging only stop staging (the job sends the rest).
//
// # Conflicts
//
// Publishing by id first checks the file's latest version. If it is not
// Job.BaseVersion the file moved on remotely: the content is published by
// path beside it as "NAME (conflict YYYY-MM-DD hhmmss).EXT", time in UTC,
// and the original is left untouched. A job queued behind one that made a
// conflict copy is not re-based: it keeps its (stale) base and so becomes a
// conflict copy too. Result.Job keeps the original FileID either way. A file deleted remotely is published
// again by path as a new file.
//
// # Errors
//
// remote.Retryable failures retry forever (RetryMin doubling to RetryMax,
// jittered); the job stays pending with Tries and LastError visible. Any
// other failure (except the queue's own cancellation) marks the job failed:
// it keeps its record and staging file and is not retried until a new
// Enqueue of its key replaces it. Wait and Drain report it as a *JobError.
//
// # Durability and group commit
//
// Enqueue returns once the staging file and the job's record are fsynced
// and the record's name is committed (fsync of the journal directory): the
// close promise. The two fsyncs run at once; a file of up to InlineMax bytes
// travels inside its record instead, and its staging file is not synced
// (journal.go, "Small files"). The directory sync is a group commit shared
// by every Enqueue and worker that changed the journal before it started
// (journal.go), so closes that arrive together share it.
// A worker journals the registered ticket durably (before any byte is sent);
// the published state and the removal of a finished job's record are not
// committed, because a restart that finds the registered record instead
// resumes that version, learns it is committed and only cleans up, with or
// without the staging file. journal.go lists what each sync protects.
//
// # Concurrency
//
// Up to Config.Transfers jobs of different keys publish at once (one
// goroutine each, started by the scheduler), so many small files overlap
// their round trips to the service. Enqueues of different keys journal in
// parallel.
//
// # Locks
//
// Lock order: Queue.enqMu[stripe] → Stream.mu → job.wmu → committer.mu, and
// job.wmu → Queue.mu. Queue.mu guards all in-memory state and is never held
// across I/O (network, journal writes, callbacks). Stream.mu is held across
// the journal writes of a stream's register and Break (a Break is durable
// before the write that caused it), never across network calls. job.wmu
// serialises the journal writes of one job so that the last write is always
// the newest snapshot, and a removed record is never resurrected. enqMu,
// striped by key, makes journal order (Seq) equal install order across the
// Enqueues of a key (the only order New's reload depends on). committer.mu
// is held only to start or await a directory sync, never across it.
package writeback

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/remote"
)

// Publisher is the part of *remote.Client the queue uses.
type Publisher interface {
	Publish(ctx context.Context, t remote.Target, content io.ReaderAt, size int64, o remote.PublishOptions) (*remote.FileMeta, error)
	GetByID(ctx context.Context, id uuid.UUID, o remote.GetOptions) (*remote.FileMeta, error)
	DeleteByID(ctx context.Context, id uuid.UUID) error
}

// Job is one pending publish.
type Job struct {
	// Key is the caller's stable name for the local file; at most one job per
	// key is queued and one is in flight.
	Key string `json:"key"`
	// Path is the file's workspace path ("A/b.txt"), used to publish by path
	// and to name a conflict copy.
	Path string `json:"path"`
	// FileID, when set, publishes a new version of that file (by id).
	FileID uuid.UUID `json:"file_id"`
	// BaseVersion is the version the edit started from ("" for new files).
	// If the file's latest version differs at publish time, the content is
	// published beside it as a conflict copy instead.
	BaseVersion remote.VersionID `json:"base_version"`
	// Staging is the staged content. Once enqueued the queue owns it and
	// removes it after a successful publish.
	Staging string `json:"staging"`
	// DeleteAfter, when set, is a file to delete once this job is published
	// (the old identity of a renamed file).
	DeleteAfter uuid.UUID `json:"delete_after"`
	// DeleteAfterVersion, when set, is the version DeleteAfter must still
	// have for the delete to happen: if anyone (this job included, when it
	// published to that same file) added a version since, the file is kept.
	DeleteAfterVersion remote.VersionID `json:"delete_after_version,omitempty"`
}

// State of a job.
type State string

// Job states, as shown by status and the user.evofs.state xattr.
const (
	StatePending   State = "pending"
	StateUploading State = "uploading"
	StatePublished State = "published"
	StateFailed    State = "failed"
)

// JobStatus is a job with its progress.
type JobStatus struct {
	Job
	State     State     `json:"state"`
	Size      int64     `json:"size"`
	Done      int64     `json:"done"`
	Tries     int       `json:"tries"`
	LastError string    `json:"last_error,omitempty"`
	Queued    time.Time `json:"queued"`
}

// Result is passed to OnPublished.
type Result struct {
	Job  Job
	Meta *remote.FileMeta // the new version
	// ConflictPath is set when the content was published as a conflict copy
	// at that path because the file moved on since BaseVersion.
	ConflictPath string
}

// DefaultTransfers is Config.Transfers' default.
const DefaultTransfers = 8

// Config configures a Queue.
type Config struct {
	Dir       string        // journal directory (required)
	Delay     time.Duration // hold a job this long after its last Enqueue
	Transfers int           // parallel publishes, default DefaultTransfers
	RetryMin  time.Duration // first retry delay, default 1 s
	RetryMax  time.Duration // cap, default 1 min

	// StreamThreshold is how much of a file written in sequence is written
	// before it starts uploading (see Stream): default 4 blocks, never at or
	// below the client's single-put size; < 0 never streams.
	StreamThreshold int64
	// StreamBlocks is how many blocks one stream stages at once, default 4.
	StreamBlocks int
	// Cache, if set, adopts published staging files as the new version's content.
	Cache *cache.Cache
	// OnPublished is called from a worker after each successful publish,
	// before the staging file is removed, without any queue lock held. It may
	// call any Queue method except Close. It reports whether the caller
	// adopted the published file (a live file now shows it): a Cancel that
	// comes after that leaves the file alone, since its identity is the
	// caller's to keep or delete (a rename over it keeps it).
	OnPublished func(Result) (adopted bool)
	// ObservePublish, when set, is told the outcome ("published", "retry",
	// "failed", "cancelled", "superseded", "closed") and duration of every
	// publish attempt (register → upload → visible), from a worker without
	// any lock held (metrics).
	ObservePublish func(outcome string, d time.Duration)
	Logger         *logrus.Entry
}

// ErrClosed is returned by Enqueue after Close.
var ErrClosed = errors.New("writeback: queue closed")

// JobError is a failed job's error, as returned by Wait and listed by Drain.
// It unwraps to the cause (e.g. remote.ErrForbidden).
type JobError struct {
	Key  string
	Path string
	Err  error
}

func (e *JobError) Error() string {
	return fmt.Sprintf("writeback of %q failed: %v", e.Path, e.Err)
}

func (e *JobError) Unwrap() error { return e.Err }

// Queue is safe for concurrent use.
type Queue struct {
	// Immutable after New.
	cfg    Config
	pub    Publisher
	log    *logrus.Entry
	ctx    context.Context // the queue's own; cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{} // cap 1: nudges the scheduler
	wg     sync.WaitGroup
	once   sync.Once

	journal *committer // group commit of the journal directory

	enqMu [enqStripes]sync.Mutex // serialise Enqueues of a key (striped by key); see the package comment

	mu       sync.Mutex
	keys     map[string][]*job // guarded by mu; oldest first, only [0] may be active; never empty slices
	held     map[string]*job   // guarded by mu; taken back by Take, record kept until Enqueue, Cancel or Release
	staged   map[string]int    // guarded by mu; staging path → jobs in keys naming it (setListLocked keeps it)
	running  int               // guarded by mu; active jobs
	seq      uint64            // guarded by mu; last Seq handed out
	draining int               // guarded by mu; Drain calls in progress (new jobs are due at once)
	closed   bool              // guarded by mu
	changed  chan struct{}     // guarded by mu; closed and replaced on every change (waiters)

	streams map[string]*Stream // guarded by mu; files written and streamed, until handed to Enqueue or stopped
}

// enqStripes is the number of Enqueue locks; Enqueues of keys on different
// stripes journal in parallel and share their commits.
const enqStripes = 64

func (q *Queue) enqLock(key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &q.enqMu[h.Sum32()%enqStripes]
}

// New loads the journal in cfg.Dir and starts the workers; journaled jobs
// resume at once.
func New(cfg Config, p Publisher) (*Queue, error) {
	if cfg.Dir == "" {
		return nil, errors.New("writeback: Config.Dir is required")
	}
	if p == nil {
		return nil, errors.New("writeback: nil Publisher")
	}
	if cfg.Transfers <= 0 {
		cfg.Transfers = DefaultTransfers
	}
	if cfg.StreamBlocks <= 0 {
		cfg.StreamBlocks = 4
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	if cfg.Delay < 0 {
		cfg.Delay = 0
	}
	log := cfg.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("writeback: %w", err)
	}
	q := &Queue{
		cfg:     cfg,
		pub:     p,
		log:     log,
		wake:    make(chan struct{}, 1),
		keys:    make(map[string][]*job),
		held:    make(map[string]*job),
		staged:  make(map[string]int),
		streams: make(map[string]*Stream),
		changed: make(chan struct{}),
		journal: newCommitter(cfg.Dir),
	}
	if err := q.load(); err != nil {
		return nil, err
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	q.wg.Add(1)
	go q.schedule()
	return q, nil
}

// Enqueue journals j durably, then schedules it after Delay. A queued job
// with the same key is replaced (its staging removed unless it is j's); if
// one is in flight, j runs after it, publishing to the file that one produced.
// On error nothing was queued and the staging file is still the caller's.
func (q *Queue) Enqueue(j Job) error {
	if j.Key == "" || j.Path == "" || j.Staging == "" {
		return errors.New("writeback: job needs Key, Path and Staging")
	}
	size, err := statFile(j.Staging)
	if err != nil {
		return fmt.Errorf("writeback: staging: %w", err)
	}

	mu := q.enqLock(j.Key)
	mu.Lock()
	defer mu.Unlock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	s := q.streams[j.Key]
	delete(q.streams, j.Key)
	q.seq++
	seq := q.seq
	q.mu.Unlock()

	// Journal first: once Enqueue returns the job survives a crash. A
	// small file's bytes go into its record (journal.go, "Small files"):
	// one fsync, then a commit shared with whatever else the journal has
	// to commit. Otherwise the staging file's fsync and the record's run at
	// once (one device flush can serve both); the record is renamed into
	// place only once both hold, so a record never names bytes that are not
	// on disk. A stream's record (which names the staging file since it
	// registered) becomes the job once the bytes are synced.
	nj := s.handOff(j, size)
	var inline []byte
	if nj == nil && size <= InlineMax {
		inline, _ = readInline(j.Staging, size) // on error: the normal way
	}
	newJob := func() *job {
		return &job{rec: record{
			Format: recordFormat,
			ID:     uuid.NewString(),
			Seq:    seq,
			Job:    j,
			State:  StatePending,
			Size:   size,
			Queued: time.Now(),
		}}
	}
	switch {
	case inline != nil:
		nj = newJob()
		nj.inline = true
		rec := nj.rec
		rec.Inline, rec.Format = inline, formatInline
		err := createRecord(q.cfg.Dir, &rec)
		if err == nil {
			crashPoint("enqueue-renamed")
			if err = q.journal.commit(); err != nil {
				dropRecord(q.cfg.Dir, nj.rec.ID)
			}
		}
		if err != nil {
			return err
		}
	case nj != nil:
		if e := syncFile(j.Staging); e != nil {
			s.Break("staging: " + e.Error())
			return fmt.Errorf("writeback: staging: %w", e)
		}
		q.mu.Lock()
		nj.rec.Seq = seq
		q.mu.Unlock()
		if err := q.persistErr(nj, true); err != nil {
			s.Break("journal: " + err.Error())
			return err
		}
	default:
		serr := make(chan error, 1)
		go func() { serr <- syncFile(j.Staging) }()
		nj = newJob()
		tmp, err := prepareRecord(q.cfg.Dir, &nj.rec)
		if e := <-serr; e != nil {
			if err == nil {
				os.Remove(tmp)
			}
			return fmt.Errorf("writeback: staging: %w", e)
		}
		if err == nil {
			err = installRecord(q.cfg.Dir, tmp, nj.rec.ID)
		}
		if err == nil {
			crashPoint("enqueue-renamed")
			err = q.journal.commit()
		}
		if err != nil {
			dropRecord(q.cfg.Dir, nj.rec.ID)
			return err
		}
	}
	crashPoint("enqueued")

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		if dropRecord(q.cfg.Dir, nj.rec.ID) == nil {
			q.journal.commit()
		}
		return ErrClosed
	}
	nj.due = nj.rec.Queued.Add(q.cfg.Delay)
	if q.draining > 0 {
		nj.due = nj.rec.Queued
	}
	old := q.installLocked(nj)
	held := q.popHeldLocked(j.Key)
	// Copies for the log lines: once installed, a worker may re-base nj's
	// Job under q.mu at any moment.
	installed := nj.rec.Job
	var replaced Job
	if old != nil {
		replaced = old.rec.Job
	}
	q.notifyLocked()
	q.mu.Unlock()
	q.nudge()
	if held != nil { // replaced by nj, journaled above (see journal.go)
		q.discard(held, false, false)
	}

	q.logJob(installed).WithField("size", size).Debug("writeback: enqueued")
	if old != nil {
		q.logJob(replaced).Debug("writeback: replaced by a newer enqueue")
		q.discard(old, true, false)
	}
	return nil
}

// Take removes a queued job that has not started and hands it (and its
// staging file) back to the caller. false if none or it is in flight (or,
// after a failed attempt, already registered a version it must resume).
// The job's record stays journaled, held, until the caller enqueues the key
// again, cancels or releases it (see the package comment).
func (q *Queue) Take(key string) (Job, bool) {
	q.mu.Lock()
	list := q.keys[key]
	if len(list) == 0 || !list[len(list)-1].replaceableLocked() {
		q.mu.Unlock()
		return Job{}, false
	}
	j := list[len(list)-1]
	q.setListLocked(key, list[:len(list)-1])
	prev := q.popHeldLocked(key)
	q.held[key] = j
	streamed, inline := j.fresh, j.inline
	var st *Stream
	if streamed {
		st = j.abandonLocked() // the caller writes the file again
	}
	q.notifyLocked()
	q.mu.Unlock()
	if prev != nil { // not expected: an Enqueue releases the held job
		q.discard(prev, false, true)
	}
	if streamed {
		st.abandon()
		q.persist(j) // before the caller writes: a crash must not reuse its blocks
	}
	if inline {
		// The caller writes the staging file again: its bytes as queued
		// must be on disk before the record stops carrying them (a crash
		// meanwhile publishes the file as it is then, see above).
		if err := syncFile(j.rec.Job.Staging); err != nil {
			q.logJob(j.rec.Job).WithError(err).Warn("writeback: cannot sync a taken-back staging file")
		}
		q.mu.Lock()
		j.inline = false
		q.mu.Unlock()
		q.persist(j)
	}
	return j.rec.Job, true
}

// Release removes the record of key's job held since Take, if any: the
// caller will not enqueue the key again for now (e.g. the file was parked
// under a name that is never published). The staging file is the caller's.
func (q *Queue) Release(key string) {
	q.mu.Lock()
	s := q.streams[key]
	q.mu.Unlock()
	s.Break("renamed to a name that stays local")
	q.mu.Lock()
	held := q.popHeldLocked(key)
	q.mu.Unlock()
	if held != nil {
		q.discard(held, false, true)
	}
}

// popHeldLocked removes and returns key's held job, if any. The caller
// discards its record once it has let go of mu.
func (q *Queue) popHeldLocked(key string) *job {
	h := q.held[key]
	delete(q.held, key)
	return h
}

// Cancel forgets the jobs for key (the file was deleted locally before being
// published): a queued job is dropped and its staging removed; an in-flight
// one is stopped, and a version it committed anyway is deleted (if the job
// created the file; best effort, logged); a held one's record is removed
// (its staging file is the caller's).
func (q *Queue) Cancel(key string) {
	q.mu.Lock()
	s := q.streams[key]
	delete(q.streams, key)
	q.mu.Unlock()
	if s != nil {
		// Its version was never committed: dropping the record is all.
		if sj := s.abandon(); sj != nil {
			q.discard(sj, false, true)
		}
		s.log.Debug("writeback: streaming stopped: the file was deleted")
	}
	q.mu.Lock()
	var drop, keep []*job
	for _, j := range q.keys[key] {
		if j.active {
			j.cancelled = true
			j.stop()
			keep = append(keep, j)
		} else {
			drop = append(drop, j)
		}
	}
	q.setListLocked(key, keep)
	held := q.popHeldLocked(key)
	q.notifyLocked()
	q.mu.Unlock()
	if held != nil { // its staging file is the caller's
		q.discard(held, false, true)
	}
	for _, j := range drop {
		q.logJob(j.rec.Job).Info("writeback: cancelled before publishing")
		if j.rec.Ticket != nil {
			// It registered (maybe committed) a version before it was
			// cancelled: remove a file it created, off the caller's goroutine.
			q.wg.Add(1)
			go func(j *job) {
				defer q.wg.Done()
				q.undoCancelled(j, nil)
				q.discard(j, true, true)
			}(j)
			continue
		}
		q.discard(j, true, true)
	}
}

// Rename changes the target path of key's jobs. A publish by path already in
// flight completes at the path it registered; Result.Job.Path shows the new one.
//
// A streamed job that has not started yet drops its version (registered at
// the old target, never committed) and publishes the normal way, and a
// stream of the key stops.
func (q *Queue) Rename(key, newPath string) {
	q.mu.Lock()
	s := q.streams[key]
	q.mu.Unlock()
	s.Break("renamed")
	q.mu.Lock()
	list := append([]*job(nil), q.keys[key]...)
	if h := q.held[key]; h != nil {
		list = append(list, h)
	}
	var stop []*Stream
	for _, j := range list {
		j.rec.Job.Path = newPath
		if j.fresh && !j.active {
			stop = append(stop, j.abandonLocked())
		}
	}
	q.notifyLocked()
	q.mu.Unlock()
	for _, st := range stop {
		st.abandon()
	}
	for _, j := range list {
		q.persist(j)
	}
}

// Pending reports the status of key's newest job, if any.
func (q *Queue) Pending(key string) (JobStatus, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	list := q.keys[key]
	if len(list) == 0 {
		return JobStatus{}, false
	}
	return list[len(list)-1].statusLocked(), true
}

// Wait blocks until key has no queued or in-flight job, skipping any Delay.
// It returns the last failure (a *JobError) if the job is failed (and keeps
// it queued), ctx's error, or ErrClosed if the queue closed with the job left.
func (q *Queue) Wait(ctx context.Context, key string) error {
	q.mu.Lock()
	now := time.Now()
	for _, j := range q.keys[key] {
		if j.due.After(now) {
			j.due = now
		}
	}
	q.mu.Unlock()
	q.nudge()
	for {
		q.mu.Lock()
		list := q.keys[key]
		if len(list) == 0 {
			q.mu.Unlock()
			return nil
		}
		for _, j := range list {
			if j.rec.State == StateFailed && !j.active {
				err := j.errorLocked()
				q.mu.Unlock()
				return err
			}
		}
		if q.closed && !list[0].active {
			q.mu.Unlock()
			return ErrClosed
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Drain starts every job now and waits until none is left but failed ones,
// or ctx ends. It returns nil if the queue is empty, else an error listing
// what is left (failed jobs with their errors, or what was still pending when
// ctx ended).
func (q *Queue) Drain(ctx context.Context) error {
	q.mu.Lock()
	q.draining++
	now := time.Now()
	for _, list := range q.keys {
		for _, j := range list {
			if j.due.After(now) {
				j.due = now
			}
		}
	}
	q.mu.Unlock()
	q.nudge()
	defer func() {
		q.mu.Lock()
		q.draining--
		q.mu.Unlock()
	}()
	for {
		q.mu.Lock()
		busy := false
		for _, list := range q.keys {
			for _, j := range list {
				if j.active || j.rec.State != StateFailed {
					busy = true
				}
			}
		}
		if !busy || q.closed && q.running == 0 {
			why := "failed"
			if busy {
				why = "queue closed"
			}
			err := q.leftLocked(why)
			q.mu.Unlock()
			return err
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			q.mu.Lock()
			err := q.leftLocked(ctx.Err().Error())
			q.mu.Unlock()
			return err
		}
	}
}

// Status lists every job, oldest first.
func (q *Queue) Status() []JobStatus {
	q.mu.Lock()
	var jobs []*job
	for _, list := range q.keys {
		jobs = append(jobs, list...)
	}
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].rec.Seq < jobs[b].rec.Seq })
	out := make([]JobStatus, len(jobs))
	for i, j := range jobs {
		out[i] = j.statusLocked()
	}
	q.mu.Unlock()
	return out
}

// Close stops the workers (interrupting transfers); the journal keeps what is
// left. Later Enqueues fail with ErrClosed; the other methods keep working on
// what is in memory.
func (q *Queue) Close() error {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		q.cancel()
		q.wg.Wait()
		q.mu.Lock()
		q.notifyLocked()
		q.mu.Unlock()
	})
	return nil
}

// RetryNow makes every job waiting out a retry backoff due at once (the
// caller saw the service answer again); failed jobs stay failed.
func (q *Queue) RetryNow() {
	q.mu.Lock()
	now := time.Now()
	for _, list := range q.keys {
		if j := list[0]; !j.active && j.rec.Tries > 0 && j.rec.State != StateFailed && j.due.After(now) {
			j.due = now
		}
	}
	q.mu.Unlock()
	q.nudge()
}

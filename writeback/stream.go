package writeback

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"evofs/remote"
)

// StreamPublisher is a Publisher that can also register a version and stage
// its blocks before the content is final (streaming publish). *remote.Client
// is one; with a plain Publisher, Stream always answers nil.
type StreamPublisher interface {
	Publisher
	Register(ctx context.Context, t remote.Target, resume remote.VersionID) (*remote.UploadTicket, error)
	NewStager(t remote.Target, ticket *remote.UploadTicket) (*remote.Stager, error)
	Config() remote.Config
}

// Stream is the streaming publish of one file while it is written in
// sequence from offset 0 (see the package comment). The caller serialises
// BeginWrite/EndWrite/Break of one stream (the node's I/O lock); every method
// is a no-op once the stream stopped, and all are safe on a nil *Stream.
type Stream struct {
	q       *Queue
	sp      StreamPublisher
	key     string
	staging string
	f       *os.File // the staging file, read-only, for the stream's own reads
	log     *logrus.Entry
	ctx     context.Context // ends when the stream stops staging
	cancel  context.CancelFunc
	wake    chan struct{} // cap 1: something to look at for run
	done    chan struct{} // closed once run and every staging goroutine returned

	mu       sync.Mutex
	jb       Job       // guarded by mu; the job as the caller described it
	j        *job      // guarded by mu; the journaled record, once registered
	written  int64     // guarded by mu; [0, written) is written in sequence (and not being rewritten)
	before   int64     // guarded by mu; written before the current write
	claimed  int64     // guarded by mu; blocks below this are staged or being staged
	inflight int       // guarded by mu; Stage calls running
	final    int64     // guarded by mu; -1 while written, then the file's size (handed to Enqueue)
	stopped  bool      // guarded by mu; no new block is staged
	broken   bool      // guarded by mu; the content changed behind: no ack of this stream counts
	unsaved  int64     // guarded by mu; bytes of acks not journaled yet
	lastSave time.Time // guarded by mu; when acks were last journaled
}

// streamSaveEvery is how often a stream journals its acks (each save is an
// fsync, and fsyncs while a big file is written stall its writer): a crash
// re-sends at most that much.
const streamSaveEvery = 2 * time.Second

// Stream starts streaming j's staging file, which its caller is about to
// write in sequence from offset 0 (a new file, or one opened with O_TRUNC).
// Nothing happens until StreamThreshold bytes are written: then the version
// is registered and journaled (a crash from then on publishes the file as it
// was left, resuming that version: at most one version is published) and
// whole blocks behind the writer are staged. Enqueue of the key hands the
// stream to the job; Break, Cancel, Rename, Release and Take stop it. nil
// when streaming is off or the key already has a job queued or in flight.
func (q *Queue) Stream(j Job) *Stream {
	sp, ok := q.pub.(StreamPublisher)
	if !ok || q.cfg.StreamThreshold < 0 || j.Key == "" || j.Path == "" || j.Staging == "" {
		return nil
	}
	f, err := os.Open(j.Staging)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(q.ctx)
	s := &Stream{
		q: q, sp: sp, key: j.Key, staging: j.Staging, f: f, jb: j, final: -1,
		log: q.logJob(j), ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	q.mu.Lock()
	old := q.streams[j.Key]
	busy := q.closed || len(q.keys[j.Key]) > 0
	if !busy {
		q.streams[j.Key] = s
		q.wg.Add(1)
	}
	q.mu.Unlock()
	if old != nil {
		old.Break("the file was truncated for a new write")
	}
	if busy {
		cancel()
		f.Close()
		s.log.Debug("writeback: not streaming: an earlier publish of the file is still queued")
		return nil
	}
	go s.run()
	return s
}

// BeginWrite is called before [off, off+n) is written to the staging file.
// A write over bytes already staged stops the stream for good (the record
// loses its version before BeginWrite returns, so a crash never reuses those
// blocks); a write over written bytes not staged yet holds staging back
// from them until EndWrite.
func (s *Stream) BeginWrite(off, n int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped && (s.broken || s.j == nil) {
		return
	}
	if off < s.claimed {
		s.breakLocked("a write behind what was already uploaded")
		return
	}
	s.before = s.written
	s.written = min(s.written, off)
}

// EndWrite is called after BeginWrite's write, with what it wrote.
func (s *Stream) EndWrite(off, n int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	if off <= s.before {
		s.written = max(s.before, off+n)
	} else {
		s.written = s.before // a hole: staging waits at its start
	}
	s.mu.Unlock()
	s.nudge()
}

// Break stops the stream because the sequence broke (why says how, in a
// debug line): its version is never committed, and the file publishes the
// normal way at its next Enqueue. Its record, if it registered one, is kept
// without the version (a crash publishes the file as it was left, like a
// held job), durably before Break returns.
func (s *Stream) Break(why string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakLocked(why)
}

func (s *Stream) breakLocked(why string) {
	if s.broken {
		return
	}
	wasStopped := s.stopped
	s.stopped, s.broken = true, true
	s.cancel()
	s.nudge()
	q := s.q
	q.mu.Lock()
	if q.streams[s.key] == s {
		delete(q.streams, s.key)
	}
	j := s.j
	handed := j != nil && q.isQueuedLocked(j)
	if j != nil && !handed {
		j.rec.Ticket, j.rec.Target, j.rec.ConflictPath = nil, nil, ""
		j.rec.Acked, j.rec.AckedBlockSize = nil, 0
		j.rec.Streamed = false
		if q.held[s.key] == nil {
			q.held[s.key] = j
		}
	}
	q.mu.Unlock()
	if j != nil && !handed {
		q.persist(j)
	}
	if !wasStopped || j != nil {
		s.log.WithField("why", why).Debug("writeback: streaming stopped; the file publishes the normal way")
	}
}

// stop ends staging without touching the record (a hand-off, a cancel, or
// the job needs the file now).
func (s *Stream) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	s.nudge()
}

// abandon stops the stream and makes every later ack void (its version is
// dropped). It returns the stream's record, if it registered one. nil-safe.
func (s *Stream) abandon() *job {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	s.stopped, s.broken = true, true
	j := s.j
	s.mu.Unlock()
	s.cancel()
	s.nudge()
	return j
}

func (s *Stream) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// isQueuedLocked reports whether j is in its key's list (handed to Enqueue).
func (q *Queue) isQueuedLocked(j *job) bool {
	for _, x := range q.keys[j.rec.Job.Key] {
		if x == j {
			return true
		}
	}
	return false
}

// threshold is where a stream registers: StreamThreshold (default 4 blocks),
// never at or below the client's single-put size, so a streamed file is
// always uploaded in blocks.
func (s *Stream) threshold() int64 {
	cfg := s.sp.Config()
	t := s.q.cfg.StreamThreshold
	if t == 0 {
		t = 4 * cfg.BlockSize
	}
	return max(t, cfg.SinglePutThreshold+1)
}

// wait blocks until nudged or the stream's context ends (false).
func (s *Stream) wait() bool {
	select {
	case <-s.wake:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// waitOrSave is wait, which also journals acks left unsaved for
// streamSaveEvery (the writer paused: no ack comes to save them).
func (s *Stream) waitOrSave() bool {
	s.mu.Lock()
	unsaved, due := s.unsaved, time.Until(s.lastSave.Add(streamSaveEvery))
	s.mu.Unlock()
	if unsaved == 0 {
		return s.wait()
	}
	t := time.NewTimer(max(due, 0))
	defer t.Stop()
	select {
	case <-s.wake:
	case <-t.C:
		s.mu.Lock()
		s.lastSave = time.Now()
		s.mu.Unlock()
		s.saveAcks(false)
	case <-s.ctx.Done():
		return false
	}
	return true
}

// run registers once the threshold is passed, then stages blocks behind
// the writer (StreamBlocks at once) until the stream stops or, once handed
// to a job, every block of the file is staged.
func (s *Stream) run() {
	q := s.q
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		s.saveAcks(true)
		s.f.Close()
		s.cancel()
		close(s.done)
		q.wg.Done()
	}()
	th := s.threshold()
	for {
		s.mu.Lock()
		stopped, written, final := s.stopped, s.written, s.final
		s.mu.Unlock()
		if stopped || final >= 0 {
			return // closed before the threshold: a normal publish
		}
		if written >= th {
			break
		}
		if !s.wait() {
			return
		}
	}
	stager := s.register()
	if stager == nil {
		return
	}
	bs := stager.BlockSize()
	conc := q.cfg.StreamBlocks
	var flushed int64
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		end := s.written
		if s.final >= 0 {
			end = s.final
		}
		flushFrom, flushTo := flushed, flushed
		if end-flushed >= bs {
			flushTo, flushed = end, end
		}
		off, n := int64(-1), int64(0)
		if s.inflight < conc && s.claimed < end && (s.claimed+bs <= end || s.final >= 0) {
			off, n = s.claimed, min(bs, end-s.claimed)
			s.claimed += n
			s.inflight++
		}
		finished := s.final >= 0 && s.claimed >= s.final && s.inflight == 0
		s.mu.Unlock()
		if flushTo > flushFrom {
			// Start writing what is written to disk now, ahead of the
			// uploads: the fsync of Enqueue (the close promise) then finds
			// little left to write.
			_ = unix.SyncFileRange(int(s.f.Fd()), flushFrom, flushTo-flushFrom, unix.SYNC_FILE_RANGE_WRITE)
		}
		if finished {
			s.log.Debug("writeback: streamed every block")
			return
		}
		if off >= 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.stage(stager, bs, off, n)
			}()
			continue
		}
		if !s.waitOrSave() {
			return
		}
	}
}

// register decides the target as a publish would, registers a version and
// journals it. nil if the stream stopped meanwhile or registering failed
// (then the file publishes the normal way).
func (s *Stream) register() *remote.Stager {
	q := s.q
	s.mu.Lock()
	jb := s.jb
	s.mu.Unlock()
	var (
		tgt   target
		cpath string
		tk    *remote.UploadTicket
	)
	err := q.retry(s.ctx, func() (err error) {
		tgt, cpath, err = q.decideTarget(s.ctx, jb)
		return err
	})
	if err == nil {
		err = q.retry(s.ctx, func() (err error) {
			tk, err = s.sp.Register(s.ctx, tgt.remote(), "")
			return err
		})
	}
	var stager *remote.Stager
	if err == nil {
		stager, err = s.sp.NewStager(tgt.remote(), tk)
	}
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.WithError(err).Debug("writeback: streaming stopped: cannot register; the file publishes the normal way")
		}
		s.stop()
		return nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil // the version is never committed, hence never visible
	}
	q.mu.Lock()
	q.seq++
	tg := tgt
	j := &job{rec: record{
		Format: recordFormat, ID: uuid.NewString(), Seq: q.seq, Job: jb, State: StatePending,
		Queued: time.Now(), Target: &tg, ConflictPath: cpath,
		Ticket:   &ticket{FileID: tk.FileID, VersionID: tk.VersionID},
		Streamed: true, Streaming: true,
	}}
	q.mu.Unlock()
	// Journaled under s.mu: a Break or a hand-off waits for it.
	err = putRecord(q.cfg.Dir, &j.rec, true)
	if err == nil {
		err = q.journal.commit()
	}
	if err != nil {
		s.log.WithError(err).Warn("writeback: streaming stopped: journal")
		s.stopped = true
		s.cancel()
		return nil
	}
	s.j = j
	q.mu.Lock()
	held := q.popHeldLocked(s.key)
	q.mu.Unlock()
	if held != nil { // replaced by ours, journaled above
		q.discard(held, false, false)
	}
	s.log.WithFields(logrus.Fields{"target": tgt.remote().String(), "new_version": string(tk.VersionID)}).
		Debug("writeback: streaming the file while it is written")
	return stager
}

// stage sends one block and journals its id.
func (s *Stream) stage(st *remote.Stager, bs, off, n int64) {
	id, err := st.Stage(s.ctx, s.f, off, n)
	s.mu.Lock()
	s.inflight--
	j := s.j
	ok := err == nil && !s.broken && j != nil
	save := false
	if ok {
		s.unsaved += n
		if now := time.Now(); now.Sub(s.lastSave) >= streamSaveEvery {
			s.lastSave, save = now, true
		}
	}
	if err != nil && !s.stopped {
		s.stopped = true
		s.cancel()
		s.log.WithError(err).WithField("offset", off).Debug("writeback: streaming stopped: staging a block failed; the publish sends the rest")
	}
	if ok {
		s.q.mu.Lock()
		if j.rec.AckedBlockSize != bs {
			j.rec.Acked, j.rec.AckedBlockSize = nil, bs
		}
		j.rec.Acked = append(j.rec.Acked, id)
		s.q.mu.Unlock()
	}
	s.mu.Unlock()
	s.nudge()
	if save {
		s.saveAcks(false)
	}
}

// saveAcks journals the acks not journaled yet (all, once every staging
// goroutine returned), then counts them as uploaded in the job's status.
func (s *Stream) saveAcks(final bool) {
	s.mu.Lock()
	n, j := s.unsaved, s.j
	s.unsaved = 0
	if final && s.broken {
		n = 0
	}
	s.mu.Unlock()
	if n == 0 || j == nil {
		return
	}
	s.q.persist(j) // the newest snapshot wins: a Break's stripped record too
	s.q.mu.Lock()
	if !j.active {
		j.done += n // status shows it as uploaded once journaled
		s.q.notifyLocked()
	}
	s.q.mu.Unlock()
}

// handOff gives the stream's record to Enqueue's job j of size bytes: the
// record becomes the job (same version, staged blocks kept) and the stream
// goes on staging the rest of the file, the tail included, while the job
// waits out its delay. nil when there is nothing to hand (not registered,
// broken, or another staging file): the stream stops and j is queued anew.
func (s *Stream) handOff(j Job, size int64) *job {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.j == nil || s.broken || j.Staging != s.staging {
		if !s.stopped {
			s.stopped = true
			s.cancel()
		}
		if s.j != nil && !s.broken {
			s.breakLocked("handed a different staging file")
		}
		return nil
	}
	s.final = size
	s.nudge()
	q := s.q
	nj := s.j
	q.mu.Lock()
	nj.rec.Job = j
	nj.rec.Size = size
	nj.rec.Streaming = false
	nj.rec.Queued = time.Now()
	nj.stream = s
	nj.fresh = true
	q.mu.Unlock()
	return nj
}

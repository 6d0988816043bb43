package writeback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"evofs/cache"
	"evofs/remote"
)

// schedule is the one scheduler goroutine: it starts due head jobs, up to
// Transfers at once, oldest due first, then sleeps until the next due time or
// a nudge (Enqueue, Wait, Drain, a worker finishing).
func (q *Queue) schedule() {
	defer q.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var next time.Time
		q.mu.Lock()
		// With every transfer busy there is nothing to start: a finishing
		// worker nudges. Otherwise one pass picks the oldest due jobs that
		// fit (thousands may be queued: no sort of them all).
		if free := q.cfg.Transfers - q.running; free > 0 {
			now := time.Now()
			due := make([]*job, 0, free)
			for _, list := range q.keys {
				j := list[0]
				if j.active || (j.rec.State != StatePending && j.rec.State != StatePublished) {
					continue
				}
				if j.due.After(now) {
					if next.IsZero() || j.due.Before(next) {
						next = j.due
					}
					continue
				}
				due = insertOldest(due, j, free)
			}
			for _, j := range due {
				q.startLocked(j)
			}
		}
		q.mu.Unlock()

		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-q.ctx.Done():
			timer.Stop()
			return
		case <-q.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// insertOldest adds j to due, kept sorted oldest first (due time, then
// Seq) and at most limit long.
func insertOldest(due []*job, j *job, limit int) []*job {
	older := func(a, b *job) bool {
		if !a.due.Equal(b.due) {
			return a.due.Before(b.due)
		}
		return a.rec.Seq < b.rec.Seq
	}
	i := len(due)
	for i > 0 && older(j, due[i-1]) {
		i--
	}
	if i >= limit {
		return due
	}
	if len(due) < limit {
		due = append(due, nil)
	}
	copy(due[i+1:], due[i:len(due)-1])
	due[i] = j
	return due
}

func (q *Queue) startLocked(j *job) {
	ctx, cancel := context.WithCancel(q.ctx)
	j.active = true
	j.cancel = cancel
	j.done = 0
	j.recheck, j.fresh = j.fresh, false
	if j.rec.State == StatePending {
		j.rec.State = StateUploading
	}
	q.running++
	q.notifyLocked()
	q.wg.Add(1)
	go q.run(ctx, j)
}

// run drives one attempt of j: publish (unless already published), the
// after-publish steps, then settles the outcome.
func (q *Queue) run(ctx context.Context, j *job) {
	defer q.wg.Done()
	q.mu.Lock()
	s := j.stream
	j.stream = nil
	q.mu.Unlock()
	if s != nil {
		// The stream stages what is left of the file: let it finish (the
		// publish would send the same blocks), unless this attempt ends.
		select {
		case <-s.done:
		case <-ctx.Done():
			s.stop()
			<-s.done
		}
	}
	q.mu.Lock()
	rec := j.rec
	q.mu.Unlock()

	var (
		res Result
		err error
	)
	start := time.Now()
	if rec.State == StatePublished {
		res = Result{Job: rec.Job, Meta: rec.Meta, ConflictPath: rec.ConflictPath}
	} else {
		res, err = q.publish(ctx, j, rec)
	}
	if err == nil {
		err = q.finish(ctx, j, res)
	}
	out := q.settle(j, res, err)
	if q.cfg.ObservePublish != nil && rec.State != StatePublished {
		q.cfg.ObservePublish(out.String(), time.Since(start))
	}
}

// errStaging marks a local failure to read the staging file: not retryable.
type errStaging struct{ err error }

func (e errStaging) Error() string { return "staging file: " + e.err.Error() }
func (e errStaging) Unwrap() error { return e.err }

// retryable: remote.Retryable, plus a target to re-decide and a deadline
// that is not the queue's (e.g. the client's poll timeout: the version may
// still commit, and the resume finds it); never a local staging failure.
func retryable(err error) bool {
	var es errStaging
	switch {
	case errors.As(err, &es):
		return false
	case errors.Is(err, errRetarget), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return remote.Retryable(err)
}

// missingStaging reads as the error that opening the staging file gave.
type missingStaging struct{ err error }

func (m missingStaging) ReadAt([]byte, int64) (int, error) { return 0, m.err }

// stagingReader remembers a local read failure, whatever the client makes of it.
type stagingReader struct {
	f   io.ReaderAt
	mu  sync.Mutex
	err error
}

func (r *stagingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
	}
	return n, err
}

func (r *stagingReader) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// errRetarget asks settle to forget the chosen target: the file published to
// by id vanished, so the next attempt decides again (and publishes by path).
var errRetarget = errors.New("file deleted remotely during publish")

func (q *Queue) publish(ctx context.Context, j *job, rec record) (Result, error) {
	var content io.ReaderAt
	var size int64
	f, err := os.Open(rec.Job.Staging)
	switch {
	case errors.Is(err, os.ErrNotExist) && rec.Ticket != nil && rec.Target != nil:
		// Published and cleaned up before a power cut took the record's
		// removal (load): the resume finds the version committed and sends
		// nothing; if it is not, the missing file fails the job.
		content, size = missingStaging{err}, rec.Size
	case err != nil:
		return Result{}, errStaging{err}
	default:
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return Result{}, errStaging{err}
		}
		content, size = f, st.Size()
	}
	q.mu.Lock()
	switch {
	case rec.Streaming && rec.AckedBlockSize > 0:
		// Streamed while written, then a crash: the staged blocks are whole
		// blocks of the file as it was left; keep those within its size.
		rec.Acked = wholeBlocks(rec.Acked, rec.AckedBlockSize, size)
		j.rec.Acked = rec.Acked
	case rec.Size != size:
		// block ids name offsets only: staged blocks of another size are not ours
		rec.Acked, rec.AckedBlockSize = nil, 0
		j.rec.Acked, j.rec.AckedBlockSize = nil, 0
	}
	j.rec.Size = size
	recheck := j.recheck
	q.mu.Unlock()

	if recheck && rec.Ticket != nil && rec.Target != nil && rec.Target.FileID != uuid.Nil && rec.Job.BaseVersion != "" {
		// The version was registered while the file was written, maybe long
		// ago: if the file moved on since, drop it (never committed) and
		// decide again, which makes a conflict copy.
		m, err := q.pub.GetByID(ctx, rec.Target.FileID, remote.GetOptions{})
		if err == nil && m.VersionID != rec.Job.BaseVersion && m.VersionID != rec.Ticket.VersionID {
			q.logJob(rec.Job).Debug("writeback: file changed remotely while streaming; dropping the streamed version")
			q.mu.Lock()
			j.abandonLocked()
			rec = j.rec
			q.mu.Unlock()
		}
	}

	var (
		tgt    target
		cpath  string
		resume *remote.UploadTicket
	)
	if rec.Ticket != nil && rec.Target != nil {
		// Resume the version registered before: same target, same version id.
		tgt, cpath = *rec.Target, rec.ConflictPath
		resume = &remote.UploadTicket{FileID: rec.Ticket.FileID, VersionID: rec.Ticket.VersionID}
		log := q.logJob(rec.Job)
		if len(rec.Acked) > 0 {
			log.WithField("staged_blocks", len(rec.Acked)).Info("writeback: resuming an interrupted upload")
		}
	} else if tgt, cpath, err = q.decideTarget(ctx, rec.Job); err != nil {
		return Result{}, err
	}

	log := q.logJob(rec.Job).WithField("target", tgt.remote().String())
	if resume != nil {
		log = log.WithField("resume_version", string(resume.VersionID))
	}
	log.Debug("writeback: publishing")
	opts := remote.PublishOptions{
		Resume:         resume,
		Acked:          rec.Acked,
		AckedBlockSize: rec.AckedBlockSize,
		OnRegistered: func(t *remote.UploadTicket) {
			q.mu.Lock()
			tg := tgt
			j.rec.Target = &tg
			j.rec.ConflictPath = cpath
			if j.rec.Ticket == nil || j.rec.Ticket.VersionID != t.VersionID {
				j.rec.Acked, j.rec.AckedBlockSize = nil, 0 // a new version: nothing staged yet
			}
			j.rec.Ticket = &ticket{FileID: t.FileID, VersionID: t.VersionID}
			q.mu.Unlock()
			q.persist(j) // durable before any byte goes: a restart resumes this version
			crashPoint("registered")
		},
		OnBlockAcked: func(bs int64, id string) {
			q.mu.Lock()
			if j.rec.AckedBlockSize != bs {
				j.rec.Acked, j.rec.AckedBlockSize = nil, bs
			}
			j.rec.Acked = append(j.rec.Acked, id)
			q.mu.Unlock()
			q.persist(j)
		},
		Progress: func(done int64) {
			q.mu.Lock()
			j.done = done
			q.mu.Unlock()
		},
	}
	sr := &stagingReader{f: content}
	meta, err := q.pub.Publish(ctx, tgt.remote(), sr, size, opts)
	if err == nil {
		crashPoint("uploaded")
	}
	if err != nil {
		if rerr := sr.failure(); rerr != nil && ctx.Err() == nil {
			return Result{}, errStaging{rerr}
		}
		// The file registered into vanished: one named by id, or the one a
		// by-path register found at the path (deleted before the poll saw our
		// version, e.g. by a rename over it settling). Decide again.
		if ctx.Err() == nil && (errors.Is(err, remote.ErrNotFound) || errors.Is(err, remote.ErrGone)) {
			return Result{}, fmt.Errorf("%w: %w", errRetarget, err)
		}
		return Result{}, err
	}
	q.mu.Lock()
	job := j.rec.Job // Rename may have changed Path meanwhile
	q.mu.Unlock()
	return Result{Job: job, Meta: meta, ConflictPath: cpath}, nil
}

// wholeBlocks keeps the ids of acked that name whole blocks of bs bytes
// within size bytes.
func wholeBlocks(acked []string, bs, size int64) []string {
	ok := make(map[string]bool)
	for off := int64(0); off+bs <= size; off += bs {
		ok[remote.BlockID(off)] = true
	}
	var out []string
	for _, id := range acked {
		if ok[id] {
			out = append(out, id)
		}
	}
	return out
}

// decideTarget picks where a not-yet-registered job publishes: by id if the
// file still is at BaseVersion, a conflict copy by path if it moved on, by
// path if it was deleted or is new.
func (q *Queue) decideTarget(ctx context.Context, jb Job) (target, string, error) {
	if jb.FileID == uuid.Nil {
		return target{Path: jb.Path}, "", nil
	}
	m, err := q.pub.GetByID(ctx, jb.FileID, remote.GetOptions{})
	switch {
	case errors.Is(err, remote.ErrNotFound) || errors.Is(err, remote.ErrGone):
		q.logJob(jb).Warn("writeback: file deleted remotely; publishing it again as a new file")
		return target{Path: jb.Path}, "", nil
	case err != nil:
		return target{}, "", err
	case jb.BaseVersion != "" && m.VersionID != jb.BaseVersion:
		cp := ConflictName(jb.Path, time.Now())
		q.logJob(jb).WithFields(map[string]any{
			"remote_version": string(m.VersionID),
			"conflict_path":  cp,
		}).Warn("writeback: file changed remotely since it was opened; publishing a conflict copy")
		return target{Path: cp}, cp, nil
	}
	return target{Path: jb.Path, FileID: jb.FileID}, "", nil
}

// finish runs the after-publish steps: journal the published state, adopt
// the staging file into the cache, OnPublished, DeleteAfter, then remove the
// staging file and the record. A cancelled job skips adopt and OnPublished
// (settle deletes what it created).
func (q *Queue) finish(ctx context.Context, j *job, res Result) error {
	q.mu.Lock()
	if j.rec.State != StatePublished {
		m := *res.Meta
		m.Download, m.Self = "", ""
		j.rec.State = StatePublished
		j.rec.Meta = &m
		j.rec.ConflictPath = res.ConflictPath
		j.rec.Tries, j.rec.LastError, j.err = 0, "", nil
	}
	cancelled := j.cancelled
	deleteAfter := j.rec.Job.DeleteAfter != uuid.Nil
	j.done = j.rec.Size
	q.notifyLocked()
	q.mu.Unlock()
	// Journaled (durably) only with a DeleteAfter step left: otherwise a
	// restart finds the registered record, resumes that version, finds it
	// committed and only cleans up (see journal.go).
	if deleteAfter {
		q.persist(j)
	}
	crashPoint("published")
	if cancelled {
		return nil
	}

	log := q.logJob(res.Job).WithFields(map[string]any{
		"new_file_id": res.Meta.FileID.String(), "new_version": string(res.Meta.VersionID),
	})
	if res.ConflictPath != "" {
		log = log.WithField("conflict_path", res.ConflictPath)
	}
	log.Info("writeback: published")

	q.mu.Lock()
	shared := q.stagingInUseLocked(res.Job.Staging, j)
	q.mu.Unlock()
	// Adopt may hard-link the file: not if a later job still writes through it.
	if q.cfg.Cache != nil && !shared {
		k := cache.Key{FileID: res.Meta.FileID, Version: string(res.Meta.VersionID)}
		if _, err := os.Stat(res.Job.Staging); err == nil {
			if err := q.cfg.Cache.Adopt(res.Job.Staging, k); err != nil {
				log.WithError(err).Warn("writeback: cache adopt failed")
			}
		}
	}
	if q.cfg.OnPublished != nil && q.cfg.OnPublished(res) {
		q.mu.Lock()
		j.adopted = true
		q.mu.Unlock()
	}
	if id := res.Job.DeleteAfter; id != uuid.Nil && q.stillToDelete(ctx, res, log) {
		if err := q.retry(ctx, func() error { return q.pub.DeleteByID(ctx, id) }); err != nil {
			if ctx.Err() != nil {
				return err // resumed (published state) on the next New
			}
			log.WithError(err).WithField("delete_after", id.String()).Error("writeback: deleting the old file failed")
		}
	}
	return nil
}

// stillToDelete reports whether a job's DeleteAfter file should go: not
// when it is the file just published, nor when it changed since the job
// was made (someone, maybe a later local file at its path, wrote to it).
func (q *Queue) stillToDelete(ctx context.Context, res Result, log *logrus.Entry) bool {
	id, want := res.Job.DeleteAfter, res.Job.DeleteAfterVersion
	if id == res.Meta.FileID {
		return false
	}
	if want == "" {
		return true
	}
	var m *remote.FileMeta
	err := q.retry(ctx, func() (err error) {
		m, err = q.pub.GetByID(ctx, id, remote.GetOptions{})
		return err
	})
	switch {
	case errors.Is(err, remote.ErrNotFound), errors.Is(err, remote.ErrGone):
		return false // already gone
	case err != nil:
		log.WithError(err).WithField("delete_after", id.String()).Warn("writeback: cannot check the renamed-away file; keeping it")
		return false // deleting is the destructive choice
	case m.VersionID != want:
		log.WithField("delete_after", id.String()).WithField("version", string(m.VersionID)).
			Info("writeback: the renamed-away file changed since; keeping it")
		return false
	}
	return true
}

// retry calls f until it succeeds, fails for good or ctx ends, backing off
// on retryable errors like jobs do.
func (q *Queue) retry(ctx context.Context, f func() error) error {
	for try := 1; ; try++ {
		err := f()
		if err == nil || !remote.Retryable(err) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(q.backoff(try))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is RetryMin·2^(tries-1) capped at RetryMax, jittered into [d/2, d].
func (q *Queue) backoff(tries int) time.Duration {
	d := q.cfg.RetryMin
	for i := 1; i < tries && d < q.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, q.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// outcome of one attempt, as settle sees it.
type outcome int

const (
	outDone       outcome = iota // published: clean up, leave the queue
	outCancelled                 // Cancel stopped it: undo, clean up, leave
	outClosed                    // the queue closed: the journal keeps it as is
	outRetry                     // transient failure: back off, stay pending
	outFailed                    // permanent failure: keep it, failed
	outSuperseded                // failed, and a newer job of its key is queued behind
)

// String names an outcome for Config.ObservePublish.
func (o outcome) String() string {
	return [...]string{"published", "cancelled", "closed", "retry", "failed", "superseded"}[o]
}

// settle records the outcome of an attempt, does the journal and staging
// clean-up, and only then takes the job out of the queue (or makes it
// schedulable again): once Wait sees a key empty, everything is done. The
// job stays active meanwhile, so neither the scheduler nor a replace touches
// it. q.mu is never held across I/O.
func (q *Queue) settle(j *job, res Result, err error) outcome {
	q.mu.Lock()
	rec := j.rec
	var out outcome
	switch {
	case j.cancelled:
		out = outCancelled
	case err == nil:
		out = outDone
	case q.ctx.Err() != nil:
		out = outClosed
	default:
		j.err = err
		j.rec.LastError = err.Error()
		j.rec.Tries++
		if errors.Is(err, errRetarget) {
			j.rec.Target, j.rec.Ticket, j.rec.ConflictPath = nil, nil, ""
		}
		out = outFailed
		if retryable(err) {
			out = outRetry
		}
		// A newer job queued behind supersedes one that never registered a
		// version, or that failed for good.
		if len(q.keys[rec.Job.Key]) > 1 && (out == outFailed || j.rec.Ticket == nil) {
			out = outSuperseded
		}
	}
	switch out {
	case outClosed:
		if j.rec.State == StateUploading {
			j.rec.State = StatePending
		}
	case outRetry:
		j.rec.State = StatePending
		j.due = time.Now().Add(q.backoff(j.rec.Tries))
	case outFailed:
		j.rec.State = StateFailed
	}
	// Re-base the job queued behind on what we published, unless that was a
	// conflict copy: then the one behind started from the same stale base
	// and is published as a conflict copy too, the original keeping the
	// other writer's content.
	var rebased *job
	if list := q.keys[rec.Job.Key]; out == outDone && res.ConflictPath == "" && len(list) > 1 && list[0] == j {
		n := list[1]
		if n.rec.Job.DeleteAfter == res.Meta.FileID {
			// It moves the content away from the file we just published to:
			// that version is ours, so the move still deletes it.
			n.rec.Job.DeleteAfterVersion = res.Meta.VersionID
			rebased = n
		} else if n.rec.Job.FileID == uuid.Nil || n.rec.Job.FileID == rec.Job.FileID {
			n.rec.Job.FileID = res.Meta.FileID
			n.rec.Job.BaseVersion = res.Meta.VersionID
			rebased = n
		}
	}
	tries := j.rec.Tries
	q.mu.Unlock()

	if rebased != nil {
		// Before our record goes: a crash in between must not leave the next
		// job based on the old version (it would see ours as a conflict).
		q.persist(rebased)
		q.logJob(rebased.rec.Job).Debug("writeback: queued job re-based on the version just published")
	}

	log := q.logJob(rec.Job)
	switch out {
	case outCancelled:
		q.undoCancelled(j, err)
		q.discard(j, true, true)
	case outDone:
		// Not committed: if a power cut brings the record back, it resumes
		// its committed version and only cleans up (see journal.go).
		q.discard(j, true, false)
		crashPoint("discarded")
	case outSuperseded:
		log.WithError(err).Warn("writeback: publish failed; superseded by a newer enqueue")
		q.discard(j, true, true)
	case outRetry:
		log.WithError(err).WithField("tries", tries).Warn("writeback: publish failed; will retry")
		q.persist(j)
	case outFailed:
		log.WithError(err).WithField("tries", tries).Error("writeback: publish failed for good; keeping the job and its data")
		q.persist(j)
	}

	q.mu.Lock()
	if out == outDone && j.cancelled {
		// Cancel came while the after-publish steps ran.
		q.mu.Unlock()
		q.undoCancelled(j, nil)
		q.mu.Lock()
	}
	switch out {
	case outDone, outCancelled, outSuperseded:
		q.removeLocked(j)
	}
	j.active = false
	j.stop()
	j.cancel = nil
	q.running--
	q.notifyLocked()
	q.mu.Unlock()
	q.nudge()
	return out
}

// undoCancelled runs after Cancel stopped j. If j may have created a file
// (it published by path and registered a version), that file is deleted when
// our version is all it has and OnPublished did not adopt it: best effort,
// logged. err is the attempt's error.
func (q *Queue) undoCancelled(j *job, err error) {
	q.mu.Lock()
	rec, adopted := j.rec, j.adopted
	q.mu.Unlock()
	if adopted {
		return // the file is shown by a live node now: the caller owns it
	}
	if rec.Ticket == nil || rec.Target == nil || rec.Target.FileID != uuid.Nil {
		return
	}
	log := q.logJob(rec.Job).WithFields(map[string]any{
		"new_file_id": rec.Ticket.FileID.String(), "new_version": string(rec.Ticket.VersionID),
	})
	ctx := q.ctx
	if ctx.Err() != nil {
		log.Warn("writeback: cancelled publish may have created a file; queue closed, not deleting it")
		return
	}
	m, gerr := q.pub.GetByID(ctx, rec.Ticket.FileID, remote.GetOptions{IncludeVersions: true})
	switch {
	case errors.Is(gerr, remote.ErrNotFound) || errors.Is(gerr, remote.ErrGone):
		if err != nil {
			log.Info("writeback: cancelled publish left no visible file (an upload that committed late could still appear)")
		}
		return
	case gerr != nil:
		log.WithError(gerr).Warn("writeback: cannot check a cancelled publish's file; not deleting it")
		return
	}
	ours := m.VersionID == rec.Ticket.VersionID
	for _, v := range m.Versions {
		if v.VersionID != rec.Ticket.VersionID {
			ours = false
		}
	}
	if !ours {
		log.WithField("remote_version", string(m.VersionID)).Info("writeback: cancelled publish's file has other versions; leaving it")
		return
	}
	if derr := q.retry(ctx, func() error { return q.pub.DeleteByID(ctx, rec.Ticket.FileID) }); derr != nil {
		log.WithError(derr).Warn("writeback: deleting the file of a cancelled publish failed")
		return
	}
	log.Info("writeback: deleted the file a cancelled publish created")
}

// ConflictName is the path of the conflict copy of p made at t:
// "NAME (conflict YYYY-MM-DD hhmmss).EXT" in the same folder, t in UTC. EXT
// is the text after the last dot of the name; there is none if the name has
// no dot or its only dot is the first character. The name part is shortened
// if needed to keep the name within 255 characters.
func ConflictName(p string, t time.Time) string {
	dir, name := path.Split(p)
	base, ext := name, ""
	if i := strings.LastIndex(name, "."); i > 0 {
		base, ext = name[:i], name[i:]
	}
	tag := " (conflict " + t.UTC().Format("2006-01-02 150405") + ")"
	const maxName = 255
	if over := utf8.RuneCountInString(base+tag+ext) - maxName; over > 0 {
		r := []rune(base)
		base = string(r[:max(0, len(r)-over)])
	}
	return dir + base + tag + ext
}

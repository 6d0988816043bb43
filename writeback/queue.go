package writeback

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
)

// job is one journaled job in memory.
type job struct {
	wmu     sync.Mutex // serialises this job's journal writes; before Queue.mu
	removed bool       // guarded by wmu; record deleted, never write it again

	// Guarded by Queue.mu.
	rec       record
	due       time.Time // when it may (re)start
	active    bool      // a worker owns it
	cancelled bool      // Cancel called while active
	adopted   bool      // OnPublished took the published file over
	cancel    context.CancelFunc
	done      int64 // bytes uploaded by the current attempt
	err       error // last failure (rec.LastError is its text)
	// A job handed over by a Stream: stream stages the rest of the file
	// until the job starts (which waits for it); fresh until its first
	// attempt, while its registered version is surely uncommitted and may
	// be abandoned (Take, Rename, a newer Enqueue); recheck on that attempt.
	stream  *Stream
	fresh   bool
	recheck bool
	// inline: the job's record carries its staging file's bytes (Inline),
	// which were never synced on their own: a rewrite of the record carries
	// them again (read back from the staging file, which nobody writes
	// while the job is queued). Take syncs the file and drops them.
	inline bool
}

// abandonLocked drops the version a fresh streamed job registered (it was
// never committed, so it never shows): the job publishes the normal way. It
// returns the stream to stop, if any; the caller persists the record.
func (j *job) abandonLocked() *Stream {
	s := j.stream
	j.stream, j.fresh = nil, false
	j.rec.Ticket, j.rec.Target, j.rec.ConflictPath = nil, nil, ""
	j.rec.Acked, j.rec.AckedBlockSize = nil, 0
	j.rec.Streamed = false
	return s
}

func (j *job) stop() {
	if j.cancel != nil {
		j.cancel()
	}
}

// replaceableLocked: a newer Enqueue (or Take) may drop this job. Not if a
// worker owns it, nor once it registered a version (it must be resumed) or
// published (only clean-up is left), unless it failed.
func (j *job) replaceableLocked() bool {
	if j.active || j.rec.State == StatePublished {
		return false
	}
	return j.rec.State == StateFailed || j.rec.Ticket == nil || j.fresh
}

func (j *job) statusLocked() JobStatus {
	return JobStatus{
		Job:       j.rec.Job,
		State:     j.rec.State,
		Size:      j.rec.Size,
		Done:      j.done,
		Tries:     j.rec.Tries,
		LastError: j.rec.LastError,
		Queued:    j.rec.Queued,
	}
}

func (j *job) errorLocked() error {
	err := j.err
	if err == nil {
		err = errors.New(j.rec.LastError)
	}
	return &JobError{Key: j.rec.Job.Key, Path: j.rec.Job.Path, Err: err}
}

// installLocked appends nj to its key's jobs, replacing the tail if that one
// has not started; it returns the replaced job, if any.
func (q *Queue) installLocked(nj *job) (old *job) {
	key := nj.rec.Job.Key
	list := q.keys[key]
	if n := len(list); n > 0 && list[n-1].replaceableLocked() {
		old = list[n-1]
		list = list[:n-1]
	}
	q.setListLocked(key, append(list[:len(list):len(list)], nj)) // a copy: the old list is still counted
	return old
}

// setListLocked replaces key's jobs (the only way q.keys changes, so that
// q.staged stays the count of jobs naming each staging file). list must not
// have overwritten the current list's elements (append to a full slice).
func (q *Queue) setListLocked(key string, list []*job) {
	for _, x := range q.keys[key] {
		if q.staged[x.rec.Job.Staging]--; q.staged[x.rec.Job.Staging] <= 0 {
			delete(q.staged, x.rec.Job.Staging)
		}
	}
	for _, x := range list {
		q.staged[x.rec.Job.Staging]++
	}
	if len(list) == 0 {
		delete(q.keys, key)
		return
	}
	q.keys[key] = list
}

// removeLocked takes j out of its key's list.
func (q *Queue) removeLocked(j *job) {
	key := j.rec.Job.Key
	list := q.keys[key]
	out := list[:0:0]
	for _, x := range list {
		if x != j {
			out = append(out, x)
		}
	}
	q.setListLocked(key, out)
}

// notifyLocked wakes every Wait/Drain.
func (q *Queue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// nudge wakes the scheduler.
func (q *Queue) nudge() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// stagingInUseLocked reports whether a job other than j uses path.
func (q *Queue) stagingInUseLocked(path string, j *job) bool {
	n := q.staged[path]
	for _, x := range q.keys[j.rec.Job.Key] {
		if x == j && x.rec.Job.Staging == path {
			n-- // j itself, still listed
		}
	}
	return n > 0
}

// discard deletes the record of a job already taken out of the lists, and
// its staging file if withStaging and no other job uses it. durable: the
// removal is committed before discard returns (a cancelled job must not come
// back); otherwise its loss must be harmless on restart (see journal.go).
// A stream the job owned is stopped first.
func (q *Queue) discard(j *job, withStaging, durable bool) {
	q.mu.Lock()
	s := j.stream
	j.stream = nil
	q.mu.Unlock()
	if s != nil {
		s.stop()
	}
	j.wmu.Lock()
	j.removed = true
	err := dropRecord(q.cfg.Dir, j.rec.ID)
	if err == nil && durable {
		err = q.journal.commit()
	}
	if err != nil {
		q.logJob(j.rec.Job).WithError(err).Error("writeback: journal")
	}
	j.wmu.Unlock()
	if !withStaging {
		return
	}
	q.mu.Lock()
	inUse := q.stagingInUseLocked(j.rec.Job.Staging, j)
	q.mu.Unlock()
	if inUse {
		return
	}
	if err := os.Remove(j.rec.Job.Staging); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.logJob(j.rec.Job).WithError(err).Warn("writeback: removing staging file")
	}
}

// persist durably writes j's current state to the journal (unless removed).
// A failed write is logged: the job goes on; only crash recovery of this step
// suffers.
func (q *Queue) persist(j *job) { q.persistAs(j, true) }

// persistAs is persist; with durable false the record is written (a kill -9
// keeps it) but neither fsynced nor committed, for states whose loss in a
// power cut a restart tolerates (see journal.go).
func (q *Queue) persistAs(j *job, durable bool) {
	if err := q.persistErr(j, durable); err != nil {
		q.mu.Lock()
		jb := j.rec.Job
		q.mu.Unlock()
		q.logJob(jb).WithError(err).Error("writeback: journal")
	}
}

// persistErr is persistAs, returning the journal's error.
func (q *Queue) persistErr(j *job, durable bool) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.removed {
		return nil
	}
	q.mu.Lock()
	rec := j.rec
	rec.Acked = append([]string(nil), rec.Acked...) // appended to while we write
	if rec.State == StateUploading {
		rec.State = StatePending
	}
	inline := j.inline
	q.mu.Unlock()
	if inline {
		b, err := readInline(rec.Job.Staging, rec.Size)
		if err != nil {
			return fmt.Errorf("journal: %s: %w", rec.ID, err)
		}
		rec.Inline, rec.Format = b, formatInline
	}
	err := putRecord(q.cfg.Dir, &rec, durable)
	if err == nil && durable {
		err = q.journal.commit()
	}
	return err
}

func (q *Queue) logJob(j Job) *logrus.Entry {
	f := logrus.Fields{"key": j.Key, "path": j.Path}
	if j.FileID != uuid.Nil {
		f["file_id"] = j.FileID.String()
	}
	if j.BaseVersion != "" {
		f["version"] = string(j.BaseVersion)
	}
	return q.log.WithFields(f)
}

// leftLocked describes the jobs left, for Drain.
func (q *Queue) leftLocked(why string) error {
	var lines []string
	var failed []error
	for _, list := range q.keys {
		for _, j := range list {
			s := fmt.Sprintf("%s (%s", j.rec.Job.Path, j.rec.State)
			if j.rec.LastError != "" {
				s += ": " + j.rec.LastError
			}
			lines = append(lines, s+")")
			if j.rec.State == StateFailed && !j.active {
				failed = append(failed, j.errorLocked())
			}
		}
	}
	if len(lines) == 0 {
		return nil
	}
	sort.Strings(lines)
	return &DrainError{Reason: why, Left: lines, Failed: failed}
}

// DrainError is returned by Drain when jobs are left.
type DrainError struct {
	Reason string   // "failed" or the context's error
	Left   []string // "path (state: last error)", sorted
	Failed []error  // the *JobError of each failed job
}

func (e *DrainError) Error() string {
	return fmt.Sprintf("writeback: %d job(s) left (%s): %s", len(e.Left), e.Reason, strings.Join(e.Left, "; "))
}

// Unwrap gives the failed jobs' errors to errors.Is/As.
func (e *DrainError) Unwrap() []error { return e.Failed }

// statFile returns the size of the staging file, a regular file.
func statFile(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	return st.Size(), nil
}

// syncFile fsyncs the staging file (the caller should have; cheap if so).
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// load rebuilds the queue from the journal: records are installed in Seq
// order with Enqueue's rules, so a key keeps its registered or published jobs
// (to resume them) plus its newest unstarted one. Pending jobs are due at
// once. A job whose staging file vanished is marked failed, not dropped.
func (q *Queue) load() error {
	recs, bad, err := loadRecords(q.cfg.Dir)
	if err != nil {
		return err
	}
	for _, name := range bad {
		q.log.WithField("record", name).Error("writeback: unreadable journal record set aside as .corrupt")
	}
	sort.Slice(recs, func(a, b int) bool { return recs[a].Seq < recs[b].Seq })
	newest := map[string]*record{} // staging path → the newest record naming it
	for _, r := range recs {
		newest[r.Job.Staging] = r
	}
	now := time.Now()
	var dropped, check []*job
	for _, r := range recs {
		if r.Seq > q.seq {
			q.seq = r.Seq
		}
		if r.State == StateUploading || r.State == "" || r.State == StatePublished && r.Meta == nil {
			r.State = StatePending
		}
		j := &job{rec: *r, due: now, inline: r.Format == formatInline} // its bytes stay in the file
		if j.inline && newest[r.Job.Staging] == r {                    // an older job's bytes never win
			if fixed, err := restoreInline(q.cfg.Dir, r); err != nil {
				q.logJob(r.Job).WithError(err).Error("writeback: cannot restore the staging file from its journal record")
			} else if fixed {
				q.logJob(r.Job).Warn("writeback: staging file restored from its journal record (lost in a crash)")
			}
		}
		if r.LastError != "" {
			j.err = errors.New(r.LastError)
		}
		if old := q.installLocked(j); old != nil {
			dropped = append(dropped, old)
		}
		check = append(check, j)
	}
	for _, j := range dropped {
		q.logJob(j.rec.Job).Info("writeback: journaled job superseded by a newer one")
		q.discard(j, true, false) // it would be superseded again
	}
	for _, j := range check {
		if j.rec.State == StatePublished {
			continue // only clean-up left; the staging file may already be gone
		}
		_, serr := os.Stat(j.rec.Job.Staging)
		if serr != nil && j.rec.State == StatePending && j.rec.Ticket != nil && j.rec.Target != nil {
			// A registered job whose staging file is gone was published and
			// cleaned up, but the removal of its record was not committed
			// before a power cut: resuming its version finds it committed
			// (publish, missing staging).
			continue
		}
		if j.rec.State == StateFailed && serr == nil {
			// A restart is a new attempt, not a blind retry: the role,
			// the sign-in or the service may have been fixed meanwhile.
			q.logJob(j.rec.Job).WithField("last_error", j.rec.LastError).Info("writeback: retrying a failed job after restart")
			j.rec.State, j.err = StatePending, nil
			j.rec.Acked, j.rec.AckedBlockSize = nil, 0
		}
		if err := serr; err != nil && j.rec.State != StateFailed {
			j.rec.State = StateFailed
			j.err = fmt.Errorf("staging file lost: %w", err)
			j.rec.LastError = j.err.Error()
			q.logJob(j.rec.Job).WithError(j.err).Error("writeback: journaled job cannot be published")
			q.persist(j)
		}
	}
	if n := len(recs) - len(dropped); n > 0 {
		q.log.WithField("jobs", n).Info("writeback: resuming journaled jobs")
	}
	return nil
}

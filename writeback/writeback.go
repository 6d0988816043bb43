// Package writeback publishes closed files to the File API durably.
//
// A Job names a staged copy of a file and where it goes. Enqueue journals
// the job (fsync) before returning; workers publish it (register → upload →
// poll) on the queue's own context, retrying transient failures with capped
// backoff for as long as the queue lives; a restart with the same Dir
// resumes every journaled job. The package never calls back into fusefs
// except through Config.OnPublished, and never while holding its lock.
package writeback

import (
	"context"
	"io"
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

// Config configures a Queue.
type Config struct {
	Dir       string        // journal directory (required)
	Delay     time.Duration // hold a job this long after its last Enqueue
	Transfers int           // parallel publishes, default 4
	RetryMin  time.Duration // first retry delay, default 1 s
	RetryMax  time.Duration // cap, default 1 min
	// Cache, if set, adopts published staging files as the new version's content.
	Cache *cache.Cache
	// OnPublished is called from a worker after each successful publish,
	// before the staging file is removed.
	OnPublished func(Result)
	Logger      *logrus.Entry
}

// Queue is safe for concurrent use.
type Queue struct{}

// New loads the journal in cfg.Dir and starts the workers; journaled jobs
// resume at once.
func New(cfg Config, p Publisher) (*Queue, error) { panic("unimplemented") }

// Enqueue journals j durably, then schedules it after Delay. A queued job
// with the same key is replaced (its staging removed unless it is j's); if
// one is in flight, j runs after it, publishing to the file that one produced.
func (q *Queue) Enqueue(j Job) error { panic("unimplemented") }

// Take removes a queued job that has not started and hands it (and its
// staging file) back to the caller. false if none or it is in flight.
func (q *Queue) Take(key string) (Job, bool) { panic("unimplemented") }

// Cancel forgets the jobs for key (the file was deleted locally before being
// published): a queued job is dropped and its staging removed; an in-flight
// one is stopped, and a version it committed anyway is deleted.
func (q *Queue) Cancel(key string) { panic("unimplemented") }

// Rename changes the target path of key's jobs.
func (q *Queue) Rename(key, newPath string) { panic("unimplemented") }

// Pending reports the status of key's newest job, if any.
func (q *Queue) Pending(key string) (JobStatus, bool) { panic("unimplemented") }

// Wait blocks until key has no queued or in-flight job, skipping any Delay.
// It returns the last failure if the job is failed (and keeps it queued).
func (q *Queue) Wait(ctx context.Context, key string) error { panic("unimplemented") }

// Drain starts every job now and waits until none is left or ctx ends.
func (q *Queue) Drain(ctx context.Context) error { panic("unimplemented") }

// Status lists every job.
func (q *Queue) Status() []JobStatus { panic("unimplemented") }

// Close stops the workers (interrupting transfers); the journal keeps what is left.
func (q *Queue) Close() error { panic("unimplemented") }

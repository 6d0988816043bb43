// Package remote is the client of the Seequent Evo File API v2 and of the
// pre-signed Azure block-blob URLs it hands out.
//
// It owns the wire format (types.go), error classification (errors.go), path
// rules and escaping (paths.go), authentication (auth.go), retries (retry.go),
// the API calls (api.go), blob transfers through the Azure SDK (blob.go) and
// the register → upload → poll publish flow (publish.go).
//
// # Behaviour callers rely on
//
//   - Errors: every service answer that is an error is an *APIError or a
//     *BlobError and matches exactly one class (ErrNotFound, ErrGone, …) with
//     errors.Is; failures without an answer are transport errors (Retryable);
//     context errors come back as they are. Paths are checked locally first
//     (ErrInvalidPath, ErrNameTooLong) and never sent when invalid.
//   - Retries: 429, 5xx (not 501) and transport failures are retried with
//     full-jitter exponential backoff within RetryPolicy and the context,
//     honouring Retry-After; a 401 refreshes the token once and replays once.
//     Blob transfers retry per block / per range with the same policy.
//   - Deletes treat 404 and 410 as success. Restore never follows its 303.
//   - A transfer renews an expired pre-signed URL once (uploads: re-register
//     with the ticket's version id; downloads: get by id with the version id,
//     deleted files included) and then continues with only the blocks or
//     ranges not yet acknowledged.
//   - The SDK's own retries are off; its query re-encoding is undone so the
//     pre-signed query is sent as issued, plus comp/blockid.
//
// # Invariants
//
//   - Every call takes a context and is bounded by it; retries never outlive it.
//   - Only idempotent calls are retried blindly. A register (PUT) is retried too:
//     a second register only reserves another version id that is never used.
//   - Tokens and the sig= of pre-signed URLs never reach a log or an error string
//     (RedactURL; SDK and net/http errors, which quote URLs, are converted).
//   - The package imports no other evofs package.
//
// # Locking
//
// Client is immutable after New. A transfer's urlHolder.mu serialises URL
// renewal; Blob.mu guards a Blob's URL and SDK client. Order: urlHolder.mu
// before Blob.mu; nothing else is held while calling out, except that the
// renewal call runs under urlHolder.mu (other chunks of that transfer wait
// for the new URL instead of racing to renew).
package remote

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// BaseURL is the hub URL, e.g. "https://350mt.api.seequent.com" (no trailing slash needed).
	BaseURL   string
	Org       uuid.UUID
	Workspace uuid.UUID
	Tokens    TokenSource // required

	// HTTPClient is used for API calls and blob transfers. Default: a client
	// with sane transport timeouts and no overall timeout.
	HTTPClient *http.Client

	// Retry bounds retries of transient failures.
	Retry RetryPolicy

	// SinglePutThreshold: uploads up to this size use one Put Blob. Default 16 MiB.
	SinglePutThreshold int64
	// BlockSize is the Put Block / ranged download chunk size. Default 8 MiB.
	BlockSize int64
	// Concurrency is the number of parallel block transfers. Default 8.
	Concurrency int

	// PollTimeout bounds the wait for a published version to become visible. Default 2 min.
	PollTimeout time.Duration
	// PollMin and PollMax are the poll backoff bounds. Default 100 ms doubling to 2 s.
	PollMin, PollMax time.Duration

	// UploadLimit and DownloadLimit cap blob transfer rates in bytes per
	// second over all transfers of the client; 0 = unlimited (bwlimit.go).
	UploadLimit, DownloadLimit int64

	// OnRetry, if set, is called before each retry of op (observe.go).
	OnRetry func(op string)

	Logger *logrus.Entry
}

// RetryPolicy is exponential backoff with full jitter, honouring Retry-After.
type RetryPolicy struct {
	MaxAttempts int           // total tries per call, default 5
	MinDelay    time.Duration // default 200 ms
	MaxDelay    time.Duration // default 10 s
}

// Client talks to one workspace. It is safe for concurrent use.
type Client struct {
	cfg        Config
	http       *http.Client // API calls and blob transfers
	noRedirect *http.Client // same transport; never follows redirects (restore's 303)
	log        *logrus.Entry
	upLimit    *rate.Limiter // nil: unlimited
	downLimit  *rate.Limiter // nil: unlimited
}

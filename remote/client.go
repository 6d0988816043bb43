// Package remote is the client of the Seequent Evo File API v2 and of the
// pre-signed Azure block-blob URLs it hands out.
//
// It owns the wire format (types.go), error classification (errors.go), path
// rules and escaping (paths.go), authentication (auth.go), retries (retry.go),
// the API calls (api.go), blob transfers through the Azure SDK (blob.go) and
// the register → upload → poll publish flow (publish.go).
//
// Invariants:
//   - Every call takes a context and is bounded by it; retries never outlive it.
//   - Only idempotent calls are retried blindly. A register (PUT) is retried too:
//     a second register only reserves another version id that is never used.
//   - Tokens and the sig= of pre-signed URLs never reach a log or an error string
//     (RedactURL).
//   - The package imports no other evofs package.
package remote

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
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
	cfg Config
	// implementation fields live in the other files' helpers
	http       *http.Client
	noRedirect *http.Client
	log        *logrus.Entry
}

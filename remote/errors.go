package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Error classes. Every error returned by this package that comes from the
// service matches (errors.Is) exactly one class; transport errors match none.
var (
	ErrNotFound           = errors.New("not found")                  // 404 /files/not-found
	ErrGone               = errors.New("file deleted")               // 410 /files/gone
	ErrInvalidPath        = errors.New("invalid path")               // 400 /files/invalid-path, or refused locally
	ErrNameTooLong        = errors.New("name too long")              // refused locally (> 255 characters); also matches ErrInvalidPath
	ErrNoUploadInProgress = errors.New("no file upload in progress") // 400, version already committed
	ErrConflict           = errors.New("already exists")             // 409 /files/already-exists
	ErrBadRequest         = errors.New("bad request")                // other 400
	ErrValidation         = errors.New("validation error")           // 422
	ErrUnauthorized       = errors.New("unauthorized")               // 401
	ErrForbidden          = errors.New("insufficient role")          // 403 from the API
	ErrServer             = errors.New("server error")               // 5xx
	ErrThrottled          = errors.New("too many requests")          // 429
	ErrURLExpired         = errors.New("pre-signed URL expired")     // blob 403 AuthenticationFailed
	ErrBlobPermission     = errors.New("pre-signed URL lacks permission")
	ErrBlob               = errors.New("blob storage error") // any other blob error
	// ErrNotVisible: a published version did not become the visible one
	// within PollTimeout (it is uploaded; polling again may succeed).
	ErrNotVisible = errors.New("published version not visible in time")
)

// ProblemTypePrefix is the common prefix of the API's problem `type` URLs.
const ProblemTypePrefix = "https://seequent.com/error-codes/file-api"

// APIError is a File API error answer with its problem JSON kept.
type APIError struct {
	Op             string // e.g. "get by path"
	Status         int
	Type           string // full problem type URL ("" if the body had none)
	Title          string
	Detail         string
	YourRole       string
	PermittedRoles []string
	RetryAfter     string // Retry-After header, if any
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.Status)
	if e.Title != "" {
		fmt.Fprintf(&b, " %s", e.Title)
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, ": %s", e.Detail)
	}
	if e.YourRole != "" {
		fmt.Fprintf(&b, " (role %s, needs one of %s)", e.YourRole, strings.Join(e.PermittedRoles, ", "))
	}
	return b.String()
}

// Class is the error class: by problem type suffix first, then by status.
func (e *APIError) Class() error {
	switch {
	case strings.HasSuffix(e.Type, "/files/not-found"):
		return ErrNotFound
	case strings.HasSuffix(e.Type, "/files/gone"):
		return ErrGone
	case strings.HasSuffix(e.Type, "/files/invalid-path"):
		return ErrInvalidPath
	case strings.HasSuffix(e.Type, "/files/no-file-upload-in-progress"):
		return ErrNoUploadInProgress
	case strings.HasSuffix(e.Type, "/files/already-exists"):
		return ErrConflict
	case strings.HasSuffix(e.Type, "/validation"):
		return ErrValidation
	case strings.HasSuffix(e.Type, "/auth/missing-token"), strings.HasSuffix(e.Type, "/auth/invalid-token"):
		return ErrUnauthorized
	case strings.HasSuffix(e.Type, "/auth/insufficient-role"):
		return ErrForbidden
	case strings.HasSuffix(e.Type, "/bad-request"), strings.HasSuffix(e.Type, "/preview-api"):
		return ErrBadRequest
	}
	switch {
	case e.Status == 404:
		return ErrNotFound
	case e.Status == 410:
		return ErrGone
	case e.Status == 409:
		return ErrConflict
	case e.Status == 422:
		return ErrValidation
	case e.Status == 401:
		return ErrUnauthorized
	case e.Status == 403:
		return ErrForbidden
	case e.Status == 429:
		return ErrThrottled
	case e.Status >= 500:
		return ErrServer
	case e.Status >= 400:
		return ErrBadRequest
	}
	return ErrServer
}

// Is reports whether target is this error's class.
func (e *APIError) Is(target error) bool { return e.Class() == target }

// BlobError is an error answer from a pre-signed blob URL.
type BlobError struct {
	Op     string // "put blob", "put block", "put block list", "get blob", "get blob properties"
	Status int
	Code   string // x-ms-error-code
	// RetryAfter is the Retry-After header, if any.
	RetryAfter string
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s", e.Op, e.Status, e.Code)
}

// Is maps AuthenticationFailed (and a bare 401/403) to ErrURLExpired,
// AuthorizationPermissionMismatch to ErrBlobPermission, 5xx to ErrServer, the rest to ErrBlob.
func (e *BlobError) Is(target error) bool {
	switch {
	case e.Code == "AuthorizationPermissionMismatch":
		return target == ErrBlobPermission
	case e.Code == "AuthenticationFailed", e.Code == "" && (e.Status == 401 || e.Status == 403):
		return target == ErrURLExpired
	case e.Status == 429:
		return target == ErrThrottled
	case e.Status >= 500:
		return target == ErrServer
	}
	return target == ErrBlob
}

// Retryable reports whether err is transient: throttling, 5xx, an expired URL
// (renewable), a poll timeout or a transport failure (no HTTP answer).
// Context errors and every other class are not.
func Retryable(err error) bool {
	if err == nil || isContextError(err) {
		return false
	}
	for _, c := range []error{ErrServer, ErrThrottled, ErrURLExpired, ErrNotVisible} {
		if errors.Is(err, c) {
			return true
		}
	}
	for _, c := range []error{ErrNotFound, ErrGone, ErrInvalidPath, ErrNoUploadInProgress, ErrConflict,
		ErrBadRequest, ErrValidation, ErrUnauthorized, ErrForbidden, ErrBlobPermission, ErrBlob, errBadResponse} {
		if errors.Is(err, c) {
			return false
		}
	}
	var ae *APIError
	var be *BlobError
	if errors.As(err, &ae) || errors.As(err, &be) {
		return false
	}
	return true
}

// errBadResponse marks a success answer whose body could not be decoded.
var errBadResponse = errors.New("malformed response")

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

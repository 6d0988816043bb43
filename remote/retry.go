package remote

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry machinery shared by API calls and blob transfers.
//
// A call is retried when the answer is 429 or a 5xx other than 501, or when
// no answer came at all (transport error), but never when the context is
// done. Delays are exponential with full jitter, starting at MinDelay and
// capped by MaxDelay; a Retry-After header (seconds or HTTP date) replaces
// the computed delay (still capped by MaxDelay). A delay that would outlive
// the context's deadline ends the call with the last error instead.

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.MinDelay <= 0 {
		p.MinDelay = 200 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 10 * time.Second
	}
	if p.MaxDelay < p.MinDelay {
		p.MaxDelay = p.MinDelay
	}
	return p
}

// maxRetryAfter bounds how long a Retry-After answer may make a call wait
// (a call whose context ends sooner gives up at once instead).
const maxRetryAfter = 5 * time.Minute

// backoff is the full-jitter delay before try attempt+1 (attempt >= 1).
func (p RetryPolicy) backoff(attempt int, retryAfter string) time.Duration {
	if d, ok := parseRetryAfter(retryAfter, time.Now()); ok {
		return min(d, maxRetryAfter) // the server's wish, within reason
	}
	ceil := p.MaxDelay
	if attempt < 32 {
		if c := p.MinDelay << (attempt - 1); c > 0 && c < ceil {
			ceil = c
		}
	}
	return rand.N(ceil) + 1
}

// parseRetryAfter reads a Retry-After value: delta seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, 1<<20)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// retryableStatus reports whether an HTTP status is worth another try.
func retryableStatus(s int) bool {
	return s == http.StatusTooManyRequests || (s >= 500 && s != http.StatusNotImplemented)
}

// transient reports whether err (from one try) deserves another try: a
// retryable status or a transport failure. Expired URLs are not transient
// here: the transfer code renews them.
func transient(err error) bool {
	if err == nil || isContextError(err) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return retryableStatus(ae.Status)
	}
	var be *BlobError
	if errors.As(err, &be) {
		return retryableStatus(be.Status)
	}
	var te *transportError
	return errors.As(err, &te)
}

func retryAfterOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	var be *BlobError
	if errors.As(err, &be) {
		return be.RetryAfter
	}
	return ""
}

// sleep waits d or until ctx is done. It refuses (returns false) a wait that
// would end after ctx's deadline.
func sleep(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// retry runs try until it succeeds, fails for good, MaxAttempts is reached
// or ctx ends. try gets the 1-based attempt number.
func (c *Client) retry(ctx context.Context, op string, try func(attempt int) error) error {
	p := c.cfg.Retry
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if err == nil || !transient(err) {
			return err
		}
		if attempt >= p.MaxAttempts {
			return err
		}
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry(op)
		}
		d := p.backoff(attempt, retryAfterOf(err))
		c.log.WithField("op", op).WithField("attempt", attempt).WithField("delay", d).Debugf("retrying: %v", err)
		if !sleep(ctx, d) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// transportError is a failure without an HTTP answer (connection refused,
// reset, truncated body, ...). Its text is redacted and it does not expose
// the underlying error (which may quote a pre-signed URL) except through Is,
// so context errors and io.ErrUnexpectedEOF still match.
type transportError struct {
	op    string
	msg   string
	cause error
}

func (e *transportError) Error() string { return e.op + ": " + e.msg }

// Is matches the cause's chain (e.g. io.ErrUnexpectedEOF, syscall.ECONNRESET).
func (e *transportError) Is(target error) bool { return errors.Is(e.cause, target) }

// wrapTransport turns a non-HTTP failure into a *transportError, keeping
// context errors as they are (they end retries).
func wrapTransport(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if isContextError(err) {
		return err
	}
	return &transportError{op: op, msg: redactText(err.Error()), cause: err}
}

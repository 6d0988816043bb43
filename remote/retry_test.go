package remote

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://h/b/c?sv=2023-08-03&se=2024-01-01T00%3A00%3A00Z&sp=rt&sig=abc%2Bdef%3D&rscd=x#frag": "https://h/b/c?sv=2023-08-03&se=2024-01-01T00%3A00%3A00Z&sp=rt&sig=REDACTED&rscd=x#frag",
		"https://h/b?SIG=x&comp=block&blockid=MDA%3D":                                                "https://h/b?SIG=REDACTED&comp=block&blockid=MDA%3D",
		"https://h/no-query":                      "https://h/no-query",
		"https://h/p?sig=":                        "https://h/p?sig=REDACTED",
		"https://h/p?access_token=t&x=1":          "https://h/p?access_token=REDACTED&x=1",
		"https://h/p?a=1&sig":                     "https://h/p?a=1&sig",
		"http://127.0.0.1:4/blob/x?sig=a&sig=b&z": "http://127.0.0.1:4/blob/x?sig=REDACTED&sig=REDACTED&z",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func TestRedactText(t *testing.T) {
	u := "http://127.0.0.1:4/blob/x?se=1&sig=SECRET%2B&sp=w"
	err := &url.Error{Op: "Put", URL: u, Err: io.ErrUnexpectedEOF}
	got := redactText(err.Error())
	if strings.Contains(got, "SECRET") || !strings.Contains(got, "sig=REDACTED&sp=w") {
		t.Fatalf("redactText = %q", got)
	}
	te := wrapTransport(t.Context(), "put block", fmt.Errorf("outer: %w", err))
	if strings.Contains(te.Error(), "SECRET") {
		t.Fatalf("transport error leaks the signature: %q", te)
	}
	if !errors.Is(te, io.ErrUnexpectedEOF) || !transient(te) || !Retryable(te) {
		t.Fatalf("transport error lost its class: %v", te)
	}
	var ue *url.Error
	if errors.As(te, &ue) {
		t.Fatalf("transport error exposes the raw *url.Error")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"3":                             3 * time.Second,
		" 0 ":                           0,
		"Mon, 01 Jan 2024 00:00:07 GMT": 7 * time.Second,
		"Sun, 31 Dec 2023 23:00:00 GMT": 0,
	} {
		d, ok := parseRetryAfter(in, now)
		if !ok || d != want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v", in, d, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "soon", "1.5"} {
		if _, ok := parseRetryAfter(in, now); ok {
			t.Errorf("parseRetryAfter(%q) accepted", in)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	p := RetryPolicy{MinDelay: 10 * time.Millisecond, MaxDelay: 80 * time.Millisecond}.withDefaults()
	if p.MaxAttempts != 5 {
		t.Fatalf("default MaxAttempts %d", p.MaxAttempts)
	}
	for attempt := 1; attempt <= 40; attempt++ {
		ceil := min(p.MaxDelay, p.MinDelay<<min(attempt-1, 20))
		for range 50 {
			d := p.backoff(attempt, "")
			if d <= 0 || d > ceil {
				t.Fatalf("attempt %d: delay %v outside (0, %v]", attempt, d, ceil)
			}
		}
	}
	if d := p.backoff(1, "1"); d != time.Second {
		t.Fatalf("Retry-After above MaxDelay gave %v, want the server's 1s", d)
	}
	if d := p.backoff(1, "86400"); d != maxRetryAfter {
		t.Fatalf("Retry-After of a day gave %v, want the cap %v", d, maxRetryAfter)
	}
	p.MaxDelay = 5 * time.Second
	if d := p.backoff(1, "2"); d != 2*time.Second {
		t.Fatalf("Retry-After 2 gave %v", d)
	}
}

func TestErrorClasses(t *testing.T) {
	cases := []struct {
		e    *APIError
		want error
	}{
		{&APIError{Status: 404, Type: ProblemTypePrefix + "/files/not-found"}, ErrNotFound},
		{&APIError{Status: 400, Type: ProblemTypePrefix + "/files/no-file-upload-in-progress"}, ErrNoUploadInProgress},
		{&APIError{Status: 400, Type: "https://seequent.com/error-codes/preview-api"}, ErrBadRequest},
		{&APIError{Status: 502, Type: ProblemTypePrefix + "/metadata/store-error"}, ErrServer},
		{&APIError{Status: 429}, ErrThrottled},
		{&APIError{Status: 410}, ErrGone},
	}
	for _, c := range cases {
		if !errors.Is(c.e, c.want) {
			t.Errorf("%+v is not %v", c.e, c.want)
		}
	}
	if !Retryable(&APIError{Status: 503}) || Retryable(&APIError{Status: 404}) || Retryable(fmt.Errorf("x: %w", ErrInvalidPath)) {
		t.Error("Retryable misclassifies")
	}
	if !Retryable(&BlobError{Status: 403, Code: "AuthenticationFailed"}) || Retryable(&BlobError{Status: 403, Code: "AuthorizationPermissionMismatch"}) {
		t.Error("Retryable misclassifies blob errors")
	}
	if Retryable(&APIError{Status: 403, Type: ProblemTypePrefix + "/auth/insufficient-role"}) {
		t.Error("a role error must not be retried")
	}
	if !retryableStatus(http.StatusBadGateway) || retryableStatus(http.StatusNotImplemented) || retryableStatus(404) {
		t.Error("retryableStatus misclassifies")
	}
}

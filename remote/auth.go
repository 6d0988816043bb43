package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// TokenSource supplies bearer tokens. Token(ctx, false) may return a cached
// token; after a 401 the client calls Token(ctx, true) once to get a fresh
// one (re-read the file, refresh the OAuth token) and replays the request once.
type TokenSource interface {
	Token(ctx context.Context, refresh bool) (string, error)
}

// StaticToken always returns the same token.
type StaticToken string

// Token returns the token.
func (s StaticToken) Token(context.Context, bool) (string, error) { return string(s), nil }

// EnvTokenVar is the environment variable EnvToken reads.
const EnvTokenVar = "EVO_TOKEN"

// ErrNoToken: the token source has no token to offer.
var ErrNoToken = errors.New("no bearer token")

// EnvToken reads EVO_TOKEN (re-read on refresh).
func EnvToken() TokenSource { return &cachedToken{read: readEnvToken, what: "$" + EnvTokenVar} }

// FileToken reads a token from a file (trimmed), re-reading it on refresh.
func FileToken(path string) TokenSource {
	return &cachedToken{read: func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}, what: path}
}

func readEnvToken() (string, error) { return os.Getenv(EnvTokenVar), nil }

// cachedToken keeps the last token read; refresh (or no token yet) reads again.
type cachedToken struct {
	read func() (string, error)
	what string

	mu  sync.Mutex
	tok string // guarded by mu
}

func (c *cachedToken) Token(_ context.Context, refresh bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok != "" && !refresh {
		return c.tok, nil
	}
	raw, err := c.read()
	if err != nil {
		return "", fmt.Errorf("reading token from %s: %w", c.what, err)
	}
	tok := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(raw), "Bearer "))
	if tok == "" {
		return "", fmt.Errorf("%w in %s", ErrNoToken, c.what)
	}
	c.tok = tok
	return tok, nil
}

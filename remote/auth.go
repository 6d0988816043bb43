package remote

import "context"

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

// EnvToken reads EVO_TOKEN (re-read on refresh).
func EnvToken() TokenSource { panic("unimplemented") }

// FileToken reads a token from a file (trimmed), re-reading it on refresh.
func FileToken(path string) TokenSource { panic("unimplemented") }

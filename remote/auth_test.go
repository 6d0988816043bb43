package remote

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFileTokenRereadOnRefresh(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte("  one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := FileToken(p)
	ctx := context.Background()
	if tok, err := ts.Token(ctx, false); err != nil || tok != "one" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if err := os.WriteFile(p, []byte("Bearer two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, _ := ts.Token(ctx, false); tok != "one" {
		t.Fatalf("cached token = %q, want one", tok)
	}
	if tok, err := ts.Token(ctx, true); err != nil || tok != "two" {
		t.Fatalf("refreshed token = %q, %v, want two", tok, err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(ctx, true); !errors.Is(err, ErrNoToken) {
		t.Fatalf("empty file: %v, want ErrNoToken", err)
	}
	if _, err := FileToken(filepath.Join(t.TempDir(), "missing")).Token(ctx, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestEnvToken(t *testing.T) {
	t.Setenv(EnvTokenVar, "")
	ts := EnvToken()
	ctx := context.Background()
	if _, err := ts.Token(ctx, false); !errors.Is(err, ErrNoToken) {
		t.Fatalf("unset: %v, want ErrNoToken", err)
	}
	t.Setenv(EnvTokenVar, "abc")
	if tok, err := ts.Token(ctx, false); err != nil || tok != "abc" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	t.Setenv(EnvTokenVar, "def")
	if tok, _ := ts.Token(ctx, true); tok != "def" {
		t.Fatalf("refreshed = %q, want def", tok)
	}
	if tok, _ := StaticToken("s").Token(ctx, true); tok != "s" {
		t.Fatalf("StaticToken = %q", tok)
	}
}

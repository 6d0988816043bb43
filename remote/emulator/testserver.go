package emulator

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestToken is the bearer token NewTestServer always accepts (as an editor).
const TestToken = "test-token"

// TestUser is the identity of TestToken when Options.Tokens is non-empty.
var TestUser = User{ID: uuid.MustParse("00000000-0000-4000-8000-0000000e5700"), Name: "Test User", Email: "test.user@example.com"}

// TestServer is a Server listening on a loopback port, with a fresh random
// organisation and workspace.
type TestServer struct {
	*Server
	URL       string // http://127.0.0.1:port (the hub URL)
	Org       uuid.UUID
	Workspace uuid.UUID
	Token     string

	hs *http.Server
	ln net.Listener
}

// NewTestServer starts a server for o on 127.0.0.1:0 and registers Close
// with tb.Cleanup. Token "test-token" is accepted as an editor.
func NewTestServer(tb testing.TB, o Options) *TestServer {
	tb.Helper()
	if len(o.Tokens) > 0 {
		toks := make(map[string]Grant, len(o.Tokens)+1)
		for k, v := range o.Tokens {
			toks[k] = v
		}
		if _, ok := toks[TestToken]; !ok {
			toks[TestToken] = Grant{User: TestUser, Role: RoleEditor}
		}
		o.Tokens = toks
	}
	s, err := New(o)
	if err != nil {
		tb.Fatalf("emulator: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln, err = net.Listen("tcp6", "[::1]:0")
	}
	if err != nil {
		tb.Fatalf("emulator: listen: %v", err)
	}
	ts := &TestServer{Server: s, URL: "http://" + ln.Addr().String(), Org: uuid.New(), Workspace: uuid.New(),
		Token: TestToken, ln: ln, hs: &http.Server{Handler: s}}
	go ts.hs.Serve(ln)
	tb.Cleanup(ts.Close)
	return ts
}

// Close stops the listener, waits for requests in flight and closes the server.
func (ts *TestServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ts.hs.Shutdown(ctx) != nil {
		ts.hs.Close()
	}
	ts.Server.Close()
}

// FilesURL is the base URL of the workspace's file routes.
func (ts *TestServer) FilesURL() string {
	return ts.URL + "/file/v2/orgs/" + ts.Org.String() + "/workspaces/" + ts.Workspace.String() + "/files"
}

package remote

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"golang.org/x/oauth2"

	"evofs/remote/emulator"
)

var (
	nativeUser = emulator.User{ID: uuid.MustParse("00000000-0000-4000-8000-0000000a0001"), Name: "Ada", Email: "ada@example.com"}
)

// lockedBuf is a log sink read while written.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func captureLog() (*logrus.Entry, *lockedBuf) {
	b := &lockedBuf{}
	l := logrus.New()
	l.SetOutput(b)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l), b
}

// browse plays the browser: it follows the authorize URL to the loopback redirect.
func browse(t *testing.T, authURL string) {
	t.Helper()
	resp, err := http.Get(authURL)
	if err != nil {
		t.Errorf("browser: %v", err)
		return
	}
	resp.Body.Close()
}

func newIMS(t *testing.T, o emulator.IMSOptions) *emulator.TestIMS {
	if o.Clients == nil {
		o.Clients = map[string]emulator.IMSClient{
			"native":  {Grant: emulator.Grant{User: nativeUser, Role: emulator.RoleEditor}},
			"service": {Secret: "s3cret", Grant: emulator.Grant{User: nativeUser, Role: emulator.RoleEditor}},
		}
	}
	return emulator.NewTestIMS(t, o)
}

func loginOnce(t *testing.T, ims *emulator.TestIMS, clientID string) (*LoginRecord, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seen string
	tok, err := Login(ctx, OAuthConfig{Issuer: ims.URL, ClientID: clientID, RedirectURL: "http://127.0.0.1:0/cb"},
		func(u string) { seen = u; go browse(t, u) })
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if tok.RefreshToken == "" || tok.AccessToken == "" {
		t.Fatalf("login gave no refresh or access token")
	}
	path := filepath.Join(t.TempDir(), "cfg", "evofs", "login.json")
	rec := &LoginRecord{Issuer: ims.URL, ClientID: clientID, RefreshToken: tok.RefreshToken, SavedAt: time.Now()}
	if err := SaveLogin(path, rec); err != nil {
		t.Fatal(err)
	}
	return rec, path + "|" + seen
}

func TestLoginPKCEAndStore(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{})
	_, both := loginOnce(t, ims, "native")
	path, authURL, _ := strings.Cut(both, "|")
	u, _ := url.Parse(authURL)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" {
		t.Fatalf("authorize URL lacks PKCE or state: %v", q)
	}
	for _, s := range []string{"evo.discovery", "evo.workspace", "evo.file", "offline_access"} {
		if !strings.Contains(" "+q.Get("scope")+" ", " "+s+" ") {
			t.Fatalf("scope %q missing from %q", s, q.Get("scope"))
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("store mode: %v %v", st.Mode(), err)
	}
	dst, _ := os.Stat(filepath.Dir(path))
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode %v", dst.Mode())
	}
	if ims.Issued("authorization_code") != 1 {
		t.Fatalf("codes exchanged: %d", ims.Issued("authorization_code"))
	}
}

func TestLoginRefusedClient(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A service app cannot sign users in: the issuer redirects with an error.
	_, err := Login(ctx, OAuthConfig{Issuer: ims.URL, ClientID: "service", RedirectURL: "http://127.0.0.1:0/cb"},
		func(u string) { go browse(t, u) })
	if !errors.Is(err, ErrSignIn) {
		t.Fatalf("want ErrSignIn, got %v", err)
	}
}

func TestPKCEVerifierChecked(t *testing.T) {
	// The emulator must refuse a code exchanged with the wrong verifier.
	ims := newIMS(t, emulator.IMSOptions{})
	c := OAuthConfig{Issuer: ims.URL, ClientID: "native"}.withDefaults()
	cfg := c.userConfig("http://127.0.0.1:1/cb")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cfg.AuthCodeURL("st", oauth2S256("right-verifier-right-verifier-right-verifier-1234")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("no code in %v", loc)
	}
	_, err = cfg.Exchange(c.ctx(context.Background()), code, oauth2Verifier("wrong-verifier-wrong-verifier-wrong-verifier-12345"))
	if err == nil || !errors.Is(oauthFailure("x", err), ErrSignIn) {
		t.Fatalf("wrong verifier accepted: %v", err)
	}
}

func TestRefreshSourceRefreshesEarlyAndOn401(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{TokenTTL: 2 * time.Second, RotateRefreshTokens: true})
	rec, both := loginOnce(t, ims, "native")
	path, _, _ := strings.Cut(both, "|")
	log, buf := captureLog()
	src, err := NewRefreshSource(OAuthConfig{Logger: log}, path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t1, err := src.Token(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ims.Verify(t1); !ok {
		t.Fatal("fresh token not valid")
	}
	if t2, _ := src.Token(ctx, false); t2 != t1 {
		t.Fatal("a fresh token was not reused")
	}
	// Wait until the token is within its refresh margin (not yet expired).
	deadline := time.Now().Add(5 * time.Second)
	var t3 string
	for time.Now().Before(deadline) {
		if t3, err = src.Token(ctx, false); err != nil {
			t.Fatal(err)
		}
		if t3 != t1 {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the clock
	}
	if t3 == t1 {
		t.Fatal("token not refreshed before expiry")
	}
	if _, ok := ims.Verify(t1); !ok {
		t.Fatal("refresh happened only after expiry")
	}
	// The rotated refresh token was saved.
	saved, err := LoadLogin(path)
	if err != nil || saved.RefreshToken == rec.RefreshToken {
		t.Fatalf("rotated refresh token not saved: %v", err)
	}
	// 401 path: the server forgot every access token.
	ims.ExpireAccessTokens()
	src.shared = 0
	t4, err := src.Token(ctx, true)
	if err != nil || t4 == t3 {
		t.Fatalf("refresh on 401 failed: %v", err)
	}
	if _, ok := ims.Verify(t4); !ok {
		t.Fatal("refreshed token invalid")
	}
	for _, tok := range []string{t1, t3, t4, saved.RefreshToken, rec.RefreshToken} {
		if strings.Contains(buf.String(), tok) {
			t.Fatal("a token reached the log")
		}
	}
}

func TestRefreshSourceRevokedThenLoginAgain(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{})
	_, both := loginOnce(t, ims, "native")
	path, _, _ := strings.Cut(both, "|")
	log, buf := captureLog()
	src, err := NewRefreshSource(OAuthConfig{Logger: log}, path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := src.Token(ctx, false); err != nil {
		t.Fatal(err)
	}
	ims.Revoke("native")
	src.shared = 0
	_, err = src.Token(ctx, true)
	if !errors.Is(err, ErrSignIn) {
		t.Fatalf("want ErrSignIn after revoke, got %v", err)
	}
	if !Retryable(err) {
		t.Fatal("a refused sign-in must leave writes queued (retryable)")
	}
	n := ims.Issued("")
	for i := 0; i < 5; i++ {
		if _, err := src.Token(ctx, true); !errors.Is(err, ErrSignIn) {
			t.Fatalf("want ErrSignIn, got %v", err)
		}
	}
	if ims.Issued("") != n {
		t.Fatal("a refused sign-in asked the issuer again")
	}
	if c := strings.Count(buf.String(), "sign-in is no longer valid"); c != 1 {
		t.Fatalf("refusal logged %d times:\n%s", c, buf.String())
	}
	// The user signs in again: the source picks the new login up.
	time.Sleep(10 * time.Millisecond) // a distinct mtime for the new store
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := Login(ctx2, OAuthConfig{Issuer: ims.URL, ClientID: "native", RedirectURL: "http://127.0.0.1:0/cb"},
		func(u string) { go browse(t, u) })
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveLogin(path, &LoginRecord{Issuer: ims.URL, ClientID: "native", RefreshToken: tok.RefreshToken}); err != nil {
		t.Fatal(err)
	}
	at, err := src.Token(ctx, false)
	if err != nil {
		t.Fatalf("after login again: %v", err)
	}
	if _, ok := ims.Verify(at); !ok {
		t.Fatal("token after login again is invalid")
	}
	if !strings.Contains(buf.String(), "signed in again") {
		t.Fatal("recovery not logged")
	}
}

func TestClientCredentialsSource(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{TokenTTL: time.Hour})
	src, err := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ims.Verify(tok); !ok {
		t.Fatal("client credentials token invalid")
	}
	bad, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "wrong"})
	if _, err := bad.Token(context.Background(), false); !errors.Is(err, ErrSignIn) || !strings.Contains(err.Error(), "client id (or client secret)") {
		t.Fatalf("wrong secret: %v", err)
	}
	unknown, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "nope", ClientSecret: "x"})
	if _, err := unknown.Token(context.Background(), false); !errors.Is(err, ErrSignIn) {
		t.Fatalf("unknown client: %v", err)
	}
}

func TestTransientIssuerFailureRetried(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{})
	src, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "s3cret"})
	ims.FailTokenRequests(2)
	if _, err := src.Token(context.Background(), false); err != nil {
		t.Fatalf("two 503s should be retried: %v", err)
	}
	ims.FailTokenRequests(10)
	src.shared = 0
	_, err := src.Token(context.Background(), true)
	if err == nil || errors.Is(err, ErrSignIn) || !Retryable(err) {
		t.Fatalf("lasting 503: want a retryable non-sign-in error, got %v", err)
	}
}

func TestIMSTokensOnHub(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{TokenTTL: time.Hour})
	ts := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	src, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "s3cret"})
	c, err := New(Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.List(ctx, ListOptions{}); err != nil {
		t.Fatal(err)
	}
	// Every access token dies: the client refreshes once and replays.
	ims.ExpireAccessTokens()
	src.shared = 0
	if _, err := c.List(ctx, ListOptions{}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if src.Refreshes() != 2 {
		t.Fatalf("refreshes = %d, want 2", src.Refreshes())
	}
	// A hub that trusts an issuer refuses made-up tokens.
	bad, _ := New(Config{BaseURL: ts.URL, Org: ts.Org, Workspace: ts.Workspace, Tokens: StaticToken("made-up")})
	if _, err := bad.List(ctx, ListOptions{}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("made-up token: %v", err)
	}
}

func oauth2S256(v string) oauth2.AuthCodeOption     { return oauth2.S256ChallengeOption(v) }
func oauth2Verifier(v string) oauth2.AuthCodeOption { return oauth2.VerifierOption(v) }

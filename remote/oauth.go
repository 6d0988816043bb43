package remote

// Sign-in with Bentley IMS (contract §8) on top of golang.org/x/oauth2:
// the authorization-code flow with PKCE on a loopback redirect (Login), the
// refresh-token store (SaveLogin/LoadLogin, 0600 in a 0700 directory), and
// OAuthSource, the TokenSource a mount runs on for weeks.
//
// OAuthSource rules:
//   - It hands out its cached access token until a quarter of its lifetime
//     (at most 2 min) is left, then refreshes; a 401 (Token(ctx, true))
//     refreshes too unless a refresh finished in the last second (many
//     requests refused at once share one refresh). Refreshes are serialised.
//   - A transient refresh failure (network, 5xx, 429) is retried a few times;
//     if it still fails the old token is used while it lasts, else the error
//     is returned (callers treat it as retryable: writes stay queued).
//   - A refusal (invalid_grant, invalid_client, unauthorized_client) is "for
//     good": it is logged once at error level and every later call fails at
//     once with an error matching ErrSignIn, without asking the issuer again,
//     until the login store changes (the user ran `evofs login`), which is
//     checked on every call. Client credentials are tried again after
//     signInRetry, since a secret may be fixed on the issuer's side.
//   - A rotated refresh token is written back to the store.
//   - Tokens never reach a log or an error string.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Defaults for the real service (contract §8).
const (
	DefaultIssuer       = "https://ims.bentley.com"
	DefaultDiscoveryURL = "https://discover.api.seequent.com"
	// DefaultRedirectURL is the Seequent SDK's loopback redirect; register it
	// with the native app (port 0 picks a free port where the issuer allows).
	DefaultRedirectURL = "http://localhost:3000/signin-callback"
)

// DefaultScopes are the scopes evofs asks for (offline_access is added for
// user sign-in).
var DefaultScopes = []string{"evo.discovery", "evo.workspace", "evo.file"}

// ErrSignIn: the issuer refused the sign-in for good (expired or revoked
// refresh token, unknown client, wrong secret). Only signing in again helps.
var ErrSignIn = errors.New("sign-in refused")

// SignInError is a refusal by the issuer; it matches ErrSignIn.
type SignInError struct {
	Op     string // e.g. "refreshing the sign-in"
	Reason string // one sentence fragment, e.g. "the saved sign-in has expired or was revoked"
}

func (e *SignInError) Error() string { return e.Op + ": sign-in refused: " + e.Reason }

// Is matches ErrSignIn.
func (e *SignInError) Is(target error) bool { return target == ErrSignIn }

// OAuthConfig names the issuer and the app.
type OAuthConfig struct {
	Issuer       string // default DefaultIssuer
	ClientID     string
	ClientSecret string   // service apps (client credentials) only
	Scopes       []string // default DefaultScopes
	RedirectURL  string   // Login only; default DefaultRedirectURL
	HTTPClient   *http.Client
	Logger       *logrus.Entry
}

func (c OAuthConfig) withDefaults() OAuthConfig {
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	c.Issuer = strings.TrimRight(c.Issuer, "/")
	if len(c.Scopes) == 0 {
		c.Scopes = DefaultScopes
	}
	if c.RedirectURL == "" {
		c.RedirectURL = DefaultRedirectURL
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: NewTransport(1), Timeout: time.Minute}
	}
	if c.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.Logger = logrus.NewEntry(l)
	}
	return c
}

func (c OAuthConfig) endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{AuthURL: c.Issuer + "/connect/authorize", TokenURL: c.Issuer + "/connect/token",
		AuthStyle: oauth2.AuthStyleInParams}
}

func (c OAuthConfig) userConfig(redirect string) *oauth2.Config {
	scopes := append([]string(nil), c.Scopes...)
	if !containsString(scopes, "offline_access") {
		scopes = append(scopes, "offline_access")
	}
	return &oauth2.Config{ClientID: c.ClientID, Endpoint: c.endpoint(), RedirectURL: redirect, Scopes: scopes}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c OAuthConfig) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.HTTPClient)
}

// Login runs the authorization-code flow with PKCE: it listens on the
// loopback redirect, calls show with the URL the user must open (print it,
// launch a browser), waits for the redirect (checking state) and exchanges
// the code. The token has a refresh token when the issuer grants
// offline_access. ctx bounds the wait.
func Login(ctx context.Context, c OAuthConfig, show func(authURL string)) (*oauth2.Token, error) {
	c = c.withDefaults()
	if c.ClientID == "" {
		return nil, errors.New("a client id is needed to sign in")
	}
	ru, err := url.Parse(c.RedirectURL)
	if err != nil || ru.Scheme != "http" || ru.Hostname() == "" {
		return nil, fmt.Errorf("redirect URL %q must be a loopback http URL", c.RedirectURL)
	}
	host := ru.Hostname()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, ru.Port()))
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the sign-in redirect on %s: %w", ru.Host, err)
	}
	defer ln.Close()
	if ru.Port() == "" || ru.Port() == "0" {
		ru.Host = net.JoinHostPort(host, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	}
	if ru.Path == "" {
		ru.Path = "/"
	}
	redirect := ru.String()
	cfg := c.userConfig(redirect)
	verifier := oauth2.GenerateVerifier()
	state := randomString(16)

	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != ru.Path {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the sign-in answer did not match this request (state mismatch); try again")
		case q.Get("error") != "":
			res.err = &SignInError{Op: "signing in", Reason: describeOAuthError(q.Get("error"), q.Get("error_description"))}
		case q.Get("code") == "":
			res.err = errors.New("the sign-in answer carried no code")
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<html><body><h3>evofs: sign-in failed</h3><p>%s</p></body></html>", htmlEscape(res.err.Error()))
		} else {
			fmt.Fprint(w, "<html><body><h3>evofs: signed in</h3><p>You can close this tab.</p></body></html>")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer func() {
		// Let the browser get its page before the listener goes.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()

	show(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	var res result
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("no sign-in answer arrived: %w", ctx.Err())
	case res = <-done:
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := cfg.Exchange(c.ctx(ctx), res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, oauthFailure("exchanging the sign-in code", err)
	}
	return tok, nil
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// describeOAuthError turns an OAuth error code into a sentence.
func describeOAuthError(code, desc string) string {
	var s string
	switch code {
	case "invalid_grant":
		s = "the saved sign-in has expired or was revoked"
	case "invalid_client":
		s = "the client id (or client secret) is not known to the sign-in service"
	case "unauthorized_client":
		s = "this app is not allowed to sign in this way (check the app type and client id)"
	case "access_denied":
		s = "access was denied (consent not given)"
	case "invalid_scope":
		s = "the requested scopes were refused"
	default:
		s = "the sign-in service answered " + code
	}
	if desc != "" {
		s += " (" + desc + ")"
	}
	return s
}

// permanentOAuth reports whether the issuer refused for good.
func permanentOAuth(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return false
	}
	switch re.ErrorCode {
	case "invalid_grant", "invalid_client", "unauthorized_client", "access_denied", "invalid_scope", "unsupported_grant_type":
		return true
	}
	st := 0
	if re.Response != nil {
		st = re.Response.StatusCode
	}
	return st == 400 || st == 401 || st == 403
}

// oauthFailure converts an x/oauth2 error into one without response bodies:
// ErrSignIn for refusals, a plain (retryable) error otherwise.
func oauthFailure(what string, err error) error {
	if err == nil {
		return nil
	}
	if isContextError(err) {
		return err
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if permanentOAuth(err) {
			return &SignInError{Op: what, Reason: describeOAuthError(re.ErrorCode, re.ErrorDescription)}
		}
		st := "no answer"
		if re.Response != nil {
			st = re.Response.Status
		}
		return fmt.Errorf("%s: the sign-in service answered %s", what, st)
	}
	return fmt.Errorf("%s: the sign-in service is unreachable: %s", what, redactText(err.Error()))
}

// ---- the login store ----

// LoginRecord is what `evofs login` keeps: enough to refresh without asking
// the user again.
type LoginRecord struct {
	Issuer       string    `json:"issuer"`
	DiscoveryURL string    `json:"discovery_url,omitempty"`
	ClientID     string    `json:"client_id"`
	Scopes       []string  `json:"scopes,omitempty"`
	RefreshToken string    `json:"refresh_token"`
	SavedAt      time.Time `json:"saved_at"`
}

// DefaultLoginPath is the login store under the user's config dir
// ($XDG_CONFIG_HOME/evofs/login.json).
func DefaultLoginPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "evofs", "login.json"), nil
}

// SaveLogin writes the record atomically with mode 0600, creating its
// directory with mode 0700.
func SaveLogin(path string, rec *LoginRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return WriteSecretFile(path, append(b, '\n'))
}

// WriteSecretFile writes data to path atomically (temp file, fsync, rename)
// with mode 0600; missing parent directories are created with mode 0700.
func WriteSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadLogin reads a login record (os.ErrNotExist when there is none). A
// store readable by others is tightened to 0600.
func LoadLogin(path string) (*LoginRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		os.Chmod(path, 0o600)
	}
	var rec LoginRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("login store %s is damaged (run evofs login again): %v", path, err)
	}
	if rec.RefreshToken == "" || rec.ClientID == "" {
		return nil, fmt.Errorf("login store %s holds no sign-in (run evofs login again)", path)
	}
	return &rec, nil
}

// ---- OAuthSource ----

// signInRetry is how long a refused client-credentials sign-in waits before
// asking the issuer again.
const signInRetry = 30 * time.Second

// OAuthSource is a TokenSource backed by an OAuth issuer: refresh tokens
// (NewRefreshSource) or client credentials (NewClientCredentialsSource).
type OAuthSource struct {
	cfg       OAuthConfig
	log       *logrus.Entry
	storePath string // refresh flavour; "" for client credentials
	cc        *clientcredentials.Config
	// shared: a 401 within this long after a refresh reuses that token
	// (the requests refused at once share one refresh).
	shared time.Duration

	mu        sync.Mutex
	rec       *LoginRecord // current login (refresh flavour)
	storeMod  time.Time    // mtime of the store when rec was read
	tok       *oauth2.Token
	got       time.Time // when tok arrived
	failed    error     // permanent refusal; nil when healthy
	failedAt  time.Time
	refreshes int
}

// NewRefreshSource refreshes with the record in the login store at path
// (issuer and client id from the record unless cfg sets them).
func NewRefreshSource(cfg OAuthConfig, path string) (*OAuthSource, error) {
	rec, err := LoadLogin(path)
	if err != nil {
		return nil, err
	}
	if cfg.Issuer == "" {
		cfg.Issuer = rec.Issuer
	}
	if cfg.ClientID == "" {
		cfg.ClientID = rec.ClientID
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = rec.Scopes
	}
	cfg = cfg.withDefaults()
	s := &OAuthSource{cfg: cfg, log: cfg.Logger.WithField("component", "signin"), storePath: path, rec: rec, shared: time.Second}
	if st, err := os.Stat(path); err == nil {
		s.storeMod = st.ModTime()
	}
	return s, nil
}

// NewClientCredentialsSource signs a service app in with its client id and secret.
func NewClientCredentialsSource(cfg OAuthConfig) (*OAuthSource, error) {
	cfg = cfg.withDefaults()
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("client credentials need a client id and a client secret")
	}
	return &OAuthSource{cfg: cfg, log: cfg.Logger.WithField("component", "signin"), shared: time.Second,
		cc: &clientcredentials.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			TokenURL: cfg.endpoint().TokenURL, Scopes: cfg.Scopes, AuthStyle: oauth2.AuthStyleInParams}}, nil
}

// Refreshes returns how many tokens were fetched from the issuer.
func (s *OAuthSource) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// fresh reports whether tok can still be handed out without refreshing.
func (s *OAuthSource) freshLocked(now time.Time) bool {
	if s.tok == nil || s.tok.AccessToken == "" {
		return false
	}
	if s.tok.Expiry.IsZero() {
		return true
	}
	margin := min(s.tok.Expiry.Sub(s.got)/4, 2*time.Minute)
	return s.tok.Expiry.Sub(now) > margin
}

// Token implements TokenSource.
func (s *OAuthSource) Token(ctx context.Context, refresh bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.freshLocked(now) && (!refresh || now.Sub(s.got) < s.shared) {
		return s.tok.AccessToken, nil
	}
	if s.failed != nil {
		if !s.reloadLocked() && !(s.cc != nil && now.Sub(s.failedAt) >= signInRetry) {
			return "", s.failed
		}
	}
	tok, err := s.fetchLocked(ctx)
	if err == nil {
		if s.failed != nil {
			s.log.Info("signed in again: publishing resumes")
		}
		s.failed = nil
		s.tok, s.got = tok, time.Now()
		s.refreshes++
		return tok.AccessToken, nil
	}
	if errors.Is(err, ErrSignIn) {
		s.failed, s.failedAt, s.tok = err, time.Now(), nil
		how := "run 'evofs login' again"
		if s.cc != nil {
			how = "check the client id and secret"
		}
		s.log.WithError(err).Errorf("sign-in is no longer valid: %s; cached files stay readable and changes stay queued until then", how)
		return "", err
	}
	if isContextError(err) {
		return "", err
	}
	// Transient: keep using the current token while it lasts.
	if s.tok != nil && (s.tok.Expiry.IsZero() || now.Before(s.tok.Expiry)) && !refresh {
		s.log.WithError(err).Warn("token refresh failed; using the current token while it lasts")
		return s.tok.AccessToken, nil
	}
	s.log.WithError(err).Warn("token refresh failed; will try again")
	return "", err
}

// reloadLocked re-reads the login store if it changed since it was read and
// reports whether it did.
func (s *OAuthSource) reloadLocked() bool {
	if s.storePath == "" {
		return false
	}
	st, err := os.Stat(s.storePath)
	if err != nil || st.ModTime().Equal(s.storeMod) {
		return false
	}
	rec, err := LoadLogin(s.storePath)
	if err != nil {
		return false
	}
	changed := rec.RefreshToken != s.rec.RefreshToken
	s.rec, s.storeMod = rec, st.ModTime()
	return changed
}

// fetchLocked gets a new token, retrying transient failures up to 3 times
// (the SDK's rule for 502/504). A refused refresh is tried once more with
// the store's token if another process rotated it meanwhile.
func (s *OAuthSource) fetchLocked(ctx context.Context) (*oauth2.Token, error) {
	var tok *oauth2.Token
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		tok, err = s.fetchOnceLocked(ctx)
		if err == nil || errors.Is(err, ErrSignIn) || isContextError(err) {
			break
		}
		if !sleep(ctx, time.Duration(attempt)*200*time.Millisecond) {
			break
		}
	}
	if errors.Is(err, ErrSignIn) && s.cc == nil && s.reloadLocked() {
		tok, err = s.fetchOnceLocked(ctx)
	}
	return tok, err
}

func (s *OAuthSource) fetchOnceLocked(ctx context.Context) (*oauth2.Token, error) {
	ctx = s.cfg.ctx(ctx)
	if s.cc != nil {
		tok, err := s.cc.Token(ctx)
		return tok, oauthFailure("signing in with client credentials", err)
	}
	old := s.rec.RefreshToken
	cfg := s.cfg.userConfig("")
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
	if err != nil {
		return nil, oauthFailure("refreshing the sign-in", err)
	}
	if tok.RefreshToken != "" && tok.RefreshToken != old {
		rec := *s.rec
		rec.RefreshToken, rec.SavedAt = tok.RefreshToken, time.Now().UTC()
		if err := SaveLogin(s.storePath, &rec); err != nil {
			s.log.WithError(err).Error("could not save the renewed sign-in; the next mount may need 'evofs login'")
		} else if st, err := os.Stat(s.storePath); err == nil {
			s.storeMod = st.ModTime()
		}
		s.rec = &rec
	}
	return tok, nil
}

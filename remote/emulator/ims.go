package emulator

// IMS: an in-process stand-in for Bentley IMS (the OAuth 2 issuer) and for
// Evo Discovery, served by one http.Handler on its own listener (contract §8):
//
//	GET  /connect/authorize                 authorization code + PKCE (S256), consent given at once
//	POST /connect/token                     authorization_code, refresh_token, client_credentials
//	GET  /evo/identity/v2/discovery         organisations, hubs, service access
//
// Tokens are opaque random strings. A hub Server accepts them when it is built
// with Options.Verify = ims.Verify: an access token stands for its client's
// Grant until it expires (TokenTTL, settable at run time), and an expired or
// revoked token is refused with 401 invalid-token, as the real service does.
//
// # Locking
//
// IMS.mu guards every map and the settings; nothing is held across I/O.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
)

// IMSClient is an app registered with the issuer.
type IMSClient struct {
	// Secret makes it a service app (client credentials); "" is a native app
	// that signs users in with the authorization code flow and PKCE.
	Secret string
	// Grant is who its tokens stand for on the hubs (user and role).
	Grant Grant
}

// DiscoveryOrg is one organisation Discovery reports, with the hub that
// serves it.
type DiscoveryOrg struct {
	ID   uuid.UUID
	Name string
	// HubURL, HubCode, HubName describe the hub; HubCode defaults to a code
	// derived from the URL, HubName to the code.
	HubURL, HubCode, HubName string
	// Services offered to this organisation on its hub; default file and workspace.
	Services []string
}

// IMSOptions configures an IMS.
type IMSOptions struct {
	Clients  map[string]IMSClient
	TokenTTL time.Duration // access token lifetime, default 1 h
	// RotateRefreshTokens makes every refresh return a new refresh token and
	// retire the old one (one-time-use refresh tokens).
	RotateRefreshTokens bool
	Orgs                []DiscoveryOrg
	Now                 func() time.Time
	Logger              *logrus.Entry // request log (never tokens); nil = silent
}

// IMS is the issuer and Discovery service. It implements http.Handler.
type IMS struct {
	log *logrus.Entry

	mu       sync.Mutex
	clients  map[string]IMSClient
	ttl      time.Duration
	rotate   bool
	orgs     []DiscoveryOrg
	now      func() time.Time
	codes    map[string]authCode
	access   map[string]accessToken
	refresh  map[string]refreshToken
	counts   map[string]int // grant type → successful token answers
	failNext int            // next token requests answered 503
}

type authCode struct {
	client, redirect, challenge, scope string
	expires                            time.Time
}

type accessToken struct {
	client  string
	expires time.Time
}

type refreshToken struct {
	client, scope string
}

// NewIMS builds an issuer.
func NewIMS(o IMSOptions) *IMS {
	i := &IMS{log: o.Logger, clients: map[string]IMSClient{}, ttl: o.TokenTTL, rotate: o.RotateRefreshTokens,
		orgs: o.Orgs, now: o.Now, codes: map[string]authCode{}, access: map[string]accessToken{},
		refresh: map[string]refreshToken{}, counts: map[string]int{}}
	for k, v := range o.Clients {
		i.clients[k] = v
	}
	if i.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		i.log = logrus.NewEntry(l)
	}
	if i.ttl <= 0 {
		i.ttl = time.Hour
	}
	if i.now == nil {
		i.now = time.Now
	}
	return i
}

// SetTokenTTL sets the lifetime of access tokens issued from now on.
func (i *IMS) SetTokenTTL(d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if d <= 0 {
		d = time.Hour
	}
	i.ttl = d
}

// SetClock replaces the clock (nil = time.Now).
func (i *IMS) SetClock(now func() time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	i.now = now
}

// AddClient registers (or replaces) an app.
func (i *IMS) AddClient(id string, c IMSClient) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.clients[id] = c
}

// SetOrgs replaces what Discovery reports.
func (i *IMS) SetOrgs(orgs []DiscoveryOrg) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.orgs = append([]DiscoveryOrg(nil), orgs...)
}

// Revoke withdraws the user's consent for a client: its refresh tokens and
// access tokens stop working at once.
func (i *IMS) Revoke(clientID string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for k, v := range i.refresh {
		if v.client == clientID {
			delete(i.refresh, k)
		}
	}
	for k, v := range i.access {
		if v.client == clientID {
			delete(i.access, k)
		}
	}
}

// ExpireAccessTokens makes every access token issued so far invalid (as if
// they had all expired); refresh tokens keep working.
func (i *IMS) ExpireAccessTokens() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.access = map[string]accessToken{}
}

// FailTokenRequests makes the next n token requests answer 503.
func (i *IMS) FailTokenRequests(n int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.failNext = n
}

// Issued returns how many token answers were given for a grant type
// ("authorization_code", "refresh_token", "client_credentials"; "" = all).
func (i *IMS) Issued(grantType string) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	if grantType == "" {
		n := 0
		for _, c := range i.counts {
			n += c
		}
		return n
	}
	return i.counts[grantType]
}

// Verify reports whether tok is a live access token and what it stands for.
// Use it as Options.Verify of the hubs that trust this issuer.
func (i *IMS) Verify(tok string) (Grant, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	a, ok := i.access[tok]
	if !ok {
		return Grant{}, false
	}
	if !i.now().Before(a.expires) {
		delete(i.access, tok)
		return Grant{}, false
	}
	c, ok := i.clients[a.client]
	if !ok {
		return Grant{}, false
	}
	return c.Grant, true
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// ServeHTTP routes the issuer and Discovery endpoints.
func (i *IMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		// The path only: queries carry codes, bodies carry tokens.
		i.log.WithFields(logrus.Fields{"method": r.Method, "path": r.URL.EscapedPath(), "status": sw.status}).Info("ims request")
	}()
	switch r.URL.Path {
	case "/connect/authorize":
		i.authorize(sw, r)
	case "/connect/token":
		if r.Method != http.MethodPost {
			oauthError(sw, 405, "invalid_request", "use POST")
			return
		}
		i.token(sw, r)
	case "/evo/identity/v2/discovery":
		i.discovery(sw, r)
	default:
		http.NotFound(sw, r)
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// isLoopback reports whether u is an http URL on a loopback address (the
// only redirect URIs native apps may use here).
func isLoopback(u *url.URL) bool {
	if u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// authorize gives consent at once (the emulated user always agrees) and
// redirects back with a code, or with error=… for a request it refuses
// after the client and redirect URI are known to be good. An unknown client
// or a bad redirect URI gets an error page and no redirect (RFC 6749 §4.1.2.1).
func (i *IMS) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	clientID := q.Get("client_id")
	i.mu.Lock()
	c, known := i.clients[clientID]
	i.mu.Unlock()
	if !known {
		http.Error(w, "unknown client_id: this app is not registered", http.StatusBadRequest)
		return
	}
	ru, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !isLoopback(ru) {
		http.Error(w, "redirect_uri must be a loopback http URL", http.StatusBadRequest)
		return
	}
	back := func(v url.Values) {
		v.Set("state", q.Get("state"))
		u := *ru
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	switch {
	case c.Secret != "":
		back(url.Values{"error": {"unauthorized_client"}, "error_description": {"service apps cannot sign users in"}})
		return
	case q.Get("response_type") != "code":
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		back(url.Values{"error": {"invalid_request"}, "error_description": {"PKCE with S256 is required"}})
		return
	case !hasScope(q.Get("scope"), "evo.discovery"):
		back(url.Values{"error": {"invalid_scope"}, "error_description": {"evo.discovery is required"}})
		return
	}
	code := randomToken("code_")
	i.mu.Lock()
	i.codes[code] = authCode{client: clientID, redirect: ru.String(), challenge: q.Get("code_challenge"),
		scope: q.Get("scope"), expires: i.now().Add(5 * time.Minute)}
	i.mu.Unlock()
	back(url.Values{"code": {code}})
}

func hasScope(scopes, want string) bool {
	for _, s := range strings.Fields(scopes) {
		if s == want {
			return true
		}
	}
	return false
}

// clientAuth returns the client id and secret from Basic auth or the form.
func clientAuth(r *http.Request) (id, secret string) {
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
		return id, secret
	}
	return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
}

func (i *IMS) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "malformed form")
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.failNext > 0 {
		i.failNext--
		oauthError(w, 503, "temporarily_unavailable", "injected fault")
		return
	}
	id, secret := clientAuth(r)
	c, known := i.clients[id]
	if !known {
		oauthError(w, 401, "invalid_client", "unknown client")
		return
	}
	f := r.PostForm
	gt := f.Get("grant_type")
	var scope string
	switch gt {
	case "authorization_code":
		code, ok := i.codes[f.Get("code")]
		delete(i.codes, f.Get("code")) // one use, good or bad
		if !ok || code.client != id || !i.now().Before(code.expires) {
			oauthError(w, 400, "invalid_grant", "unknown, used or expired code")
			return
		}
		if f.Get("redirect_uri") != code.redirect {
			oauthError(w, 400, "invalid_grant", "redirect_uri does not match")
			return
		}
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(code.challenge)) != 1 {
			oauthError(w, 400, "invalid_grant", "code_verifier does not match the code_challenge")
			return
		}
		scope = code.scope
	case "refresh_token":
		rt, ok := i.refresh[f.Get("refresh_token")]
		if !ok || rt.client != id {
			oauthError(w, 400, "invalid_grant", "unknown or revoked refresh token")
			return
		}
		if i.rotate {
			delete(i.refresh, f.Get("refresh_token"))
		}
		scope = rt.scope
	case "client_credentials":
		if c.Secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
			oauthError(w, 401, "invalid_client", "client authentication failed")
			return
		}
		scope = f.Get("scope")
	default:
		oauthError(w, 400, "unsupported_grant_type", "grant_type "+strconv.Quote(gt)+" is not supported")
		return
	}
	at := randomToken("ims_at_")
	i.access[at] = accessToken{client: id, expires: i.now().Add(i.ttl)}
	body := map[string]any{"token_type": "Bearer", "access_token": at,
		"expires_in": int(max(1, (i.ttl+time.Second-1)/time.Second)), "scope": scope}
	switch {
	case gt == "refresh_token" && !i.rotate:
		body["refresh_token"] = f.Get("refresh_token")
	case gt != "client_credentials" && hasScope(scope, "offline_access"):
		rt := randomToken("ims_rt_")
		i.refresh[rt] = refreshToken{client: id, scope: scope}
		body["refresh_token"] = rt
	}
	i.counts[gt]++
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, 200, body)
}

// discovery answers the Discovery document for a valid bearer token.
func (i *IMS) discovery(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		writeProblem(w, 401, "/auth/missing-token", "", "A bearer token is required.")
		return
	}
	if _, ok := i.Verify(strings.TrimSpace(tok)); !ok {
		writeProblem(w, 401, "/auth/invalid-token", "", "The bearer token is invalid or expired.")
		return
	}
	want := r.URL.Query()["service"]
	type org struct {
		ID          uuid.UUID `json:"id"`
		DisplayName string    `json:"display_name"`
	}
	type hub struct {
		URL         string `json:"url"`
		Code        string `json:"code"`
		DisplayName string `json:"display_name"`
	}
	type access struct {
		HubCode  string    `json:"hub_code"`
		OrgID    uuid.UUID `json:"org_id"`
		Services []string  `json:"services"`
	}
	var d struct {
		Organizations []org    `json:"organizations"`
		Hubs          []hub    `json:"hubs"`
		ServiceAccess []access `json:"service_access"`
		Services      []string `json:"services"`
	}
	d.Organizations, d.Hubs, d.ServiceAccess, d.Services = []org{}, []hub{}, []access{}, []string{}
	seenHub, seenSvc := map[string]bool{}, map[string]bool{}
	i.mu.Lock()
	orgs := append([]DiscoveryOrg(nil), i.orgs...)
	i.mu.Unlock()
	for _, o := range orgs {
		code := o.HubCode
		if code == "" {
			code = hubCodeOf(o.HubURL)
		}
		name := o.HubName
		if name == "" {
			name = code
		}
		svcs := o.Services
		if len(svcs) == 0 {
			svcs = []string{"file", "workspace"}
		}
		var granted []string
		for _, s := range svcs {
			if len(want) == 0 || contains(want, s) {
				granted = append(granted, s)
			}
		}
		d.Organizations = append(d.Organizations, org{ID: o.ID, DisplayName: o.Name})
		if !seenHub[code] {
			seenHub[code] = true
			d.Hubs = append(d.Hubs, hub{URL: o.HubURL, Code: code, DisplayName: name})
		}
		if len(granted) > 0 {
			d.ServiceAccess = append(d.ServiceAccess, access{HubCode: code, OrgID: o.ID, Services: granted})
		}
		for _, s := range granted {
			if !seenSvc[s] {
				seenSvc[s] = true
				d.Services = append(d.Services, s)
			}
		}
	}
	writeJSON(w, 200, map[string]any{"discovery": d})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// hubCodeOf derives a short code from a hub URL (its host, dots and colons
// as dashes).
func hubCodeOf(hubURL string) string {
	u, err := url.Parse(hubURL)
	if err != nil || u.Host == "" {
		return "hub"
	}
	return strings.NewReplacer(".", "-", ":", "-").Replace(u.Host)
}

// TestIMS is an IMS listening on a loopback port.
type TestIMS struct {
	*IMS
	URL string // issuer and Discovery base URL, http://127.0.0.1:port
	hs  *http.Server
}

// NewTestIMS starts an IMS for o on 127.0.0.1:0; tb.Cleanup stops it.
func NewTestIMS(tb testing.TB, o IMSOptions) *TestIMS {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("ims: listen: %v", err)
	}
	t := &TestIMS{IMS: NewIMS(o), URL: "http://" + ln.Addr().String()}
	t.hs = &http.Server{Handler: t.IMS}
	go t.hs.Serve(ln)
	tb.Cleanup(func() { t.hs.Close() })
	return t
}

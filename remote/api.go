package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
)

// New validates cfg, applies defaults and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.Tokens == nil {
		return nil, errors.New("remote: Config.Tokens is required")
	}
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("remote: BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("remote: BaseURL %q must not carry a query or fragment", cfg.BaseURL)
	}
	cfg.BaseURL = base.String()
	if cfg.Org == uuid.Nil || cfg.Workspace == uuid.Nil {
		return nil, errors.New("remote: Config.Org and Config.Workspace are required")
	}
	cfg.Retry = cfg.Retry.withDefaults()
	if cfg.SinglePutThreshold <= 0 {
		cfg.SinglePutThreshold = 16 << 20
	}
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = 8 << 20
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = 2 * time.Minute
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 100 * time.Millisecond
	}
	if cfg.PollMax <= 0 {
		cfg.PollMax = 2 * time.Second
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = cfg.PollMin
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: NewTransport(cfg.Concurrency)}
	}
	if cfg.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.Logger = logrus.NewEntry(l)
	}
	nr := *cfg.HTTPClient
	nr.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &Client{
		cfg:        cfg,
		http:       cfg.HTTPClient,
		noRedirect: &nr,
		log:        cfg.Logger.WithField("component", "remote"),
		upLimit:    newLimiter(cfg.UploadLimit),
		downLimit:  newLimiter(cfg.DownloadLimit),
	}
	return c, nil
}

// Config returns the effective configuration (defaults applied).
func (c *Client) Config() Config { return c.cfg }

// NewTransport is the http.Transport the client uses by default: keep-alive
// pools sized for concurrency parallel transfers (twice over, so a renewal
// or a poll never waits for a connection), large socket buffers, HTTP/1.1
// only (blob throughput is better on several TCP streams than multiplexed on
// one), no transparent gzip (blobs are sent as they are).
func NewTransport(concurrency int) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          max(100, concurrency*4),
		MaxIdleConnsPerHost:   max(16, concurrency*2),
		IdleConnTimeout:       90 * time.Second,
		TLSClientConfig:       tlsConfig(),
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ReadBufferSize:        256 << 10,
		WriteBufferSize:       256 << 10,
	}
}

// apiCall is one File API request.
type apiCall struct {
	op     string
	method string
	// path is the escaped path under the hub URL, e.g.
	// "/file/v2/orgs/…/workspaces/…/files/path/a%20b".
	path       string
	query      url.Values
	noRedirect bool
	// ok lists the statuses that are answers rather than errors (default 200).
	ok []int
}

type apiAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (c *Client) filesPath() string {
	return "/file/v2/orgs/" + c.cfg.Org.String() + "/workspaces/" + c.cfg.Workspace.String() + "/files"
}

// requestURL builds the absolute URL. Path and RawPath are both set so that
// net/http sends the escaped path exactly as built (no re-encoding of the
// percent escapes of a segment).
func (c *Client) requestURL(escapedPath string, q url.Values) (*url.URL, error) {
	u, err := url.Parse(c.cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	rawPath := strings.TrimRight(u.EscapedPath(), "/") + escapedPath
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPath, err)
	}
	u.Path, u.RawPath = p, rawPath
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u, nil
}

// do sends an API call with retries and the 401 refresh-once rule and
// returns the answer whose status is in call.ok, or an error (*APIError for
// HTTP answers, *transportError or a context error otherwise).
func (c *Client) do(ctx context.Context, call apiCall) (*apiAnswer, error) {
	u, err := c.requestURL(call.path, call.query)
	if err != nil {
		return nil, err
	}
	hc := c.http
	if call.noRedirect {
		hc = c.noRedirect
	}
	ok := call.ok
	if len(ok) == 0 {
		ok = []int{http.StatusOK}
	}
	refreshed := false
	var ans *apiAnswer
	err = c.retry(ctx, call.op, func(int) error {
		tok, err := c.cfg.Tokens.Token(ctx, false)
		if err != nil {
			return fmt.Errorf("%s: getting token: %w", call.op, err)
		}
		for {
			a, err := c.send(ctx, hc, call, u, tok)
			if err != nil {
				return err
			}
			if a.status == http.StatusUnauthorized && !refreshed {
				// The SDK's rule: refresh the token once and replay once.
				refreshed = true
				if tok, err = c.cfg.Tokens.Token(ctx, true); err != nil {
					return fmt.Errorf("%s: refreshing token: %w", call.op, err)
				}
				c.log.WithField("op", call.op).Debug("401: token refreshed, replaying")
				continue
			}
			for _, s := range ok {
				if a.status == s {
					ans = a
					return nil
				}
			}
			return problem(call.op, a)
		}
	})
	return ans, err
}

func (c *Client) send(ctx context.Context, hc *http.Client, call apiCall, u *url.URL, tok string) (*apiAnswer, error) {
	req, err := http.NewRequestWithContext(withOp(ctx, call.op), call.method, "", nil)
	if err != nil {
		return nil, err
	}
	uc := *u
	req.URL = &uc
	req.Host = uc.Host
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if call.method == http.MethodPut || call.method == http.MethodDelete {
		// An explicit, empty identity body makes net/http send
		// "Content-Length: 0" for DELETE too (it always does for PUT).
		req.Body, req.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
		req.ContentLength = 0
		req.TransferEncoding = []string{"identity"}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, wrapTransport(ctx, call.op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, wrapTransport(ctx, call.op, err)
	}
	return &apiAnswer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// problem decodes an error answer into an *APIError (problem JSON when the
// body is JSON; the status alone otherwise).
func problem(op string, a *apiAnswer) *APIError {
	e := &APIError{Op: op, Status: a.status, RetryAfter: a.header.Get("Retry-After")}
	ct, _, _ := mime.ParseMediaType(a.header.Get("Content-Type"))
	if ct == "application/json" || ct == "application/problem+json" || (ct == "" && bytes.HasPrefix(bytes.TrimSpace(a.body), []byte("{"))) {
		var p struct {
			Type           string          `json:"type"`
			Title          string          `json:"title"`
			Status         int             `json:"status"`
			Detail         json.RawMessage `json:"detail"`
			YourRole       string          `json:"your_role"`
			PermittedRoles []string        `json:"permitted_roles"`
		}
		if json.Unmarshal(a.body, &p) == nil {
			e.Type, e.Title, e.YourRole, e.PermittedRoles = p.Type, p.Title, p.YourRole, p.PermittedRoles
			var s string
			if len(p.Detail) > 0 && json.Unmarshal(p.Detail, &s) == nil {
				e.Detail = s
			} else if len(p.Detail) > 0 && string(p.Detail) != "null" {
				e.Detail = string(p.Detail)
			}
		}
	}
	if e.Title == "" {
		e.Title = http.StatusText(a.status)
	}
	return e
}

func decodeJSON(op string, body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: %w: %v", op, errBadResponse, err)
	}
	return nil
}

func boolQuery(q url.Values, key string, v bool) {
	if v {
		q.Set(key, "true")
	}
}

func timeFilters(q url.Values, key string, fs []TimeFilter) {
	for _, f := range fs {
		v := f.At.UTC().Format("2006-01-02T15:04:05.999999Z")
		if f.Op != "" {
			v = f.Op + ":" + v
		}
		q.Add(key, v)
	}
}

// List fetches one page of the listing.
func (c *Client) List(ctx context.Context, o ListOptions) (*ListPage, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Offset > 0 {
		q.Set("offset", strconv.Itoa(o.Offset))
	}
	boolQuery(q, "deleted", o.Deleted)
	if o.FileName != "" {
		q.Set("file_name", o.FileName)
	}
	for _, a := range o.Author {
		q.Add("author", a.String())
	}
	for _, a := range o.ModifiedBy {
		q.Add("modified_by", a.String())
	}
	for _, a := range o.DeletedBy {
		q.Add("deleted_by", a.String())
	}
	timeFilters(q, "created_at", o.CreatedAt)
	timeFilters(q, "modified_at", o.ModifiedAt)
	timeFilters(q, "deleted_at", o.DeletedAt)
	if o.OrderBy != "" {
		q.Set("order_by", o.OrderBy)
	}
	a, err := c.do(ctx, apiCall{op: "list files", method: http.MethodGet, path: c.filesPath(), query: q})
	if err != nil {
		return nil, err
	}
	var p ListPage
	if err := decodeJSON("list files", a.body, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ListAll pages through the whole listing (offset + count < total, never the
// links), de-duplicating rows by file_id (later pages win).
func (c *Client) ListAll(ctx context.Context, o ListOptions) ([]FileMeta, error) {
	var out []FileMeta
	seen := map[uuid.UUID]int{}
	for {
		p, err := c.List(ctx, o)
		if err != nil {
			return nil, err
		}
		for _, f := range p.Files {
			if i, ok := seen[f.FileID]; ok {
				out[i] = f
				continue
			}
			seen[f.FileID] = len(out)
			out = append(out, f)
		}
		if p.Count <= 0 || len(p.Files) == 0 {
			break
		}
		o.Offset += p.Count
		if o.Offset >= p.Total {
			break
		}
	}
	return out, nil
}

func getQuery(o GetOptions, byID bool) url.Values {
	q := url.Values{}
	if o.VersionID != "" {
		q.Set("version_id", string(o.VersionID))
	}
	boolQuery(q, "include_versions", o.IncludeVersions)
	if byID {
		boolQuery(q, "deleted", o.Deleted)
	}
	return q
}

func (c *Client) byPath(p string) (string, error) {
	if err := ValidatePath(p); err != nil {
		return "", err
	}
	return c.filesPath() + "/path/" + EscapePath(p), nil
}

func (c *Client) byID(id uuid.UUID) string { return c.filesPath() + "/" + id.String() }

// GetByPath returns the metadata and a download URL of the live file at path.
func (c *Client) GetByPath(ctx context.Context, path string, o GetOptions) (*FileMeta, error) {
	ep, err := c.byPath(path)
	if err != nil {
		return nil, err
	}
	return c.getMeta(ctx, apiCall{op: "get by path", method: http.MethodGet, path: ep, query: getQuery(o, false)})
}

// GetByID returns the metadata and a download URL of a file.
func (c *Client) GetByID(ctx context.Context, id uuid.UUID, o GetOptions) (*FileMeta, error) {
	return c.getMeta(ctx, apiCall{op: "get by id", method: http.MethodGet, path: c.byID(id), query: getQuery(o, true)})
}

func (c *Client) getMeta(ctx context.Context, call apiCall) (*FileMeta, error) {
	a, err := c.do(ctx, call)
	if err != nil {
		return nil, err
	}
	var m FileMeta
	if err := decodeJSON(call.op, a.body, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func resumeQuery(v VersionID) url.Values {
	if v == "" {
		return nil
	}
	return url.Values{"version_id": {string(v)}}
}

// UpsertByPath registers a new version of the file at path (creating it if
// needed). With resume set it asks for a fresh URL for that uncommitted version.
func (c *Client) UpsertByPath(ctx context.Context, path string, resume VersionID) (*UploadTicket, error) {
	ep, err := c.byPath(path)
	if err != nil {
		return nil, err
	}
	return c.register(ctx, apiCall{op: "upsert by path", method: http.MethodPut, path: ep, query: resumeQuery(resume)})
}

// UpdateByID registers a new version of an existing file (or, with resume,
// renews the URL of an uncommitted one).
func (c *Client) UpdateByID(ctx context.Context, id uuid.UUID, resume VersionID) (*UploadTicket, error) {
	return c.register(ctx, apiCall{op: "update by id", method: http.MethodPut, path: c.byID(id), query: resumeQuery(resume)})
}

func (c *Client) register(ctx context.Context, call apiCall) (*UploadTicket, error) {
	a, err := c.do(ctx, call)
	if err != nil {
		return nil, err
	}
	var t UploadTicket
	if err := decodeJSON(call.op, a.body, &t); err != nil {
		return nil, err
	}
	if t.Upload == "" || t.VersionID == "" || t.FileID == uuid.Nil {
		return nil, fmt.Errorf("%s: %w: incomplete upload ticket", call.op, errBadResponse)
	}
	return &t, nil
}

// Register calls UpdateByID when t.FileID is set, else UpsertByPath.
func (c *Client) Register(ctx context.Context, t Target, resume VersionID) (*UploadTicket, error) {
	if t.FileID != uuid.Nil {
		return c.UpdateByID(ctx, t.FileID, resume)
	}
	return c.UpsertByPath(ctx, t.Path, resume)
}

// Restore undeletes a file. It returns nil metadata on 204 (restored in
// place) and the new metadata on 303 (restored elsewhere).
func (c *Client) Restore(ctx context.Context, id uuid.UUID) (*FileMeta, error) {
	a, err := c.do(ctx, apiCall{
		op: "restore", method: http.MethodPut, path: c.byID(id),
		query:      url.Values{"deleted": {"false"}},
		noRedirect: true,
		ok:         []int{http.StatusNoContent, http.StatusSeeOther, http.StatusOK},
	})
	if err != nil {
		return nil, err
	}
	if a.status == http.StatusNoContent {
		return nil, nil
	}
	if len(bytes.TrimSpace(a.body)) > 0 {
		var m FileMeta
		if err := json.Unmarshal(a.body, &m); err == nil && m.FileID != uuid.Nil {
			return &m, nil
		}
	}
	// A 303 without a usable body: the new location is that of the file's
	// own id; fetch its metadata.
	return c.GetByID(ctx, id, GetOptions{})
}

// DeleteByPath soft-deletes the file at path. 404 and 410 count as success.
func (c *Client) DeleteByPath(ctx context.Context, path string) error {
	ep, err := c.byPath(path)
	if err != nil {
		return err
	}
	return c.delete(ctx, "delete by path", ep)
}

// DeleteByID soft-deletes a file. 404 and 410 count as success.
func (c *Client) DeleteByID(ctx context.Context, id uuid.UUID) error {
	return c.delete(ctx, "delete by id", c.byID(id))
}

func (c *Client) delete(ctx context.Context, op, ep string) error {
	_, err := c.do(ctx, apiCall{op: op, method: http.MethodDelete, path: ep,
		ok: []int{http.StatusNoContent, http.StatusOK, http.StatusNotFound, http.StatusGone}})
	return err
}

// Health returns the health check status ("pass", "degraded", "fail").
// A 503 carrying a status word is an answer, not an error.
func (c *Client) Health(ctx context.Context) (string, error) {
	a, err := c.do(ctx, apiCall{op: "health check", method: http.MethodGet, path: "/file/health_check",
		ok: []int{http.StatusOK, http.StatusServiceUnavailable}})
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(a.body))
	if strings.HasPrefix(s, "{") {
		var v struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(a.body, &v); err == nil {
			s = v.Status
		}
	}
	s = strings.Trim(s, `"`)
	switch s {
	case "pass", "degraded", "fail":
		return s, nil
	}
	if a.status != http.StatusOK {
		return "", problem("health check", a)
	}
	return "", fmt.Errorf("health check: %w: unexpected status %q", errBadResponse, s)
}

// RedactURL returns u with the sig= query value (and any token) replaced by
// "REDACTED", for logs and errors. Everything else is kept byte for byte.
func RedactURL(u string) string {
	q := strings.IndexByte(u, '?')
	if q < 0 {
		return u
	}
	rest := u[q+1:]
	frag := ""
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		rest, frag = rest[:h], rest[h:]
	}
	parts := strings.Split(rest, "&")
	for i, p := range parts {
		k, _, hasV := strings.Cut(p, "=")
		if !hasV {
			continue
		}
		if key, err := url.QueryUnescape(k); err == nil && secretParam(key) {
			parts[i] = k + "=REDACTED"
		}
	}
	return u[:q+1] + strings.Join(parts, "&") + frag
}

func secretParam(k string) bool {
	switch strings.ToLower(k) {
	case "sig", "token", "access_token", "refresh_token", "code", "client_secret":
		return true
	}
	return false
}

// redactText redacts every URL-looking query secret in free text (error
// messages of the HTTP stack quote whole URLs).
func redactText(s string) string {
	if !strings.Contains(s, "=") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		j := strings.IndexAny(s[i:], "?&")
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		j += i
		b.WriteString(s[i : j+1])
		k := j + 1
		eq := strings.IndexByte(s[k:], '=')
		end := strings.IndexAny(s[k:], "&# \t\n\"'")
		if eq >= 0 && (end < 0 || eq < end) {
			key := s[k : k+eq]
			vEnd := strings.IndexAny(s[k+eq+1:], "&# \t\n\"'")
			if vEnd < 0 {
				vEnd = len(s) - (k + eq + 1)
			}
			if secretParam(key) {
				b.WriteString(key + "=REDACTED")
				i = k + eq + 1 + vEnd
				continue
			}
		}
		i = k
	}
	return b.String()
}

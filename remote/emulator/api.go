package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

const (
	problemPrefix = "https://seequent.com/error-codes/file-api"
	timeLayout    = "2006-01-02T15:04:05.000000Z"
	maxListLimit  = 5000
	uploadKeep    = 7 * 24 * time.Hour // uncommitted uploads expire after this
	apiPrefix     = "/file/v2/orgs/"
)

var problemTitles = map[string]string{
	"/files/not-found":                  "File Not Found.",
	"/files/gone":                       "The file has been deleted",
	"/files/invalid-path":               "Invalid Path.",
	"/files/no-file-upload-in-progress": "No file upload in progress",
	"/files/already-exists":             "Invalid Request.",
	"/bad-request":                      "Bad Request.",
	"/validation":                       "Validation Error.",
	"/auth/missing-token":               "Access Denied.",
	"/auth/invalid-token":               "Access Denied.",
	"/auth/insufficient-role":           "Insufficient Role.",
	"/api-errors":                       "An Error Occurred.",
	"/metadata/store-error":             "File Metadata Storage Operation Failed.",
	"/bad-gateway":                      "Bad Gateway.",
}

type problem struct {
	Type           string   `json:"type"`
	Title          string   `json:"title"`
	Status         int      `json:"status"`
	Detail         *string  `json:"detail"`
	YourRole       string   `json:"your_role,omitempty"`
	PermittedRoles []string `json:"permitted_roles,omitempty"`
}

func writeProblemBody(w http.ResponseWriter, p problem) {
	if p.Title == "" {
		p.Title = problemTitles[strings.TrimPrefix(p.Type, problemPrefix)]
		if p.Title == "" {
			p.Title = http.StatusText(p.Status)
		}
	}
	b, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(p.Status)
	w.Write(b)
}

// writeProblem answers with a problem JSON body; typ is the suffix after
// the file-api prefix, e.g. "/files/not-found".
func writeProblem(w http.ResponseWriter, status int, typ, title, detail string) {
	p := problem{Type: problemPrefix + typ, Title: title, Status: status}
	if detail != "" {
		p.Detail = &detail
	}
	writeProblemBody(w, p)
}

func validationError(w http.ResponseWriter, loc []string, msg string) {
	q := make([]string, len(loc))
	for i, l := range loc {
		q[i] = "'" + l + "'"
	}
	writeProblem(w, 422, "/validation", "", fmt.Sprintf("[{'loc': [%s], 'msg': '%s', 'type': 'value_error'}]", strings.Join(q, ", "), msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, 500, "/api-errors", "", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// ---- routing ----

type route struct {
	op      Op
	handler http.HandlerFunc
}

func notFoundRoute(r *http.Request) route {
	return route{op: opUnknown, handler: func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, 404, "/bad-request", "Not Found.", "No route for "+r.Method+" "+r.URL.EscapedPath())
	}}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeProblem(w, 405, "/bad-request", "Method Not Allowed.", "Method "+r.Method+" is not allowed here.")
}

func (s *Server) route(r *http.Request) route {
	ep := r.URL.EscapedPath()
	switch {
	case ep == "/file/health_check":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return route{op: OpHealth, handler: methodNotAllowed}
		}
		return route{op: OpHealth, handler: s.health}
	case strings.HasPrefix(ep, "/blob/"):
		return s.blobRoute(r, ep)
	case !strings.HasPrefix(ep, apiPrefix):
		return notFoundRoute(r)
	}
	parts := strings.SplitN(ep[len(apiPrefix):], "/", 5) // org, "workspaces", ws, "files", tail
	if len(parts) < 4 || parts[1] != "workspaces" || parts[3] != "files" {
		return notFoundRoute(r)
	}
	c := &call{orgRaw: parts[0], wsRaw: parts[2]}
	tail, hasTail := "", len(parts) == 5
	if hasTail {
		tail = parts[4]
	}
	method := r.Method
	switch {
	case !hasTail || tail == "":
		if method != http.MethodGet {
			return route{op: OpList, handler: methodNotAllowed}
		}
		return route{op: OpList, handler: s.api(c, false, s.list)}
	case tail == "path" || strings.HasPrefix(tail, "path/"):
		c.pathRaw = strings.TrimPrefix(strings.TrimPrefix(tail, "path"), "/")
		c.byPath = true
		switch method {
		case http.MethodGet:
			return route{op: OpGetByPath, handler: s.api(c, false, s.getFile)}
		case http.MethodPut:
			return route{op: OpUpsertByPath, handler: s.api(c, true, s.upsertByPath)}
		case http.MethodDelete:
			return route{op: OpDeleteByPath, handler: s.api(c, true, s.deleteFile)}
		}
		return route{op: opUnknown, handler: methodNotAllowed}
	case !strings.Contains(tail, "/"):
		c.fidRaw = tail
		switch method {
		case http.MethodGet:
			return route{op: OpGetByID, handler: s.api(c, false, s.getFile)}
		case http.MethodPut:
			if r.URL.Query().Has("deleted") {
				return route{op: OpRestore, handler: s.api(c, true, s.updateByID)}
			}
			return route{op: OpUpdateByID, handler: s.api(c, true, s.updateByID)}
		case http.MethodDelete:
			return route{op: OpDeleteByID, handler: s.api(c, true, s.deleteFile)}
		}
		return route{op: opUnknown, handler: methodNotAllowed}
	}
	return notFoundRoute(r)
}

// call is one authenticated API request.
type call struct {
	orgRaw, wsRaw, fidRaw, pathRaw string
	byPath                         bool

	org, ws, fid uuid.UUID
	segs         []string // decoded path segments (by-path routes)
	key          string   // lower-cased full path
	user         User
	base         string // scheme://host
	q            url.Values
}

func (c *call) fileURL(fid uuid.UUID) string {
	return fmt.Sprintf("%s/file/v2/orgs/%s/workspaces/%s/files/%s", c.base, c.org, c.ws, fid)
}

func parseUUID(s string) (uuid.UUID, bool) {
	if len(s) != 36 {
		return uuid.UUID{}, false
	}
	u, err := uuid.Parse(s)
	return u, err == nil
}

// api wraps a handler with authentication, role check and parameter parsing.
func (s *Server) api(c *call, write bool, h func(http.ResponseWriter, *http.Request, *call)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		grant, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if write && grant.Role != RoleEditor && grant.Role != RoleOwner {
			writeProblemBody(w, problem{Type: problemPrefix + "/auth/insufficient-role", Status: 403,
				Detail: ptr("Your role does not permit this operation."), YourRole: string(grant.Role),
				PermittedRoles: []string{string(RoleEditor), string(RoleOwner)}})
			return
		}
		c.user = grant.User
		var okID bool
		if c.org, okID = parseUUID(c.orgRaw); !okID {
			validationError(w, []string{"path", "org_id"}, "value is not a valid uuid")
			return
		}
		if c.ws, okID = parseUUID(c.wsRaw); !okID {
			validationError(w, []string{"path", "workspace_id"}, "value is not a valid uuid")
			return
		}
		if c.fidRaw != "" {
			if c.fid, okID = parseUUID(c.fidRaw); !okID {
				validationError(w, []string{"path", "file_id"}, "value is not a valid uuid")
				return
			}
		}
		if c.byPath {
			segs, err := splitEscapedPath(c.pathRaw)
			if err != "" {
				writeProblem(w, 400, "/files/invalid-path", "", err)
				return
			}
			c.segs = segs
			c.key = strings.ToLower(strings.Join(segs, "/"))
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		c.base = scheme + "://" + r.Host
		c.q = r.URL.Query()
		h(w, r, c)
	}
}

func ptr[T any](v T) *T { return &v }

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (Grant, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(strings.TrimSpace(h), " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		writeProblem(w, 401, "/auth/missing-token", "", "A bearer token is required.")
		return Grant{}, false
	}
	if s.verify != nil {
		if g, ok := s.verify(tok); ok {
			return g, true
		}
	} else if len(s.tokens) == 0 {
		return Grant{User: LocalUser, Role: RoleEditor}, true
	}
	g, ok := s.tokens[tok]
	if !ok {
		writeProblem(w, 401, "/auth/invalid-token", "", "The bearer token is invalid or expired.")
		return Grant{}, false
	}
	return g, true
}

// splitEscapedPath validates and decodes an escaped file path (§9.6–9.8).
// It returns the decoded segments or a reason.
func splitEscapedPath(raw string) ([]string, string) {
	raw = strings.TrimPrefix(raw, "/")
	if raw == "" {
		return nil, "The path is empty."
	}
	if strings.HasSuffix(raw, "/") {
		return nil, "The path must not end with a slash."
	}
	parts := strings.Split(raw, "/")
	segs := make([]string, len(parts))
	total := 0
	for i, p := range parts {
		if p == "" {
			return nil, "The path has an empty segment."
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			return nil, "The path has a malformed escape."
		}
		if reason := checkSegment(d); reason != "" {
			return nil, reason
		}
		segs[i] = d
		total += len(d) + 1
	}
	if total-1 > 4096 {
		return nil, "The path is longer than 4096 bytes."
	}
	return segs, ""
}

func checkSegment(d string) string {
	switch {
	case d == "":
		return "The path has an empty segment."
	case d == "." || d == "..":
		return "The path has a '.' or '..' segment."
	case strings.Contains(d, "/"):
		return "A path segment contains an encoded slash."
	case strings.HasPrefix(d, " ") || strings.HasSuffix(d, " "):
		return "A path segment begins or ends with a space."
	case utf8.RuneCountInString(d) > 255:
		return "A name is longer than 255 characters."
	}
	for _, c := range d {
		if c < 0x20 || c == 0x7f {
			return "The path contains a control character."
		}
	}
	return ""
}

// splitPlainPath validates an unescaped path given to PutFile & co.
func splitPlainPath(p string) ([]string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" || strings.HasSuffix(p, "/") {
		return nil, fmt.Errorf("invalid path %q", p)
	}
	segs := strings.Split(p, "/")
	for _, sg := range segs {
		if r := checkSegment(sg); r != "" {
			return nil, fmt.Errorf("invalid path %q: %s", p, r)
		}
	}
	if len(p) > 4096 {
		return nil, fmt.Errorf("invalid path: longer than 4096 bytes")
	}
	return segs, nil
}

// ---- JSON shapes ----

type fileBase struct {
	Name       string          `json:"name"`
	Path       string          `json:"path"`
	FileID     uuid.UUID       `json:"file_id"`
	VersionID  json.RawMessage `json:"version_id"`
	Size       int64           `json:"size"`
	ETag       string          `json:"etag"`
	CreatedAt  string          `json:"created_at"`
	CreatedBy  *User           `json:"created_by"`
	ModifiedAt string          `json:"modified_at"`
	ModifiedBy *User           `json:"modified_by"`
	DeletedAt  *string         `json:"deleted_at"`
	DeletedBy  *User           `json:"deleted_by"`
}

type fileMetaJSON struct {
	fileBase
	Download string         `json:"download"`
	Self     string         `json:"self"`
	Versions *[]versionJSON `json:"versions"`
}

type listFileJSON struct {
	fileBase
	Links struct {
		Self string `json:"self"`
	} `json:"links"`
}

type versionJSON struct {
	VersionID json.RawMessage `json:"version_id"`
	CreatedAt string          `json:"created_at"`
	CreatedBy *User           `json:"created_by"`
	FileID    uuid.UUID       `json:"file_id"`
	Name      string          `json:"name"`
	Path      string          `json:"path"`
	Size      int64           `json:"size"`
	Link      string          `json:"link"`
}

type listJSON struct {
	Files  []listFileJSON `json:"files"`
	Count  int            `json:"count"`
	Total  int            `json:"total"`
	Limit  int            `json:"limit"`
	Offset int            `json:"offset"`
	Links  struct {
		Next *string `json:"next"`
		Prev *string `json:"prev"`
		Self string  `json:"self"`
	} `json:"links"`
}

type uploadJSON struct {
	FileID    uuid.UUID       `json:"file_id"`
	VersionID json.RawMessage `json:"version_id"`
	Upload    string          `json:"upload"`
}

func (s *Server) vid(id int64) json.RawMessage {
	if s.numeric {
		return json.RawMessage(strconv.FormatInt(id, 10))
	}
	return json.RawMessage(`"` + strconv.FormatInt(id, 10) + `"`)
}

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func (s *Server) baseLocked(f *file, v *version) fileBase {
	cr := f.created
	if cr == nil {
		cr = v
	}
	b := fileBase{
		Name: f.name(), Path: f.parent(), FileID: f.id, VersionID: s.vid(v.id), Size: v.size, ETag: v.etag,
		CreatedAt: fmtTime(cr.createdAt), CreatedBy: ptr(cr.createdBy),
		ModifiedAt: fmtTime(v.createdAt), ModifiedBy: ptr(v.createdBy),
	}
	if f.deleted() {
		b.DeletedAt = ptr(fmtTime(f.deletedAt))
		b.DeletedBy = f.deletedBy
	}
	return b
}

func (s *Server) metaLocked(c *call, f *file, v *version, now time.Time, withVersions bool) fileMetaJSON {
	m := fileMetaJSON{fileBase: s.baseLocked(f, v)}
	m.Download = s.signURLLocked(c.base, c.org, c.ws, f.id, v.id, "rt", f.name())
	m.Self = c.fileURL(f.id) + "?version_id=" + strconv.FormatInt(v.id, 10)
	if withVersions {
		vs := []versionJSON{}
		for _, x := range f.versions {
			if !x.visible(now) {
				continue
			}
			vs = append(vs, versionJSON{VersionID: s.vid(x.id), CreatedAt: fmtTime(x.createdAt), CreatedBy: ptr(x.createdBy),
				FileID: f.id, Name: f.name(), Path: f.parent(), Size: x.size,
				Link: c.fileURL(f.id) + "?version_id=" + strconv.FormatInt(x.id, 10)})
		}
		sort.SliceStable(vs, func(i, j int) bool { return vs[i].CreatedAt < vs[j].CreatedAt })
		m.Versions = &vs
	}
	return m
}

// ---- SAS ----

const sasVersion = "2023-08-03"

func blobPath(org, ws, fid uuid.UUID, vid int64) string {
	return fmt.Sprintf("/blob/%s/%s/%s/%d", org, ws, fid, vid)
}

func sign(key []byte, path, se, sp, sv string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(path + "\n" + se + "\n" + sp + "\n" + sv))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// signURLLocked issues a pre-signed blob URL; sp is "rt" or "wt".
func (s *Server) signURLLocked(base string, org, ws, fid uuid.UUID, vid int64, sp, filename string) string {
	exp := s.nowFn().Add(s.ttl)
	if exp.Truncate(time.Second) != exp {
		exp = exp.Truncate(time.Second).Add(time.Second)
	}
	if s.azure != nil {
		u, err := s.azure.signedURL(fid, vid, sp == "wt", exp, filename)
		if err != nil {
			s.log.WithError(err).Error("azure blobs: signing a URL")
		}
		return u
	}
	se := exp.UTC().Format(time.RFC3339)
	p := blobPath(org, ws, fid, vid)
	rscd := "attachment; filename*=UTF-8''" + url.PathEscape(filename)
	return base + p + "?se=" + url.QueryEscape(se) + "&sp=" + sp + "&sv=" + sasVersion + "&sr=b&rscd=" +
		url.QueryEscape(rscd) + "&sig=" + url.QueryEscape(sign(s.key, p, se, sp, sasVersion))
}

// ---- handlers ----

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if full, _ := parseBool(q.Get("full")); full {
		body := map[string]any{"status": "pass", "version": "2.11.5-emulator"}
		if deps, _ := parseBool(q.Get("check_dependencies")); deps {
			body["dependencies"] = map[string]string{"metadata-store": "pass", "blob-storage": "pass"}
		}
		writeJSON(w, 200, body)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(200)
	w.Write([]byte("pass"))
}

// parseBool accepts true/false/1/0 in any case; "" is false.
func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "true", "1":
		return true, true
	case "false", "0", "":
		return false, true
	}
	return false, false
}

func (c *call) boolParam(w http.ResponseWriter, name string) (bool, bool) {
	b, ok := parseBool(c.q.Get(name))
	if !ok {
		validationError(w, []string{"query", name}, "value could not be parsed to a boolean")
	}
	return b, ok
}

// versionParam parses version_id: 0 when absent.
func (c *call) versionParam(w http.ResponseWriter) (int64, bool) {
	v := c.q.Get("version_id")
	if v == "" {
		return 0, true
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		validationError(w, []string{"query", "version_id"}, "value is not a valid integer")
		return 0, false
	}
	return id, true
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request, c *call) {
	vid, ok := c.versionParam(w)
	if !ok {
		return
	}
	withVersions, ok := c.boolParam(w, "include_versions")
	if !ok {
		return
	}
	wantDeleted := false
	if !c.byPath {
		if wantDeleted, ok = c.boolParam(w, "deleted"); !ok {
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(c.org, c.ws)
	f := wsp.addressed(c)
	if f == nil || f.latest(now) == nil {
		writeProblem(w, 404, "/files/not-found", "", "The requested file was not found.")
		return
	}
	if f.deleted() && !wantDeleted {
		writeProblem(w, 410, "/files/gone", "", "The requested file has been deleted.")
		return
	}
	v := f.latest(now)
	if vid != 0 {
		if v = f.version(vid); v == nil || !v.visible(now) {
			writeProblem(w, 404, "/files/not-found", "", "The requested file version was not found.")
			return
		}
	}
	writeJSON(w, 200, s.metaLocked(c, f, v, now, withVersions))
}

func (s *Server) newVersionLocked(f *file, user User, now time.Time) *version {
	v := &version{id: s.newVersionIDLocked(), createdAt: now, createdBy: user, blocks: map[string]block{}}
	f.addVersion(v)
	return v
}

func (s *Server) uploadAnswerLocked(w http.ResponseWriter, c *call, f *file, v *version) {
	writeJSON(w, 200, uploadJSON{FileID: f.id, VersionID: s.vid(v.id),
		Upload: s.signURLLocked(c.base, c.org, c.ws, f.id, v.id, "wt", strconv.FormatInt(v.id, 10))})
}

// resumeLocked answers a register call that names version_id.
func (s *Server) resumeLocked(w http.ResponseWriter, c *call, f *file, vid int64, now time.Time) {
	v := f.version(vid)
	switch {
	case v == nil || (!v.committed && now.Sub(v.createdAt) > uploadKeep):
		writeProblem(w, 404, "/files/not-found", "", "No upload with that version_id.")
	case v.committed:
		writeProblem(w, 400, "/files/no-file-upload-in-progress", "", "That version has already been uploaded.")
	default:
		s.uploadAnswerLocked(w, c, f, v)
	}
}

func (s *Server) upsertByPath(w http.ResponseWriter, r *http.Request, c *call) {
	vid, ok := c.versionParam(w)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(c.org, c.ws)
	f := wsp.index[c.key]
	if vid != 0 {
		if f == nil {
			writeProblem(w, 404, "/files/not-found", "", "No file exists at this path.")
			return
		}
		s.resumeLocked(w, c, f, vid, now)
		return
	}
	if f == nil {
		f = &file{id: uuid.New(), path: wsp.displayPath(c.segs)}
		wsp.files[f.id] = f
		wsp.index[c.key] = f
	}
	s.uploadAnswerLocked(w, c, f, s.newVersionLocked(f, c.user, now))
}

func (s *Server) updateByID(w http.ResponseWriter, r *http.Request, c *call) {
	vid, ok := c.versionParam(w)
	if !ok {
		return
	}
	restore := false
	if c.q.Has("deleted") {
		d, ok := c.boolParam(w, "deleted")
		if !ok {
			return
		}
		if d || vid != 0 {
			writeProblem(w, 400, "/bad-request", "", "Restore takes deleted=false and no version_id.")
			return
		}
		restore = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(c.org, c.ws)
	f := wsp.files[c.fid]
	if f == nil || (restore && f.latest(now) == nil) {
		writeProblem(w, 404, "/files/not-found", "", "The requested file was not found.")
		return
	}
	if restore {
		s.restoreLocked(w, c, wsp, f, now)
		return
	}
	if f.deleted() {
		writeProblem(w, 410, "/files/gone", "", "The requested file has been deleted.")
		return
	}
	if vid != 0 {
		s.resumeLocked(w, c, f, vid, now)
		return
	}
	s.uploadAnswerLocked(w, c, f, s.newVersionLocked(f, c.user, now))
}

func (s *Server) restoreLocked(w http.ResponseWriter, c *call, wsp *workspace, f *file, now time.Time) {
	if f.deleted() {
		key := strings.ToLower(f.path)
		if occ := wsp.index[key]; occ != nil && occ != f {
			writeProblem(w, 409, "/files/already-exists", "", "Another file now exists at this path.")
			return
		}
		if s.meta != nil {
			if err := s.meta.append(&logRec{Op: "restore", Org: c.org, WS: c.ws, File: f.id}); err != nil {
				writeProblem(w, 502, "/metadata/store-error", "", err.Error())
				return
			}
		}
		f.deletedAt, f.deletedBy = time.Time{}, nil
		wsp.index[key] = f
	}
	if s.seeOther {
		m := s.metaLocked(c, f, f.latest(now), now, false)
		w.Header().Set("Location", m.Self)
		writeJSON(w, http.StatusSeeOther, m)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(c.org, c.ws)
	f := wsp.addressed(c)
	if f == nil || f.deleted() || f.latest(now) == nil {
		writeProblem(w, 404, "/files/not-found", "", "The requested file was not found.")
		return
	}
	if err := s.deleteLocked(wsp, f, c.user, now); err != nil {
		writeProblem(w, 502, "/metadata/store-error", "", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteLocked(wsp *workspace, f *file, by User, now time.Time) error {
	if s.meta != nil {
		if err := s.meta.append(&logRec{Op: "delete", Org: wsp.org, WS: wsp.ws, File: f.id, At: now, By: &by}); err != nil {
			return err
		}
	}
	f.deletedAt, f.deletedBy = now, &by
	if wsp.index[strings.ToLower(f.path)] == f {
		delete(wsp.index, strings.ToLower(f.path))
	}
	return nil
}

// ---- list ----

type timeFilter struct {
	field string
	op    string // eq lt lte gt gte
	t     time.Time
}

func (tf timeFilter) match(t time.Time, set bool) bool {
	if !set {
		return false
	}
	switch tf.op {
	case "lt":
		return t.Before(tf.t)
	case "lte":
		return !t.After(tf.t)
	case "gt":
		return t.After(tf.t)
	case "gte":
		return !t.Before(tf.t)
	}
	return t.Equal(tf.t)
}

var timeLayouts = []string{
	time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999", "2006-01-02T15:04Z07:00", "2006-01-02T15:04", "2006-01-02",
}

func parseTime(v string) (time.Time, bool) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

type orderKey struct {
	field string
	desc  bool
}

type listRow struct {
	f *file
	v *version
}

func (row listRow) timeOf(field string) (time.Time, bool) {
	switch field {
	case "created_at":
		cr := row.f.created
		if cr == nil {
			cr = row.v
		}
		return cr.createdAt, true
	case "modified_at":
		return row.v.createdAt, true
	case "deleted_at":
		return row.f.deletedAt, row.f.deleted()
	}
	return time.Time{}, false
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, c *call) {
	q := c.q
	limit, offset := maxListLimit, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			validationError(w, []string{"query", "limit"}, "ensure this value is between 1 and 5000")
			return
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			validationError(w, []string{"query", "offset"}, "ensure this value is greater than or equal to 0")
			return
		}
		offset = n
	}
	deleted, ok := c.boolParam(w, "deleted")
	if !ok {
		return
	}
	nameSub := ""
	if q.Has("file_name") {
		nameSub = q.Get("file_name")
		if nameSub == "" {
			validationError(w, []string{"query", "file_name"}, "ensure this value has at least 1 characters")
			return
		}
		if strings.Contains(nameSub, "/") {
			writeProblem(w, 400, "/files/invalid-path", "", "file_name must not contain '/'.")
			return
		}
		nameSub = strings.ToLower(nameSub)
	}
	users := map[string]map[uuid.UUID]bool{}
	for _, name := range []string{"author", "modified_by", "deleted_by"} {
		for _, v := range q[name] {
			u, ok := parseUUID(v)
			if !ok {
				validationError(w, []string{"query", name}, "value is not a valid uuid")
				return
			}
			if users[name] == nil {
				users[name] = map[uuid.UUID]bool{}
			}
			users[name][u] = true
		}
	}
	var tfs []timeFilter
	for _, name := range []string{"created_at", "modified_at", "deleted_at"} {
		vals := q[name]
		if len(vals) > 2 {
			validationError(w, []string{"query", name}, "at most two values are allowed")
			return
		}
		for _, v := range vals {
			tf := timeFilter{field: name, op: "eq"}
			for _, op := range []string{"lte", "lt", "gte", "gt"} {
				if strings.HasPrefix(v, op+":") {
					tf.op, v = op, v[len(op)+1:]
					break
				}
			}
			if tf.op == "eq" && len(vals) > 1 {
				validationError(w, []string{"query", name}, "an equality filter takes a single value")
				return
			}
			t, ok := parseTime(v)
			if !ok {
				validationError(w, []string{"query", name}, "invalid datetime format")
				return
			}
			tf.t = t
			tfs = append(tfs, tf)
		}
	}
	var order []orderKey
	if v := q.Get("order_by"); v != "" {
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			k := orderKey{}
			if rest, ok := strings.CutPrefix(item, "desc:"); ok {
				k.desc, item = true, rest
			} else if rest, ok := strings.CutPrefix(item, "asc:"); ok {
				item = rest
			}
			switch item {
			case "created_at", "modified_at", "deleted_at":
			default:
				validationError(w, []string{"query", "order_by"}, "unknown order_by field "+item)
				return
			}
			k.field = item
			order = append(order, k)
		}
	}
	order = append(order, orderKey{field: "created_at"})

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	wsp := s.workspaceLocked(c.org, c.ws)
	var rows []listRow
	for _, f := range wsp.files {
		if f.deleted() != deleted {
			continue
		}
		v := f.latest(now)
		if v == nil {
			continue
		}
		if nameSub != "" && !strings.Contains(strings.ToLower(f.name()), nameSub) {
			continue
		}
		row := listRow{f, v}
		if m := users["author"]; m != nil && (f.created == nil || !m[f.created.createdBy.ID]) {
			continue
		}
		if m := users["modified_by"]; m != nil && !m[v.createdBy.ID] {
			continue
		}
		if m := users["deleted_by"]; m != nil && (f.deletedBy == nil || !m[f.deletedBy.ID]) {
			continue
		}
		keep := true
		for _, tf := range tfs {
			if t, set := row.timeOf(tf.field); !tf.match(t, set) {
				keep = false
				break
			}
		}
		if keep {
			rows = append(rows, row)
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		for _, k := range order {
			a, _ := rows[i].timeOf(k.field)
			b, _ := rows[j].timeOf(k.field)
			if a.Equal(b) {
				continue
			}
			if k.desc {
				return a.After(b)
			}
			return a.Before(b)
		}
		return rows[i].f.id.String() < rows[j].f.id.String()
	})
	out := listJSON{Files: []listFileJSON{}, Total: len(rows), Limit: limit, Offset: offset}
	for i := offset; i < len(rows) && i < offset+limit; i++ {
		lf := listFileJSON{fileBase: s.baseLocked(rows[i].f, rows[i].v)}
		lf.Links.Self = c.fileURL(rows[i].f.id)
		out.Files = append(out.Files, lf)
	}
	out.Count = len(out.Files)
	self := c.base + r.URL.EscapedPath()
	out.Links.Self = self
	if r.URL.RawQuery != "" {
		out.Links.Self += "?" + r.URL.RawQuery
	}
	page := func(off int) *string {
		q2 := url.Values{}
		for k, v := range q {
			q2[k] = v
		}
		q2.Set("offset", strconv.Itoa(off))
		q2.Set("limit", strconv.Itoa(limit))
		u := self + "?" + q2.Encode()
		return &u
	}
	if offset+out.Count < out.Total {
		out.Links.Next = page(offset + limit)
	}
	if offset > 0 {
		out.Links.Prev = page(max(0, offset-limit))
	}
	writeJSON(w, 200, out)
}

// addressed is the file a by-path or by-id call names (nil if none).
func (w *workspace) addressed(c *call) *file {
	if c.byPath {
		return w.index[c.key]
	}
	return w.files[c.fid]
}

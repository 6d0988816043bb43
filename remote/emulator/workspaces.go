package emulator

// The Workspaces API subset evofs needs, served by the hub next to the File
// API: GET /workspace/orgs/{org}/workspaces?limit&offset lists the named
// workspaces of an organisation with the caller's role in each (the SDK's
// WorkspaceNonAdminResponse fields id, name, description, current_user_role,
// created_at, created_by; paging by links.next). Workspaces are named with
// AddWorkspace; the File API itself still accepts any workspace id.

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// OpWorkspaces counts Workspaces API requests.
const OpWorkspaces Op = "workspaces"

const workspacePrefix = "/workspace/orgs/"

// namedWorkspace is a workspace the Workspaces API lists.
type namedWorkspace struct {
	org, id uuid.UUID
	name    string
	created time.Time
}

// AddWorkspace names a workspace so the Workspaces API lists it.
func (s *Server) AddWorkspace(org, ws uuid.UUID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.named == nil {
		s.named = map[[2]uuid.UUID]namedWorkspace{}
	}
	s.named[[2]uuid.UUID{org, ws}] = namedWorkspace{org: org, id: ws, name: name, created: s.nowLocked()}
}

// workspaceRoute routes /workspace/… requests; ok is false for other paths.
func (s *Server) workspaceRoute(r *http.Request) (route, bool) {
	ep := r.URL.EscapedPath()
	if !strings.HasPrefix(ep, "/workspace/") {
		return route{}, false
	}
	rest, ok := strings.CutPrefix(ep, workspacePrefix)
	org, tail, _ := strings.Cut(rest, "/")
	if !ok || strings.TrimSuffix(tail, "/") != "workspaces" {
		return notFoundRoute(r), true
	}
	if r.Method != http.MethodGet {
		return route{op: OpWorkspaces, handler: methodNotAllowed}, true
	}
	return route{op: OpWorkspaces, handler: func(w http.ResponseWriter, r *http.Request) { s.listWorkspaces(w, r, org) }}, true
}

func (s *Server) listWorkspaces(w http.ResponseWriter, r *http.Request, orgRaw string) {
	grant, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	org, ok := parseUUID(orgRaw)
	if !ok {
		validationError(w, []string{"path", "org_id"}, "value is not a valid uuid")
		return
	}
	q := r.URL.Query()
	limit, offset := 100, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			validationError(w, []string{"query", "limit"}, "limit must be between 1 and 1000")
			return
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			validationError(w, []string{"query", "offset"}, "offset must be >= 0")
			return
		}
		offset = n
	}
	s.mu.Lock()
	var all []namedWorkspace
	for _, nw := range s.named {
		if nw.org == org {
			all = append(all, nw)
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if !all[i].created.Equal(all[j].created) {
			return all[i].created.Before(all[j].created)
		}
		return all[i].id.String() < all[j].id.String()
	})
	type item struct {
		ID              uuid.UUID `json:"id"`
		Name            string    `json:"name"`
		Description     string    `json:"description"`
		CurrentUserRole Role      `json:"current_user_role"`
		CreatedAt       string    `json:"created_at"`
		CreatedBy       User      `json:"created_by"`
	}
	results := []item{}
	for i := offset; i < len(all) && i < offset+limit; i++ {
		results = append(results, item{ID: all[i].id, Name: all[i].name, CurrentUserRole: grant.Role,
			CreatedAt: all[i].created.Format(timeLayout), CreatedBy: OtherUser})
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := scheme + "://" + r.Host + r.URL.EscapedPath()
	link := func(off int) any {
		v := r.URL.Query()
		v.Set("offset", strconv.Itoa(off))
		v.Set("limit", strconv.Itoa(limit))
		return base + "?" + v.Encode()
	}
	var next, prev any
	if offset+limit < len(all) {
		next = link(offset + limit)
	}
	if offset > 0 {
		prev = link(max(0, offset-limit))
	}
	writeJSON(w, 200, map[string]any{
		"results": results, "limit": limit, "offset": offset, "total": len(all),
		"links": map[string]any{"first": link(0), "next": next, "previous": prev},
	})
}

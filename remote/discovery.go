package remote

// Discovery and the Workspaces API list (contract §8): which organisations a
// signed-in user belongs to, which hub serves each one's File API, and the
// workspaces of an organisation with the user's role in each. Names given by
// people are resolved to ids here (FindOrg, FindWorkspace).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ErrNoMatch: no organisation or workspace has that name or id.
var ErrNoMatch = errors.New("no match")

// ErrAmbiguous: several organisations or workspaces have that name.
var ErrAmbiguous = errors.New("ambiguous name")

// Discovery is the Discovery document.
type Discovery struct {
	Organizations []Organization  `json:"organizations"`
	Hubs          []Hub           `json:"hubs"`
	ServiceAccess []ServiceAccess `json:"service_access"`
	Services      []string        `json:"services"`
}

// Organization is one organisation (instance) of the user.
type Organization struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"display_name"`
}

// Hub is one API host.
type Hub struct {
	URL  string `json:"url"`
	Code string `json:"code"`
	Name string `json:"display_name"`
}

// ServiceAccess says which services of a hub an organisation may use.
type ServiceAccess struct {
	HubCode  string    `json:"hub_code"`
	OrgID    uuid.UUID `json:"org_id"`
	Services []string  `json:"services"`
}

// WorkspaceInfo is one item of the Workspaces API list.
type WorkspaceInfo struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"name"`
	// Role is the caller's role: owner, editor or viewer.
	Role string `json:"current_user_role"`
}

// CanWrite reports whether the role may write files (editor or owner).
func (w WorkspaceInfo) CanWrite() bool { return w.Role == "editor" || w.Role == "owner" }

// LookupConfig says where Discovery and the hubs are and how to authenticate.
type LookupConfig struct {
	DiscoveryURL string // default DefaultDiscoveryURL
	Tokens       TokenSource
	HTTPClient   *http.Client // default: 30 s timeout
}

func (c LookupConfig) withDefaults() LookupConfig {
	if c.DiscoveryURL == "" {
		c.DiscoveryURL = DefaultDiscoveryURL
	}
	c.DiscoveryURL = strings.TrimRight(c.DiscoveryURL, "/")
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: NewTransport(1), Timeout: 30 * time.Second}
	}
	return c
}

// Discover fetches the Discovery document for the given services (default file).
func Discover(ctx context.Context, c LookupConfig, services ...string) (*Discovery, error) {
	c = c.withDefaults()
	if len(services) == 0 {
		services = []string{"file"}
	}
	q := url.Values{"service": services}
	var body struct {
		Discovery Discovery `json:"discovery"`
	}
	if err := getJSON(ctx, c, "discovery", c.DiscoveryURL+"/evo/identity/v2/discovery?"+q.Encode(), &body); err != nil {
		return nil, err
	}
	return &body.Discovery, nil
}

// HubFor returns the hub that serves service for org.
func (d *Discovery) HubFor(org uuid.UUID, service string) (Hub, bool) {
	for _, sa := range d.ServiceAccess {
		if sa.OrgID != org || !containsString(sa.Services, service) {
			continue
		}
		for _, h := range d.Hubs {
			if h.Code == sa.HubCode {
				return h, true
			}
		}
	}
	return Hub{}, false
}

// FindOrg resolves an organisation by id or by name (case-insensitive). An
// empty nameOrID picks the only organisation there is.
func (d *Discovery) FindOrg(nameOrID string) (Organization, error) {
	if nameOrID == "" {
		if len(d.Organizations) == 1 {
			return d.Organizations[0], nil
		}
		if len(d.Organizations) == 0 {
			return Organization{}, fmt.Errorf("%w: this account belongs to no organisation", ErrNoMatch)
		}
		return Organization{}, fmt.Errorf("%w: this account belongs to %d organisations (%s); choose one with --org",
			ErrAmbiguous, len(d.Organizations), orgNames(d.Organizations))
	}
	var hits []Organization
	if id, err := uuid.Parse(nameOrID); err == nil {
		for _, o := range d.Organizations {
			if o.ID == id {
				return o, nil
			}
		}
	}
	for _, o := range d.Organizations {
		if strings.EqualFold(o.Name, nameOrID) {
			hits = append(hits, o)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return Organization{}, fmt.Errorf("%w: no organisation named %q (yours: %s)", ErrNoMatch, nameOrID, orgNames(d.Organizations))
	}
	return Organization{}, fmt.Errorf("%w: %d organisations are named %q; use the id (%s)", ErrAmbiguous, len(hits), nameOrID, orgNames(hits))
}

func orgNames(os []Organization) string {
	var s []string
	for _, o := range os {
		s = append(s, fmt.Sprintf("%q %s", o.Name, o.ID))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// ListWorkspaces lists the workspaces of org on hubURL that the caller can
// see, following the pages, sorted by name.
func ListWorkspaces(ctx context.Context, c LookupConfig, hubURL string, org uuid.UUID) ([]WorkspaceInfo, error) {
	c = c.withDefaults()
	base := strings.TrimRight(hubURL, "/") + "/workspace/orgs/" + org.String() + "/workspaces"
	var all []WorkspaceInfo
	seen := map[uuid.UUID]bool{}
	const limit = 100
	for offset, pages := 0, 0; pages < 1000; pages++ {
		var page struct {
			Results []WorkspaceInfo `json:"results"`
			Links   struct {
				Next *string `json:"next"`
			} `json:"links"`
		}
		u := base + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset)
		if err := getJSON(ctx, c, "list workspaces", u, &page); err != nil {
			return nil, err
		}
		for _, w := range page.Results {
			if !seen[w.ID] {
				seen[w.ID] = true
				all = append(all, w)
			}
		}
		if page.Links.Next == nil || *page.Links.Next == "" || len(page.Results) == 0 {
			break
		}
		offset += len(page.Results)
	}
	sort.SliceStable(all, func(i, j int) bool { return strings.ToLower(all[i].Name) < strings.ToLower(all[j].Name) })
	return all, nil
}

// FindWorkspace resolves a workspace by id or by name (case-insensitive).
func FindWorkspace(list []WorkspaceInfo, nameOrID string) (WorkspaceInfo, error) {
	if id, err := uuid.Parse(nameOrID); err == nil {
		for _, w := range list {
			if w.ID == id {
				return w, nil
			}
		}
		return WorkspaceInfo{}, fmt.Errorf("%w: no workspace with id %s is visible to you", ErrNoMatch, id)
	}
	var hits []WorkspaceInfo
	for _, w := range list {
		if strings.EqualFold(w.Name, nameOrID) {
			hits = append(hits, w)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		var names []string
		for _, w := range list {
			names = append(names, strconv.Quote(w.Name))
		}
		known := "none"
		if len(names) > 0 {
			known = strings.Join(names, ", ")
		}
		return WorkspaceInfo{}, fmt.Errorf("%w: no workspace named %q (visible to you: %s)", ErrNoMatch, nameOrID, known)
	}
	var ids []string
	for _, w := range hits {
		ids = append(ids, w.ID.String())
	}
	return WorkspaceInfo{}, fmt.Errorf("%w: %d workspaces are named %q; use the id (%s)", ErrAmbiguous, len(hits), nameOrID, strings.Join(ids, ", "))
}

// getJSON GETs u with the bearer token into out: one refresh and replay on
// 401, up to 3 tries on transient failures.
func getJSON(ctx context.Context, c LookupConfig, op, u string, out any) error {
	if c.Tokens == nil {
		return errors.New(op + ": no token source")
	}
	refreshed := false
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		tok, err := c.Tokens.Token(ctx, false)
		if err != nil {
			return fmt.Errorf("%s: getting token: %w", op, err)
		}
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Accept", "application/json")
			a, err := func() (*apiAnswer, error) {
				resp, err := c.HTTPClient.Do(req)
				if err != nil {
					return nil, wrapTransport(ctx, op, err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
				if err != nil {
					return nil, wrapTransport(ctx, op, err)
				}
				return &apiAnswer{status: resp.StatusCode, header: resp.Header, body: body}, nil
			}()
			if err != nil {
				lastErr = err
				break
			}
			if a.status == http.StatusUnauthorized && !refreshed {
				refreshed = true
				if tok, err = c.Tokens.Token(ctx, true); err != nil {
					return fmt.Errorf("%s: refreshing token: %w", op, err)
				}
				continue
			}
			if a.status == http.StatusOK {
				return decodeJSON(op, a.body, out)
			}
			lastErr = problem(op, a)
			break
		}
		if !transient(lastErr) || !sleep(ctx, time.Duration(attempt)*300*time.Millisecond) {
			break
		}
	}
	return lastErr
}

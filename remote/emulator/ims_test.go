package emulator

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func tokenPost(t *testing.T, ims *TestIMS, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(ims.URL+"/connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func authGet(t *testing.T, u, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestIMSTokensExpireOnHub(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ims := NewTestIMS(t, IMSOptions{TokenTTL: 10 * time.Second, Now: clock, Clients: map[string]IMSClient{
		"svc":    {Secret: "x", Grant: Grant{User: TestUser, Role: RoleEditor}},
		"viewer": {Secret: "v", Grant: Grant{User: TestUser, Role: RoleViewer}},
	}})
	ts := NewTestServer(t, Options{Verify: ims.Verify})
	st, body := tokenPost(t, ims, url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc"}, "client_secret": {"x"}, "scope": {"evo.file"}})
	if st != 200 || body["token_type"] != "Bearer" || body["expires_in"].(float64) != 10 || body["refresh_token"] != nil {
		t.Fatalf("client credentials: %d %v", st, body)
	}
	tok := body["access_token"].(string)
	if got := authGet(t, ts.FilesURL(), tok); got != 200 {
		t.Fatalf("list with IMS token: %d", got)
	}
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	if got := authGet(t, ts.FilesURL(), tok); got != 401 {
		t.Fatalf("list with expired token: %d", got)
	}
	if got := authGet(t, ts.FilesURL(), "anything"); got != 401 {
		t.Fatalf("a hub with a verifier accepted a made-up token: %d", got)
	}
	// Viewer: reads pass, writes get 403 insufficient-role.
	_, body = tokenPost(t, ims, url.Values{"grant_type": {"client_credentials"}, "client_id": {"viewer"}, "client_secret": {"v"}})
	vt := body["access_token"].(string)
	if got := authGet(t, ts.FilesURL(), vt); got != 200 {
		t.Fatalf("viewer list: %d", got)
	}
	req, _ := http.NewRequest(http.MethodPut, ts.FilesURL()+"/path/a.txt", nil)
	req.Header.Set("Authorization", "Bearer "+vt)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("viewer upsert: %d", resp.StatusCode)
	}
	// Bad secret, unknown client, bad grant.
	if st, b := tokenPost(t, ims, url.Values{"grant_type": {"client_credentials"}, "client_id": {"svc"}, "client_secret": {"no"}}); st != 401 || b["error"] != "invalid_client" {
		t.Fatalf("bad secret: %d %v", st, b)
	}
	if st, b := tokenPost(t, ims, url.Values{"grant_type": {"refresh_token"}, "client_id": {"svc"}, "refresh_token": {"nope"}}); st != 400 || b["error"] != "invalid_grant" {
		t.Fatalf("bad refresh: %d %v", st, b)
	}
}

func TestIMSAuthorizeRefusals(t *testing.T) {
	ims := NewTestIMS(t, IMSOptions{Clients: map[string]IMSClient{"app": {}}})
	nr := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(q url.Values) *http.Response {
		resp, err := nr.Get(ims.URL + "/connect/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	base := url.Values{"client_id": {"app"}, "redirect_uri": {"http://127.0.0.1:5/cb"}, "response_type": {"code"},
		"scope": {"evo.discovery evo.file"}, "state": {"s1"}, "code_challenge": {"abc"}, "code_challenge_method": {"S256"}}
	if r := get(base); r.StatusCode != 302 || !strings.Contains(r.Header.Get("Location"), "code=") {
		t.Fatalf("good request: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	noPKCE := url.Values{}
	for k, v := range base {
		noPKCE[k] = v
	}
	noPKCE.Del("code_challenge")
	if r := get(noPKCE); !strings.Contains(r.Header.Get("Location"), "error=invalid_request") {
		t.Fatalf("no PKCE: %s", r.Header.Get("Location"))
	}
	unknown := url.Values{"client_id": {"who"}, "redirect_uri": {"http://127.0.0.1:5/cb"}}
	if r := get(unknown); r.StatusCode != 400 || r.Header.Get("Location") != "" {
		t.Fatalf("unknown client must not redirect: %d", r.StatusCode)
	}
	remote := url.Values{"client_id": {"app"}, "redirect_uri": {"http://example.com/cb"}}
	if r := get(remote); r.StatusCode != 400 {
		t.Fatalf("non-loopback redirect: %d", r.StatusCode)
	}
}

func TestWorkspacesListNeedsToken(t *testing.T) {
	ts := NewTestServer(t, Options{Tokens: map[string]Grant{"v": {User: TestUser, Role: RoleViewer}}})
	ts.AddWorkspace(ts.Org, ts.Workspace, "Main")
	u := ts.URL + "/workspace/orgs/" + ts.Org.String() + "/workspaces"
	if got := authGet(t, u, ""); got != 401 {
		t.Fatalf("no token: %d", got)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer v")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			ID   uuid.UUID `json:"id"`
			Name string    `json:"name"`
			Role string    `json:"current_user_role"`
		} `json:"results"`
		Links struct {
			Next *string `json:"next"`
		} `json:"links"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if len(body.Results) != 1 || body.Results[0].ID != ts.Workspace || body.Results[0].Name != "Main" ||
		body.Results[0].Role != "viewer" || body.Links.Next != nil {
		t.Fatalf("list: %+v", body)
	}
	if ts.Requests(OpWorkspaces) != 2 {
		t.Fatalf("workspaces requests counted: %d", ts.Requests(OpWorkspaces))
	}
}

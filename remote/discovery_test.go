package remote

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"evofs/remote/emulator"
)

func TestDiscoveryAndWorkspaces(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{TokenTTL: time.Hour})
	hubA := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	hubB := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	orgA, orgB := uuid.New(), uuid.New()
	ims.SetOrgs([]emulator.DiscoveryOrg{
		{ID: orgA, Name: "Acme Mining", HubURL: hubA.URL, HubCode: "a"},
		{ID: orgB, Name: "Beta Geo", HubURL: hubB.URL, HubCode: "b"},
	})
	// Many workspaces on B, to cross a page boundary (100 per page).
	var drill uuid.UUID
	for i := 0; i < 130; i++ {
		id := uuid.New()
		name := fmt.Sprintf("ws-%03d", i)
		if i == 77 {
			name, drill = "Drillholes", id
		}
		hubB.AddWorkspace(orgB, id, name)
	}
	dup1, dup2 := uuid.New(), uuid.New()
	hubB.AddWorkspace(orgB, dup1, "Twin")
	hubB.AddWorkspace(orgB, dup2, "twin")
	hubA.AddWorkspace(orgA, uuid.New(), "Elsewhere")

	src, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "s3cret"})
	lc := LookupConfig{DiscoveryURL: ims.URL, Tokens: src}
	ctx := context.Background()
	d, err := Discover(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := d.FindOrg("beta geo")
	if err != nil || o.ID != orgB {
		t.Fatalf("FindOrg by name: %v %v", o, err)
	}
	if o, err := d.FindOrg(orgA.String()); err != nil || o.ID != orgA {
		t.Fatalf("FindOrg by id: %v", err)
	}
	if _, err := d.FindOrg("Nope"); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("unknown org: %v", err)
	}
	if _, err := d.FindOrg(""); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("two orgs, none chosen: %v", err)
	}
	hub, ok := d.HubFor(orgB, "file")
	if !ok || hub.URL != hubB.URL {
		t.Fatalf("hub for B: %v %v", hub, ok)
	}
	list, err := ListWorkspaces(ctx, lc, hub.URL, orgB)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 132 {
		t.Fatalf("listed %d workspaces, want 132", len(list))
	}
	w, err := FindWorkspace(list, "DRILLHOLES")
	if err != nil || w.ID != drill || w.Role != "editor" || !w.CanWrite() {
		t.Fatalf("FindWorkspace: %+v %v", w, err)
	}
	if _, err := FindWorkspace(list, "twin"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("twin: %v", err)
	}
	if _, err := FindWorkspace(list, "Elsewhere"); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("other org's workspace: %v", err)
	}
	if w, err := FindWorkspace(list, dup2.String()); err != nil || w.ID != dup2 {
		t.Fatalf("by id: %v", err)
	}
	// Without a valid token: a clear class.
	_, err = Discover(ctx, LookupConfig{DiscoveryURL: ims.URL, Tokens: StaticToken("nope")})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("discovery with a bad token: %v", err)
	}
	// Unreachable: a transport error.
	_, err = Discover(ctx, LookupConfig{DiscoveryURL: "http://127.0.0.1:1", Tokens: src})
	if err == nil || !Retryable(err) {
		t.Fatalf("unreachable discovery: %v", err)
	}
}

func TestDiscoveryServiceFilter(t *testing.T) {
	ims := newIMS(t, emulator.IMSOptions{})
	org := uuid.New()
	ims.SetOrgs([]emulator.DiscoveryOrg{{ID: org, Name: "NoFiles", HubURL: "http://127.0.0.1:9", Services: []string{"workspace"}}})
	src, _ := NewClientCredentialsSource(OAuthConfig{Issuer: ims.URL, ClientID: "service", ClientSecret: "s3cret"})
	d, err := Discover(context.Background(), LookupConfig{DiscoveryURL: ims.URL, Tokens: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.HubFor(org, "file"); ok {
		t.Fatal("an organisation without the file service got a file hub")
	}
}

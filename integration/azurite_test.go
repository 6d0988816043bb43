package integration

import (
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"evofs/remote"
	"evofs/remote/emulator"
)

// TestAzurite runs the core publish, read, resume and URL-expiry tests with
// every blob in Microsoft's Azurite: the File API is the emulator's, the
// pre-signed URLs are Azurite's service SAS URLs, so the client moves bytes
// with Microsoft's implementation of the blob protocol, as against Azure.
// Skips without azurite-blob, except under CI=true.
func TestAzurite(t *testing.T) {
	requireFUSE(t)
	endpoint := emulator.StartAzurite(t)
	azureBlobs = &emulator.AzureBlobs{Endpoint: endpoint}
	defer func() { azureBlobs = nil }()

	t.Run("URLsAreAzurites", func(t *testing.T) {
		m := mountT(t, mountOpts{})
		writeFile(t, filepath.Join(m.dir, "a.txt"), []byte("to Azurite\n"))
		waitServed(t, m.ts, "a.txt", []byte("to Azurite\n"), 30*time.Second)
		meta, err := m.client.GetByPath(t.Context(), "a.txt", remote.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(meta.Download)
		if err != nil || !strings.HasPrefix(meta.Download, endpoint+"/") || u.Query().Get("sig") == "" || u.Query().Get("sp") != "r" {
			t.Fatalf("download URL %q is not an Azurite SAS URL under %s", remote.RedactURL(meta.Download), endpoint)
		}
	})
	for name, test := range map[string]func(*testing.T){
		"CreateReadOverwriteAppendTruncate": TestCreateReadOverwriteAppendTruncate,
		"LargeFileAndRandomWrites":          TestLargeFileAndRandomWrites,
		"ReadOnDemandAndWarm":               TestReadOnDemandAndWarm,
		"RenameFileAndFolder":               TestRenameFileAndFolder,
		"RemountShowsPublished":             TestRemountShowsPublished,
		"FaultyServicePublishesEverything":  TestFaultyServicePublishesEverything,
		"ProcessKill9WhileReopened":         TestProcessKill9WhileReopened,
		"ProcessSigtermAndUmountPublish":    TestProcessSigtermAndUmountPublishPending,
	} {
		t.Run(name, test)
	}
	t.Run("ExpiredURLsRenewed", func(t *testing.T) {
		ts := emulator.NewTestServer(t, emulator.Options{URLTTL: 2 * time.Second, AzureBlobs: azureBlobs})
		body := randomBytes(61, 3<<20+11)
		if _, _, err := ts.PutFile(ts.Org, ts.Workspace, "old.bin", body); err != nil {
			t.Fatal(err)
		}
		m := mountOn(t, ts, mountOpts{})
		meta, err := m.client.GetByPath(t.Context(), "old.bin", remote.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The first URL the mount saw is past its expiry once Azurite refuses it.
		if !eventually(t, 30*time.Second, func() bool { return !urlWorks(meta.Download) }) {
			t.Fatal("Azurite never refused an expired SAS URL")
		}
		mustEqual(t, "read after expiry", readFile(t, filepath.Join(m.dir, "old.bin")), body)
		written := randomBytes(62, 1<<20)
		writeFile(t, filepath.Join(m.dir, "new.bin"), written)
		waitServed(t, m.ts, "new.bin", written, 30*time.Second)
	})
}

// urlWorks reports whether a GET of u answers 200.
func urlWorks(u string) bool {
	resp, err := http.Get(u)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

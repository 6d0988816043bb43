package main

// Azurite and the blobs of rclone's container: starting Azurite, creating a
// container, signing SAS URLs, uploading, and reading back what is stored.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"evofs/remote/emulator"
)

// azurite is the running Azurite blob service and the development account.
type azurite struct {
	endpoint string // http://127.0.0.1:PORT/devstoreaccount1
	cred     *blob.SharedKeyCredential
	version  string
}

// startAzurite runs azurite-blob on a free loopback port with its data in
// the bench's temp dir (on disk, as Azurite keeps it by default).
func startAzurite() *azurite {
	bin, err := exec.LookPath("azurite-blob")
	check(err, "azurite-blob is not installed (npm install -g azurite@3.37.0)")
	p := start("azurite", nil, bin, "--blobHost", "127.0.0.1", "--blobPort", "0",
		"--location", filepath.Join(cfg.tmp, "azurite"), "--skipApiVersionCheck", "--loose",
		"--disableProductStyleUrl", "--silent", "--disableTelemetry")
	u := p.waitLine(regexp.MustCompile(`listens on (http://127\.0\.0\.1:\d+)`), time.Minute)
	cred, err := blob.NewSharedKeyCredential(emulator.AzuriteAccount, emulator.AzuriteKey)
	check(err, "azurite credential")
	v, _ := exec.Command("azurite", "--version").Output()
	return &azurite{endpoint: u + "/" + emulator.AzuriteAccount, cred: cred, version: strings.TrimSpace(string(v))}
}

// createContainer creates a container with an account SAS (Create
// Container), as the emulator's Azurite backend does.
func (a *azurite) createContainer(name string) {
	q, err := sas.AccountSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour).UTC(),
		Permissions:   (&sas.AccountPermissions{Create: true, Write: true}).String(),
		ResourceTypes: (&sas.AccountResourceTypes{Container: true}).String()}.SignWithSharedKey(a.cred)
	check(err, "signing")
	req, err := http.NewRequest(http.MethodPut, a.endpoint+"/"+name+"?restype=container&"+q.Encode(), nil)
	check(err, "request")
	req.Header.Set("x-ms-version", "2021-12-02")
	resp, err := http.DefaultClient.Do(req)
	check(err, "creating container "+name)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		fail("creating container %s: HTTP %d", name, resp.StatusCode)
	}
}

// containerSASURL is a service SAS URL of a whole container with every
// permission rclone needs (what rclone's sas_url option takes).
func (a *azurite) containerSASURL(container string) string {
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(24 * time.Hour).UTC(),
		ContainerName: container,
		Permissions: (&sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true,
			List: true}).String()}.SignWithSharedKey(a.cred)
	check(err, "signing a container SAS")
	return a.endpoint + "/" + container + "?" + q.Encode()
}

// blobURL is the unsigned URL of a blob.
func (a *azurite) blobURL(container, name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return a.endpoint + "/" + container + "/" + strings.Join(segs, "/")
}

// blobSASURL is a read-only SAS URL of a blob (what curl downloads).
func (a *azurite) blobSASURL(container, name string) string {
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(24 * time.Hour).UTC(),
		ContainerName: container, BlobName: name, Permissions: (&sas.BlobPermissions{Read: true}).String()}.SignWithSharedKey(a.cred)
	check(err, "signing a blob SAS")
	return a.blobURL(container, name) + "?" + q.Encode()
}

func (a *azurite) blockBlob(container, name string) *blockblob.Client {
	c, err := blockblob.NewClientWithSharedKeyCredential(a.blobURL(container, name), a.cred, nil)
	check(err, "blob client")
	return c
}

// upload stores size bytes of r as container/name (parallel blocks).
func (a *azurite) upload(ctx context.Context, container, name string, r io.Reader) {
	_, err := a.blockBlob(container, name).UploadStream(ctx, r, &blockblob.UploadStreamOptions{BlockSize: 8 << 20, Concurrency: 8})
	check(err, "uploading "+name)
}

// stored returns the size and sha256 of container/name; ok is false when
// it does not exist.
func (a *azurite) stored(ctx context.Context, container, name string) (size int64, sum [32]byte, ok bool) {
	resp, err := a.blockBlob(container, name).DownloadStream(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return 0, sum, false
	}
	check(err, "downloading "+name)
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	check(err, "downloading "+name)
	copy(sum[:], h.Sum(nil))
	return n, sum, true
}

// uploadSmall stores data as container/name in one Put Blob.
func (a *azurite) uploadSmall(ctx context.Context, container, name string, data []byte) error {
	_, err := a.blockBlob(container, name).Upload(ctx, nopSeekCloser{bytes.NewReader(data)}, nil)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", name, err)
	}
	return nil
}

type nopSeekCloser struct{ *bytes.Reader }

func (nopSeekCloser) Close() error { return nil }

// listed is a stored file as a listing shows it.
type listed struct {
	size    int64
	version string // ETag or version id: changes with every stored version
}

// list returns the blobs of container under prefix (List Blobs, paged).
func (a *azurite) list(ctx context.Context, container, prefix string) map[string]listed {
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour).UTC(),
		ContainerName: container, Permissions: (&sas.ContainerPermissions{List: true}).String()}.SignWithSharedKey(a.cred)
	check(err, "signing a list SAS")
	out := map[string]listed{}
	marker := ""
	for {
		u := a.endpoint + "/" + container + "?restype=container&comp=list&prefix=" + url.QueryEscape(prefix) + "&" + q.Encode()
		if marker != "" {
			u += "&marker=" + url.QueryEscape(marker)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		check(err, "request")
		req.Header.Set("x-ms-version", "2021-12-02")
		resp, err := http.DefaultClient.Do(req)
		check(err, "listing "+container)
		var page struct {
			Blobs []struct {
				Name       string `xml:"Name"`
				Properties struct {
					Size int64  `xml:"Content-Length"`
					ETag string `xml:"Etag"`
				} `xml:"Properties"`
			} `xml:"Blobs>Blob"`
			NextMarker string `xml:"NextMarker"`
		}
		err = xml.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail("listing %s: HTTP %d", container, resp.StatusCode)
		}
		check(err, "decoding the listing of "+container)
		for _, b := range page.Blobs {
			out[b.Name] = listed{size: b.Properties.Size, version: b.Properties.ETag}
		}
		if page.NextMarker == "" {
			return out
		}
		marker = page.NextMarker
	}
}

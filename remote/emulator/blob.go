package emulator

import (
	"bytes"
	"crypto/hmac"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

const (
	maxBlockSize      = 4000 << 20
	maxBlockIDLen     = 64
	maxUncommitted    = 100000
	maxBlockListItems = 50000
	maxBlockListBody  = 16 << 20
	authFailedMsg     = "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."
)

type blobTarget struct {
	ep       string // escaped path, signed
	org, ws  uuid.UUID
	fid      uuid.UUID
	vid      int64
	pathOK   bool
	sp, sv   string
	received time.Time
}

func (s *Server) blobRoute(r *http.Request, ep string) route {
	t := &blobTarget{ep: ep}
	parts := strings.Split(strings.TrimPrefix(ep, "/blob/"), "/")
	if len(parts) == 4 {
		var ok1, ok2, ok3 bool
		t.org, ok1 = parseUUID(parts[0])
		t.ws, ok2 = parseUUID(parts[1])
		t.fid, ok3 = parseUUID(parts[2])
		vid, err := strconv.ParseInt(parts[3], 10, 64)
		t.vid = vid
		t.pathOK = ok1 && ok2 && ok3 && err == nil
	}
	comp := r.URL.Query().Get("comp")
	var op Op
	var h func(http.ResponseWriter, *http.Request, *blobTarget)
	write := r.Method == http.MethodPut
	switch {
	case r.Method == http.MethodPut && comp == "":
		op, h = OpPutBlob, s.putBlob
	case r.Method == http.MethodPut && comp == "block":
		op, h = OpPutBlock, s.putBlock
	case r.Method == http.MethodPut && comp == "blocklist":
		op, h = OpPutBlockList, s.putBlockList
	case r.Method == http.MethodGet && comp == "":
		op, h = OpGetBlob, s.getBlob
	case r.Method == http.MethodHead && comp == "":
		op, h = OpHeadBlob, s.getBlob
	default:
		return route{op: opUnknown, handler: func(w http.ResponseWriter, r *http.Request) {
			s.blobError(w, r, 400, "UnsupportedHttpVerb", "The emulator does not implement this operation.")
		}}
	}
	return route{op: op, handler: func(w http.ResponseWriter, r *http.Request) {
		if !s.checkSAS(w, r, t, write) {
			return
		}
		if !t.pathOK {
			s.blobError(w, r, 404, "BlobNotFound", "The specified blob does not exist.")
			return
		}
		h(w, r, t)
	}}
}

// checkSAS verifies signature, expiry and permission of a pre-signed URL.
func (s *Server) checkSAS(w http.ResponseWriter, r *http.Request, t *blobTarget, write bool) bool {
	q := r.URL.Query()
	se, sp, sv, sig := q.Get("se"), q.Get("sp"), q.Get("sv"), q.Get("sig")
	s.mu.Lock()
	key, now := s.key, s.nowFn()
	s.mu.Unlock()
	t.sp, t.sv, t.received = sp, sv, now
	if sig == "" || !hmac.Equal([]byte(sig), []byte(sign(key, t.ep, se, sp, sv))) {
		s.blobAuthError(w, r, "Signature did not match. String to sign used was "+sp+"\n\n"+se+"\n"+t.ep)
		return false
	}
	exp, err := time.Parse(time.RFC3339, se)
	if err != nil || now.After(exp) {
		s.blobAuthError(w, r, fmt.Sprintf("Signature not valid in the specified time frame: Start [] - Expiry [%s] - Current [%s]",
			exp.UTC().Format(http.TimeFormat), now.UTC().Format(http.TimeFormat)))
		return false
	}
	need := "r"
	if write {
		need = "w"
	}
	if !strings.Contains(sp, need) {
		s.blobError(w, r, 403, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission.")
		return false
	}
	return true
}

func (s *Server) blobAuthError(w http.ResponseWriter, r *http.Request, detail string) {
	s.blobErrorDetail(w, r, 403, "AuthenticationFailed", authFailedMsg,
		"<AuthenticationErrorDetail>"+xmlEscape(detail)+"</AuthenticationErrorDetail>")
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (s *Server) blobError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.blobErrorDetail(w, r, status, code, msg, "")
}

func (s *Server) blobErrorDetail(w http.ResponseWriter, r *http.Request, status int, code, msg, extra string) {
	reqID := uuid.New().String()
	h := w.Header()
	h.Set("x-ms-error-code", code)
	h.Set("x-ms-request-id", reqID)
	h.Set("x-ms-version", versionOf(r))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	body := `<?xml version="1.0" encoding="utf-8"?><Error><Code>` + code + `</Code><Message>` + xmlEscape(msg) +
		"\nRequestId:" + reqID + "\nTime:" + time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z") + `</Message>` + extra + `</Error>`
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func versionOf(r *http.Request) string {
	if sv := r.URL.Query().Get("sv"); sv != "" {
		return sv
	}
	return sasVersion
}

// lookupLocked finds the version behind a blob URL.
func (s *Server) lookupLocked(t *blobTarget) (*workspace, *file, *version) {
	wsp := s.workspaces[[2]uuid.UUID{t.org, t.ws}]
	if wsp == nil {
		return nil, nil, nil
	}
	f := wsp.files[t.fid]
	if f == nil {
		return wsp, nil, nil
	}
	return wsp, f, f.version(t.vid)
}

// pendingLocked returns the pending version of t or answers the error.
func (s *Server) pendingLocked(w http.ResponseWriter, r *http.Request, t *blobTarget) (*workspace, *file, *version, bool) {
	wsp, f, v := s.lookupLocked(t)
	if v == nil {
		s.blobError(w, r, 404, "BlobNotFound", "The specified blob does not exist.")
		return nil, nil, nil, false
	}
	if v.committed {
		// §9.16: the upload URL of a committed version is retired.
		s.blobAuthError(w, r, "The upload URL of a committed version is no longer valid.")
		return nil, nil, nil, false
	}
	return wsp, f, v, true
}

func (s *Server) checkLength(w http.ResponseWriter, r *http.Request, limit int64) bool {
	if r.ContentLength < 0 {
		s.blobError(w, r, 411, "MissingContentLengthHeader", "Content-Length HTTP header is missing.")
		return false
	}
	if r.ContentLength > limit {
		s.blobError(w, r, 413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.")
		return false
	}
	return true
}

// stageBody reads the request body into a new part and checks Content-MD5.
func (s *Server) stageBody(w http.ResponseWriter, r *http.Request) (part, []byte, bool) {
	// the round trip was waited out before the handler ran (ServeHTTP)
	p, sum, err := s.store.stage(s.link.Load().body(r.Context(), r.Body), r.ContentLength)
	if err != nil {
		s.blobError(w, r, 400, "InvalidInput", "Could not read the request body: "+err.Error())
		return part{}, nil, false
	}
	if want := r.Header.Get("Content-MD5"); want != "" && want != base64.StdEncoding.EncodeToString(sum) {
		s.store.discard(p)
		s.blobError(w, r, 400, "Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server.")
		return part{}, nil, false
	}
	return p, sum, true
}

func (s *Server) commonBlobHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("x-ms-request-id", uuid.New().String())
	h.Set("x-ms-version", versionOf(r))
	if id := r.Header.Get("x-ms-client-request-id"); id != "" {
		h.Set("x-ms-client-request-id", id)
	}
}

func (s *Server) writeCommitted(w http.ResponseWriter, r *http.Request, v *version, md5sum []byte) {
	s.commonBlobHeaders(w, r)
	h := w.Header()
	h.Set("ETag", v.etag)
	h.Set("Last-Modified", v.commitAt.UTC().Format(http.TimeFormat))
	if md5sum != nil {
		h.Set("Content-MD5", base64.StdEncoding.EncodeToString(md5sum))
	}
	h.Set("x-ms-request-server-encrypted", "true")
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) putBlob(w http.ResponseWriter, r *http.Request, t *blobTarget) {
	switch bt := r.Header.Get("x-ms-blob-type"); {
	case bt == "":
		s.blobError(w, r, 400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type.")
		return
	case bt != "BlockBlob":
		s.blobError(w, r, 400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format: x-ms-blob-type.")
		return
	}
	if !s.checkLength(w, r, s.maxBlob) {
		return
	}
	s.mu.Lock()
	_, _, _, ok := s.pendingLocked(w, r, t)
	s.mu.Unlock()
	if !ok {
		return
	}
	p, sum, ok := s.stageBody(w, r)
	if !ok {
		return
	}
	joined, err := s.store.join([]part{p})
	if err != nil {
		s.store.discard(p)
		s.blobError(w, r, 500, "InternalError", err.Error())
		return
	}
	s.finishCommit(w, r, t, joined, sum)
}

// finishCommit makes the durable part joined the committed blob of t, unless
// the version was committed meanwhile.
func (s *Server) finishCommit(w http.ResponseWriter, r *http.Request, t *blobTarget, joined part, md5sum []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wsp, f, v, ok := s.pendingLocked(w, r, t)
	if !ok {
		s.store.discard(joined)
		return
	}
	pub, err := s.store.publish(joined, f.id, v.id)
	if err != nil {
		s.store.discard(joined)
		s.blobError(w, r, 500, "InternalError", err.Error())
		return
	}
	if err := s.commitLocked(wsp, f, v, pub, md5sum, false); err != nil {
		s.blobError(w, r, 500, "InternalError", err.Error())
		return
	}
	s.writeCommitted(w, r, v, md5sum)
}

func decodeBlockID(id string) (string, bool) {
	b, err := base64.StdEncoding.DecodeString(id)
	if err != nil || len(b) == 0 || len(b) > maxBlockIDLen {
		return "", false
	}
	return string(b), true
}

func (s *Server) putBlock(w http.ResponseWriter, r *http.Request, t *blobTarget) {
	id, ok := decodeBlockID(r.URL.Query().Get("blockid"))
	if !ok {
		s.blobError(w, r, 400, "InvalidQueryParameterValue", "Value for one of the query parameters specified in the request URI is invalid: blockid.")
		return
	}
	if !s.checkLength(w, r, min(maxBlockSize, s.maxBlob)) {
		return
	}
	check := func() (*version, bool) {
		_, _, v, ok := s.pendingLocked(w, r, t)
		if !ok {
			return nil, false
		}
		if v.blockLen != 0 && v.blockLen != len(id) {
			s.blobError(w, r, 400, "InvalidBlobOrBlock", "The specified blob or block content is invalid: block ids of one blob must have the same length.")
			return nil, false
		}
		if _, exists := v.blocks[id]; !exists && len(v.blocks) >= maxUncommitted {
			s.blobError(w, r, 409, "BlockCountExceedsLimit", "The uncommitted block count cannot exceed the maximum limit of 100,000 blocks.")
			return nil, false
		}
		return v, true
	}
	s.mu.Lock()
	_, ok = check()
	s.mu.Unlock()
	if !ok {
		return
	}
	p, sum, ok := s.stageBody(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := check()
	if !ok {
		s.store.discard(p)
		return
	}
	if old, exists := v.blocks[id]; exists {
		s.store.discard(old.part)
	}
	v.blocks[id] = block{part: p}
	v.blockLen = len(id)
	s.commonBlobHeaders(w, r)
	w.Header().Set("Content-MD5", base64.StdEncoding.EncodeToString(sum))
	w.Header().Set("x-ms-request-server-encrypted", "true")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

type blockRef struct {
	kind string // Latest, Committed, Uncommitted
	id   string // decoded
}

func parseBlockList(body []byte) ([]blockRef, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	var refs []blockRef
	depth := 0
	var cur *blockRef
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case depth == 1 && tk.Name.Local != "BlockList":
				return nil, fmt.Errorf("root element %q", tk.Name.Local)
			case depth == 2:
				switch tk.Name.Local {
				case "Latest", "Committed", "Uncommitted":
					cur = &blockRef{kind: tk.Name.Local}
					text.Reset()
				default:
					return nil, fmt.Errorf("element %q", tk.Name.Local)
				}
			case depth > 2:
				return nil, errors.New("nested element")
			}
		case xml.CharData:
			if cur != nil {
				text.Write(tk)
			}
		case xml.EndElement:
			if depth == 2 && cur != nil {
				id, ok := decodeBlockID(strings.TrimSpace(text.String()))
				if !ok {
					return nil, errors.New("invalid block id")
				}
				cur.id = id
				refs = append(refs, *cur)
				cur = nil
			}
			depth--
		}
	}
	if len(refs) > maxBlockListItems {
		return nil, errors.New("too many blocks")
	}
	return refs, nil
}

func (s *Server) putBlockList(w http.ResponseWriter, r *http.Request, t *blobTarget) {
	if !s.checkLength(w, r, maxBlockListBody) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
	if err != nil {
		s.blobError(w, r, 400, "InvalidInput", "Could not read the request body.")
		return
	}
	refs, err := parseBlockList(body)
	if err != nil {
		s.blobError(w, r, 400, "InvalidXmlDocument", "XML specified is not syntactically valid: "+err.Error())
		return
	}
	s.mu.Lock()
	_, _, v, ok := s.pendingLocked(w, r, t)
	if !ok {
		s.mu.Unlock()
		return
	}
	parts := make([]part, 0, len(refs))
	var total int64
	for _, ref := range refs {
		b, exists := v.blocks[ref.id]
		if !exists || ref.kind == "Committed" {
			s.mu.Unlock()
			s.blobError(w, r, 400, "InvalidBlockList", "The specified block list is invalid.")
			return
		}
		parts = append(parts, b.part)
		total += b.part.size
	}
	s.mu.Unlock()
	if total > s.maxBlob {
		s.blobError(w, r, 413, "RequestBodyTooLarge", "The blob would exceed the maximum permissible size.")
		return
	}
	joined, err := s.store.join(parts)
	if err != nil {
		s.blobError(w, r, 500, "InternalError", err.Error())
		return
	}
	s.finishCommit(w, r, t, joined, nil)
}

// parseRange returns the inclusive byte range asked for; ranged=false means
// the whole blob. status != 0 reports an error.
func parseRange(r *http.Request, size int64) (start, end int64, ranged bool, status int, code string) {
	h := r.Header.Get("x-ms-range")
	if h == "" {
		h = r.Header.Get("Range")
	}
	if h == "" {
		return 0, size - 1, false, 0, ""
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	if !ok || !ok2 || strings.Contains(spec, ",") {
		return 0, 0, false, 400, "InvalidHeaderValue"
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, 400, "InvalidHeaderValue"
	}
	end = size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false, 400, "InvalidHeaderValue"
		}
		end = min(e, size-1)
	}
	if start >= size {
		return 0, 0, false, 416, "InvalidRange"
	}
	return start, end, true, 0, ""
}

func (s *Server) getBlob(w http.ResponseWriter, r *http.Request, t *blobTarget) {
	s.mu.Lock()
	_, _, v := s.lookupLocked(t)
	if v == nil || !v.committed {
		s.mu.Unlock()
		s.blobError(w, r, 404, "BlobNotFound", "The specified blob does not exist.")
		return
	}
	blob, size, etag, md5sum, mod := v.blob, v.size, v.etag, v.md5, v.commitAt
	s.mu.Unlock()

	start, end, ranged, status, code := parseRange(r, size)
	if status != 0 {
		if status == 416 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			s.blobError(w, r, 416, code, "The range specified is invalid for the current size of the resource.")
		} else {
			s.blobError(w, r, status, code, "The value for one of the HTTP headers is not in the correct format: Range.")
		}
		return
	}
	s.commonBlobHeaders(w, r)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if cd := r.URL.Query().Get("rscd"); cd != "" {
		h.Set("Content-Disposition", cd)
	}
	h.Set("ETag", etag)
	h.Set("Last-Modified", mod.UTC().Format(http.TimeFormat))
	h.Set("x-ms-creation-time", mod.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("x-ms-lease-state", "available")
	h.Set("x-ms-lease-status", "unlocked")
	h.Set("x-ms-server-encrypted", "true")
	n := end - start + 1
	if size == 0 {
		n = 0
	}
	if r.Method == http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		if md5sum != nil {
			h.Set("Content-MD5", base64.StdEncoding.EncodeToString(md5sum))
		}
		w.WriteHeader(200)
		return
	}
	ra, closer, err := s.store.open(blob)
	if err != nil {
		s.blobError(w, r, 500, "InternalError", err.Error())
		return
	}
	defer closer.Close()
	link := s.link.Load()
	if !link.firstByte(r.Context()) {
		return
	}
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	if ranged {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		if md5sum != nil {
			h.Set("Content-MD5", base64.StdEncoding.EncodeToString(md5sum))
		}
		w.WriteHeader(http.StatusOK)
	}
	link.copy(r.Context(), w, section(ra, start, n))
}

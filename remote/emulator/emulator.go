// Package emulator is an in-process implementation of the Seequent Evo File
// API v2 (see /work/shared/file-api.md, "the contract") and of the Azure Blob
// subset its pre-signed URLs need, served by one http.Handler the way
// net/http/httptest serves tests.
//
// # What it owns
//
//   - API routes under /file/v2/orgs/{org}/workspaces/{ws}/files… and
//     /file/health_check, with the contract's JSON shapes, status codes and
//     problem JSON errors.
//   - Blob routes /blob/{org}/{ws}/{fid}/{version}?se&sp&sv&sr&rscd&sig on the same
//     listener: Put Blob, Put Block, Put Block List, Get Blob (ranges), Get Blob
//     Properties. URLs are HMAC-signed with a random per-server key and expire.
//   - Storage: in memory, or under Options.DataDir (blobs as files written
//     temp+fsync+rename, metadata as an append-only fsynced JSON-lines log that
//     is replayed on start and tolerates a torn last line).
//   - Sign-in and discovery (ims.go, workspaces.go): an IMS-like issuer with
//     Discovery on its own handler, whose expiring tokens a hub accepts through
//     Options.Verify, and the Workspaces API list on the hub.
//   - Test hooks: fault injection, request counters, URL expiry, publish delay,
//     direct seeding (PutFile/ReadFile/DeleteFile), and a network-like Link
//     (shared bandwidth per direction, round trip) for downloads and uploads,
//     and a round trip for every other request (link.go).
//
// # Invariants
//
//   - A version is visible (GET, list, versions[]) only once its blob is
//     committed and its visibleAt (commit time + PublishDelay at commit time)
//     is not after the clock. Latest = visible version with the highest id.
//   - Version ids are strictly increasing over the whole server (max(last+1,
//     now in Unix ns)).
//   - A committed version's blob is immutable and its upload URL is retired.
//   - ws.index maps the lower-cased full path to the one non-deleted file that
//     owns it (including files reserved by an upload not yet committed).
//
// # Locking
//
// Server.mu guards all metadata (workspaces, files, versions, blocks maps),
// the mutable configuration (TTL, delay, clock, signing key) and the metadata
// log. Server.fmu guards faults and counters and is a leaf: never take mu while
// holding fmu. Blob bodies are read from or written to the network without
// holding mu; only the bookkeeping before and after is done under it.
package emulator

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math"
	mrand "math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
)

// Role is a workspace role.
type Role string

// Workspace roles; writes need editor or owner.
const (
	RoleOwner  Role = "owner"
	RoleEditor Role = "editor"
	RoleViewer Role = "viewer"
)

// User is the identity behind a token (UserInfo on the wire).
type User struct {
	ID    uuid.UUID `json:"id"`
	Name  string    `json:"name"`
	Email string    `json:"email"`
}

// Grant is what a bearer token stands for.
type Grant struct {
	User User
	Role Role
}

// LocalUser is the identity of any token when Options.Tokens is empty.
var LocalUser = User{ID: uuid.MustParse("00000000-0000-4000-8000-00000000a11c"), Name: "Local User", Email: "local.user@example.com"}

// OtherUser is the author of changes made through PutFile/DeleteFile.
var OtherUser = User{ID: uuid.MustParse("00000000-0000-4000-8000-0000000b0b00"), Name: "Other Client", Email: "other.client@example.com"}

// Options configures a Server. The zero value is a usable in-memory server.
type Options struct {
	DataDir string // "" = in memory
	// Owner says who owns DataDir ("mounted at /home/u/Evo"), for the
	// sentence that refuses a second process on it.
	Owner             string
	Tokens            map[string]Grant // accepted bearer tokens; empty = any non-empty token as editor LocalUser
	PublishDelay      time.Duration    // commit → visible
	URLTTL            time.Duration    // pre-signed URL lifetime, default 30m
	Now               func() time.Time // clock, default time.Now
	MaxBlobSize       int64            // default 5000 MiB; bigger → 413 RequestBodyTooLarge
	NumericVersionIDs bool             // emit version_id as bare JSON numbers
	RestoreSeeOther   bool             // restore answers 303 + metadata instead of 204
	Logger            *logrus.Entry    // request log; nil = silent
	Seed              int64            // seed of the FailRate generator; 0 = 1
	Link              Link             // network shaping (bandwidth per direction, round trips); zero = none
	// AzureBlobs, when set, keeps blobs in an Azure Storage account
	// (Azurite) and issues its SAS URLs instead of serving blobs itself.
	AzureBlobs *AzureBlobs
	// Verify, when set, is asked first about every bearer token (e.g.
	// IMS.Verify); Tokens are still accepted, and no token is accepted
	// without one of the two.
	Verify func(token string) (Grant, bool)
}

// Op names an operation for fault injection and counters.
type Op string

// Operations.
const (
	OpList         Op = "list"
	OpGetByPath    Op = "get-by-path"
	OpGetByID      Op = "get-by-id"
	OpUpsertByPath Op = "upsert-by-path"
	OpUpdateByID   Op = "update-by-id"
	OpRestore      Op = "restore"
	OpDeleteByPath Op = "delete-by-path"
	OpDeleteByID   Op = "delete-by-id"
	OpHealth       Op = "health"
	OpPutBlob      Op = "put-blob"
	OpPutBlock     Op = "put-block"
	OpPutBlockList Op = "put-block-list"
	OpGetBlob      Op = "get-blob"
	OpHeadBlob     Op = "head-blob"
	OpAny          Op = "*"
	opUnknown      Op = "unknown"
)

func (o Op) isBlob() bool {
	switch o {
	case OpPutBlob, OpPutBlock, OpPutBlockList, OpGetBlob, OpHeadBlob:
		return true
	}
	return false
}

// Fault describes an injected failure. Latency is applied first (the request
// then proceeds normally unless Status or Drop is set). Drop hijacks and closes
// the connection without answering. Status answers with that code and a body
// of the right kind (problem JSON for API ops, blob XML for blob ops), plus
// Retry-After when RetryAfter > 0.
type Fault struct {
	Status     int
	RetryAfter time.Duration
	Latency    time.Duration
	Drop       bool
}

type faultRule struct {
	op        Op
	remaining int     // FailNext
	rate      float64 // FailRate (remaining unused)
	f         Fault
}

// Server is the emulator. It implements http.Handler.
type Server struct {
	// immutable after New
	log       *logrus.Entry
	maxBlob   int64
	numeric   bool
	seeOther  bool
	tokens    map[string]Grant
	verify    func(string) (Grant, bool)
	store     blobStore
	meta      *metaLog               // nil in memory mode
	lock      io.Closer              // the data dir lock (nil in memory mode)
	azure     *azureStore            // the Azure blob backend, or nil
	stopWatch context.CancelFunc     // stops watchUploads (azure only)
	link      atomic.Pointer[shaper] // nil = transfers unshaped

	mu         sync.Mutex
	ttl        time.Duration // guarded by mu
	delay      time.Duration // guarded by mu
	nowFn      func() time.Time
	key        []byte // SAS signing key; guarded by mu
	lastVID    int64  // guarded by mu
	workspaces map[[2]uuid.UUID]*workspace
	named      map[[2]uuid.UUID]namedWorkspace // Workspaces API names; guarded by mu
	closed     bool

	fmu      sync.Mutex
	next     []*faultRule
	rates    []*faultRule
	rng      *mrand.Rand
	counters map[Op]int
	total    int
}

// New builds a server. With DataDir set it replays the metadata log found
// there (creating the directory if needed).
func New(o Options) (*Server, error) {
	s := &Server{
		log:        o.Logger,
		maxBlob:    o.MaxBlobSize,
		numeric:    o.NumericVersionIDs,
		seeOther:   o.RestoreSeeOther,
		verify:     o.Verify,
		ttl:        o.URLTTL,
		delay:      o.PublishDelay,
		nowFn:      o.Now,
		workspaces: map[[2]uuid.UUID]*workspace{},
		counters:   map[Op]int{},
	}
	if s.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		s.log = logrus.NewEntry(l)
	}
	if s.maxBlob <= 0 {
		s.maxBlob = 5000 << 20
	}
	if s.ttl <= 0 {
		s.ttl = 30 * time.Minute
	}
	if s.nowFn == nil {
		s.nowFn = time.Now
	}
	seed := o.Seed
	if seed == 0 {
		seed = 1
	}
	s.rng = mrand.New(mrand.NewSource(seed))
	s.tokens = make(map[string]Grant, len(o.Tokens))
	for k, v := range o.Tokens {
		s.tokens[k] = v
	}
	s.key = newKey()
	s.SetLink(o.Link)
	if o.AzureBlobs != nil {
		a, err := newAzureStore(*o.AzureBlobs)
		if err != nil {
			return nil, err
		}
		s.azure = a
	}
	if o.DataDir == "" {
		s.store = memStore{}
		if s.azure != nil {
			s.store = s.azure
		}
	} else {
		// One process owns a data dir: two would each replay the log and
		// then append records the other never sees.
		lock, err := lockDataDir(o.DataDir, o.Owner)
		if err != nil {
			return nil, err
		}
		ds, err := newDiskStore(o.DataDir)
		if err != nil {
			lock.Close()
			return nil, err
		}
		s.store = ds
		if s.azure != nil {
			s.store = s.azure
		}
		ml, err := openMetaLog(o.DataDir, s.replay)
		if err != nil {
			lock.Close()
			return nil, err
		}
		s.meta, s.lock = ml, lock
	}
	if s.azure != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch = cancel
		go s.watchUploads(ctx, s.azure)
	}
	return s, nil
}

func newKey() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	return k
}

// Close flushes and closes persisted state. Later requests fail with 500.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.meta != nil {
		err := s.meta.close()
		s.lock.Close()
		return err
	}
	return nil
}

// now reads the clock; call with mu held or not (nowFn is only replaced under mu).
func (s *Server) nowLocked() time.Time { return s.nowFn().UTC().Truncate(time.Microsecond) }

// SetClock replaces the clock.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.nowFn = now
}

// SetURLTTL sets the lifetime of URLs issued from now on.
func (s *Server) SetURLTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		d = 30 * time.Minute
	}
	s.ttl = d
}

// SetPublishDelay sets the commit → visible delay for commits from now on.
func (s *Server) SetPublishDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// ExpireURLs makes every pre-signed URL issued so far fail (403
// AuthenticationFailed) by rotating the signing key.
func (s *Server) ExpireURLs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = newKey()
}

// FailNext makes the next n requests matching op fail with f.
func (s *Server) FailNext(op Op, n int, f Fault) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if n > 0 {
		s.next = append(s.next, &faultRule{op: op, remaining: n, f: f})
	}
}

// FailRate makes each request matching op fail with f with probability rate.
func (s *Server) FailRate(op Op, rate float64, f Fault) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.rates = append(s.rates, &faultRule{op: op, rate: rate, f: f})
}

// ClearFaults removes every fault rule.
func (s *Server) ClearFaults() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.next, s.rates = nil, nil
}

// Requests returns how many requests for op were seen (OpAny = all),
// faulted ones included.
func (s *Server) Requests(op Op) int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if op == OpAny {
		return s.total
	}
	return s.counters[op]
}

// ResetRequests zeroes the counters.
func (s *Server) ResetRequests() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.counters = map[Op]int{}
	s.total = 0
}

// countAndFault counts the request and picks the fault to apply, if any.
func (s *Server) countAndFault(op Op) (Fault, bool) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.total++
	s.counters[op]++
	for i, r := range s.next {
		if r.op == OpAny || r.op == op {
			r.remaining--
			if r.remaining <= 0 {
				s.next = append(s.next[:i:i], s.next[i+1:]...)
			}
			return r.f, true
		}
	}
	for _, r := range s.rates {
		if (r.op == OpAny || r.op == op) && s.rng.Float64() < r.rate {
			return r.f, true
		}
	}
	return Fault{}, false
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// redactedURI is the request path plus query with sig= blanked.
func redactedURI(r *http.Request) string {
	p := r.URL.EscapedPath()
	if r.URL.RawQuery == "" {
		return p
	}
	parts := strings.Split(r.URL.RawQuery, "&")
	for i, kv := range parts {
		if strings.HasPrefix(strings.ToLower(kv), "sig=") {
			parts[i] = "sig=REDACTED"
		}
	}
	return p + "?" + strings.Join(parts, "&")
}

// ServeHTTP routes a request to the API or blob handlers, after counting it
// and applying any injected fault.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt, ok := s.workspaceRoute(r)
	if !ok {
		rt = s.route(r)
	}
	f, faulted := s.countAndFault(rt.op)
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		st := sw.status
		if st == 0 && faulted && f.Drop {
			st = -1
		}
		s.log.WithFields(logrus.Fields{
			"method": r.Method, "path": redactedURI(r), "op": string(rt.op),
			"status": st, "duration": time.Since(start).String(),
		}).Info("request")
	}()
	if faulted {
		if f.Latency > 0 {
			t := time.NewTimer(f.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.Drop {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		if f.Status != 0 {
			if f.RetryAfter > 0 {
				sw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
			}
			if rt.op.isBlob() {
				s.blobError(sw, r, f.Status, faultBlobCode(f.Status), "Injected fault.")
			} else {
				writeProblem(sw, f.Status, faultProblemType(f.Status), "", "Injected fault.")
			}
			return
		}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		if rt.op.isBlob() {
			s.blobError(sw, r, 500, "InternalError", "Server closed.")
		} else {
			writeProblem(sw, 500, "/api-errors", "", "Server closed.")
		}
		return
	}
	if !s.link.Load().roundTrip(r.Context(), rt.op) {
		return
	}
	rt.handler(sw, r)
}

func faultBlobCode(status int) string {
	switch status {
	case 503, 429:
		return "ServerBusy"
	case 500:
		return "InternalError"
	case 403:
		return "AuthenticationFailed"
	case 404:
		return "BlobNotFound"
	case 413:
		return "RequestBodyTooLarge"
	case 416:
		return "InvalidRange"
	}
	return "InternalError"
}

func faultProblemType(status int) string {
	switch status {
	case 400:
		return "/bad-request"
	case 401:
		return "/auth/invalid-token"
	case 403:
		return "/auth/insufficient-role"
	case 404:
		return "/files/not-found"
	case 409:
		return "/files/already-exists"
	case 410:
		return "/files/gone"
	case 422:
		return "/validation"
	case 502:
		return "/bad-gateway"
	}
	if status >= 500 {
		return "/api-errors"
	}
	return fmt.Sprintf("/http-%d", status)
}

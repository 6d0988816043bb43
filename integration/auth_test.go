package integration

// Sign-in, discovery and service tests: an IMS-like issuer and Discovery
// (emulator.TestIMS) in front of one or two hubs that accept only the
// tokens it issues. The token-expiry soak runs in-process; the command-line
// flows (login, workspaces, profiles, --daemon, client credentials, viewer
// read-only, error sentences) run the evofs binary.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"evofs/remote"
	"evofs/remote/emulator"
)

var (
	authUser   = emulator.User{ID: uuid.MustParse("00000000-0000-4000-8000-0000000a0711"), Name: "Ada Auth", Email: "ada@example.com"}
	authEditor = emulator.Grant{User: authUser, Role: emulator.RoleEditor}
	authViewer = emulator.Grant{User: authUser, Role: emulator.RoleViewer}
)

// tokenMarks are prefixes of every token the emulated issuer hands out; no
// log may contain them.
var tokenMarks = []string{"ims_at_", "ims_rt_", "code_"}

func assertNoTokens(t *testing.T, what, log string) {
	t.Helper()
	for _, m := range tokenMarks {
		if strings.Contains(log, m) {
			i := strings.Index(log, m)
			t.Errorf("%s contains a token (%q…)", what, log[max(0, i-60):i+len(m)])
		}
	}
}

func authIMS(t *testing.T, o emulator.IMSOptions) *emulator.TestIMS {
	if o.Clients == nil {
		o.Clients = map[string]emulator.IMSClient{
			"native":     {Grant: authEditor},
			"svc":        {Secret: "svc-secret", Grant: authEditor},
			"svc-viewer": {Secret: "viewer-secret", Grant: authViewer},
		}
	}
	return emulator.NewTestIMS(t, o)
}

// browser follows an authorize URL to the loopback redirect, like a browser
// whose user is already signed in and consents.
func browser(t *testing.T, authURL string) {
	resp, err := http.Get(authURL)
	if err != nil {
		t.Errorf("browser: %v", err)
		return
	}
	resp.Body.Close()
}

// authMount mounts ts's workspace in-process with the given token source.
func authMount(t *testing.T, ts *emulator.TestServer, tokens remote.TokenSource) *testMount {
	t.Helper()
	return mountOn(t, ts, mountOpts{tokens: tokens, pollInterval: 500 * time.Millisecond, writeBackDelay: 50 * time.Millisecond})
}

// signIn runs the PKCE login against ims and saves the login store.
func signIn(t *testing.T, ims *emulator.TestIMS, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := remote.Login(ctx, remote.OAuthConfig{Issuer: ims.URL, ClientID: "native", RedirectURL: "http://127.0.0.1:0/cb"},
		func(u string) { go browser(t, u) })
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.SaveLogin(path, &remote.LoginRecord{Issuer: ims.URL, ClientID: "native", RefreshToken: tok.RefreshToken}); err != nil {
		t.Fatal(err)
	}
}

// TestAuthTokensExpiringEverySecondsKeepMountWorking: access tokens live 3 s
// (refresh tokens rotate on every use) and the mount keeps reading and
// publishing for a minute without one failed operation.
func TestAuthTokensExpiringEverySecondsKeepMountWorking(t *testing.T) {
	requireFUSE(t)
	soak := time.Minute
	if v := os.Getenv("EVOFS_AUTH_SOAK"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			soak = d
		}
	}
	ims := authIMS(t, emulator.IMSOptions{TokenTTL: 3 * time.Second, RotateRefreshTokens: true})
	ts := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	store := filepath.Join(t.TempDir(), "evofs", "login.json")
	signIn(t, ims, store)
	log, logBuf := testLogger(t)
	src, err := remote.NewRefreshSource(remote.OAuthConfig{Logger: log}, store)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.PutFile(ts.Org, ts.Workspace, "seed/remote.txt", []byte("from the service")); err != nil {
		t.Fatal(err)
	}
	m := authMount(t, ts, src)

	want := map[string][]byte{}
	var failures atomic.Int32
	fail := func(format string, a ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, a...)
		}
	}
	start := time.Now()
	for i := 0; time.Since(start) < soak; i++ {
		name := fmt.Sprintf("soak/f%03d.txt", i%40)
		data := []byte(fmt.Sprintf("round %d at %s\n", i, time.Since(start)))
		if err := os.MkdirAll(m.path("soak"), 0o755); err != nil {
			fail("mkdir: %v", err)
		}
		if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
			fail("write %s: %v", name, err)
			continue
		}
		want[name] = data
		if got, err := os.ReadFile(m.path("seed/remote.txt")); err != nil || string(got) != "from the service" {
			fail("read seed: %q %v", got, err)
		}
		if _, err := os.ReadDir(m.path("soak")); err != nil {
			fail("readdir: %v", err)
		}
		if i%10 == 0 {
			// A remote change must show up: listing and downloading go on.
			rn := fmt.Sprintf("seed/r%03d.txt", i)
			ts.PutFile(ts.Org, ts.Workspace, rn, []byte(rn))
			if !eventually(t, 10*time.Second, func() bool {
				b, err := os.ReadFile(m.path(rn))
				return err == nil && string(b) == rn
			}) {
				fail("remote file %s never readable through the mount", rn)
			}
		}
		time.Sleep(150 * time.Millisecond) // pacing the workload over the soak, not synchronisation
	}
	m.drain()
	for name, data := range want {
		got, _, _, err := ts.ReadFile(ts.Org, ts.Workspace, name)
		if err != nil || !bytes.Equal(got, data) {
			fail("%s on the service: %q %v, want %q", name, got, err, data)
		}
	}
	for _, st := range m.core.Queue().Status() {
		fail("still pending: %s %s %s", st.Path, st.State, st.LastError)
	}
	if n := ims.Issued("refresh_token"); n < int(soak/(3*time.Second)) {
		t.Errorf("only %d refreshes in %s with 3 s tokens", n, soak)
	}
	assertNoTokens(t, "mount log", m.log.String()+logBuf.String())
	if st, err := os.Stat(store); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("login store mode after rotations: %v %v", st, err)
	}
	t.Logf("%d refreshes, %d files, %d requests", ims.Issued("refresh_token"), len(want), ts.Requests(emulator.OpAny))
}

// ---- the evofs binary ----

type authProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncWriter
	done           chan struct{}
}

// authBinary builds the evofs and mount.evofs commands into the test's temp
// dir (the build cache makes every build after the first a link) and
// returns the evofs path.
func authBinary(t *testing.T) string {
	t.Helper()
	root, _, _ := strings.Cut(t.Name(), "/")
	if authBin[root] != "" {
		return authBin[root]
	}
	dir := t.TempDir()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	out, err := exec.Command(goTool, "build", "-o", dir+"/", "evofs/cmd/evofs", "evofs/cmd/mount.evofs").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	authBin[root] = filepath.Join(dir, "evofs")
	return authBin[root]
}

// authBin caches authBinary per test (tests of this file do not run in parallel).
var authBin = map[string]string{}

// authEnv is a private HOME/XDG tree for one test's evofs runs.
func authEnv(t *testing.T) (env []string, configHome string) {
	home := t.TempDir()
	configHome = filepath.Join(home, ".config")
	env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + configHome, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share")}
	return env, configHome
}

func authStart(t *testing.T, env []string, args ...string) *authProc {
	t.Helper()
	p := &authProc{stdout: &syncWriter{}, stderr: &syncWriter{}, done: make(chan struct{})}
	p.cmd = exec.Command(authBinary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EVO_") && !strings.HasPrefix(kv, "EVOFS_") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s\n--- stdout:\n%s\n--- stderr:\n%s", strings.Join(p.cmd.Args, " "), tail(p.stdout.String(), 3000), tail(p.stderr.String(), 6000))
		}
	})
	return p
}

func (p *authProc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%v did not exit within %s", p.cmd.Args, d)
		return 0
	}
}

// authRun runs evofs to completion.
func authRun(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := authStart(t, env, args...)
	code = p.wait(t, 90*time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

// loginCLI runs `evofs login`, plays the browser with the printed URL and
// waits for it to finish.
func loginCLI(t *testing.T, env []string, ims *emulator.TestIMS, extra ...string) {
	t.Helper()
	args := append([]string{"login", "--issuer", ims.URL, "--client-id", "native", "--redirect-url", "http://127.0.0.1:0/signin-callback", "--no-browser"}, extra...)
	p := authStart(t, env, args...)
	var authURL string
	if !eventually(t, 30*time.Second, func() bool {
		for _, f := range strings.Fields(p.stderr.String()) {
			if strings.HasPrefix(f, ims.URL+"/connect/authorize?") {
				authURL = f
				return true
			}
		}
		return false
	}) {
		t.Fatal("login printed no sign-in URL")
	}
	browser(t, authURL)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("login exited %d: %s", code, p.stderr.String())
	}
}

func unmountDir(t *testing.T, dir string) {
	t.Helper()
	if !eventually(t, 20*time.Second, func() bool { return umount(dir, false) == nil || !isMountedAt(dir) }) {
		detach(dir)
		t.Errorf("could not unmount %s", dir)
	}
}

// isMountedAt reports whether dir is a mount point (own copy: /proc/self/mountinfo).
func isMountedAt(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == dir {
			return true
		}
	}
	return false
}

// TestAuthLoginDiscoveryProfileDaemon: login in a browser, list workspaces,
// then `evofs mount --profile work --daemon DIR` finds the right hub by
// Discovery, resolves names to ids, returns once mounted and publishes.
func TestAuthLoginDiscoveryProfileDaemon(t *testing.T) {
	requireFUSE(t)
	ims := authIMS(t, emulator.IMSOptions{TokenTTL: 5 * time.Second, RotateRefreshTokens: true})
	hubA := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	hubB := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	ims.SetOrgs([]emulator.DiscoveryOrg{
		{ID: hubA.Org, Name: "Acme Mining", HubURL: hubA.URL, HubName: "Hub A"},
		{ID: hubB.Org, Name: "Beta Geo", HubURL: hubB.URL, HubName: "Hub B"},
	})
	hubA.AddWorkspace(hubA.Org, hubA.Workspace, "Drillholes") // same name, other org: must not be picked
	hubB.AddWorkspace(hubB.Org, uuid.New(), "Scratch")
	hubB.AddWorkspace(hubB.Org, hubB.Workspace, "Drillholes")
	hubB.PutFile(hubB.Org, hubB.Workspace, "collars.csv", []byte("id,x,y\n1,2,3\n"))

	env, cfgHome := authEnv(t)
	loginCLI(t, env, ims, "--discovery-url", ims.URL)
	store := filepath.Join(cfgHome, "evofs", "login.json")
	st, err := os.Stat(store)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("login store: %v %v", st, err)
	}
	if dst, _ := os.Stat(filepath.Dir(store)); dst.Mode().Perm() != 0o700 {
		t.Fatalf("login store dir mode %v", dst.Mode())
	}

	code, out, errOut := authRun(t, env, "workspaces")
	if code != 0 {
		t.Fatalf("workspaces exited %d: %s", code, errOut)
	}
	for _, w := range []string{"Acme Mining", "Beta Geo", "Hub B", "Scratch", hubB.Workspace.String(), "editor"} {
		if !strings.Contains(out, w) {
			t.Errorf("workspaces output lacks %q:\n%s", w, out)
		}
	}

	logFile := filepath.Join(t.TempDir(), "evofs.log")
	cfg := filepath.Join(cfgHome, "evofs", "config")
	os.WriteFile(cfg, []byte(fmt.Sprintf("# test profiles\n[work]\norg = Beta Geo\nworkspace = drillholes\ncache-dir = %s\nlog-file = %s\nlog-level = debug\npoll-interval = 1s\nwrite-back-delay = 100ms\n",
		t.TempDir(), logFile)), 0o600)
	mp := t.TempDir()
	t.Cleanup(func() { detach(mp) })
	code, _, errOut = authRun(t, env, "mount", "--profile", "work", "--daemon", mp)
	if code != 0 {
		t.Fatalf("mount --daemon exited %d: %s", code, errOut)
	}
	if !isMountedAt(mp) {
		t.Fatal("mount --daemon returned before the mount was ready")
	}
	got, err := os.ReadFile(filepath.Join(mp, "collars.csv"))
	if err != nil || string(got) != "id,x,y\n1,2,3\n" {
		t.Fatalf("file from hub B: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "new.txt"), []byte("hello B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !eventually(t, 20*time.Second, func() bool {
		b, _, _, err := hubB.ReadFile(hubB.Org, hubB.Workspace, "new.txt")
		return err == nil && string(b) == "hello B"
	}) {
		t.Fatal("new.txt never reached hub B")
	}
	if _, _, _, err := hubA.ReadFile(hubA.Org, hubA.Workspace, "new.txt"); err == nil {
		t.Fatal("new.txt went to the wrong hub")
	}
	unmountDir(t, mp)
	if !eventually(t, 30*time.Second, func() bool { return !isMountedAt(mp) }) {
		t.Fatal("still mounted")
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "hub found through Discovery") {
		t.Errorf("log lacks the discovery line:\n%s", tail(string(b), 3000))
	}
	assertNoTokens(t, "daemon log", string(b))
	assertNoTokens(t, "login/workspaces output", out+errOut)
	if st, err := os.Stat(logFile); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode %v", st.Mode())
	}

	// Logout forgets the login; mount then falls back to... nothing: an error.
	if code, _, e := authRun(t, env, "logout"); code != 0 {
		t.Fatalf("logout: %d %s", code, e)
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("logout left the login store")
	}
}

// TestAuthClientCredentialsViewerReadOnly: a service app with the viewer
// role mounts by workspace name with client credentials; the mount is
// read-only and says so; SIGTERM stops it cleanly.
func TestAuthClientCredentialsViewerReadOnly(t *testing.T) {
	requireFUSE(t)
	ims := authIMS(t, emulator.IMSOptions{TokenTTL: 2 * time.Second})
	ts := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	ims.SetOrgs([]emulator.DiscoveryOrg{{ID: ts.Org, Name: "Acme", HubURL: ts.URL}})
	ts.AddWorkspace(ts.Org, ts.Workspace, "Survey Data")
	ts.PutFile(ts.Org, ts.Workspace, "a/readme.txt", []byte("read me"))
	env, _ := authEnv(t)
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, []byte("viewer-secret\n"), 0o600)
	mp := t.TempDir()
	p := authStart(t, env, "mount", "--issuer", ims.URL, "--discovery-url", ims.URL, "--client-id", "svc-viewer",
		"--client-secret-file", secretFile, "--workspace", "Survey Data", "--cache-dir", t.TempDir(), "--poll-interval", "300ms", mp)
	t.Cleanup(func() { detach(mp) })
	if !eventually(t, 30*time.Second, func() bool { return isMountedAt(mp) || p.cmd.ProcessState != nil }) || !isMountedAt(mp) {
		t.Fatalf("not mounted: %s", p.stderr.String())
	}
	if !eventually(t, 30*time.Second, func() bool { return strings.Contains(p.stderr.String(), "mounted read-only") }) {
		t.Errorf("no read-only notice on stderr")
	}
	if e := p.stderr.String(); !strings.Contains(e, "viewer role in workspace") || !strings.Contains(e, "Survey Data") {
		t.Errorf("notice does not name the role and workspace")
	}
	// Reads work across several token lifetimes.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(mp, "a", "readme.txt")); err != nil || string(b) != "read me" {
			t.Fatalf("read: %q %v", b, err)
		}
		time.Sleep(200 * time.Millisecond) // spreading reads over token lifetimes
	}
	err := os.WriteFile(filepath.Join(mp, "a", "new.txt"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write on a viewer mount: %v, want EROFS", err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if isMountedAt(mp) {
		t.Fatal("still mounted after SIGTERM")
	}
	assertNoTokens(t, "stderr", p.stderr.String())
	if ims.Issued("client_credentials") < 2 {
		t.Errorf("client credentials used %d times over several 2 s token lifetimes", ims.Issued("client_credentials"))
	}
}

// TestAuthErrorsAreOneSentence: the failures people meet first give one
// line on stderr and exit 1.
func TestAuthErrorsAreOneSentence(t *testing.T) {
	ims := authIMS(t, emulator.IMSOptions{})
	ts := emulator.NewTestServer(t, emulator.Options{Verify: ims.Verify})
	ims.SetOrgs([]emulator.DiscoveryOrg{{ID: ts.Org, Name: "Acme", HubURL: ts.URL}})
	ts.AddWorkspace(ts.Org, ts.Workspace, "Survey Data")
	env, cfgHome := authEnv(t)
	authBinary(t) // built once for the subtests
	base := []string{"--issuer", ims.URL, "--discovery-url", ims.URL, "--log-level", "error"}
	mp := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("not-a-valid-token\n"), 0o600)
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown workspace", []string{"EVO_CLIENT_SECRET=svc-secret"}, []string{"--client-id", "svc", "--workspace", "Nope"}, `no workspace named "Nope"`},
		{"unknown org", []string{"EVO_CLIENT_SECRET=svc-secret"}, []string{"--client-id", "svc", "--org", "Zeta", "--workspace", "Survey Data"}, `no organisation named "Zeta"`},
		{"wrong secret", []string{"EVO_CLIENT_SECRET=wrong"}, []string{"--client-id", "svc", "--workspace", "Survey Data"}, "client id (or client secret)"},
		{"wrong client id", []string{"EVO_CLIENT_SECRET=x"}, []string{"--client-id", "nobody", "--workspace", "Survey Data"}, "client id (or client secret)"},
		{"unreachable discovery", []string{"EVO_CLIENT_SECRET=svc-secret"}, []string{"--client-id", "svc", "--discovery-url", "http://127.0.0.1:1", "--workspace", "Survey Data"}, "cannot reach Evo Discovery"},
		{"revoked login", nil, []string{"--workspace", "Survey Data"}, "expired or was revoked"},
		{"not signed in with host", nil, []string{"--login-file", filepath.Join(cfgHome, "none.json"), "--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String()}, "needs credentials and none were found: run 'evofs login"},
		// Never the embedded local service in place of a named workspace.
		{"named workspace not signed in", nil, []string{"--login-file", filepath.Join(cfgHome, "none.json"), "--org", "Acme Mining", "--workspace", "Drillholes"}, `workspace "Drillholes" needs credentials`},
		{"nothing named not signed in", nil, []string{"--login-file", filepath.Join(cfgHome, "none.json")}, "pass --local for the embedded local workspace"},
		{"local with a workspace", nil, []string{"--local", "--workspace", "Drillholes"}, "--local mounts the embedded local workspace"},
		{"wrong EVO_TOKEN", []string{"EVO_TOKEN=wrong"}, []string{"--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String()}, "the token came from $EVO_TOKEN"},
		{"wrong token file", nil, []string{"--token-file", tokenFile, "--host", ts.URL, "--org", ts.Org.String(), "--workspace", ts.Workspace.String()}, "the token came from --token-file " + tokenFile},
	}
	// A login whose refresh token the issuer does not know (consent revoked).
	remote.SaveLogin(filepath.Join(cfgHome, "evofs", "login.json"), &remote.LoginRecord{Issuer: ims.URL, ClientID: "native", RefreshToken: "revoked"})
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			args := append(append(append([]string{"mount"}, base...), c.args...), mp)
			code, _, errOut := authRun(t, append(append([]string{}, env...), c.env...), args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "evofs: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant one line with %q", code, errOut, c.want)
			}
			if strings.Contains(errOut, "HTTP") || strings.Contains(errOut, "oauth2") {
				t.Errorf("raw protocol details in: %s", errOut)
			}
			assertNoTokens(t, "stderr", errOut)
		})
	}
}

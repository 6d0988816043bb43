package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"evofs/cache"
	"evofs/fusefs"
	"evofs/fusefs/control"
	"evofs/fusefs/metrics"
	"evofs/fusefs/vfs"
	"evofs/remote"
	"evofs/remote/emulator"
	"evofs/writeback"
)

// The embedded local service's workspace: fixed ids so that the local data
// and the cache line up across runs.
var (
	localOrg       = uuid.MustParse("00000000-0000-4000-8000-00000000e0f5")
	localWorkspace = uuid.MustParse("00000000-0000-4000-8000-00000000a0c1")
)

type mountFlags struct {
	host, org, workspace              string
	cacheDir, localData, logLevel     string
	readOnly, syncClose, allowOther   bool
	debugFuse                         bool
	pollInterval, writeBackDelay      time.Duration
	shutdownTimeout, attrTTL, entryTT time.Duration
	uid, gid                          int
	transfers                         int
	cacheSize                         byteSize
	maxDirRename                      byteSize
	localPatterns                     string

	signin            signinFlags
	profile, config   string
	local, daemon     bool
	allowNonEmpty     bool
	logFile           string
	logFormat         string
	logFileMaxSize    byteSize
	logFileMaxBackups int
	umask             string
	fileMode          string
	dirMode           string
	caFile            string
	bwlimit           string
	metricsAddr       string
}

// defineMountFlags declares the mount flags on fl (also used to know which
// keys a profile may set).
func defineMountFlags(fl *pflag.FlagSet, m *mountFlags) {
	fl.StringVar(&m.host, "host", "", "hub URL of the File API (default: found through Discovery when signed in, else the embedded local service)")
	fl.StringVar(&m.org, "org", "", "organisation name or id (optional when the account has one)")
	fl.StringVar(&m.workspace, "workspace", "", "workspace name or id")
	m.signin.register(fl)
	fl.StringVar(&m.profile, "profile", "", "take defaults for these flags from this profile of the profiles file")
	fl.StringVar(&m.config, "config", "", "profiles file (default: $"+envConfig+" or evofs/config under the user's config dir)")
	fl.BoolVar(&m.local, "local", false, "mount the embedded local workspace (no account needed; its files live under --local-data)")
	fl.BoolVar(&m.allowNonEmpty, "allow-non-empty", false, "mount over a folder that holds files (they are hidden until unmounted)")
	fl.BoolVar(&m.daemon, "daemon", false, "run in the background; return once the mount is ready")
	fl.StringVar(&m.logFile, "log-file", "", "append the log to this file instead of stderr (rotated; reopened on SIGHUP; --daemon default: evofs.log in the cache dir)")
	fl.StringVar(&m.logFormat, "log-format", "text", "log format: text or json")
	m.logFileMaxSize = 100 << 20
	fl.Var(&m.logFileMaxSize, "log-file-max-size", "rotate the log file when it passes this size (suffixes as --cache-size; whole MiB)")
	fl.IntVar(&m.logFileMaxBackups, "log-file-max-backups", 5, "rotated log files kept (0: all)")
	fl.StringVar(&m.umask, "umask", "", "octal umask applied to the default file and folder modes (e.g. 027)")
	fl.StringVar(&m.fileMode, "file-mode", "0644", "octal mode of files never chmod-ed on this machine (e.g. those from the service)")
	fl.StringVar(&m.dirMode, "dir-mode", "0755", "octal mode of folders never chmod-ed on this machine")
	fl.StringVar(&m.bwlimit, "bwlimit", "", "cap blob transfers in bytes/s, RATE or UP:DOWN (e.g. 10M or 1M:20M; K/M/G are powers of 1024)")
	fl.StringVar(&m.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; off when empty)")
	fl.StringVar(&m.cacheDir, "cache-dir", "", "cache directory (default: per org/workspace under the user's cache dir)")
	fl.StringVar(&m.localData, "local-data", "", "data directory of the embedded local service (default: under the user's data dir)")
	fl.StringVar(&m.logLevel, "log-level", "info", "log level (debug, info, warn, error)")
	fl.StringVar(&m.caFile, "ca-file", "", "also trust the CA certificates in this PEM file (a TLS-intercepting proxy, evofs serve --tls); SSL_CERT_FILE replaces the system's")
	fl.BoolVar(&m.readOnly, "read-only", false, "mount read-only")
	fl.BoolVar(&m.syncClose, "sync-close", false, "close() waits until the file is published")
	fl.BoolVar(&m.allowOther, "allow-other", false, "let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root)")
	fl.BoolVar(&m.debugFuse, "debug-fuse", false, "log every FUSE request")
	fl.DurationVar(&m.pollInterval, "poll-interval", 30*time.Second, "how often remote changes are looked for (0: never)")
	fl.DurationVar(&m.writeBackDelay, "write-back-delay", 2*time.Second, "how long a closed file waits before it is published (temp files renamed or deleted sooner never upload)")
	fl.DurationVar(&m.shutdownTimeout, "shutdown-timeout", time.Minute, "how long unmount waits for pending publishes (the rest resumes at the next mount)")
	fl.DurationVar(&m.attrTTL, "attr-ttl", time.Second, "kernel attribute cache lifetime")
	fl.DurationVar(&m.entryTT, "entry-ttl", time.Second, "kernel name cache lifetime")
	fl.IntVar(&m.uid, "uid", os.Getuid(), "owner of every file")
	fl.IntVar(&m.gid, "gid", os.Getgid(), "group of every file")
	fl.IntVar(&m.transfers, "transfers", writeback.DefaultTransfers, "parallel publishes (small files publish this many at once)")
	m.cacheSize, m.maxDirRename = 10<<30, 1<<30
	fl.Var(&m.cacheSize, "cache-size", "content cache budget (bytes; K/M/G/T suffixes are powers of 1024: 10G, 512Mi)")
	fl.Var(&m.maxDirRename, "max-dir-rename", "largest folder renamed in place (bytes, suffixes as --cache-size); above it rename answers EXDEV and mv copies")
	fl.StringVar(&m.localPatterns, "local-patterns", strings.Join(vfs.DefaultLocalPatterns, ","), "comma-separated name patterns of files kept local (lock, swap, backup files)")
}

func mountCommand() *cobra.Command {
	m := &mountFlags{}
	c := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount a workspace (--local: the embedded local workspace, no account needed)",
		Long: `Mount a workspace at MOUNTPOINT (an existing, empty folder) and serve it until unmounted
(umount, fusermount3 -u) or stopped (Ctrl-C, SIGTERM); pending files are published first.

Signed in ('evofs login'), the workspace is found through Evo Discovery by name or id;
--host, --org and --workspace ids skip Discovery; --local mounts the embedded local service.`,
		Args: exactArgs(1, "exactly one MOUNTPOINT"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := m.finish(c.Flags()); err != nil {
				return err
			}
			return runMount(m, args[0])
		},
	}
	defineMountFlags(c.Flags(), m)
	return c
}

// finish applies the profile and checks what the flags alone can tell.
func (m *mountFlags) finish(fl *pflag.FlagSet) error {
	if err := applyProfile(fl, m.config, m.profile); err != nil {
		return err
	}
	if m.caFile != "" {
		if err := remote.TrustCAFile(m.caFile); err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
	}
	if m.umask != "" {
		if _, err := strconv.ParseUint(m.umask, 8, 32); err != nil {
			return usageErr(fmt.Errorf("--umask %q is not an octal number", m.umask))
		}
	}
	for _, f := range []struct{ name, v string }{{"file-mode", m.fileMode}, {"dir-mode", m.dirMode}} {
		if v, err := strconv.ParseUint(f.v, 8, 32); err != nil || v > 0o7777 || v == 0 {
			return usageErr(fmt.Errorf("--%s %q is not an octal mode between 1 and 7777", f.name, f.v))
		}
	}
	if _, _, err := parseBwlimit(m.bwlimit); err != nil {
		return usageErr(err)
	}
	return nil
}

// runMount mounts a workspace and serves it until unmounted or signalled.
func runMount(mf *mountFlags, mountpoint string) (err error) {
	if mf.daemon && os.Getenv(envReadyFD) == "" {
		return runDaemonParent(os.Args[1:])
	}
	// In a daemon child, tell the parent why the mount failed (it prints it).
	defer func() {
		if err != nil {
			notifyFailed(err)
		}
	}()
	log, logOut, err := mountLogger(mf)
	if err != nil {
		return err
	}
	defer logOut.close()
	var umask uint64
	if mf.umask != "" {
		umask, _ = strconv.ParseUint(mf.umask, 8, 32) // validated when parsed
	}
	fileMode, _ := strconv.ParseUint(mf.fileMode, 8, 32) // validated when parsed
	dirMode, _ := strconv.ParseUint(mf.dirMode, 8, 32)
	// A closed stderr pipe (`evofs mount ... | tee log`, then Ctrl-C) must
	// not kill the mount before it has unmounted and published: writes to
	// it fail quietly instead (see newLogger).
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	absMnt, err := checkMountpoint(mountpoint, mf.allowNonEmpty)
	if err != nil {
		return err
	}

	// Until the mount is up a refused sign-in is reported once, as the
	// command's error; afterwards the sign-in component logs it.
	signinLog, loud := quietUntilReady(log)
	creds, err := mf.signin.resolveCredentials(signinLog)
	if err != nil {
		return err
	}
	// The embedded local service only when asked for; anything else needs
	// credentials, so that a missing sign-in never mounts the wrong place.
	useEmbedded := mf.local
	host, org, ws, tokens := mf.host, uuid.Nil, uuid.Nil, remote.TokenSource(nil)
	readOnly, roleNote := mf.readOnly, ""
	if useEmbedded {
		if mf.host != "" || mf.org != "" || mf.workspace != "" {
			return errors.New("--local mounts the embedded local workspace: it takes no --host, --org or --workspace")
		}
		local, err := startEmbedded(mf, absMnt, log)
		if err != nil {
			return err
		}
		defer local.close()
		host, org, ws, tokens = local.url, localOrg, localWorkspace, remote.StaticToken(local.token)
	} else {
		if creds.tokens == nil {
			return notSignedIn(mf)
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		t, err := resolveTarget(rctx, creds, mf.host, mf.org, mf.workspace, log)
		cancel()
		if err != nil {
			return err
		}
		host, org, ws, tokens = t.host, t.org, t.ws, creds.tokens
		if t.role == "viewer" && !readOnly {
			readOnly = true
			roleNote = fmt.Sprintf("you have the viewer role in workspace %q: mounted read-only", firstNonEmpty(t.wsName, t.ws.String()))
		}
		log.WithFields(logrus.Fields{"org": firstNonEmpty(t.orgName, t.org.String()), "workspace": firstNonEmpty(t.wsName, t.ws.String()),
			"role": t.role, "credentials": creds.kind}).Info("workspace resolved")
	}
	cacheDir := mf.cacheDir
	if cacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache dir (set --cache-dir): %w", err)
		}
		cacheDir = filepath.Join(base, "evofs", org.String(), ws.String())
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	// Before the journal or the cache are touched: one mount per cache dir.
	unlock, err := lockCacheDir(cacheDir, absMnt)
	if err != nil {
		return err
	}
	defer unlock()
	readyNote := roleNote
	if readyPipe() != nil && mf.logFile == "" {
		path := filepath.Join(cacheDir, defaultLogFile)
		logOut.useFile(path, mf.logFileMaxSize, mf.logFileMaxBackups)
		readyNote = strings.TrimPrefix(roleNote+"; log in "+path, "; ")
	}
	upLimit, downLimit, _ := parseBwlimit(mf.bwlimit) // validated when parsed
	rcfg := remote.Config{BaseURL: host, Org: org, Workspace: ws, Tokens: tokens,
		UploadLimit: upLimit, DownloadLimit: downLimit, Logger: log.WithField("component", "remote")}
	var met *metrics.Metrics
	if mf.metricsAddr != "" {
		met = metrics.New()
		rcfg.HTTPClient = &http.Client{Transport: met.Transport(remote.NewTransport(8))}
		rcfg.OnRetry = met.OnRetry
		met.Tokens(tokens)
	}
	client, err := remote.New(rcfg)
	if err != nil {
		return err
	}
	if !useEmbedded {
		// One cheap call, so that a wrong token, workspace or hub is one
		// sentence here rather than a failed mount later.
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, perr := client.List(pctx, remote.ListOptions{Limit: 1})
		cancel()
		if _, serr := os.Stat(filepath.Join(cacheDir, "listing.json")); perr != nil && remote.Retryable(perr) && serr == nil {
			log.WithError(perr).Warn("the service is unreachable: starting offline from the last listing known")
		} else if perr != nil {
			return explainLookup(perr, "the hub "+remote.RedactURL(host), creds)
		}
	}
	c, err := cache.Open(cache.Config{Dir: filepath.Join(cacheDir, "data"), MaxBytes: int64(mf.cacheSize), Logger: log.WithField("component", "cache")})
	if err != nil {
		return err
	}
	defer c.Close()
	var patterns []string
	for _, p := range strings.Split(mf.localPatterns, ",") {
		if p = strings.TrimSpace(p); p != "" {
			patterns = append(patterns, p)
		}
	}
	wcfg := writeback.Config{Dir: filepath.Join(cacheDir, "journal"), Delay: mf.writeBackDelay, Transfers: mf.transfers,
		Logger: log.WithField("component", "writeback")}
	if met != nil {
		wcfg.ObservePublish = met.Publish()
	}
	core, err := vfs.New(vfs.Config{
		UID: uint32(mf.uid), GID: uint32(mf.gid), ReadOnly: readOnly,
		PollInterval: mf.pollInterval, LocalPatterns: patterns, MaxDirRenameBytes: int64(mf.maxDirRename),
		SyncClose: mf.syncClose, Umask: uint32(umask), FileMode: uint32(fileMode), DirMode: uint32(dirMode),
		MetaDir: filepath.Join(cacheDir, "meta"), ListingFile: filepath.Join(cacheDir, "listing.json"), ControlSocket: filepath.Join(cacheDir, control.SocketName),
		Writeback: wcfg,
		Logger:    log.WithField("component", "vfs"),
	}, client, c)
	if err != nil {
		return err
	}
	if err := core.Start(ctx); err != nil {
		core.Close()
		return err
	}
	if met != nil {
		met.Queue(core.Queue().Status)
		met.Cache(c.Usage)
		addr, stopMetrics, err := met.Serve(mf.metricsAddr)
		if err != nil {
			core.Close()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer stopMetrics()
		log.WithField("url", "http://"+addr.String()+"/metrics").Info("serving metrics")
	}
	ctl, err := control.Listen(filepath.Join(cacheDir, control.SocketName), absMnt, core, log.WithField("component", "control"))
	if err != nil {
		core.Close()
		return err
	}
	defer ctl.Close()
	fo := fusefs.Options{
		AttrTimeout: mf.attrTTL, EntryTimeout: mf.entryTT, AllowOther: mf.allowOther, Debug: mf.debugFuse,
		Logger: log.WithField("component", "fuse"),
	}
	if met != nil {
		fo.Observe = met.Fuse()
	}
	server, err := fusefs.Mount(absMnt, core, fo)
	if err != nil {
		// go-fuse may leave the kernel mount of a start that failed.
		cleanupFailedMount(absMnt, log)
		core.Close()
		return explainMountFailure(err)
	}
	log.WithField("mountpoint", absMnt).WithField("host", remote.RedactURL(host)).Info("mounted; unmount with 'umount " + mountpoint + "' or Ctrl-C")
	if roleNote != "" {
		log.Warn(roleNote)
	}
	notifyReady(readyNote)
	sdNotify("READY=1", log)
	loud()
	// SIGHUP (logrotate) reopens the log file; it never stops the mount.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			logOut.reopen()
			log.Info("SIGHUP: log file reopened")
		}
	}()
	unmounted := make(chan struct{})
	go func() { server.Wait(); close(unmounted) }()
	select {
	case <-ctx.Done():
		log.Info("signal received: unmounting")
		unmount(server.Unmount, absMnt, log)
		<-unmounted
	case <-unmounted:
		log.Info("unmounted")
	}
	sdNotify("STOPPING=1", log)
	return shutdown(core, mf.shutdownTimeout, log)
}

// unmount retries while the mount is busy (an open file, a shell in it);
// a second SIGINT/SIGTERM detaches it lazily instead (it goes once the
// last program using it lets go; pending files are published then).
func unmount(do func() error, mountpoint string, log *logrus.Entry) {
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	delay := 100 * time.Millisecond
	for i := 0; ; i++ {
		err := do()
		if err == nil {
			return
		}
		if i == 0 || i%10 == 0 {
			log.WithError(err).Warn("unmount failed (is a program still using the mount?); retrying; signal again to detach it lazily")
		}
		t := time.NewTimer(delay)
		select {
		case <-again:
			t.Stop()
			if err := forceUnmount(mountpoint); err != nil {
				log.WithError(err).Warn("lazy unmount failed; still retrying")
				continue
			}
			log.Warn("detached lazily: the mount goes away once the programs using it let go")
			return
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// shutdown publishes what is pending within the timeout and stops the core.
// Anything left stays journaled and resumes at the next mount.
func shutdown(core *vfs.FS, timeout time.Duration, log *logrus.Entry) error {
	left := len(core.Queue().Status())
	if left > 0 {
		log.WithField("pending", left).Infof("publishing pending files (up to %s)", timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	derr := core.Drain(ctx)
	if err := core.Close(); err != nil {
		log.WithError(err).Warn("stopping writeback")
	}
	if derr != nil {
		for _, st := range core.Queue().Status() {
			log.WithField("path", st.Path).WithField("state", st.State).WithField("last_error", st.LastError).Warn("not published yet; it resumes at the next mount with this cache dir")
		}
		return &exitError{code: exitUnpublished, err: fmt.Errorf("unpublished files remain (kept in the cache, resumed at the next mount): %w", derr)}
	}
	return nil
}

// notSignedIn is the sentence for a mount without credentials: naming a
// workspace needs a sign-in; naming nothing needs a choice.
func notSignedIn(mf *mountFlags) error {
	how := "run 'evofs login --client-id ID', or pass credentials (EVO_TOKEN, --token-file, or a service app's --client-id with " + envClientSecret + ")"
	switch {
	case mf.workspace != "":
		return fmt.Errorf("workspace %q needs credentials and none were found: %s", mf.workspace, how)
	case mf.org != "" || mf.host != "":
		return fmt.Errorf("mounting an Evo workspace needs credentials and none were found: %s", how)
	}
	return errors.New("nothing to mount: pass --local for the embedded local workspace (no account needed), or sign in with 'evofs login --client-id ID' to mount an Evo workspace")
}

// embedded is the in-process local service behind a --local mount.
type embedded struct {
	url, token string
	close      func()
}

func startEmbedded(mf *mountFlags, mountpoint string, log *logrus.Entry) (*embedded, error) {
	dir := mf.localData
	if dir == "" {
		base := os.Getenv("XDG_DATA_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, fmt.Errorf("no data dir (set --local-data): %w", err)
			}
			base = filepath.Join(home, ".local", "share")
		}
		dir = filepath.Join(base, "evofs", "local")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	srv, err := emulator.New(emulator.Options{
		DataDir: dir,
		Owner:   "mounted at " + mountpoint,
		Tokens:  map[string]emulator.Grant{token: {User: emulator.LocalUser, Role: emulator.RoleOwner}},
		Logger:  quieter(log, logrus.WarnLevel).WithField("component", "local-service"),
	})
	if err != nil {
		return nil, fmt.Errorf("starting the embedded local service: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveUntil(sctx, ln, srv, log); err != nil {
			log.WithError(err).Error("embedded local service stopped")
		}
	}()
	log.WithField("data", dir).Info("using the embedded local service (no account needed)")
	return &embedded{url: "http://" + ln.Addr().String(), token: token, close: func() {
		cancel()
		<-done
		srv.Close()
	}}, nil
}

// quieter returns a logger that logs at most at level (unless log is more verbose).
func quieter(log *logrus.Entry, level logrus.Level) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(log.Logger.Out)
	l.SetFormatter(log.Logger.Formatter)
	l.SetLevel(min(level, log.Logger.GetLevel()))
	if log.Logger.GetLevel() >= logrus.DebugLevel {
		l.SetLevel(log.Logger.GetLevel())
	}
	return logrus.NewEntry(l)
}

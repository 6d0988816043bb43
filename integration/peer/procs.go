package main

// Child processes and mounts: everything the bench starts is registered
// here and stopped by cleanup, also when a row fails or the bench is
// interrupted (SIGINT/SIGTERM).

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	cleanupMu   sync.Mutex
	cleanups    []func()
	cleanupOnce sync.Once
	cleaning    bool // cleanup has begun: what registers now is undone at once
)

// atCleanup registers fn; cleanup runs them last first. Once cleanup has
// begun (a signal while a row still runs), fn runs at once.
func atCleanup(fn func()) {
	cleanupMu.Lock()
	if cleaning {
		cleanupMu.Unlock()
		fn()
		return
	}
	cleanups = append(cleanups, fn)
	cleanupMu.Unlock()
}

// cleanup runs every registered function once, last registered first. A
// second caller (main after a signal) waits until the first has finished.
func cleanup() {
	cleanupOnce.Do(func() {
		cleanupMu.Lock()
		cleaning = true
		fns := cleanups
		cleanups = nil
		cleanupMu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// failure is what fail panics with; main recovers it, cleans up and exits 1.
type failure struct{ err error }

func fail(format string, args ...any) { panic(failure{fmt.Errorf(format, args...)}) }

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

// proc is a child process in its own process group, with its output in a
// log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs name with args (env added to the bench's own), output to
// LOGDIR/label.log. It is killed at cleanup if still running.
func start(label string, env []string, name string, args ...string) *proc {
	logPath := filepath.Join(cfg.tmp, "logs", label+".log")
	check(os.MkdirAll(filepath.Dir(logPath), 0o755), "log dir")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	check(err, "log file")
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	check(cmd.Start(), "starting "+label)
	lf.Close()
	p := &proc{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	atCleanup(func() { p.kill() })
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// stop asks the process to end (SIGTERM) and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	syscall.Kill(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		fmt.Fprintf(os.Stderr, "bench-peer: %s did not stop within %v; killing it\n", p.name, grace)
		p.kill()
	}
}

// waitLine waits for a line of p's log matching re and returns its first
// submatch.
func (p *proc) waitLine(re *regexp.Regexp, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(p.log); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					return m[1]
				}
			}
		}
		if p.exited() {
			fail("%s exited before it was ready:\n%s", p.name, p.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	fail("%s was not ready within %v:\n%s", p.name, timeout, p.tail(20))
	return ""
}

var sigRe = regexp.MustCompile(`(?i)(sig=)[^&\s"']+`)

// tail is the last n lines of p's log, with URL signatures redacted.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return sigRe.ReplaceAllString(strings.Join(lines, "\n"), "${1}REDACTED")
}

// procStatusKiB reads a kB field ("VmHWM:", "VmRSS:") of /proc/PID/status.
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err, "reading /proc status")
	for _, l := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(l, field); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(f), " kB"), 10, 64)
			check(err, "parsing "+field)
			return v
		}
	}
	fail("no %s in /proc/%d/status", field, pid)
	return 0
}

// mounted reports whether dir is a mountpoint (per /proc/self/mountinfo).
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// waitMounted waits until dir is mounted and answers a stat, or p exits.
func waitMounted(p *proc, dir string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if mounted(dir) {
			if _, err := os.Stat(dir); err == nil {
				return
			}
		}
		if p.exited() {
			fail("%s exited before mounting %s:\n%s", p.name, dir, p.tail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail("%s did not mount %s within %v:\n%s", p.name, dir, timeout, p.tail(20))
}

// unmount detaches dir if it is still mounted: fusermount3 -u, then a lazy
// umount.
func unmount(dir string) {
	for i := 0; i < 50 && mounted(dir); i++ {
		if i == 0 || i == 25 {
			exec.Command("fusermount3", "-u", dir).Run()
		} else if i == 10 || i == 40 {
			exec.Command("umount", "-l", dir).Run()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if mounted(dir) {
		fmt.Fprintf(os.Stderr, "bench-peer: %s is still mounted; unmount it by hand (umount -l %s)\n", dir, dir)
	}
}

// dropCaches writes dirty pages back and drops the page cache, dentries and
// inodes, so the next read of any file comes from its store.
func dropCaches() {
	syscall.Sync()
	check(os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200), "dropping the page cache (needs root)")
}

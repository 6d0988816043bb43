package emulator

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// StartAzurite runs Microsoft's Azurite blob service (azurite-blob from
// npm) on a free loopback port with its data in a temp dir, for tests, and
// returns the development account's blob endpoint. It stops with tb's
// cleanup. Without azurite-blob it skips tb, except under CI=true, where it
// fails: CI installs it.
func StartAzurite(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("azurite-blob")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("Azurite is required under CI (npm install -g azurite@3.37.0): %v", err)
		}
		tb.Skipf("skipping the Azurite-backed test: azurite-blob is not installed (npm install -g azurite@3.37.0)")
	}
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", tb.TempDir(),
		"--skipApiVersionCheck", "--loose", "--disableProductStyleUrl", "--silent", "--disableTelemetry")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting Azurite: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listens on (http://127\.0\.0\.1:\d+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case u := <-found:
		return u + "/" + AzuriteAccount
	case <-done:
		tb.Fatalf("Azurite exited before listening (%v)", cmd.ProcessState)
	case <-time.After(60 * time.Second):
		tb.Fatal("Azurite did not listen within 60s")
	}
	return ""
}

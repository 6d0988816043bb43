package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
)

// binDir holds the evofs binary the process tests run; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "evofs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// evofsBinary builds ./cmd/evofs once per test binary (on first use, so tests
// that run no subprocess pay nothing) and returns its path. The child is built
// with the race detector when this test binary is, so races in the daemon fail
// the process tests too (the child then exits 66 with a report on stderr).
// EVOFS_CHILD_RACE=0 turns that off.
func evofsBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		buildPath = filepath.Join(binDir, "evofs")
		args := []string{"build", "-o", buildPath}
		if raceEnabled() && os.Getenv("EVOFS_CHILD_RACE") != "0" {
			args = append(args, "-race")
		}
		args = append(args, "evofs/cmd/evofs")
		out, err := exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %v: %v\n%s", args, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

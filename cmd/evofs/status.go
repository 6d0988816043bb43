package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"evofs/fusefs/control"
)

// statusCommand prints a mount's pending publishes and cache usage, read
// from its control socket (found through the root's user.evofs.control
// attribute). On a terminal it redraws until nothing is pending. With
// --wait its exit code says how the wait ended (control.Outcome).
func statusCommand() *cobra.Command {
	var asJSON, once, wait bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "status [--json] [--once] [--wait [--timeout D]] MOUNTPOINT",
		Short: "Show what a mount still has to publish",
		Args:  exactArgs(1, "one MOUNTPOINT"),
		RunE: func(_ *cobra.Command, args []string) error {
			code, err := status(args[0], asJSON, once, wait, timeout)
			if code != 0 || err != nil {
				return &exitError{code: max(code, 1), err: err}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVar(&asJSON, "json", false, "print JSON (schema in the README)")
	fl.BoolVar(&once, "once", false, "print once even on a terminal")
	fl.BoolVar(&wait, "wait", false, "wait until every file is published; exit 0 published, 1 a publish failed, 2 timed out, 3 mount or service unreachable")
	fl.DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (0: never)")
	return c
}

// status runs the status command; the code is the exit code.
func status(mnt string, asJSON, once, wait bool, timeout time.Duration) (int, error) {
	sock, err := control.Locate(mnt)
	if err != nil {
		return int(control.Unreachable), err
	}
	c := control.NewClient(sock)
	defer c.CloseIdle()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if wait {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		o, r, err := c.Wait(ctx, 250*time.Millisecond)
		switch o {
		case control.Published:
			return 0, nil
		case control.Failed:
			return int(o), fmt.Errorf("%d file(s) failed to publish; 'evofs status %s' lists them", r.Failed, mnt)
		case control.TimedOut:
			return int(o), fmt.Errorf("timed out with files still to publish")
		}
		if r != nil {
			return int(o), fmt.Errorf("offline (%s): %d file(s) wait to be published", r.OfflineReason, r.Pending+r.Uploading)
		}
		return int(o), err
	}
	fetch := func() (*control.Report, []byte, error) {
		r, raw, err := c.Status(ctx, true)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", mnt, err)
		}
		return r, raw, nil
	}
	if asJSON {
		_, raw, err := fetch()
		if err != nil {
			return int(control.Unreachable), err
		}
		os.Stdout.Write(raw)
		fmt.Println()
		return 0, nil
	}
	if once || !isTerminal(os.Stdout) {
		r, _, err := fetch()
		if err != nil {
			return int(control.Unreachable), err
		}
		return 0, printStatus(os.Stdout, r, false)
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		r, _, err := fetch()
		if err != nil {
			if ctx.Err() != nil {
				return 0, nil
			}
			return int(control.Unreachable), err
		}
		fmt.Print("\033[H\033[2J")
		if err := printStatus(os.Stdout, r, true); err != nil || r.Done() {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case <-t.C:
		}
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// printStatus prints st as a table; bars adds progress bars.
func printStatus(out io.Writer, st *control.Report, bars bool) error {
	if !st.Online {
		fmt.Fprintf(out, "offline: %s\n", st.OfflineReason)
	}
	fmt.Fprintf(out, "cache: %d MiB of %d MiB, %d entries; staging %d MiB\n",
		st.Cache.UsedBytes>>20, st.Cache.MaxBytes>>20, st.Cache.Entries, st.Cache.StagingBytes>>20)
	fmt.Fprintf(out, "%d pending, %d uploading, %d failed, %s to publish\n", st.Pending, st.Uploading, st.Failed, human(st.UnpublishedBytes))
	if len(st.Files) == 0 {
		fmt.Fprintln(out, "nothing pending: every closed file is published")
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STATE\tPROGRESS\tTRIES\tPATH\tLAST ERROR")
	for _, j := range st.Files {
		p := progress(j.UploadedBytes, j.SizeBytes)
		if bars {
			p = bar(j.UploadedBytes, j.SizeBytes) + " " + p
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", j.State, p, j.Tries, j.Path, j.LastError)
	}
	return w.Flush()
}

// bar draws a 20-cell progress bar.
func bar(done, total int64) string {
	cells := 0
	if total > 0 {
		cells = int(min(done, total) * 20 / total)
	}
	return "[" + strings.Repeat("#", cells) + strings.Repeat(".", 20-cells) + "]"
}

func progress(done, total int64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%d%% of %s", done*100/total, human(total))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

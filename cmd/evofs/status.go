package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"evofs/fusefs/vfs"
)

// runStatus prints a mount's pending publishes and cache usage. It reads the
// root's user.evofs.status attribute, so it needs no socket or daemon API.
// On a terminal it redraws with progress bars until nothing is pending.
func runStatus(args []string) error {
	fl := flag.NewFlagSet("status", flag.ExitOnError)
	asJSON := fl.Bool("json", false, "print JSON")
	once := fl.Bool("once", false, "print once even on a terminal")
	fl.Parse(args)
	if fl.NArg() != 1 {
		return fmt.Errorf("usage: evofs status [--json] [--once] MOUNTPOINT")
	}
	mnt := fl.Arg(0)
	if *asJSON {
		raw, _, err := readStatus(mnt)
		if err != nil {
			return err
		}
		os.Stdout.Write(raw)
		fmt.Println()
		return nil
	}
	if *once || !isTerminal(os.Stdout) {
		_, st, err := readStatus(mnt)
		if err != nil {
			return err
		}
		return printStatus(os.Stdout, st, false)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		_, st, err := readStatus(mnt)
		if err != nil {
			return err
		}
		fmt.Print("\033[H\033[2J")
		if err := printStatus(os.Stdout, st, true); err != nil || len(st.Jobs) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// readStatus reads a mount's status from its root's xattr.
func readStatus(mnt string) ([]byte, *vfs.Status, error) {
	buf := make([]byte, 1<<20)
	n, err := unix.Getxattr(mnt, vfs.XattrStatus, buf)
	if err != nil {
		return nil, nil, fmt.Errorf("%s is not an evofs mount (or is not responding): %w", mnt, err)
	}
	var st vfs.Status
	if err := json.Unmarshal(buf[:n], &st); err != nil {
		return nil, nil, err
	}
	return buf[:n], &st, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// printStatus prints st as a table; bars adds progress bars.
func printStatus(out io.Writer, st *vfs.Status, bars bool) error {
	if !st.Online {
		fmt.Fprintf(out, "OFFLINE: %s\n", st.LastError)
	}
	fmt.Fprintf(out, "cache: %d MiB of %d MiB, %d entries; staging %d MiB\n",
		st.Cache.Bytes>>20, st.Cache.MaxBytes>>20, st.Cache.Entries, st.Cache.Staging>>20)
	if len(st.Jobs) == 0 {
		fmt.Fprintln(out, "nothing pending: every closed file is published")
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STATE\tPROGRESS\tTRIES\tPATH\tLAST ERROR")
	for _, j := range st.Jobs {
		p := progress(j.Done, j.Size)
		if bars {
			p = bar(j.Done, j.Size) + " " + p
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

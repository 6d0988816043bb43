// Command evofs mounts a Seequent Evo File API workspace as a directory.
//
//	evofs mount [flags] MOUNTPOINT   mount a workspace (--local: the embedded local service)
//	evofs serve [flags]              run the local File API service
//	evofs status [--json] MOUNTPOINT show pending publishes of a mount
//	evofs restore MOUNTPOINT PATH    put a deleted file or folder back (.evofs/trash)
//	evofs login --client-id ID       sign in to Evo (browser, PKCE); keeps a refresh token
//	evofs logout                     forget the saved sign-in
//	evofs workspaces                 list the organisations, hubs and workspaces you can mount
//	evofs version                    module version, commit and Go version
//	evofs completion bash|zsh|fish   shell completion script
//
// Only this package reads flags and the environment and configures logging;
// the libraries take explicit configuration. The CLI is cobra + pflag: flags
// go anywhere on the line, every command has --help.
//
// Exit codes: 0 success, 1 failure, 2 usage error, 4 (mount) stopped with
// files still unpublished (kept and resumed at the next mount); `evofs status
// --wait` has its own (control.Outcome).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// Exit codes (README "Exit codes").
const (
	exitFailure     = 1
	exitUsage       = 2
	exitUnpublished = 4
)

// exitError carries an exit code other than 1 (message may be empty when
// the command already said everything).
type exitError struct {
	code  int
	err   error
	usage bool // a usage error: main points at --help
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as a usage error (exit 2).
func usageErr(err error) error { return &exitError{code: exitUsage, err: err, usage: true} }

func main() {
	root := rootCommand()
	err := root.Execute()
	if err == nil {
		return
	}
	code, usage := exitFailure, false
	var ee *exitError
	if errors.As(err, &ee) {
		code, usage = ee.code, ee.usage
	} else if isCobraUsageError(err) {
		code, usage = exitUsage, true
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(os.Stderr, "evofs: %s\n", msg)
		if usage {
			fmt.Fprintln(os.Stderr, "Run 'evofs --help' or 'evofs <command> --help' for usage.")
		}
	}
	os.Exit(code)
}

// isCobraUsageError recognises the errors cobra returns for an unknown
// command (its flag errors are wrapped by the FlagErrorFunc).
func isCobraUsageError(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "evofs",
		Short: "Mount a Seequent Evo File API workspace as a local directory",
		Long: `evofs mounts one workspace of the Seequent Evo File API as an ordinary directory:
reads come through a local disk cache, writes are published as new versions on close.

  make run                    (evofs mount --local ./mnt) the embedded local workspace
  evofs login --client-id ID  then: evofs mount --workspace NAME ~/Evo`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.AddCommand(mountCommand(), serveCommand(), statusCommand(), loginCommand(), logoutCommand(),
		workspacesCommand(), versionCommand(), restoreCommand())
	root.CompletionOptions.HiddenDefaultCmd = false
	return root
}

// exactArgs is cobra.ExactArgs with a usage sentence of ours (exit 2).
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr(fmt.Errorf("%s needs %s, got %d arguments", c.Name(), what, len(args)))
		}
		return nil
	}
}

// noArgs refuses positional arguments (exit 2).
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr(fmt.Errorf("%s takes no arguments, got %q", c.Name(), args))
	}
	return nil
}

// newLogger returns a logrus entry at the named level, writing to stderr.
func newLogger(level string) (*logrus.Entry, error) {
	l := logrus.New()
	l.SetOutput(dropFailedWrites{os.Stderr})
	lv, err := logrus.ParseLevel(strings.ToLower(level))
	if err != nil {
		return nil, usageErr(fmt.Errorf("--log-level: %w", err))
	}
	l.SetLevel(lv)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	return logrus.NewEntry(l), nil
}

// dropFailedWrites reports every write as done: a log line that cannot be
// written (stderr on a pipe whose reader is gone) is dropped rather than
// turned into an error logrus would report on the same stderr.
type dropFailedWrites struct{ w io.Writer }

func (d dropFailedWrites) Write(p []byte) (int, error) {
	d.w.Write(p)
	return len(p), nil
}

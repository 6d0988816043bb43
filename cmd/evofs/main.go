// Command evofs mounts a Seequent Evo File API workspace as a directory.
//
//	evofs mount [flags] MOUNTPOINT   mount a workspace (the embedded local service without --host)
//	evofs serve [flags]              run the local File API service
//	evofs status [--json] MOUNTPOINT show pending publishes of a mount
//	evofs login --client-id ID       sign in to Evo (browser, PKCE); keeps a refresh token
//	evofs logout                     forget the saved sign-in
//	evofs workspaces                 list the organisations, hubs and workspaces you can mount
//
// Only this package reads flags and the environment and configures logging;
// the libraries take explicit configuration.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "mount":
		err = runMount(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	case "status":
		err = runStatus(os.Args[2:])
	case "login":
		err = runLogin(os.Args[2:])
	case "logout":
		err = runLogout(os.Args[2:])
	case "workspaces":
		err = runWorkspaces(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "evofs: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "evofs: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  evofs mount [flags] MOUNTPOINT    mount a workspace (signed in: found through Discovery; else the embedded local service)
  evofs serve [flags]               run the local File API service
  evofs status [--json] MOUNTPOINT  show what a mount still has to publish
  evofs login --client-id ID        sign in to Evo in a browser; the sign-in lasts until revoked
  evofs logout                      forget the saved sign-in
  evofs workspaces                  list the organisations, hubs and workspaces you can mount
Run "evofs <command> -h" for the flags of a command.
`)
}

// newLogger returns a logrus entry at the named level, writing to stderr.
func newLogger(level string) (*logrus.Entry, error) {
	l := logrus.New()
	l.SetOutput(dropFailedWrites{os.Stderr})
	lv, err := logrus.ParseLevel(strings.ToLower(level))
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
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

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"evofs/remote"
)

// loginFlags are the flags of `evofs login`.
type loginFlags struct {
	sf                  signinFlags
	profile, configFile string
	redirect            string
	noBrowser           bool
	timeout             time.Duration
}

func loginCommand() *cobra.Command {
	o := &loginFlags{}
	c := &cobra.Command{
		Use:   "login --client-id ID [flags]",
		Short: "Sign in to Evo in a browser; the sign-in lasts until revoked",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyProfile(c.Flags(), o.configFile, o.profile); err != nil {
				return err
			}
			return runLogin(o)
		},
	}
	fl := c.Flags()
	o.sf.register(fl)
	fl.StringVar(&o.profile, "profile", "", "take client id, issuer and discovery URL from this profile")
	fl.StringVar(&o.configFile, "config", "", "profiles file (default: $"+envConfig+" or evofs/config under the user's config dir)")
	fl.StringVar(&o.redirect, "redirect-url", remote.DefaultRedirectURL, "loopback redirect URL registered with the app (port 0: any free port)")
	fl.BoolVar(&o.noBrowser, "no-browser", false, "only print the sign-in URL")
	fl.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the browser sign-in")
	return c
}

// runLogin signs a user in with the authorization-code flow (PKCE, loopback
// redirect) and keeps the refresh token in the login store (0600).
func runLogin(o *loginFlags) error {
	sf := &o.sf
	if sf.clientID == "" {
		return errors.New("login needs --client-id (the native app's client id from the Seequent Developer Portal)")
	}
	path, err := sf.loginPath()
	if err != nil {
		return err
	}
	issuer := firstNonEmpty(sf.issuer, os.Getenv(envIssuer), remote.DefaultIssuer)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	tok, err := remote.Login(ctx, remote.OAuthConfig{Issuer: issuer, ClientID: sf.clientID, RedirectURL: o.redirect}, func(u string) {
		fmt.Fprintf(os.Stderr, "Open this URL in a browser to sign in:\n\n  %s\n\n", u)
		if !o.noBrowser {
			openBrowser(u)
		}
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no sign-in answer within %s; if the browser showed an error, check --client-id and that %s is a registered redirect URL", o.timeout, o.redirect)
	case err != nil:
		return err
	case tok.RefreshToken == "":
		return errors.New("the sign-in service gave no refresh token (is offline_access allowed for this app?)")
	}
	rec := &remote.LoginRecord{Issuer: issuer, DiscoveryURL: firstNonEmpty(sf.discoveryURL, os.Getenv(envDiscovery)),
		ClientID: sf.clientID, RefreshToken: tok.RefreshToken, SavedAt: time.Now().UTC()}
	if err := remote.SaveLogin(path, rec); err != nil {
		return fmt.Errorf("signed in, but the login could not be saved: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Signed in. The login is kept in %s; 'evofs workspaces' lists what you can mount.\n", path)
	return nil
}

func logoutCommand() *cobra.Command {
	var sf signinFlags
	c := &cobra.Command{
		Use:   "logout",
		Short: "Forget the saved sign-in",
		Args:  noArgs,
		RunE:  func(*cobra.Command, []string) error { return runLogout(&sf) },
	}
	sf.register(c.Flags())
	return c
}

// runLogout forgets the saved login.
func runLogout(sf *signinFlags) error {
	path, err := sf.loginPath()
	if err != nil {
		return err
	}
	switch err := os.Remove(path); {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintln(os.Stderr, "Not signed in.")
	case err != nil:
		return err
	default:
		fmt.Fprintln(os.Stderr, "Signed out: the saved login is gone (mounts already running stop refreshing when their token expires).")
	}
	return nil
}

// openBrowser starts the desktop's browser when there is a display; errors
// are ignored (the URL is printed anyway).
func openBrowser(u string) {
	if runtime.GOOS != "linux" || (os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "") {
		return
	}
	if p, err := exec.LookPath("xdg-open"); err == nil {
		cmd := exec.Command(p, u)
		if cmd.Start() == nil {
			go cmd.Wait()
		}
	}
}

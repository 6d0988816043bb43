package main

// Sign-in plumbing shared by mount, login, logout and workspaces: where the
// issuer and Discovery are, which credentials to use, and the one-sentence
// explanations of failures.
//
// Credentials, first match wins:
//  1. --token-file FILE (re-read when refused)
//  2. $EVO_TOKEN
//  3. --client-id with a secret from $EVO_CLIENT_SECRET or --client-secret-file (service apps)
//  4. the login store written by `evofs login` (refresh token, renewed as needed)

import (
	"context"
	"errors"
	"fmt"
	"github.com/spf13/pflag"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"evofs/remote"
)

// Environment variables.
const (
	envClientSecret = "EVO_CLIENT_SECRET"
	envIssuer       = "EVO_ISSUER"
	envDiscovery    = "EVO_DISCOVERY_URL"
	envConfig       = "EVOFS_CONFIG"
)

// signinFlags are the sign-in flags every command that talks to Evo takes.
type signinFlags struct {
	issuer, discoveryURL, clientID, clientSecretFile string
	tokenFile, loginFile                             string
}

func (s *signinFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&s.issuer, "issuer", "", "OAuth issuer (default: the saved login's, $"+envIssuer+", or "+remote.DefaultIssuer+")")
	fl.StringVar(&s.discoveryURL, "discovery-url", "", "Evo Discovery URL (default: the saved login's, $"+envDiscovery+", or "+remote.DefaultDiscoveryURL+")")
	fl.StringVar(&s.clientID, "client-id", "", "app client id (native app for login; with a secret: service app)")
	fl.StringVar(&s.clientSecretFile, "client-secret-file", "", "file holding the service app's client secret (default: $"+envClientSecret+")")
	fl.StringVar(&s.tokenFile, "token-file", "", "file holding a bearer token, re-read when it is refused (default: $EVO_TOKEN)")
	fl.StringVar(&s.loginFile, "login-file", "", "login store written by 'evofs login' (default: evofs/login.json under the user's config dir)")
}

func (s *signinFlags) loginPath() (string, error) {
	if s.loginFile != "" {
		return s.loginFile, nil
	}
	p, err := remote.DefaultLoginPath()
	if err != nil {
		return "", fmt.Errorf("no config dir for the login store (set --login-file): %w", err)
	}
	return p, nil
}

func (s *signinFlags) clientSecret() (string, error) {
	if s.clientSecretFile != "" {
		b, err := os.ReadFile(s.clientSecretFile)
		if err != nil {
			return "", fmt.Errorf("cannot read the client secret: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv(envClientSecret)), nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// credentials is the chosen token source and what it is.
type credentials struct {
	tokens       remote.TokenSource
	kind         string // "token-file", "env", "client-credentials", "login", "" (none)
	tokenFile    string // with kind "token-file"
	issuer       string
	discoveryURL string
}

// signedIn reports whether the user chose a real account (not only an
// ambient $EVO_TOKEN).
func (c *credentials) signedIn() bool {
	return c.kind == "login" || c.kind == "client-credentials" || c.kind == "token-file"
}

func (c *credentials) lookup() remote.LookupConfig {
	return remote.LookupConfig{DiscoveryURL: c.discoveryURL, Tokens: c.tokens,
		HTTPClient: &http.Client{Transport: remote.NewTransport(1), Timeout: 30 * time.Second}}
}

// resolveCredentials picks the credentials (see the file comment).
func (s *signinFlags) resolveCredentials(log *logrus.Entry) (*credentials, error) {
	c := &credentials{
		issuer:       firstNonEmpty(s.issuer, os.Getenv(envIssuer)),
		discoveryURL: firstNonEmpty(s.discoveryURL, os.Getenv(envDiscovery)),
	}
	defer func() {
		c.issuer = firstNonEmpty(c.issuer, remote.DefaultIssuer)
		c.discoveryURL = firstNonEmpty(c.discoveryURL, remote.DefaultDiscoveryURL)
	}()
	switch {
	case s.tokenFile != "":
		c.tokens, c.kind, c.tokenFile = remote.FileToken(s.tokenFile), "token-file", s.tokenFile
		return c, nil
	case os.Getenv(remote.EnvTokenVar) != "":
		c.tokens, c.kind = remote.EnvToken(), "env"
		return c, nil
	}
	secret, err := s.clientSecret()
	if err != nil {
		return nil, err
	}
	if s.clientID != "" && secret != "" {
		src, err := remote.NewClientCredentialsSource(remote.OAuthConfig{Issuer: firstNonEmpty(c.issuer, remote.DefaultIssuer),
			ClientID: s.clientID, ClientSecret: secret, Logger: log})
		if err != nil {
			return nil, err
		}
		c.tokens, c.kind = src, "client-credentials"
		return c, nil
	}
	path, err := s.loginPath()
	if err != nil {
		return nil, err
	}
	rec, err := remote.LoadLogin(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil // nobody signed in
	}
	if err != nil {
		return nil, err
	}
	if s.clientID != "" && s.clientID != rec.ClientID {
		return nil, fmt.Errorf("you are signed in with client id %s, not %s: run 'evofs login --client-id %s' (or set %s for a service app)",
			rec.ClientID, s.clientID, s.clientID, envClientSecret)
	}
	c.issuer = firstNonEmpty(s.issuer, rec.Issuer, c.issuer)
	c.discoveryURL = firstNonEmpty(s.discoveryURL, rec.DiscoveryURL, c.discoveryURL)
	src, err := remote.NewRefreshSource(remote.OAuthConfig{Issuer: c.issuer, Logger: log}, path)
	if err != nil {
		return nil, err
	}
	c.tokens, c.kind = src, "login"
	return c, nil
}

// target is a resolved workspace.
type target struct {
	host          string
	org           uuid.UUID
	orgName       string
	ws            uuid.UUID
	wsName        string
	role          string // "" when unknown
	viaDiscovery  bool
	workspaceList bool // the Workspaces API answered
}

// resolveTarget finds the hub (given or by Discovery) and turns org and
// workspace names into ids. The caller's role comes from the Workspaces API
// when it answers (best effort when host and ids are given).
func resolveTarget(ctx context.Context, c *credentials, host, org, ws string, log *logrus.Entry) (*target, error) {
	t := &target{host: strings.TrimRight(host, "/")}
	lc := c.lookup()
	if t.host == "" {
		d, err := remote.Discover(ctx, lc, "file")
		if err != nil {
			return nil, explainLookup(err, "Evo Discovery at "+remote.RedactURL(lc.DiscoveryURL), c)
		}
		o, err := d.FindOrg(org)
		if err != nil {
			return nil, err
		}
		hub, ok := d.HubFor(o.ID, "file")
		if !ok {
			return nil, fmt.Errorf("organisation %q has no hub offering the File API to you", o.Name)
		}
		t.host, t.org, t.orgName, t.viaDiscovery = strings.TrimRight(hub.URL, "/"), o.ID, o.Name, true
		log.WithField("org", o.Name).WithField("hub", remote.RedactURL(hub.URL)).Info("hub found through Discovery")
	} else {
		id, err := uuid.Parse(org)
		switch {
		case err == nil:
			t.org = id
		case org == "":
			return nil, errors.New("--org is required with --host (the organisation id, or its name when signed in)")
		default:
			d, derr := remote.Discover(ctx, lc, "file")
			if derr != nil {
				return nil, fmt.Errorf("--org %q is not an id, and names need Discovery: %w", org, explainLookup(derr, "Evo Discovery", c))
			}
			o, err := d.FindOrg(org)
			if err != nil {
				return nil, err
			}
			t.org, t.orgName = o.ID, o.Name
		}
	}
	if ws == "" {
		return nil, errors.New("--workspace is required (a name or id; 'evofs workspaces' lists them)")
	}
	list, lerr := remote.ListWorkspaces(ctx, lc, t.host, t.org)
	id, err := uuid.Parse(ws)
	if lerr == nil {
		t.workspaceList = true
		w, ferr := remote.FindWorkspace(list, ws)
		switch {
		case ferr == nil:
			t.ws, t.wsName, t.role = w.ID, w.Name, w.Role
			return t, nil
		case err == nil:
			// An id the list does not show: use it as given (role unknown);
			// the access probe at mount time tells whether it is reachable.
			log.WithField("workspace", id.String()).Debug("workspace id not in the workspace list; using it as given")
			t.ws = id
			return t, nil
		}
		return nil, ferr
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %q is not an id, and the workspace list is unavailable: %w", ws, explainLookup(lerr, "the hub "+remote.RedactURL(t.host), c))
	}
	log.WithError(lerr).Debug("workspace list unavailable; using the workspace id as given")
	t.ws = id
	return t, nil
}

// remedy says what to do when the service refuses these credentials,
// naming where the token came from.
func (c *credentials) remedy() string {
	switch c.kind {
	case "env":
		return "the token came from $" + remote.EnvTokenVar + ": set a valid one, or unset it to use the saved login"
	case "token-file":
		return "the token came from --token-file " + c.tokenFile + ": put a valid one there"
	case "client-credentials":
		return "the token came from the service app's client id and secret: check them"
	}
	return "the token came from the saved login: run 'evofs login' again"
}

// explainLookup turns a Discovery/Workspaces/File API failure into a
// sentence; c (may be nil) names where a refused token came from.
func explainLookup(err error, what string, c *credentials) error {
	var ae *remote.APIError
	var se *remote.SignInError
	switch {
	case errors.As(err, &se):
		if strings.Contains(se.Reason, "client id") {
			return fmt.Errorf("sign-in refused: %s; check --client-id and the client secret", se.Reason)
		}
		return fmt.Errorf("sign-in refused: %s; run 'evofs login' to sign in again", se.Reason)
	case errors.Is(err, remote.ErrUnauthorized):
		how := "run 'evofs login' again"
		if c != nil {
			how = c.remedy()
		}
		return fmt.Errorf("%s refused the sign-in (token expired, revoked or for another service); %s", what, how)
	case errors.Is(err, remote.ErrForbidden):
		return fmt.Errorf("you have no access there (%s answered 403)", what)
	case errors.Is(err, remote.ErrNotFound):
		return fmt.Errorf("%s does not know this organisation or workspace", what)
	case errors.Is(err, remote.ErrNoToken):
		return errors.New("no bearer token: set EVO_TOKEN, pass --token-file, or run 'evofs login'")
	case errors.As(err, &ae):
		return fmt.Errorf("%s answered HTTP %d (%s)", what, ae.Status, ae.Title)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s did not answer in time", what)
	}
	if strings.Contains(err.Error(), "getting token") || strings.Contains(err.Error(), "refreshing token") {
		return err
	}
	return fmt.Errorf("cannot reach %s (check the network and the URL)", what)
}

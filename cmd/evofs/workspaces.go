package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"evofs/remote"
)

// workspacesFlags are the flags of `evofs workspaces`.
type workspacesFlags struct {
	sf                  signinFlags
	profile, configFile string
	org, logLevel       string
	asJSON              bool
}

func workspacesCommand() *cobra.Command {
	o := &workspacesFlags{}
	c := &cobra.Command{
		Use:   "workspaces",
		Short: "List the organisations, hubs and workspaces you can mount",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyProfile(c.Flags(), o.configFile, o.profile); err != nil {
				return err
			}
			return runWorkspaces(o)
		},
	}
	fl := c.Flags()
	o.sf.register(fl)
	fl.StringVar(&o.profile, "profile", "", "take sign-in settings from this profile")
	fl.StringVar(&o.configFile, "config", "", "profiles file")
	fl.StringVar(&o.org, "org", "", "only this organisation (name or id)")
	fl.BoolVar(&o.asJSON, "json", false, "print JSON")
	fl.StringVar(&o.logLevel, "log-level", "warn", "log level")
	return c
}

// runWorkspaces lists the organisations, hubs and workspaces the signed-in
// user can reach (Discovery, then the Workspaces API of each hub).
func runWorkspaces(o *workspacesFlags) error {
	sf := &o.sf
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	quiet, _ := quietUntilReady(log) // refusals come back as the error
	creds, err := sf.resolveCredentials(quiet)
	if err != nil {
		return err
	}
	if creds.tokens == nil {
		return errors.New("not signed in: run 'evofs login --client-id ID' (or set EVO_TOKEN, or a service app's --client-id with " + envClientSecret + ")")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lc := creds.lookup()
	d, err := remote.Discover(ctx, lc, "file", "workspace")
	if err != nil {
		return explainLookup(err, "Evo Discovery at "+remote.RedactURL(lc.DiscoveryURL), creds)
	}
	orgs := d.Organizations
	if o.org != "" {
		o, err := d.FindOrg(o.org)
		if err != nil {
			return err
		}
		orgs = []remote.Organization{o}
	}
	type row struct {
		Org       string `json:"org"`
		OrgID     string `json:"org_id"`
		Hub       string `json:"hub"`
		HubURL    string `json:"hub_url"`
		Workspace string `json:"workspace"`
		ID        string `json:"workspace_id"`
		Role      string `json:"role"`
	}
	var rows []row
	for _, o := range orgs {
		hub, ok := d.HubFor(o.ID, "file")
		if !ok {
			rows = append(rows, row{Org: o.Name, OrgID: o.ID.String(), Workspace: "(no File API access)"})
			continue
		}
		list, err := remote.ListWorkspaces(ctx, lc, hub.URL, o.ID)
		if err != nil {
			log.WithError(err).Debug("workspace list failed")
			rows = append(rows, row{Org: o.Name, OrgID: o.ID.String(), Hub: hub.Name, HubURL: hub.URL,
				Workspace: "(" + explainLookup(err, "the hub", creds).Error() + ")"})
			continue
		}
		for _, w := range list {
			rows = append(rows, row{Org: o.Name, OrgID: o.ID.String(), Hub: hub.Name, HubURL: hub.URL, Workspace: w.Name, ID: w.ID.String(), Role: w.Role})
		}
	}
	if o.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []row{}
		}
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORGANISATION\tORG ID\tHUB\tWORKSPACE\tWORKSPACE ID\tROLE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Org, r.OrgID, r.Hub, r.Workspace, r.ID, r.Role)
	}
	tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "No organisations are visible to this account.")
	}
	return nil
}

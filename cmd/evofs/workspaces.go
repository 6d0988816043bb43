package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"evofs/remote"
)

// runWorkspaces lists the organisations, hubs and workspaces the signed-in
// user can reach (Discovery, then the Workspaces API of each hub).
func runWorkspaces(args []string) error {
	fl := flag.NewFlagSet("workspaces", flag.ExitOnError)
	var sf signinFlags
	sf.register(fl)
	profile := fl.String("profile", "", "take sign-in settings from this profile")
	configFile := fl.String("config", "", "profiles file")
	org := fl.String("org", "", "only this organisation (name or id)")
	asJSON := fl.Bool("json", false, "print JSON")
	logLevel := fl.String("log-level", "warn", "log level")
	fl.Parse(args)
	if err := applyProfile(fl, *configFile, *profile); err != nil {
		return err
	}
	log, err := newLogger(*logLevel)
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
	if *org != "" {
		o, err := d.FindOrg(*org)
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
	if *asJSON {
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

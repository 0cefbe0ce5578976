package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-rtc/parley/broker"
)

// keysCmd manages API keys directly in the NATS KV store, which is how the
// first admin key comes to exist:
//
//	parley keys create --kind admin --scopes config:read,config:write [--tenant T] [--name N]
//	parley keys create --kind secret --widget wdg_demo [--name N]
//	parley keys list [--json]
//	parley keys revoke key_…
func keysCmd(args []string, stdout, stderr io.Writer) int {
	// Help and mistakes in the command line are answered without
	// connecting to NATS.
	fs := newSubcommands("parley keys", keysUsage, []string{"create", "list", "revoke"}, args, stderr)
	sub := fs.sub
	nf := addNATSFlags(fs.FlagSet)
	prefix := fs.String("prefix", "parley", "subject and bucket prefix")
	kind := fs.String("kind", broker.KeyAdmin, "key kind: admin or secret")
	scopes := fs.String("scopes", "", "admin key scopes, comma separated: "+strings.Join(broker.Scopes, ", "))
	tenant := fs.String("tenant", "", "admin key: limit to this tenant (empty: all tenants)")
	widget := fs.String("widget", "", "secret key: the widget id (e.g. wdg_demo)")
	name := fs.String("name", "", "a name to recognise the key by")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, done := fs.parse(args); done {
		return code
	}
	switch {
	case sub == "revoke" && fs.NArg() != 1:
		fmt.Fprintln(stderr, "Usage: parley keys revoke key_…")
		return 2
	case sub == "create" && *kind != broker.KeyAdmin && *kind != broker.KeySecret:
		fmt.Fprintln(stderr, "parley keys create: --kind must be admin or secret")
		return 2
	}
	nf.markSet(fs.FlagSet)
	b, err := attachBroker(nf, *prefix, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "parley keys: %v\n", err)
		return 1
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := func(v any) {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	switch args[0] {
	case "create":
		var (
			key  string
			info broker.KeyInfo
			err  error
		)
		switch *kind {
		case broker.KeyAdmin:
			var list []string
			for _, s := range strings.Split(*scopes, ",") {
				if s = strings.TrimSpace(s); s != "" {
					list = append(list, s)
				}
			}
			key, info, err = b.CreateAdminKey(ctx, *tenant, *name, list)
		case broker.KeySecret:
			key, info, err = b.CreateSecretKey(ctx, *widget, *name)
		default:
			err = fmt.Errorf("--kind must be admin or secret")
		}
		if err != nil {
			fmt.Fprintf(stderr, "parley keys create: %v\n", err)
			return 1
		}
		if *asJSON {
			out(map[string]any{"key": key, "info": info})
			return 0
		}
		fmt.Fprintf(stdout, "%s\n\nThis is the only time the key is shown: store it now.\nid: %s  kind: %s  scopes: %s  tenant: %s  widget: %s\n",
			key, info.ID, info.Kind, strings.Join(info.Scopes, ","), orAll(info.Tenant), info.WidgetID)
	case "list":
		keys, err := b.ListKeys(ctx, *tenant)
		if err != nil {
			fmt.Fprintf(stderr, "parley keys list: %v\n", err)
			return 1
		}
		if *asJSON {
			out(keys)
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tHINT\tNAME\tSCOPES / WIDGET\tTENANT\tCREATED\tSTATE")
		for _, k := range keys {
			what := strings.Join(k.Scopes, ",")
			if k.Kind == broker.KeySecret {
				what = k.WidgetID
			}
			state := "active"
			if k.Disabled {
				state = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Kind, k.Hint, k.Name, what, orAll(k.Tenant),
				k.CreatedAt.Format(time.RFC3339), state)
		}
		_ = tw.Flush()
	case "revoke":
		info, err := b.RevokeKey(ctx, fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "parley keys revoke: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s (%s); it stops working at once\n", info.ID, info.Kind)
	}
	return 0
}

// keysUsage heads parley keys -h; the flags follow.
const keysUsage = `Usage:
  parley keys create --kind admin --scopes S1,S2 [--tenant T] [--name N] [--json]
  parley keys create --kind secret --widget WIDGET_ID [--name N] [--json]
  parley keys list [--tenant T] [--json]
  parley keys revoke KEY_ID

Each connects to the deployment's NATS (--nats-url) with the operator
credentials of --data-dir, or --nats-creds.

Flags:
`

func orAll(tenant string) string {
	if tenant == "" {
		return "(all)"
	}
	return tenant
}

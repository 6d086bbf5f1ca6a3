package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/social-prescribing/exchange/client"
	"github.com/social-prescribing/exchange/client/hsds"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// errEnough ends a watch after --count events.
var errEnough = errors.New("enough events")

func (a *app) eventsCmd() *cobra.Command {
	var after int64
	var count int
	watch := &cobra.Command{Use: "watch", Short: "Follow the event feed as it happens", Args: args(),
		Long: `Print the events you may see, after sequence number --after, as they happen,
until interrupted (Ctrl-C) or --count events have been printed. The watch
survives dropped connections and restarts of the exchange, resuming after the
last event printed, so no event is printed twice or missed. With -o json each
event is one line of JSON.`,
		Example: `  exchangectl events watch
  exchangectl events watch --after 1200 -o json | jq -c 'select(.type == "EVENT_TYPE_FEEDBACK_POSTED")'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			tw := table{}
			if a.output == "table" {
				tw = tables[(&pb.Event{}).ProtoReflect().Descriptor().FullName()]
				fmt.Fprintf(a.stdout, "%-9s %-17s %-22s %-44s %s\n", "SEQUENCE", "TIME", "TYPE", "RESOURCE", "ACTOR")
			}
			n := 0
			err = c.Watch(cmd.Context(), after, func(e *pb.Event) error {
				if a.output == "json" {
					b, err := protojson.Marshal(e)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "%s\n", b)
				} else {
					r := tw.row(e)
					fmt.Fprintf(a.stdout, "%-9s %-17s %-22s %-44s %s\n", r[0], r[1], r[2], r[3], strings.TrimSpace(r[4]+" "+r[5]))
				}
				if n++; count > 0 && n >= count {
					return errEnough
				}
				return nil
			})
			if errors.Is(err, errEnough) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}}
	watch.Flags().Int64Var(&after, "after", 0, "start after this sequence number (0: from the oldest event kept)")
	watch.Flags().IntVar(&count, "count", 0, "stop after this many events (0: never)")

	var wait time.Duration
	var size int32
	listCmd := &cobra.Command{Use: "list", Short: "List the events after a sequence number, waiting for one if asked", Args: args(),
		Example: "  exchangectl events list --after 1200 --wait 30s",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.ListEventsResponse, error) {
				req := &pb.ListEventsRequest{After: after, PageSize: size}
				if wait > 0 {
					req.Wait = durationpb.New(wait)
				}
				return c.Events.ListEvents(ctx, req)
			})
		}}
	listCmd.Flags().Int64Var(&after, "after", 0, "events after this sequence number")
	listCmd.Flags().DurationVar(&wait, "wait", 0, "when there are none yet, wait up to this long for one (at most 60s)")
	listCmd.Flags().Int32Var(&size, "page-size", 0, "at most this many events (default 100)")
	return group("events", "The event feed: what changed, for your organisation", watch, listCmd)
}

func (a *app) directoryCmd() *cobra.Command {
	var dryRun bool
	imp := &cobra.Command{Use: "import PATH", Short: "Load an Open Referral HSDS directory (operator)", Args: args("PATH"),
		Long: `Load the organisations and services of an Open Referral HSDS export into the
exchange's directory. PATH is the export's datapackage.json or the directory
holding it and the CSV files (organizations.csv, services.csv, and optionally
phones.csv, taxonomy_terms.csv and attributes.csv). Operator only.

The import is idempotent: organisations and services are found again by their
HSDS id, so a second run creates nothing and updates only what changed in the
export. Capacity and anything else the organisations set themselves is never
touched. Malformed rows are reported on stderr with their file and line and
skipped; the rest is imported, and the exit status is then 1.

Progress is a bar on a terminal and a line per 100 records otherwise.`,
		Example: `  exchangectl directory import ./manchester-hsds/datapackage.json
  exchangectl directory import ./manchester-hsds --kind vcse_organization --dry-run`}
	kind := addEnum(imp.Flags(), "kind", pb.OrganizationKind(0).Descriptor(), "kind of the organisations created (default vcse_organization)")
	imp.Flags().BoolVar(&dryRun, "dry-run", false, "report what would change, change nothing")
	imp.RunE = func(cmd *cobra.Command, args []string) error {
		d, err := hsds.ReadDir(args[0])
		if err != nil {
			return err
		}
		c, err := a.conn()
		if err != nil {
			return err
		}
		opt := hsds.Options{Kind: pb.OrganizationKind(kind.n), DryRun: dryRun,
			Problem: func(p hsds.Problem) { fmt.Fprintf(a.stderr, "skipped %s\n", p) }}
		if a.tty {
			var bar *progressbar.ProgressBar
			opt.Progress = func(done, total int) {
				if bar == nil {
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(a.stderr),
						progressbar.OptionSetDescription("importing"), progressbar.OptionShowCount(),
						progressbar.OptionClearOnFinish())
				}
				bar.Set(done)
			}
		} else {
			opt.Progress = func(done, total int) {
				if done%100 == 0 || done == total {
					fmt.Fprintf(a.stderr, "imported %d of %d\n", done, total)
				}
			}
		}
		res, err := hsds.Import(cmd.Context(), c, d, opt)
		if err != nil {
			return err
		}
		verb := ""
		if dryRun {
			verb = " (dry run: nothing changed)"
		}
		fmt.Fprintf(a.stdout, "organizations: %d created, %d updated, %d unchanged\n", res.OrganizationsCreated, res.OrganizationsUpdated, res.OrganizationsUnchanged)
		fmt.Fprintf(a.stdout, "services: %d created, %d updated, %d unchanged, %d not active\n", res.ServicesCreated, res.ServicesUpdated, res.ServicesUnchanged, d.Inactive)
		fmt.Fprintf(a.stdout, "skipped: %d%s\n", len(res.Problems), verb)
		if len(res.Problems) > 0 {
			return exitError{exitRefused}
		}
		return nil
	}
	return group("directory", "The directory as a whole", imp)
}

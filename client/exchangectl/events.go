package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/social-prescribing/exchange/client"
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

package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client"
	"github.com/social-prescribing/exchange/client/reports"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

func (a *app) reportCmd() *cobra.Command {
	var from, to, service, org, tableName string
	var category, route *enumFlag
	filterFlags := func(cmd *cobra.Command) {
		f := cmd.Flags()
		f.StringVar(&from, "from", "", "referrals made on or after this date (YYYY-MM-DD) or time (RFC 3339)")
		f.StringVar(&to, "to", "", "referrals made before this date or time")
		f.StringVar(&service, "service", "", "referrals to this service, ORG/SERVICE")
		f.StringVar(&org, "organization", "", "referrals made or received by this organisation")
		category = addEnum(f, "category", pb.Category(0).Descriptor(), "referrals with this need")
		route = addEnum(f, "route", pb.ReferralRoute(0).Descriptor(), "referrals that came by this route")
		f.StringVar(&tableName, "table", "", "with -o csv: which table (default: the first)")
	}
	filter := func() (*pb.ReportFilter, error) {
		fl := &pb.ReportFilter{Category: pb.Category(category.n), Route: pb.ReferralRoute(route.n)}
		for _, t := range []struct {
			flag, value string
			dst         **timestamppb.Timestamp
		}{{"from", from, &fl.StartTime}, {"to", to, &fl.EndTime}} {
			if t.value == "" {
				continue
			}
			when, err := time.ParseInLocation(time.DateOnly, t.value, time.Local)
			if err != nil {
				if when, err = time.Parse(time.RFC3339, t.value); err != nil {
					return nil, usagef("--%s: give a date YYYY-MM-DD or a time in RFC 3339", t.flag)
				}
			}
			*t.dst = timestamppb.New(when)
		}
		if service != "" {
			name, err := serviceName(service)
			if err != nil {
				return nil, err
			}
			fl.Service = name
		}
		if org != "" {
			fl.Organization = qualify("organizations", org)
		}
		return fl, nil
	}
	show := func(m proto.Message, rounded, full []reports.Table) error {
		switch a.output {
		case "json":
			return a.print(m)
		case "csv":
			ts := full
			t := ts[0]
			if tableName != "" {
				var ok bool
				if t, ok = reports.Find(ts, tableName); !ok {
					var names []string
					for _, t := range ts {
						names = append(names, t.Name)
					}
					return usagef("--table: no table %q; there are %s", tableName, strings.Join(names, ", "))
				}
			}
			return reports.WriteCSV(a.stdout, t)
		}
		for i, t := range rounded {
			if i > 0 {
				fmt.Fprintln(a.stdout)
			}
			fmt.Fprintf(a.stdout, "%s\n", strings.ToUpper(t.Title))
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, strings.Join(t.Header, "\t"))
			for _, r := range t.Rows {
				fmt.Fprintln(tw, strings.Join(r, "\t"))
			}
			if len(t.Rows) == 0 {
				fmt.Fprintln(tw, "(none)")
			}
			tw.Flush()
		}
		return nil
	}
	const long = `Reports count the referrals you may count (a commissioner or the operator:
all; anyone else: the referrals they made or received) whose consent includes
evaluation. Counts below the exchange's threshold (default 5) show as "<5";
statistics of fewer pairs are left out.

Output: every table (default), -o json (the whole report), or -o csv with
--table to choose one.`
	// run fetches a report with the flags' filter and shows it.
	run := func(cmd *cobra.Command, fetch func(context.Context, *client.Client, *pb.ReportFilter) (proto.Message, []reports.Table, []reports.Table, error)) error {
		f, err := filter()
		if err != nil {
			return err
		}
		c, err := a.conn()
		if err != nil {
			return err
		}
		ctx, cancel := a.ctx(cmd)
		defer cancel()
		m, rounded, full, err := fetch(ctx, c, f)
		if err != nil {
			return err
		}
		return show(m, rounded, full)
	}
	act := &cobra.Command{Use: "activity", Short: "Referrals by route, need, service and organisation; the funnel; time to answer; capacity", Args: args(),
		Long: long + "\n\nTables: summary, funnel, trend, by_route, by_need, by_service, by_organization, capacity.",
		Example: `  exchangectl report activity --from 2026-04-01 --to 2027-04-01
  exchangectl report activity --service hillside-walkers/health-walks -o csv --table funnel > funnel.csv`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, f *pb.ReportFilter) (proto.Message, []reports.Table, []reports.Table, error) {
				r, err := c.Reports.GetActivityReport(ctx, &pb.GetActivityReportRequest{Filter: f})
				return r, reports.Activity(r, reports.Rounded), reports.Activity(r, reports.Full), err
			})
		}}
	filterFlags(act)
	out := &cobra.Command{Use: "outcomes", Short: "Change in wellbeing and loneliness scores, by group; attrition", Args: args(),
		Long: long + `

For each measure (WEMWBS, SWEMWBS, each ONS4 item, EQ-5D-5L VAS, UCLA3): pairs of
baseline and follow-up for the same referral, means and SDs, the mean change
with its 95% confidence interval, the paired t test, Cohen's d, the share
improved; the same for women and men and for under 50s and 50 and over, with
the pooled two-sample t test of the difference.

Tables: outcomes, comparisons, by_service, trend, distribution, completeness.`,
		Example: `  exchangectl report outcomes --category social_isolation
  exchangectl report outcomes -o csv --table completeness > attrition.csv`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, func(ctx context.Context, c *client.Client, f *pb.ReportFilter) (proto.Message, []reports.Table, []reports.Table, error) {
				r, err := c.Reports.GetOutcomeReport(ctx, &pb.GetOutcomeReportRequest{Filter: f})
				return r, reports.Outcomes(r, reports.Rounded), reports.Outcomes(r, reports.Full), err
			})
		}}
	filterFlags(out)
	return group("report", "Activity and outcome reports for commissioners and organisations", act, out)
}

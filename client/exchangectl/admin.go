package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

func init() {
	register([]string{"SEQUENCE", "TIME", "ORGANIZATION", "CREDENTIAL", "METHOD", "RESOURCE", "OUTCOME", "SHOWN"}, func(e *pb.AuditEvent) []string {
		outcome := e.Code
		if e.Reason != "" {
			outcome += " (" + e.Reason + ")"
		}
		shown := ""
		if len(e.Shown) > 0 {
			shown = strconv.Itoa(len(e.Shown))
		}
		return []string{strconv.FormatInt(e.Sequence, 10), when(e.EventTime), e.Organization, e.Credential,
			e.Method[strings.LastIndex(e.Method, "/")+1:], e.Resource, outcome, shown}
	})
	register([]string{"ERASURE", "REFERRALS CLEARED", "OPEN ONES CANCELLED", "CONSENTS CLEARED", "NOTES CLEARED"}, func(r *pb.ErasePersonResponse) []string {
		return []string{r.Name, strconv.Itoa(int(r.ClearedReferrals)), strconv.Itoa(int(r.CancelledReferrals)),
			strconv.Itoa(int(r.ClearedConsents)), strconv.Itoa(int(r.ClearedFeedback))}
	})
}

// The operator's commands: the audit log, erasure and backups.

func (a *app) auditCmd() *cobra.Command {
	var org, resource, since, until string
	listCmd := &cobra.Command{Use: "list", Short: "List the audit log: who read or changed personal data, and who was refused", Args: args(),
		Long: `List audit events, oldest first (the operator only). Narrow them by
organisation, by resource (a referral, consent or list; a list that showed a
referral matches it too) and by time. Lists of a person's consents are
recorded as persons/<hash of the NHS number>, never the number itself.`,
		Example: `  exchangectl audit list --resource referrals/01JD2X4TFQ3M5
  exchangectl audit list --organization hillside-walkers --since -24h --all`}
	f := listCmd.Flags()
	f.StringVar(&org, "organization", "", "only calls by this organisation")
	f.StringVar(&resource, "resource", "", "only calls about this resource, e.g. referrals/ID")
	f.StringVar(&since, "since", "", "only events at or after this time: RFC 3339, or a duration from now such as -24h")
	f.StringVar(&until, "until", "", "only events before this time: RFC 3339, or a duration from now")
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		req := &pb.ListAuditEventsRequest{Resource: resource}
		if org != "" {
			req.Organization = qualify("organizations", org)
		}
		for _, t := range []struct {
			flag, value string
			dst         **timestamppb.Timestamp
		}{{"since", since, &req.StartTime}, {"until", until, &req.EndTime}} {
			if t.value != "" {
				at, err := timeOrAhead(t.value)
				if err != nil {
					return usagef("--%s: %v", t.flag, err)
				}
				*t.dst = timestamppb.New(at)
			}
		}
		return list(a, cmd, p, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.ListAuditEventsResponse, error) {
			r := proto.CloneOf(req)
			r.PageSize, r.PageToken = size, token
			return c.Admin.ListAuditEvents(ctx, r)
		})
	}
	return group("audit", "The audit log (the operator only)", listCmd)
}

func (a *app) personCmd() *cobra.Command {
	var nhs string
	erase := a.requestIDFlag(&cobra.Command{Use: "erase", Short: "Erase a person's personal data everywhere (the operator only)", Args: args(),
		Long: `Clear a person's personal data at once: the person and reason on every
referral made for them (sex and an age band stay for reports), the text of
notes on those referrals, the NHS number on their consents. Open referrals are
cancelled with reason ERASED. Counts and reports do not change. Running it
again clears nothing more.`,
		Example: "  exchangectl person erase --nhs-number 9434765919 --request-id erasure-2026-118",
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.ErasePersonRequest{NhsNumber: nhs}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.ErasePersonResponse, error) {
				return c.Admin.ErasePerson(ctx, req)
			})
		}})
	erase.Flags().StringVar(&nhs, "nhs-number", "", "the person's NHS number")
	erase.MarkFlagRequired("nhs-number")
	return group("person", "A person's data across the exchange (the operator only)", erase)
}

func (a *app) backupCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{Use: "backup", Short: "Copy the whole store, while the exchange keeps running (the operator only)", Args: args(),
		Long: `Stream a consistent copy of the exchange's store to a file. Writes go on
while it runs. The file is written next to its final name and renamed when
complete, so a failed backup never leaves a partial file under that name.

To restore the embedded store: stop the exchange, put the file in the data
directory as exchange.db (keep the operator-key file), and start it again.
On etcd the file is a logical export of the exchange's prefix: write it
back into an empty prefix with exchange-server restore (docs/operations.md).`,
		Example: "  exchangectl backup --file /backups/exchange-$(date +%F).db",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.conn()
			if err != nil {
				return err
			}
			// No per-call timeout: a large store takes as long as it takes.
			stream, err := c.Admin.Backup(cmd.Context(), &pb.BackupRequest{})
			if err != nil {
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".partial-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			var total, n int64
			last := false
			for {
				chunk, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					tmp.Close()
					return err
				}
				if chunk.TotalBytes > 0 {
					total = chunk.TotalBytes
				}
				if _, err := tmp.Write(chunk.Data); err != nil {
					tmp.Close()
					return err
				}
				n += int64(len(chunk.Data))
				last = last || chunk.Last
			}
			if !last || total > 0 && n != total {
				tmp.Close()
				if total > 0 {
					return fmt.Errorf("the backup stream ended after %d of %d bytes", n, total)
				}
				return fmt.Errorf("the backup stream ended after %d bytes, before its last chunk", n)
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s (%d bytes)\n", out, n)
			return nil
		}}
	cmd.Flags().StringVarP(&out, "file", "f", "", "the file to write")
	cmd.MarkFlagRequired("file")
	return cmd
}

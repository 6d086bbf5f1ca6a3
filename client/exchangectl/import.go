package main

import (
	"fmt"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/social-prescribing/exchange/client/hsds"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

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
	imp.Flags().BoolVar(&dryRun, "dry-run", false, "report what would change, change nothing (what only the exchange checks, e.g. email addresses, is not checked)")
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

package cli

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

func newStatus() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] MOUNTPOINT | DIR...",
		Short: "Show a mount's or an array's state",
		Long: `Given a mount point, show the running array: its state, each member's state
and READ / WRITE / CKSUM error counts, repairs and slow I/Os, and the jobs
under way. Given member directories, show the array from their labels,
without changing anything: the array, its layout and size, and each slot's
member, state and generation.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && !blockdev.HoldsMember(args[0]) {
				err := liveStatus(cmd.OutOrStdout(), args[0], asJSON)
				if errors.Is(err, control.ErrNoMount) {
					return fmt.Errorf("%s is neither a lockstep mount nor a member directory: give a mount point or every member directory", args[0])
				}
				return err
			}
			r, err := raid.Inspect(args)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			printStatus(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func printStatus(w io.Writer, r *raid.Report) {
	lay, _ := raid.ParseLayout(r.Layout, r.Members)
	fmt.Fprintf(w, "array:      %s (%s)\n", r.Name, r.ArrayUUID)
	fmt.Fprintf(w, "state:      %s\n", r.State)
	fmt.Fprintf(w, "layout:     %s, chunk %s\n", lay, raid.FormatSize(r.Chunk))
	fmt.Fprintf(w, "size:       %s (%d bytes)\n", raid.FormatSize(r.Size), r.Size)
	fmt.Fprintf(w, "generation: %d\n\n", r.Generation)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tGEN\tMEMBER\tDIR")
	for _, s := range r.Slots {
		gen, uuid, dir := "-", "-", "-"
		if s.State != raid.StateMissing {
			gen, uuid, dir = fmt.Sprint(s.Generation), s.MemberUUID, s.Dir
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.Slot, s.State, gen, uuid, dir)
	}
	tw.Flush()
}

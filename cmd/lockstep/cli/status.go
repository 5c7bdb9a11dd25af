package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/raid"
)

func newStatus() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] DIR...",
		Short: "Show an array's state from its members' labels",
		Long: `Show the state of the array that the member directories make up, read from
their labels without changing anything: the array, its layout and size, and
each slot's member, state and generation.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			r, err := raid.Inspect(dirs)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
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

// Package cli holds lockstep's commands, one file each. Each command
// validates its arguments in a pure function before it touches anything, and
// writes through the command's output streams so that tests can run it.
package cli

import (
	"github.com/spf13/cobra"
)

// New returns the root command with every subcommand attached.
func New() *cobra.Command {
	root := &cobra.Command{
		Use:   "lockstep",
		Short: "Redundant block storage over member directories",
		Long: `lockstep keeps one virtual volume on a set of member directories (one per
drive). It stripes, mirrors and Reed-Solomon-encodes blocks across them,
checks every block against its CRC-32C, and serves damaged blocks from
redundancy.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCreate(), newMount(), newUmount(), newStatus(), newEvents(), newFail(), newFailover(),
		newScrub(), newRebuild(), newSpare(), newReplace(), newInject(), newChaos(), newBench())
	return root
}

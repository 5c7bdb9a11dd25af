package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
)

func newInject() *cobra.Command {
	var spec control.FaultSpec
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inject MOUNTPOINT MEMBER --fault KIND [options] | inject clear MOUNTPOINT [MEMBER]",
		Short: "Inject a fault into a member disk of a running mount, or clear the faults",
		Long: `Inject a fault into the disk of MEMBER (a slot number or a member directory)
under the running mount at MOUNTPOINT, to see how the array copes. The fault
sits under the checksums, where a failing disk would: lockstep has to detect
it. Faults stay with the disk across restarts of the member, until cleared
or spent; they live in the mount's process and end with it.

Kinds (--fault):
  error   reads and/or writes fail with EIO
  flip    reads return one flipped bit per block; the disk keeps good data
  rogue   reads return a neighbouring block's data, with no error
  delay   each I/O waits --delay, plus up to --jitter at random
  stall   each I/O hangs until the fault ends (--for) or is cleared
  rot     one bit per block flips on the disk itself, where it stays
  torn    a write lands in part, then the disk vanishes
  vanish  the disk disappears: every I/O fails until cleared
  full    writes fail with ENOSPC

lockstep inject clear MOUNTPOINT [MEMBER] removes the faults of one member,
or of all, and brings a vanished disk back. lockstep status shows the faults
in force and lockstep events when each was injected and cleared.`,
		Example: `  lockstep inject /mnt/ls 2 --fault error --ops read --rate 0.05 --for 30s
  lockstep inject /mnt/ls /disks/d1 --fault delay --delay 50ms --jitter 20ms
  lockstep inject /mnt/ls 0 --fault rot --range 0:64MiB --rate 0.01
  lockstep inject clear /mnt/ls`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && args[0] == "clear" {
				if len(args) < 2 || len(args) > 3 {
					return fmt.Errorf("inject clear takes MOUNTPOINT [MEMBER]")
				}
				return nil
			}
			if len(args) != 2 {
				return fmt.Errorf("inject takes MOUNTPOINT MEMBER --fault KIND, or clear MOUNTPOINT [MEMBER]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if args[0] == "clear" {
				req := control.Request{Cmd: control.CmdInject, Action: "clear"}
				if len(args) == 3 {
					req.Member = args[2]
				}
				var st control.Status
				if err := control.Call(args[1], req, &st, callTimeout); err != nil {
					return err
				}
				if asJSON {
					return writeJSON(w, st)
				}
				who := "every member"
				if req.Member != "" {
					who = "member " + req.Member
				}
				fmt.Fprintf(w, "faults cleared on %s; array %s\n", who, st.Array.State)
				return nil
			}
			rule, err := spec.Rule()
			if err != nil {
				return err
			}
			var st control.Status
			req := control.Request{Cmd: control.CmdInject, Action: "add", Member: args[1], Fault: &rule}
			if err := control.Call(args[0], req, &st, callTimeout); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(w, st)
			}
			fmt.Fprintf(w, "injected into member %s: %s\n", args[1], rule)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Fault, "fault", "", "the kind of fault: "+strings.Join(blockdev.FaultKinds(), ", "))
	f.StringVar(&spec.Ops, "ops", "", "the I/O it hits: read, write or both (default: what the kind applies to)")
	f.Float64Var(&spec.Rate, "rate", 0, "the probability that a matching I/O is hit, 0 to 1 (0: every one)")
	f.StringVar(&spec.Range, "range", "", "OFF:LEN of the member's data it covers, e.g. 0:64MiB (default: all)")
	f.IntVar(&spec.Count, "count", 0, "retire after hitting this many I/Os (0: no limit)")
	f.DurationVar(&spec.For, "for", 0, "retire after this long (0: until cleared)")
	f.DurationVar(&spec.Delay, "delay", 0, "for delay: how long each I/O waits")
	f.DurationVar(&spec.Jitter, "jitter", 0, "for delay: up to this much more, at random")
	f.Uint64Var(&spec.Seed, "seed", 0, "reseed the disk's fault generator, to repeat a run (0: keep it)")
	f.BoolVar(&asJSON, "json", false, "print the mount's status afterwards as JSON")
	return cmd
}

// printFaults lists the faults in force, for status.
func printFaults(w io.Writer, faults []control.Fault) {
	if len(faults) == 0 {
		return
	}
	fmt.Fprintln(w, " faults:")
	for _, f := range faults {
		who := fmt.Sprintf("member %d", f.Slot)
		if f.Slot < 0 {
			who = "disk"
		}
		if f.Vanished {
			fmt.Fprintf(w, "    %s (%s): vanished\n", who, f.Dir)
		}
		for _, r := range f.Rules {
			fmt.Fprintf(w, "    %s (%s): %s, hit %d time(s)\n", who, f.Dir, r.Rule, r.Fired)
		}
	}
}

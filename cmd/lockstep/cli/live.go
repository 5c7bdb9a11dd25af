package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// The commands in this file talk to a running mount through its control
// socket.

// callTimeout bounds how long a command waits for a mount's answer; umount
// waits longer, since it flushes.
const (
	callTimeout   = 30 * time.Second
	umountTimeout = 10 * time.Minute
)

func newUmount() *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Stop a mount: flush the volume, unmount, close the members",
		Long: `Stop the mount at MOUNTPOINT: it stops taking requests, flushes the volume,
unmounts and closes its members, and its daemon exits. It fails, changing
nothing, while the volume is in use (open, or attached to a loop device). A
mount whose daemon died is unmounted all the same.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var info control.MountInfo
			err := control.Call(args[0], control.Request{Cmd: control.CmdUmount}, &info, umountTimeout)
			if errors.Is(err, control.ErrNoMount) {
				return unmountOrphan(cmd, args[0], err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unmounted %s: volume flushed, members closed\n", info.Mountpoint)
			return nil
		},
	}
}

// unmountOrphan unmounts a lockstep mount whose daemon is gone (killed),
// which leaves the mount point answering ENOTCONN.
func unmountOrphan(cmd *cobra.Command, mountpoint string, noMount error) error {
	canon, err := control.Canonical(mountpoint)
	if err != nil {
		return err
	}
	if !isLockstepMount(canon) {
		return noMount
	}
	if os.Geteuid() == 0 {
		err = unix.Unmount(canon, unix.MNT_DETACH)
	} else {
		err = exec.Command("fusermount3", "-u", "-z", canon).Run()
	}
	if err != nil {
		return fmt.Errorf("unmount %s, whose daemon is gone: %w", canon, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "unmounted %s (its daemon was gone: writes not flushed before it died may be lost)\n", canon)
	return nil
}

// isLockstepMount reports whether /proc/self/mountinfo lists a lockstep
// FUSE mount at dir.
func isLockstepMount(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMount(fields[4]) != dir {
			continue
		}
		for i, field := range fields {
			if field == "-" && i+1 < len(fields) && fields[i+1] == "fuse.lockstep" {
				return true
			}
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// liveStatus prints the status of a running mount.
func liveStatus(w io.Writer, mountpoint string, asJSON bool) error {
	var st control.Status
	if err := control.Call(mountpoint, control.Request{Cmd: control.CmdStatus}, &st, callTimeout); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, st)
	}
	printLiveStatus(w, st)
	return nil
}

func printLiveStatus(w io.Writer, st control.Status) {
	a := st.Array
	lay, _ := raid.ParseLayout(a.Layout, len(a.Members))
	p := a.Policy
	auto := "off (fenced members wait for lockstep failover approve)"
	if p.AutoFailover {
		auto = "on"
	}
	fmt.Fprintf(w, "  array: %s (%s)\n", a.Array, a.ArrayUUID)
	fmt.Fprintf(w, "  state: %s\n", a.State)
	fmt.Fprintf(w, " layout: %s, chunk %s\n", lay, raid.FormatSize(a.Chunk))
	fmt.Fprintf(w, "   size: %s (%d bytes)\n", raid.FormatSize(a.Size), a.Size)
	fmt.Fprintf(w, "  mount: %s/volume (pid %d, since %s)\n", st.Mount.Mountpoint, st.Mount.PID, st.Mount.Since.Format(time.RFC3339))
	fmt.Fprintf(w, " policy: read %s, failure level %d, health timeout %s, auto-failover %s, consistency %s\n",
		a.ReadPolicy, p.FailureLevel, p.HealthTimeout, auto, a.Consistency)
	fmt.Fprintf(w, "   gen.: %d\n\n", a.Generation)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tREAD\tWRITE\tCKSUM\tREPAIRED\tSLOW\tDIR")
	for _, m := range a.Members {
		state := m.State
		if m.SitOut {
			state += " (sitting out reads)"
		}
		dir := m.Dir
		if dir == "" {
			dir = "-"
		}
		c := m.Counters
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", m.Slot, state, c.ReadErrors, c.WriteErrors, c.ChecksumErrors, c.Repairs, c.SlowIOs, dir)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n spares: %s\n", listOrNone(a.Spares))
	printFaults(w, st.Faults)
	if len(a.Lost) > 0 {
		var total int64
		for _, e := range a.Lost {
			total += e.Len
		}
		fmt.Fprintf(w, "   lost: %s in %d range(s) beyond redundancy (reads fail until written):", raid.FormatSize(total), len(a.Lost))
		for i, e := range a.Lost {
			if i == 8 {
				fmt.Fprintf(w, " ...")
				break
			}
			fmt.Fprintf(w, " %d+%d", e.Off, e.Len)
		}
		fmt.Fprintln(w)
	}
	if len(st.Jobs) == 0 {
		fmt.Fprintln(w, "   jobs: none")
	} else {
		fmt.Fprintln(w, "   jobs:")
		for _, j := range st.Jobs {
			fmt.Fprintln(w, "    "+jobLine(j))
		}
	}
	if st.Scrub != nil {
		printScrub(w, *st.Scrub)
	}
	printCoverage(w, st.Coverage)
}

func newEvents() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events [--json] MOUNTPOINT",
		Short: "List a mount's events, oldest first",
		Long: `List the array's events, oldest first: every change of a member's or the
array's state and every decision of the failure policy, with its reason.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var events []raid.Event
			if err := control.Call(args[0], control.Request{Cmd: control.CmdEvents}, &events, callTimeout); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), events)
			}
			for _, e := range events {
				fmt.Fprintln(cmd.OutOrStdout(), e)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the events as JSON")
	return cmd
}

func newFail() *cobra.Command {
	return &cobra.Command{
		Use:   "fail MOUNTPOINT MEMBER",
		Short: "Fence a member on the operator's word",
		Long: `Fence MEMBER (a slot number or a member directory): it gets no more I/O and
its data is served from the others. It is refused, changing nothing, if the
array cannot serve its data without it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return memberCommand(cmd, args, control.CmdFail, "fenced")
		},
	}
}

func newFailover() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "failover approve MOUNTPOINT MEMBER",
		Short: "Approve the failover of a fenced member (when auto-failover is off)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "approve MOUNTPOINT MEMBER",
		Short: "Let a fenced member's failover proceed",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return memberCommand(cmd, args, control.CmdApprove, "failover approved for")
		},
	})
	return cmd
}

// memberCommand sends a command about one member and reports its state
// afterwards.
func memberCommand(cmd *cobra.Command, args []string, what, done string) error {
	var st raid.Status
	if err := control.Call(args[0], control.Request{Cmd: what, Member: args[1]}, &st, callTimeout); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s member %s; array %s\n", done, args[1], st.State)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

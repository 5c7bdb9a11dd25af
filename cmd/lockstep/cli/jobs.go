package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/scrub"
)

// The background jobs (scrub, rebuild) and the membership commands (spare,
// replace) of a running mount.

type jobFlags struct {
	check, wait, json bool
}

func newScrub() *cobra.Command {
	var f jobFlags
	cmd := &cobra.Command{
		Use:   "scrub start|status|pause|resume|cancel [--check] [--wait] [--json] MOUNTPOINT",
		Short: "Check every written stripe, and repair what is found bad",
		Long: `A scrub reads every written stripe of the volume, every copy and every chunk,
proves each block by its checksum, checks that copies and parity agree, and
repairs what it finds from the redundancy (with --check it only reports).
Data beyond redundancy is recorded as lost, and the scrub goes on. It runs
in the background within the mount's --rebuild-rate and survives restarts;
status shows its progress and the last result. With --wait the command
follows it to the end.`,
		Args: cobra.NoArgs,
	}
	for _, action := range []string{"start", "status", "pause", "resume", "cancel"} {
		sub := &cobra.Command{
			Use:   action + " MOUNTPOINT",
			Short: action + " a scrub",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if f.check && action != "start" {
					return fmt.Errorf("--check goes with scrub start")
				}
				return jobCommand(cmd, args[0], control.Request{Cmd: control.CmdScrub, Action: action, Check: f.check}, f, "scrub")
			},
		}
		if action == "start" {
			sub.Flags().BoolVar(&f.check, "check", false, "find, but do not repair")
		}
		cmd.AddCommand(sub)
	}
	cmd.PersistentFlags().BoolVar(&f.wait, "wait", false, "follow the scrub until it ends")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print the status as JSON")
	return cmd
}

func newRebuild() *cobra.Command {
	var f jobFlags
	cmd := &cobra.Command{
		Use:   "rebuild status|pause|resume [--wait] [--json] MOUNTPOINT",
		Short: "Follow, pause or resume the rebuild of a member",
		Long: `A rebuild fills a new member (a hot spare taken by a failover, or one put in
with lockstep replace) from the rest of the array, stripe by stripe, over
the regions ever written; a resync does the same for a member that came
back, over the regions it missed. Both start by themselves, run in the
background within the mount's --rebuild-rate, and resume after a restart.
pause holds them back until resume (or the next mount).`,
		Args: cobra.NoArgs,
	}
	for _, action := range []string{"status", "pause", "resume"} {
		cmd.AddCommand(&cobra.Command{
			Use:   action + " MOUNTPOINT",
			Short: action + " rebuilds",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return jobCommand(cmd, args[0], control.Request{Cmd: control.CmdRebuild, Action: action}, f, "rebuild")
			},
		})
	}
	cmd.PersistentFlags().BoolVar(&f.wait, "wait", false, "follow the rebuild until it ends")
	cmd.PersistentFlags().BoolVar(&f.json, "json", false, "print the status as JSON")
	return cmd
}

func newSpare() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spare add|remove MOUNTPOINT DIR",
		Short: "Add or remove a hot spare",
		Long: `add formats DIR as a hot spare of the mounted array (a directory holding a
member this array no longer uses is wiped and added as new); if a member
waits for a spare, the failover onto it starts at once. remove takes a
spare out, leaving its files.`,
		Args: cobra.NoArgs,
	}
	for _, action := range []string{"add", "remove"} {
		cmd.AddCommand(&cobra.Command{
			Use:   action + " MOUNTPOINT DIR",
			Short: action + " a hot spare",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				var st control.Status
				if err := control.Call(args[0], control.Request{Cmd: control.CmdSpare, Action: action, Dir: args[1]}, &st, callTimeout); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "spare %s: %s; spares now: %s; array %s\n", action, args[1], listOrNone(st.Array.Spares), st.Array.State)
				return nil
			},
		})
	}
	return cmd
}

func newReplace() *cobra.Command {
	return &cobra.Command{
		Use:   "replace MOUNTPOINT MEMBER NEWDIR",
		Short: "Put a new member in place of another and rebuild onto it",
		Long: `Format NEWDIR as a new member and put it in MEMBER's slot (a slot number or
a member directory); the member it replaces is closed and never used again.
The new member is rebuilt in the background (lockstep rebuild status). An
online member is refused if the array cannot serve without it.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var st control.Status
			if err := control.Call(args[0], control.Request{Cmd: control.CmdReplace, Member: args[1], Dir: args[2]}, &st, callTimeout); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "member %s replaced by %s; array %s\n", args[1], args[2], st.Array.State)
			return nil
		},
	}
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// jobCommand sends a job command, then prints the status, following the
// job to its end with --wait.
func jobCommand(cmd *cobra.Command, mountpoint string, req control.Request, f jobFlags, kind string) error {
	var st control.Status
	if err := control.Call(mountpoint, req, &st, callTimeout); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if f.wait {
		var err error
		if st, err = follow(w, mountpoint, kind, st, f.json); err != nil {
			return err
		}
	}
	if f.json {
		return writeJSON(w, st)
	}
	printJobs(w, st, kind)
	return nil
}

// jobOf returns the job of a kind in a status ("rebuild" covers resyncs).
func jobOf(st control.Status, kind string) (control.Job, bool) {
	for _, j := range st.Jobs {
		if j.Kind == kind || (kind == raid.KindRebuild && j.Kind == raid.KindResync) {
			return j, true
		}
	}
	return control.Job{}, false
}

// follow polls the mount until the job of the kind is over (or paused),
// showing a progress bar on a terminal and a plain line every few seconds
// otherwise (nothing with asJSON). It returns the last status.
func follow(w io.Writer, mountpoint, kind string, st control.Status, asJSON bool) (control.Status, error) {
	var bar *progressbar.ProgressBar
	tty := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !asJSON {
		tty = true
	}
	var lastLine time.Time
	for {
		j, ok := jobOf(st, kind)
		if !ok || j.State == scrub.Paused {
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(w)
			}
			return st, nil
		}
		switch {
		case asJSON:
		case tty:
			if bar == nil {
				bar = progressbar.NewOptions64(j.Total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
					progressbar.OptionSetDescription(j.Kind), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond),
					progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false))
			}
			bar.ChangeMax64(j.Total)
			bar.Describe(fmt.Sprintf("%s %s", j.Kind, etaText(j)))
			bar.Set64(min(j.Done, j.Total-1)) // never full before it is done
		case time.Since(lastLine) >= 2*time.Second:
			fmt.Fprintln(w, jobLine(j))
			lastLine = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
		st = control.Status{}
		if err := control.Call(mountpoint, control.Request{Cmd: control.CmdStatus}, &st, callTimeout); err != nil {
			return st, err
		}
	}
}

// etaText describes a job's rate and time left.
func etaText(j control.Job) string {
	if j.Rate <= 0 {
		return "(rate unknown)"
	}
	eta := "unknown"
	if j.ETA > 0 {
		eta = j.ETA.Round(time.Second).String()
	}
	return fmt.Sprintf("%s/s, ETA %s", raid.FormatSize(int64(j.Rate)), eta)
}

// jobLine describes a job's progress on one line.
func jobLine(j control.Job) string {
	who := ""
	if j.Slot >= 0 {
		who = fmt.Sprintf(" of member %d", j.Slot)
	}
	return fmt.Sprintf("%s%s: %s, %.1f%% (%s of %s), %s", j.Kind, who, j.State, 100*j.Progress,
		raid.FormatSize(j.Done), raid.FormatSize(j.Total), etaText(j))
}

// printJobs prints the jobs of a kind, and for scrubs the last result and
// the coverage.
func printJobs(w io.Writer, st control.Status, kind string) {
	found := false
	for _, j := range st.Jobs {
		if j.Kind == kind || (kind == raid.KindRebuild && j.Kind == raid.KindResync) {
			fmt.Fprintln(w, jobLine(j))
			found = true
		}
	}
	if kind == raid.KindRebuild {
		if !found {
			fmt.Fprintf(w, "no rebuild under way; array %s\n", st.Array.State)
		}
		return
	}
	if st.Scrub == nil {
		fmt.Fprintln(w, "no scrub was ever run")
	} else {
		printScrub(w, *st.Scrub)
	}
	printCoverage(w, st.Coverage)
}

// printScrub prints a scrub's result so far, per member.
func printScrub(w io.Writer, s scrub.Scrub) {
	mode := "repair"
	if s.Check {
		mode = "check"
	}
	when := "started " + s.Started.Format(time.RFC3339)
	if !s.Finished.IsZero() {
		when += ", ended " + s.Finished.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "scrub (%s): %s, %s; %s scrubbed in %s\n", mode, s.State, when, raid.FormatSize(s.Done), s.Active.Round(time.Millisecond))
	var per []string
	for slot := range s.Bad {
		if s.Bad[slot] > 0 || s.Repaired[slot] > 0 {
			per = append(per, fmt.Sprintf("member %d: %d found, %d repaired", slot, s.Bad[slot], s.Repaired[slot]))
		}
	}
	if len(per) == 0 {
		per = []string{"nothing found"}
	}
	fmt.Fprintf(w, "  bad blocks: %s; unrepairable: %s\n", strings.Join(per, "; "), raid.FormatSize(s.Lost))
}

// printCoverage says when the written regions were last verified.
func printCoverage(w io.Writer, c scrub.Coverage) {
	if c.Regions == 0 {
		fmt.Fprintln(w, "coverage: nothing written yet")
		return
	}
	fmt.Fprintf(w, "coverage: %d written region(s), %d never verified", c.Regions, c.Never)
	if !c.Newest.IsZero() {
		fmt.Fprintf(w, "; last verified: oldest %s, median %s, newest %s",
			c.Oldest.Format(time.RFC3339), c.Median.Format(time.RFC3339), c.Newest.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
}

package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/cmd/lockstep/chaos"
	"github.com/lockstepfs/lockstep/raid"
)

func newChaos() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chaos run SCENARIO...",
		Short: "Run fault scenarios against real mounts",
		Args:  cobra.NoArgs,
	}
	var o chaos.Options
	var long bool
	run := &cobra.Command{
		Use:   "run [--long] [--work-dir DIR] [--keep] SCENARIO...",
		Short: "Run fault scenarios: create, mount, inject, check, report",
		Long: `Run each SCENARIO file (YAML; see testdata/scenarios): create its array in a
work directory, mount it with lockstep mount, run its workload (a seeded mix
of writes, reads and flushes whose every block is checked, or a command such
as fio), and walk its timeline of steps: inject and clear faults, fail,
replace and add members, crash and remount, scrub, wait for states and
events, check expectations and verify the data.

It prints each step as it goes and a summary per scenario: steps passed,
operations, I/O errors, bytes verified, and for each injected fault how long
the array took to detect it, fence the member and rebuild. It exits non-zero
if any step of any scenario fails. All files are checked before anything
runs. Needs root and /dev/fuse, as lockstep mount does.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var scenarios []*chaos.Scenario
			for _, path := range args {
				sc, err := chaos.Load(path)
				if err != nil {
					return err
				}
				scenarios = append(scenarios, sc)
			}
			if long {
				o.Scale = 10
			}
			var err error
			if o.Binary, err = os.Executable(); err != nil {
				return fmt.Errorf("find the lockstep binary: %w", err)
			}
			if o.WorkDir == "" {
				if o.WorkDir, err = os.MkdirTemp("", "lockstep-chaos-"); err != nil {
					return err
				}
				defer os.Remove(o.WorkDir) // emptied by each scenario unless kept
			} else if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
				return err
			}
			o.Out = cmd.OutOrStdout()
			var results []chaos.Result
			for _, sc := range scenarios {
				results = append(results, chaos.Run(sc, o))
				fmt.Fprintln(o.Out)
			}
			return summarize(o.Out, results)
		},
	}
	f := run.Flags()
	f.BoolVar(&long, "long", false, "the long form: ten times the operations and wait times")
	f.Float64Var(&o.Scale, "scale", 1, "multiply the operations and wait times by this")
	f.StringVar(&o.WorkDir, "work-dir", "", "where to make the arrays (default: a new temporary directory)")
	f.BoolVar(&o.Keep, "keep", false, "keep a failed scenario's members for a look")
	cmd.AddCommand(run)
	return cmd
}

// summarize prints one line per scenario and fails if any did.
func summarize(w io.Writer, results []chaos.Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tRESULT\tSTEPS\tOPS\tERRORS\tVERIFIED\tDETECT\tFENCE\tREBUILD\tTOOK")
	var failed []string
	for _, r := range results {
		verdict := "pass"
		if r.Err != nil {
			verdict = "FAIL"
			failed = append(failed, r.Name)
		}
		var detect, fence, rebuild []string
		for _, f := range r.Faults {
			detect = append(detect, durText(f.Detect))
			fence = append(fence, durText(f.Fence))
			rebuild = append(rebuild, durText(f.Rebuild))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Name, verdict, r.Passed, r.Steps, r.Ops, r.Errors,
			raid.FormatSize(r.Verified), orDash(detect), orDash(fence), orDash(rebuild), r.Took.Round(100*time.Millisecond))
	}
	tw.Flush()
	if failed != nil {
		return fmt.Errorf("%d of %d scenario(s) failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}

func durText(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func orDash(xs []string) string {
	if len(xs) == 0 {
		return "-"
	}
	return strings.Join(xs, ",")
}

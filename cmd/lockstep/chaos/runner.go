package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// Options say how scenarios are run.
type Options struct {
	// Binary is the lockstep executable that creates and mounts arrays.
	Binary string
	// WorkDir holds each scenario's members and mount point; it must exist.
	WorkDir string
	// Scale multiplies the operations of run steps and the timeouts of
	// waits: 1 is the short form, 10 the long one.
	Scale float64
	// Keep leaves a failed scenario's members in WorkDir for a look.
	Keep bool
	// Out receives the step-by-step report.
	Out io.Writer
}

// Result is what running a scenario came to.
type Result struct {
	Name     string
	Steps    int // in the scenario
	Passed   int
	Err      error // the first failure; nil if the scenario passed
	Ops      int64
	Errors   int64 // I/O errors the workload saw
	Wrong    int64 // blocks read back wrong: always a failure
	Verified int64 // bytes read back and checked
	Faults   []FaultTiming
	Crashes  []time.Duration // how long each remount took to serve again
	Took     time.Duration
}

// FaultTiming is how the array answered one injected fault; a zero
// duration means it did not happen.
type FaultTiming struct {
	Step    int
	Slot    int
	Fault   string
	Detect  time.Duration // to the first counter or event about the member
	Fence   time.Duration // to its fence
	Rebuild time.Duration // from its failover to the end of its rebuild

	at       time.Time
	baseline int64
	detected time.Time
}

// run is one scenario under way.
type run struct {
	sc      *Scenario
	o       Options
	root    string
	dirs    []string
	mnt     string
	pid     int
	started time.Time
	w       *workload
	cmd     *exec.Cmd // a command workload
	cmdOut  bytes.Buffer
	cmdErr  chan error
	res     *Result
	spares  int
	waited  map[string]int // events consumed by earlier waits, by kind and slot
	history []raid.Event   // the events since the start, fetched at the end

	mu       sync.Mutex // faults, polled in the background
	faults   []*FaultTiming
	stopPoll chan struct{}
	polled   sync.WaitGroup
}

// Run runs one scenario and reports it to o.Out.
func Run(sc *Scenario, o Options) (res Result) {
	res = Result{Name: sc.Name, Steps: len(sc.Steps)}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	r := &run{sc: sc, o: o, res: &res, waited: map[string]int{}, stopPoll: make(chan struct{}), started: time.Now()}
	fmt.Fprintf(o.Out, "scenario %s (%s)\n", sc.Name, sc.Path)
	if sc.Description != "" {
		fmt.Fprintf(o.Out, "  %s\n", strings.TrimSpace(sc.Description))
	}
	defer func() {
		res.Took = time.Since(r.started)
		r.report()
	}()
	if err := r.setUp(); err != nil {
		res.Err = fmt.Errorf("set-up: %w", err)
		r.tearDown()
		return res
	}
	for i, st := range sc.Steps {
		kind, _ := st.kind()
		t0 := time.Now()
		what, err := r.step(i, kind, st)
		line := fmt.Sprintf("  %2d  %-8s %s", i+1, kind, what)
		if err == nil {
			err = r.workloadFailed()
		}
		if err != nil {
			fmt.Fprintf(o.Out, "%s\n      FAILED (%s:%d): %v\n", line, sc.Path, sc.stepLine(i), err)
			res.Err = fmt.Errorf("step %d (%s, line %d): %w", i+1, kind, sc.stepLine(i), err)
			if skipped := len(sc.Steps) - i - 1; skipped > 0 {
				fmt.Fprintf(o.Out, "      %d later step(s) not run\n", skipped)
			}
			break
		}
		res.Passed++
		fmt.Fprintf(o.Out, "%-60s ok  %s\n", line, roundDur(time.Since(t0)))
	}
	if res.Err == nil {
		res.Err = r.finish()
	}
	r.tearDown()
	return res
}

// setUp creates the array, mounts it and starts the workload.
func (r *run) setUp() error {
	sc, a := r.sc, r.sc.Array
	r.root = filepath.Join(r.o.WorkDir, sc.Name)
	if err := os.RemoveAll(r.root); err != nil {
		return err
	}
	r.mnt = filepath.Join(r.root, "mnt")
	if err := os.MkdirAll(r.mnt, 0o755); err != nil {
		return err
	}
	chunk := a.Chunk
	if chunk == "" {
		chunk = "64KiB"
	}
	args := []string{"create", "--layout", a.Layout, "--chunk", chunk, "--size", a.Size, "--name", "chaos"}
	for i := range a.Members {
		r.dirs = append(r.dirs, filepath.Join(r.root, fmt.Sprintf("disk%d", i)))
	}
	for range a.Spares {
		args = append(args, "--spare", r.newDir("spare"))
	}
	if _, err := r.lockstep(append(args, r.dirs...)...); err != nil {
		return err
	}
	if err := r.mount(); err != nil {
		return err
	}
	st, err := r.status()
	if err != nil {
		return err
	}
	if len(sc.Workload.Command) > 0 {
		r.startCommand()
	} else {
		span := st.Array.Size
		if sc.Workload.Span != "" {
			span, _ = raid.ParseSize(sc.Workload.Span)
			span = min(span, st.Array.Size)
		}
		span -= span % unitSize
		if span < unitSize {
			return fmt.Errorf("the workload needs at least 1MiB of volume, the array has %d bytes", st.Array.Size)
		}
		spec := sc.Workload
		if spec.Write+spec.Read+spec.Flush == 0 {
			spec.Write, spec.Read, spec.Flush = 60, 35, 5
		}
		if spec.Workers == 0 {
			spec.Workers = 2
		}
		sizes := []int{4096, 64 << 10}
		if len(spec.Sizes) > 0 {
			sizes = sizes[:0]
			for _, s := range spec.Sizes {
				n, _ := raid.ParseSize(s)
				sizes = append(sizes, int(n))
			}
		}
		r.w = newWorkload(spec, span, sizes)
		if err := r.w.start(r.volume()); err != nil {
			return err
		}
	}
	r.polled.Add(1)
	go r.poll()
	return nil
}

// newDir returns a fresh member directory path named after what.
func (r *run) newDir(what string) string {
	r.spares++
	return filepath.Join(r.root, fmt.Sprintf("%s%d", what, r.spares))
}

func (r *run) volume() string { return filepath.Join(r.mnt, "volume") }

// lockstep runs the lockstep binary and returns its output, or an error
// holding it.
func (r *run) lockstep(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(r.o.Binary, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("lockstep %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// mount mounts the array with the scenario's options.
func (r *run) mount() error {
	a := r.sc.Array
	args := []string{"mount", "-d"}
	if a.FailureLevel != nil {
		args = append(args, "--failure-level", strconv.Itoa(*a.FailureLevel))
	}
	if a.HealthTimeout > 0 {
		args = append(args, "--health-timeout", a.HealthTimeout.String())
	}
	if a.AutoFailover != nil {
		args = append(args, "--auto-failover="+strconv.FormatBool(*a.AutoFailover))
	}
	if a.Consistency != "" {
		args = append(args, "--consistency", a.Consistency)
	}
	if a.ReadPolicy != "" {
		args = append(args, "--read-policy", a.ReadPolicy)
	}
	rate := a.RebuildRate
	if rate == "" {
		// The default (4MiB:0) yields wholly to a workload that never
		// stops: give the rebuild a floor.
		rate = "16MiB:256MiB"
	}
	args = append(args, "--rebuild-rate", rate)
	if _, err := r.lockstep(append(append(args, r.dirs...), r.mnt)...); err != nil {
		return err
	}
	st, err := r.status()
	if err != nil {
		return err
	}
	r.pid = st.Mount.PID
	return nil
}

// status asks the mount for its status.
func (r *run) status() (control.Status, error) {
	var st control.Status
	err := control.Call(r.mnt, control.Request{Cmd: control.CmdStatus}, &st, 30*time.Second)
	return st, err
}

// events returns the events recorded since the scenario began.
func (r *run) events() ([]raid.Event, error) {
	var all []raid.Event
	if err := control.Call(r.mnt, control.Request{Cmd: control.CmdEvents}, &all, 30*time.Second); err != nil {
		return nil, err
	}
	var out []raid.Event
	for _, e := range all {
		if !e.Time.Before(r.started) {
			out = append(out, e)
		}
	}
	return out, nil
}

// call sends a request and discards the answer.
func (r *run) call(req control.Request) error {
	return control.Call(r.mnt, req, nil, 30*time.Second)
}

// startCommand starts a command workload.
func (r *run) startCommand() {
	args := make([]string, len(r.sc.Workload.Command))
	for i, a := range r.sc.Workload.Command {
		args[i] = strings.ReplaceAll(a, "{volume}", r.volume())
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Stdout, r.cmd.Stderr = &r.cmdOut, &r.cmdOut
	r.cmdErr = make(chan error, 1)
	if err := r.cmd.Start(); err != nil {
		r.cmdErr <- err
		r.cmd = nil
		return
	}
	go func() { r.cmdErr <- r.cmd.Wait() }()
}

// waitCommand waits for a command workload to end and says how it went.
func (r *run) waitCommand() error {
	if r.cmdErr == nil {
		return nil
	}
	err := <-r.cmdErr
	r.cmdErr = nil
	if err != nil {
		tail := r.cmdOut.String()
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("workload %s: %v\n%s", r.sc.Workload.Command[0], err, tail)
	}
	return nil
}

// workloadFailed reports wrong data, which fails a scenario at once.
func (r *run) workloadFailed() error {
	if r.w == nil || r.w.wrong.Load() == 0 {
		return nil
	}
	return fmt.Errorf("the workload read %d wrong block(s): %s", r.w.wrong.Load(), *r.w.firstErr.Load())
}

// finish checks what every scenario must hold at its end: a command
// workload exited 0; the built-in one read nothing wrong and, unless
// errors were expected, saw no I/O error.
func (r *run) finish() error {
	if err := r.waitCommand(); err != nil {
		return err
	}
	if r.w == nil {
		return nil
	}
	if err := r.workloadFailed(); err != nil {
		return err
	}
	if n := r.w.errs.Load(); n > 0 && !r.errorsExpected() {
		return fmt.Errorf("the workload saw %d I/O error(s) (first: %s), and no expect step allows any", n, *r.w.firstErr.Load())
	}
	return nil
}

// errorsExpected reports whether an expect step allows workload errors.
func (r *run) errorsExpected() bool {
	for _, st := range r.sc.Steps {
		if st.Expect != nil && st.Expect.Errors != "" && !mustCmp(st.Expect.Errors).holds(0) {
			return true
		}
	}
	return false
}

// tearDown stops the workload and the mount, by force if it must, and
// removes the scenario's files unless it failed and Keep is set.
func (r *run) tearDown() {
	close(r.stopPoll)
	r.polled.Wait()
	if r.w != nil {
		r.w.close()
		r.res.Ops, r.res.Errors, r.res.Wrong, r.res.Verified = r.w.ops.Load(), r.w.errs.Load(), r.w.wrong.Load(), r.w.verified.Load()
	}
	if r.cmd != nil && r.cmdErr != nil {
		r.cmd.Process.Kill()
		<-r.cmdErr
	}
	r.timings()
	if r.mnt != "" {
		if _, err := r.lockstep("umount", r.mnt); err != nil && r.pid != 0 {
			unix.Unmount(r.mnt, unix.MNT_DETACH)
			syscall.Kill(r.pid, syscall.SIGKILL)
			waitGone(r.pid)
		}
	}
	if r.res.Err == nil || !r.o.Keep {
		os.RemoveAll(r.root)
	} else {
		fmt.Fprintf(r.o.Out, "  members kept in %s\n", r.root)
	}
}

// waitGone waits until a process that is not our child has exited.
func waitGone(pid int) {
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(10 * time.Millisecond) // another process's exit: nothing to wait on but polling
	}
}

// poll watches the counters of members with injected faults, to time
// their detection.
func (r *run) poll() {
	defer r.polled.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stopPoll:
			return
		case <-t.C:
		}
		r.mu.Lock()
		pending := false
		for _, f := range r.faults {
			pending = pending || f.detected.IsZero()
		}
		r.mu.Unlock()
		if !pending {
			continue
		}
		st, err := r.status()
		if err != nil {
			continue // mid-crash
		}
		now := time.Now()
		r.mu.Lock()
		for _, f := range r.faults {
			if f.detected.IsZero() && errorCount(st, f.Slot) > f.baseline {
				f.detected = now
			}
		}
		r.mu.Unlock()
	}
}

// errorCount sums a member's error counters.
func errorCount(st control.Status, slot int) int64 {
	if slot >= len(st.Array.Members) {
		return 0
	}
	c := st.Array.Members[slot].Counters
	return c.ReadErrors + c.WriteErrors + c.ChecksumErrors + c.SlowIOs
}

// timings fetches the events since the start and works out from them how
// fast each injected fault was detected, fenced and rebuilt.
func (r *run) timings() {
	events, err := r.events()
	if err != nil {
		return
	}
	r.history = events
	for _, f := range r.faults {
		var failover time.Time
		for _, e := range events {
			if e.Slot != f.Slot || e.Time.Before(f.at) {
				continue
			}
			switch {
			case e.Kind == "inject" || e.Kind == "inject-clear":
			case f.detected.IsZero() || e.Time.Before(f.detected):
				f.detected = e.Time
			}
			switch {
			case e.Kind == "fence" && f.Fence == 0:
				f.Fence = e.Time.Sub(f.at)
			case e.Kind == "failover" && e.New == raid.Rebuilding.String() && failover.IsZero():
				failover = e.Time
			case e.Kind == "rebuild" && e.New == raid.Online.String() && !failover.IsZero() && f.Rebuild == 0:
				f.Rebuild = e.Time.Sub(failover)
			}
		}
		if !f.detected.IsZero() {
			f.Detect = max(f.detected.Sub(f.at), time.Microsecond)
		}
		r.res.Faults = append(r.res.Faults, *f)
	}
}

// report prints the summary.
func (r *run) report() {
	res, out := r.res, r.o.Out
	verdict := "PASSED"
	if res.Err != nil {
		verdict = "FAILED"
	}
	fmt.Fprintf(out, "  %s: %d/%d steps passed in %s", verdict, res.Passed, res.Steps, roundDur(res.Took))
	if r.w != nil {
		fmt.Fprintf(out, "; %d operations, %d I/O error(s), %d wrong block(s), %s verified", res.Ops, res.Errors, res.Wrong, raid.FormatSize(res.Verified))
	}
	fmt.Fprintln(out)
	for _, f := range res.Faults {
		fmt.Fprintf(out, "    step %d, member %d, %s: detected %s, fenced %s, rebuilt %s\n", f.Step, f.Slot, f.Fault, durOrNone(f.Detect), durOrNone(f.Fence), durOrNone(f.Rebuild))
	}
	for i, d := range res.Crashes {
		fmt.Fprintf(out, "    crash %d: serving again %s after the kill\n", i+1, roundDur(d))
	}
	if res.Err != nil {
		fmt.Fprintf(out, "  error: %v\n", res.Err)
		if len(r.history) > 0 {
			fmt.Fprintln(out, "  the array's last events:")
			for _, e := range r.history[max(0, len(r.history)-20):] {
				fmt.Fprintf(out, "    %s\n", e)
			}
		}
	}
}

func durOrNone(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return roundDur(d)
}

// roundDur prints a duration to a sensible precision.
func roundDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// errStep is returned by steps whose expectations do not hold.
var errStep = errors.New("expectation not met")

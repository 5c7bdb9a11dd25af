package chaos

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// step runs step i and returns what it did, in a few words.
func (r *run) step(i int, kind string, st Step) (string, error) {
	switch kind {
	case "run":
		if st.Run.Finish {
			return "the workload command to its end", r.waitCommand()
		}
		n := int64(float64(st.Run.Ops) * r.o.Scale)
		r.w.waitOps(n)
		return fmt.Sprintf("%d operations", n), nil
	case "inject":
		return r.inject(i, st.Inject)
	case "clear":
		req := control.Request{Cmd: control.CmdInject, Action: "clear"}
		what := "every member's faults"
		if st.Clear.Member != nil {
			req.Member = strconv.Itoa(*st.Clear.Member)
			what = "member " + req.Member + "'s faults"
		}
		return what, r.call(req)
	case "fail":
		m := strconv.Itoa(*st.Fail.Member)
		return "member " + m, r.call(control.Request{Cmd: control.CmdFail, Member: m})
	case "approve":
		m := strconv.Itoa(*st.Approve.Member)
		return "failover of member " + m, r.call(control.Request{Cmd: control.CmdApprove, Member: m})
	case "replace":
		m, dir := strconv.Itoa(*st.Replace.Member), r.newDir("new")
		return "member " + m + " with a new disk", r.call(control.Request{Cmd: control.CmdReplace, Member: m, Dir: dir})
	case "spare":
		n := max(st.Spare.Add, 1)
		for range n {
			if err := r.call(control.Request{Cmd: control.CmdSpare, Action: "add", Dir: r.newDir("spare")}); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("add %d hot spare(s)", n), nil
	case "rebuild":
		action := "pause"
		if st.Rebuild.Resume {
			action = "resume"
		}
		return action, r.call(control.Request{Cmd: control.CmdRebuild, Action: action})
	case "crash":
		return "kill -9 the mount, mount again, check every block", r.crash()
	case "scrub":
		return r.scrub(st.Scrub)
	case "wait":
		return r.wait(st.Wait)
	case "expect":
		return r.expect(st.Expect)
	case "verify":
		if r.w == nil {
			return "", fmt.Errorf("verify reads back the built-in workload's data; a command workload checks its own")
		}
		before := r.w.verified.Load()
		r.w.pause()
		r.w.verify(false)
		r.w.resume()
		return fmt.Sprintf("read back %s", raid.FormatSize(r.w.verified.Load()-before)), r.workloadFailed()
	}
	return "", fmt.Errorf("unknown step %q", kind)
}

// inject injects a fault and starts timing the array's answer to it.
func (r *run) inject(i int, in *InjectStep) (string, error) {
	rule, err := in.Rule()
	if err != nil {
		return "", err
	}
	st, err := r.status()
	if err != nil {
		return "", err
	}
	f := &FaultTiming{Step: i + 1, Slot: in.Member, Fault: rule.String(), at: time.Now(), baseline: errorCount(st, in.Member)}
	req := control.Request{Cmd: control.CmdInject, Action: "add", Member: strconv.Itoa(in.Member), Fault: &rule}
	if err := r.call(req); err != nil {
		return "", err
	}
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
	return fmt.Sprintf("member %d: %s", in.Member, rule), nil
}

// crash kills the daemon mid-workload, unmounts what it left, mounts
// again and checks every block against what a crash may leave.
func (r *run) crash() error {
	if r.w == nil {
		return fmt.Errorf("crash checks the built-in workload's data; this scenario runs a command")
	}
	if st, err := r.status(); err == nil {
		// Mount again what the array is made of now: spares may have
		// taken slots since it was created.
		r.dirs = r.dirs[:0]
		for _, m := range st.Array.Members {
			if m.Dir != "" {
				r.dirs = append(r.dirs, m.Dir)
			}
		}
		r.dirs = append(r.dirs, st.Array.Spares...)
	}
	r.w.crashing.Store(true)
	killed := time.Now()
	if err := syscall.Kill(r.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill the mount's daemon (pid %d): %w", r.pid, err)
	}
	waitGone(r.pid)
	r.w.pause()
	defer r.w.resume()
	if _, err := r.lockstep("umount", r.mnt); err != nil {
		return err
	}
	if err := r.mount(); err != nil {
		return err
	}
	r.res.Crashes = append(r.res.Crashes, time.Since(killed))
	if err := r.w.open(r.volume()); err != nil {
		return err
	}
	r.w.crashing.Store(false)
	r.w.verify(true)
	return r.workloadFailed()
}

// scrub runs a scrub to its end and checks its findings.
func (r *run) scrub(s *ScrubStep) (string, error) {
	if err := r.call(control.Request{Cmd: control.CmdScrub, Action: "start", Check: s.Check}); err != nil {
		return "", err
	}
	var res control.Status
	err := r.poll1(10*time.Minute, "the scrub to finish", func(st control.Status) bool {
		res = st
		return st.Scrub != nil && st.Scrub.State == "finished"
	})
	if err != nil {
		return "", err
	}
	sum := func(xs []int64) (n int64) {
		for _, x := range xs {
			n += x
		}
		return n
	}
	bad, repaired, lost := sum(res.Scrub.Bad), sum(res.Scrub.Repaired), res.Scrub.Lost
	mode := "repair"
	if s.Check {
		mode = "check"
	}
	what := fmt.Sprintf("%s: %s, %d bad, %d repaired, %d bytes lost", mode, raid.FormatSize(res.Scrub.Done), bad, repaired, lost)
	var fails []string
	for _, c := range []struct {
		name string
		want string
		got  int64
	}{{"bad blocks", s.Bad, bad}, {"repaired blocks", s.Repaired, repaired}, {"lost bytes", s.Lost, lost}} {
		if want := mustCmp(c.want); !want.holds(c.got) {
			fails = append(fails, fmt.Sprintf("%s %d, want %s", c.name, c.got, want))
		}
	}
	if fails != nil {
		return what, fmt.Errorf("%w: scrub found %s", errStep, strings.Join(fails, "; "))
	}
	return what, nil
}

// poll1 polls the status until cond holds or the timeout passes.
func (r *run) poll1(timeout time.Duration, what string, cond func(control.Status) bool) error {
	deadline := time.Now().Add(time.Duration(float64(timeout) * r.o.Scale))
	var last control.Status
	var lastErr error
	for {
		st, err := r.status()
		if err == nil && cond(st) {
			return nil
		}
		last, lastErr = st, err
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("waited %s for %s: %w", timeout, what, lastErr)
			}
			return fmt.Errorf("waited %s for %s: array %s, members %s", timeout, what, last.Array.State, describeMembers(last))
		}
		if err := r.workloadFailed(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling another process's state
	}
}

// describeMembers prints each member's state.
func describeMembers(st control.Status) string {
	var parts []string
	for _, m := range st.Array.Members {
		parts = append(parts, fmt.Sprintf("%d %s", m.Slot, m.State))
	}
	return strings.Join(parts, ", ")
}

// wait waits for a state or an event.
func (r *run) wait(w *WaitStep) (string, error) {
	timeout := w.Timeout
	if timeout == 0 {
		timeout = time.Minute
	}
	who := "array"
	if w.Member != nil {
		who = fmt.Sprintf("member %d", *w.Member)
	}
	if w.Rebuilt != "" {
		want, _ := parsePercent(w.Rebuilt)
		what := fmt.Sprintf("%s rebuilt to %d%%", who, want)
		return what, r.poll1(timeout, what, func(st control.Status) bool {
			done, ok := rebuiltPercent(st, *w.Member)
			return ok && done >= want
		})
	}
	if w.State != "" {
		what := who + " " + w.State
		return what, r.poll1(timeout, what, func(st control.Status) bool {
			if w.Member != nil {
				return st.Array.Members[*w.Member].State == w.State
			}
			return st.Array.State == w.State
		})
	}
	key := fmt.Sprintf("%s/%s/%s", who, w.Event, w.To)
	want := int64(r.waited[key] + 1)
	what := fmt.Sprintf("event %s on %s", w.Event, who)
	if w.To != "" {
		what += " to " + w.To
	}
	if want > 1 {
		what += fmt.Sprintf(" (#%d)", want)
	}
	err := r.poll1(timeout, what, func(control.Status) bool {
		events, err := r.events()
		return err == nil && countEvents(events, w.Event, w.Member, w.To) >= want
	})
	if err == nil {
		r.waited[key] = int(want)
	}
	return what, err
}

// rebuiltPercent returns the share of its work, in percent, that the
// rebuild or resync of the member in slot has done, if one is under way.
func rebuiltPercent(st control.Status, slot int) (int64, bool) {
	for _, b := range st.Array.Rebuilds {
		if b.Slot == slot && b.Total > 0 {
			return b.Done * 100 / b.Total, true
		}
	}
	return 0, false
}

// countEvents counts the events of a kind, for a member or any, taking it
// to a state if to is not "".
func countEvents(events []raid.Event, kind string, slot *int, to string) int64 {
	var n int64
	for _, e := range events {
		if e.Kind == kind && (slot == nil || e.Slot == *slot) && (to == "" || e.New == to) {
			n++
		}
	}
	return n
}

// expect checks the array's present state against the step.
func (r *run) expect(e *ExpectStep) (string, error) {
	st, err := r.status()
	if err != nil {
		return "", err
	}
	var fails, checked []string
	check := func(what string, ok bool, got string) {
		checked = append(checked, what)
		if !ok {
			fails = append(fails, fmt.Sprintf("%s: got %s", what, got))
		}
	}
	if e.State != "" {
		check("array "+e.State, st.Array.State == e.State, st.Array.State)
	}
	for slot, state := range e.Members {
		got := st.Array.Members[slot].State
		check(fmt.Sprintf("member %d %s", slot, state), got == state, got)
	}
	for slot, c := range e.Rebuilt {
		want := mustCmp(c)
		done, ok := rebuiltPercent(st, slot)
		got := "no rebuild under way"
		if ok {
			got = fmt.Sprintf("%d%%", done)
		}
		check(fmt.Sprintf("member %d rebuilt %s%%", slot, want), ok && want.holds(done), got)
	}
	for _, c := range e.Counters {
		m := st.Array.Members[c.Member].Counters
		for _, f := range []struct {
			name string
			want string
			got  int64
		}{{"read", c.Read, m.ReadErrors}, {"write", c.Write, m.WriteErrors}, {"checksum", c.Checksum, m.ChecksumErrors},
			{"repaired", c.Repaired, m.Repairs}, {"slow", c.Slow, m.SlowIOs}} {
			if f.want != "" {
				want := mustCmp(f.want)
				check(fmt.Sprintf("member %d %s %s", c.Member, f.name, want), want.holds(f.got), strconv.FormatInt(f.got, 10))
			}
		}
	}
	if len(e.Events) > 0 {
		events, err := r.events()
		if err != nil {
			return "", err
		}
		for _, ev := range e.Events {
			count := ev.Count
			if count == "" {
				count = ">0"
			}
			want, who := mustCmp(count), "any member"
			if ev.Member != nil {
				who = fmt.Sprintf("member %d", *ev.Member)
			}
			if ev.To != "" {
				who += " to " + ev.To
			}
			got := countEvents(events, ev.Kind, ev.Member, ev.To)
			check(fmt.Sprintf("%s events on %s %s", ev.Kind, who, want), want.holds(got), strconv.FormatInt(got, 10))
		}
	}
	if e.Errors != "" {
		var got int64
		if r.w != nil {
			got = r.w.errs.Load()
		}
		want := mustCmp(e.Errors)
		check("workload errors "+want.String(), want.holds(got), strconv.FormatInt(got, 10))
	}
	if e.Lost != "" {
		var got int64
		for _, x := range st.Array.Lost {
			got += x.Len
		}
		want := mustCmp(e.Lost)
		check("lost bytes "+want.String(), want.holds(got), strconv.FormatInt(got, 10))
	}
	if e.Faults != nil {
		check(fmt.Sprintf("%d disk(s) with faults", *e.Faults), len(st.Faults) == *e.Faults, strconv.Itoa(len(st.Faults)))
	}
	what := strings.Join(checked, ", ")
	if fails != nil {
		return what, fmt.Errorf("%w: %s", errStep, strings.Join(fails, "; "))
	}
	return what, nil
}

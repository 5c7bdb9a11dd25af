package raid

import (
	"fmt"
	"time"
)

// MemberState is a member's place in the array.
type MemberState int

// Member states. Only ONLINE members take reads and writes; REBUILDING ones
// take writes and the reads behind their rebuild cursor.
const (
	Online     MemberState = iota // serving
	Faulted                       // fenced by the policy or an operator: no I/O, no votes
	Offline                       // taken out by an operator
	Removed                       // gone: its directory or files cannot be opened
	Rebuilding                    // being rebuilt onto
	Spare                         // a hot spare, waiting
)

var stateNames = [...]string{"ONLINE", "FAULTED", "OFFLINE", "REMOVED", "REBUILDING", "SPARE"}

func (s MemberState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", int(s))
}

// Condition is something the health monitor or the I/O path saw go wrong
// with a member. Conditions are ordered by the failure level from which they
// count as failure.
type Condition int

// Conditions, by the failure level that first counts them.
const (
	CondGone         Condition = 1 // directory or files cannot be opened, or the label is missing
	CondUnresponsive Condition = 2 // no answer to a probe within the health timeout
	CondIOErrors     Condition = 3 // I/O errors over the threshold in the window
	CondMismatches   Condition = 4 // checksum or vote mismatches over the threshold
	CondSlow         Condition = 5 // persistently slow: latency far above its peers
)

var condNames = map[Condition]string{
	CondGone: "gone", CondUnresponsive: "unresponsive", CondIOErrors: "I/O errors",
	CondMismatches: "checksum mismatches", CondSlow: "persistently slow",
}

func (c Condition) String() string { return condNames[c] }

// Threshold is a count of occurrences within a sliding window.
type Threshold struct {
	Count  int
	Window time.Duration
}

// PolicyConfig holds every knob of the failover policy.
type PolicyConfig struct {
	// FailureLevel (0-5) says which conditions count as failure; each
	// level includes those below it. 0 never fails a member automatically.
	FailureLevel int
	// HealthTimeout is how long a probe may take before the member counts
	// as unresponsive; members are probed every HealthTimeout/3.
	HealthTimeout time.Duration
	// IOErrors, Mismatches and SlowIOs are the thresholds past which those
	// conditions are raised.
	IOErrors, Mismatches, SlowIOs Threshold
	// Restarts bounds the restarts a member gets within the window before
	// it is fenced instead.
	Restarts Threshold
	// SitOut is how long a slow member that is not failed sits out of reads.
	SitOut time.Duration
	// SlowFactor and SlowFloor make the latency bound past which a read
	// is slow: SlowFactor times the median latency of the member's peers,
	// and never less than SlowFloor. A member that was slow lately has its
	// reads hedged at that bound: served from the other copies or from
	// reconstruction, the slow answer discarded.
	SlowFactor float64
	SlowFloor  time.Duration
	// Correlated: when this many distinct members are found failing within
	// the window, the fault is taken to be a shared path (controller,
	// cable, host file system) and none of them is fenced for it.
	Correlated Threshold
	// AutoFailover fails over to a hot spare at once; without it a fenced
	// member waits for an operator's approval.
	AutoFailover bool
}

// DefaultPolicy returns the defaults, chosen so that one bad disk is fenced
// quickly while a passing fault is not:
//   - level 3: I/O errors fail a member, silent corruption and slowness are
//     repaired and routed around but do not (ZFS likewise degrades on I/O
//     errors and only counts checksum errors);
//   - 10 I/O errors in 10 minutes, ZFS's own figure: md's fail-on-first-
//     write-error is needless here, because a failed write records the new
//     checksum and so can never serve stale data, and a restart clears
//     transient trouble;
//   - 2 restarts an hour, then fence;
//   - two members failing within 30 seconds look like a shared fault;
//   - a read is slow past 8x its peers' median latency, never under 50 ms;
//     20 slow reads in a minute bench a member from reads for a minute.
func DefaultPolicy() PolicyConfig {
	return PolicyConfig{
		FailureLevel:  3,
		HealthTimeout: 30 * time.Second,
		IOErrors:      Threshold{Count: 10, Window: 10 * time.Minute},
		Mismatches:    Threshold{Count: 10, Window: 10 * time.Minute},
		SlowIOs:       Threshold{Count: 20, Window: time.Minute},
		Restarts:      Threshold{Count: 2, Window: time.Hour},
		SitOut:        time.Minute,
		SlowFactor:    8,
		SlowFloor:     50 * time.Millisecond,
		Correlated:    Threshold{Count: 2, Window: 30 * time.Second},
		AutoFailover:  true,
	}
}

// Validate reports the first knob out of range.
func (c PolicyConfig) Validate() error {
	switch {
	case c.FailureLevel < 0 || c.FailureLevel > 5:
		return fmt.Errorf("failure level %d: give 0 to 5", c.FailureLevel)
	case c.HealthTimeout <= 0:
		return fmt.Errorf("health timeout %s: give a positive duration", c.HealthTimeout)
	case c.SlowFactor < 1 || c.SlowFloor <= 0:
		return fmt.Errorf("slow bound %gx peers, floor %s: give a factor of at least 1 and a positive floor", c.SlowFactor, c.SlowFloor)
	case c.SitOut <= 0:
		return fmt.Errorf("sit-out %s: give a positive duration", c.SitOut)
	}
	for name, t := range map[string]Threshold{"I/O error": c.IOErrors, "mismatch": c.Mismatches,
		"slow I/O": c.SlowIOs, "restart": c.Restarts, "correlation": c.Correlated} {
		if t.Count < 1 || t.Window <= 0 {
			return fmt.Errorf("%s threshold %d in %s: give a count of at least 1 and a positive window", name, t.Count, t.Window)
		}
	}
	return nil
}

// ActionKind is what the policy asks the volume to do.
type ActionKind int

// Actions.
const (
	ActRestart  ActionKind = iota // close, reopen and re-probe the member
	ActFence                      // mark it FAULTED: no more I/O, no votes
	ActFailover                   // take a hot spare for the fenced member and rebuild
	ActSitOut                     // keep the member out of reads until Until
	ActRejoin                     // let a sat-out member serve reads again
	ActSuspend                    // refuse all I/O with ErrSuspended
	ActResume                     // serve again
	ActNote                       // only record an event
	ActOffline                    // mark it OFFLINE on the operator's word: no I/O, no failover
	ActDown                       // it is gone or unresponsive but kept: it misses writes until it answers
	ActResync                     // it answers again after missing writes: resync it over what it missed
)

var actionNames = [...]string{"restart", "fence", "failover", "sit-out", "rejoin", "suspend", "resume", "note", "offline", "down", "resync"}

func (k ActionKind) String() string { return actionNames[k] }

// Action is one thing the policy decided, with why.
type Action struct {
	Kind   ActionKind
	Slot   int // -1 for the whole array
	Reason string
	Until  time.Time // for ActSitOut
	// Old is the state an ActResync takes the member from, when it is not
	// REMOVED (a member that came back).
	Old MemberState
}

func (a Action) String() string {
	if a.Slot < 0 {
		return fmt.Sprintf("%s: %s", a.Kind, a.Reason)
	}
	return fmt.Sprintf("%s %d: %s", a.Kind, a.Slot, a.Reason)
}

// window is a list of recent occurrence times.
type window []time.Time

// add records t and returns how many occurrences fall within w of t.
func (ts *window) add(t time.Time, w time.Duration) int {
	*ts = append(*ts, t)
	return ts.count(t, w)
}

// count drops occurrences older than w before now and returns how many
// remain.
func (ts *window) count(now time.Time, w time.Duration) int {
	kept := (*ts)[:0]
	for _, x := range *ts {
		if now.Sub(x) < w {
			kept = append(kept, x)
		}
	}
	*ts = kept
	return len(kept)
}

// health is what the policy keeps about one member.
type health struct {
	state       MemberState
	ioErrors    window
	mismatches  window
	slow        window
	restarts    window
	restarting  Condition // the condition a restart under way answers; 0 if none
	sitOutUntil time.Time
	awaiting    bool      // fenced, failover waiting for approval
	down        Condition // gone or unresponsive while needed for quorum; 0 if not
	// noted is when a condition the failure level does not count was last
	// noted, so that it is noted once per error window, not per error.
	noted map[Condition]time.Time
}

// Policy is the failover policy's deterministic core. It takes what was
// seen (with the time it was seen) and returns the actions to take; it never
// reads a clock, starts a goroutine or touches a disk, so tests drive it with
// a fake clock. It is not safe for concurrent use: the volume serialises
// calls.
type Policy struct {
	cfg       PolicyConfig
	layout    Layout
	members   []*health
	failures  []failure // recent failure determinations, for correlation
	suspended bool
}

type failure struct {
	slot int
	at   time.Time
}

// NewPolicy returns a policy for a layout whose members start in the given
// states (by slot).
func NewPolicy(cfg PolicyConfig, l Layout, states []MemberState) *Policy {
	p := &Policy{cfg: cfg, layout: l}
	for _, s := range states {
		p.members = append(p.members, &health{state: s})
	}
	return p
}

// Config returns the policy's knobs.
func (p *Policy) Config() PolicyConfig { return p.cfg }

// State returns a member's state.
func (p *Policy) State(slot int) MemberState { return p.members[slot].state }

// Shown returns the state to report for a member: REMOVED for one that is
// gone or unresponsive and kept (down), its state otherwise.
func (p *Policy) Shown(slot int) MemberState {
	if h := p.members[slot]; h.down != 0 && h.state == Online {
		return Removed
	}
	return p.members[slot].state
}

// Suspended reports whether the volume is suspended below quorum.
func (p *Policy) Suspended() bool { return p.suspended }

// ReadsAllowed reports whether reads may go to the member at now: it is
// online, not restarting and not sitting out.
func (p *Policy) ReadsAllowed(slot int, now time.Time) bool {
	h := p.members[slot]
	return h.state == Online && h.restarting == 0 && h.down == 0 && !now.Before(h.sitOutUntil)
}

// serving reports by slot which members can serve data if slot were lost
// too (slot -1: none lost).
func (p *Policy) serving(without int) []bool {
	ok := make([]bool, len(p.members))
	for i, h := range p.members {
		ok[i] = i != without && h.state == Online && h.down == 0
	}
	return ok
}

// readers reports by slot which members take reads at now, leaving out slot
// (-1: none).
func (p *Policy) readers(without int, now time.Time) []bool {
	ok := make([]bool, len(p.members))
	for i := range p.members {
		ok[i] = i != without && p.ReadsAllowed(i, now)
	}
	return ok
}

// IOError records a failed read or write on a member.
func (p *Policy) IOError(slot int, now time.Time) []Action {
	n := p.members[slot].ioErrors.add(now, p.cfg.IOErrors.Window)
	if n < p.cfg.IOErrors.Count {
		return nil
	}
	return p.fail(slot, CondIOErrors, fmt.Sprintf("%d I/O errors within %s", n, p.cfg.IOErrors.Window), now)
}

// Mismatch records a block that failed its checksum or lost a vote.
func (p *Policy) Mismatch(slot int, now time.Time) []Action {
	n := p.members[slot].mismatches.add(now, p.cfg.Mismatches.Window)
	if n < p.cfg.Mismatches.Count {
		return nil
	}
	return p.fail(slot, CondMismatches, fmt.Sprintf("%d checksum or vote mismatches within %s", n, p.cfg.Mismatches.Window), now)
}

// SlowIO records an I/O that took far longer than the member's peers'.
func (p *Policy) SlowIO(slot int, now time.Time) []Action {
	h := p.members[slot]
	n := h.slow.add(now, p.cfg.SlowIOs.Window)
	if n < p.cfg.SlowIOs.Count {
		return nil
	}
	why := fmt.Sprintf("%d slow I/Os within %s", n, p.cfg.SlowIOs.Window)
	if p.cfg.FailureLevel >= int(CondSlow) {
		return p.fail(slot, CondSlow, why, now)
	}
	if h.state != Online || now.Before(h.sitOutUntil) {
		return nil
	}
	if !p.layout.Survives(p.readers(slot, now)) {
		h.slow = nil
		return []Action{{Kind: ActNote, Slot: slot, Reason: why + "; it keeps serving reads: the others cannot do without it"}}
	}
	h.sitOutUntil = now.Add(p.cfg.SitOut)
	h.slow = nil
	return []Action{{Kind: ActSitOut, Slot: slot, Reason: why + "; its writes go on", Until: h.sitOutUntil}}
}

// Probe records the outcome of a health probe: answered (it came back in
// time), and gone (the member's directory, files or label are missing).
func (p *Policy) Probe(slot int, answered, gone bool, now time.Time) []Action {
	h := p.members[slot]
	switch {
	case gone:
		return p.fail(slot, CondGone, "its directory, files or label cannot be opened", now)
	case !answered:
		return p.fail(slot, CondUnresponsive, fmt.Sprintf("no answer to a probe within %s", p.cfg.HealthTimeout), now)
	}
	var out []Action
	switch {
	case h.down != 0 && !p.suspended:
		// The others served without it: it missed their writes.
		h.down, h.state = 0, Rebuilding
		out = append(out, Action{Kind: ActResync, Slot: slot, Old: Removed, Reason: "answers again: resyncing what it missed"})
	case h.down != 0:
		// Writes were refused while it was needed: it missed nothing.
		h.down = 0
		out = append(out, Action{Kind: ActNote, Slot: slot, Reason: "answers again"})
		out = append(out, p.maybeResume()...)
	}
	if !h.sitOutUntil.IsZero() && !now.Before(h.sitOutUntil) {
		h.sitOutUntil = time.Time{}
		out = append(out, Action{Kind: ActRejoin, Slot: slot, Reason: "sit-out over"})
	}
	return out
}

// Restarted records the outcome of a restart the policy asked for.
func (p *Policy) Restarted(slot int, ok bool, why string, now time.Time) []Action {
	h := p.members[slot]
	c := h.restarting
	h.restarting = 0
	if ok {
		h.ioErrors, h.mismatches, h.slow = nil, nil, nil
		out := []Action{{Kind: ActNote, Slot: slot, Reason: "restart succeeded"}}
		if h.down != 0 {
			h.down = 0
			out = append(out, p.maybeResume()...)
		}
		return out
	}
	return p.fence(slot, c, "restart failed: "+why, now)
}

// Resync takes an online member out of reads to resync it over writes it
// failed before a restart brought it back.
func (p *Policy) Resync(slot int) []Action {
	h := p.members[slot]
	if h.state != Online || h.down != 0 || h.restarting != 0 {
		return nil
	}
	h.state = Rebuilding
	return []Action{{Kind: ActResync, Slot: slot, Old: Online, Reason: "restarted after failed writes: resyncing what it missed"}}
}

// Tick lets time-based decisions happen: sit-outs that ran out.
func (p *Policy) Tick(now time.Time) []Action {
	var out []Action
	for slot, h := range p.members {
		if !h.sitOutUntil.IsZero() && !now.Before(h.sitOutUntil) {
			h.sitOutUntil = time.Time{}
			out = append(out, Action{Kind: ActRejoin, Slot: slot, Reason: "sit-out over"})
		}
	}
	return out
}

// OperatorFail fences a member on an operator's word, whatever the failure
// level, unless that would lose data.
func (p *Policy) OperatorFail(slot int, now time.Time) ([]Action, error) {
	if st := p.members[slot].state; st != Online && st != Rebuilding {
		return nil, fmt.Errorf("member %d is %s, not ONLINE or REBUILDING", slot, st)
	}
	if !p.layout.Survives(p.serving(slot)) {
		return nil, fmt.Errorf("%w: member %d holds data that no other member can provide", ErrQuorum, slot)
	}
	return p.fence(slot, 0, "failed by the operator", now), nil
}

// OperatorOffline takes a member out of service on an operator's word (for
// maintenance), unless that would lose data. Unlike a fence it starts no
// failover. It misses writes while out, so it returns only through a resync
// or a rebuild.
func (p *Policy) OperatorOffline(slot int) ([]Action, error) {
	h := p.members[slot]
	if h.state != Online {
		return nil, fmt.Errorf("member %d is %s, not ONLINE", slot, h.state)
	}
	if !p.layout.Survives(p.serving(slot)) {
		return nil, fmt.Errorf("%w: member %d holds data that no other member can provide", ErrQuorum, slot)
	}
	h.state, h.restarting, h.down = Offline, 0, 0
	return []Action{{Kind: ActOffline, Slot: slot, Reason: "taken offline by the operator"}}, nil
}

// Approve lets a failover wait no longer.
func (p *Policy) Approve(slot int) ([]Action, error) {
	h := p.members[slot]
	if h.state != Faulted || !h.awaiting {
		return nil, fmt.Errorf("member %d is not awaiting failover approval (it is %s)", slot, h.state)
	}
	h.awaiting = false
	return []Action{{Kind: ActFailover, Slot: slot, Reason: "approved by the operator"}}, nil
}

// Rebuild records that a new member in slot is being rebuilt (or a
// returning one resynced): it takes writes, and reads behind its cursor.
func (p *Policy) Rebuild(slot int) {
	p.members[slot] = &health{state: Rebuilding}
}

// Rebuilt records that the member in slot holds current data throughout.
func (p *Policy) Rebuilt(slot int) []Action {
	p.members[slot].state = Online
	return p.maybeResume()
}

// NeedsSpare reports the first slot that waits for a hot spare: fenced
// with its failover decided (not awaiting approval), or removed. It
// returns -1 if none does.
func (p *Policy) NeedsSpare() int {
	for slot, h := range p.members {
		if (h.state == Faulted && !h.awaiting) || h.state == Removed {
			return slot
		}
	}
	return -1
}

// fail decides what a condition on a member leads to.
func (p *Policy) fail(slot int, c Condition, why string, now time.Time) []Action {
	h := p.members[slot]
	if h.state == Rebuilding && p.cfg.FailureLevel >= int(c) {
		// Nothing depends on it yet: no restart, no quorum to keep.
		return p.fence(slot, c, c.String()+": "+why+" while being rebuilt", now)
	}
	if h.state != Online || h.restarting != 0 || h.down != 0 {
		return nil // already being dealt with, or waited for
	}
	why = c.String() + ": " + why
	if p.cfg.FailureLevel < int(c) {
		if c == CondGone || c == CondUnresponsive {
			return p.goDown(slot, c, why, now)
		}
		if last, ok := h.noted[c]; ok && now.Sub(last) < p.cfg.IOErrors.Window {
			return nil
		}
		if h.noted == nil {
			h.noted = map[Condition]time.Time{}
		}
		h.noted[c] = now
		return []Action{{Kind: ActNote, Slot: slot, Reason: why + fmt.Sprintf(" (failure level %d does not count it)", p.cfg.FailureLevel)}}
	}
	if peers := p.correlated(slot, now); peers > 0 {
		out := []Action{{Kind: ActNote, Slot: slot, Reason: fmt.Sprintf("%s; %d other member(s) failed within %s: likely a shared fault (controller, cable, host), so it is kept, not fenced",
			why, peers, p.cfg.Correlated.Window)}}
		if c == CondGone || c == CondUnresponsive {
			out = append(out, p.goDown(slot, c, why, now)...)
		}
		return out
	}
	if h.restarts.count(now, p.cfg.Restarts.Window) < p.cfg.Restarts.Count {
		h.restarts.add(now, p.cfg.Restarts.Window)
		h.restarting = c
		return []Action{{Kind: ActRestart, Slot: slot, Reason: why}}
	}
	return p.fence(slot, c, why+fmt.Sprintf("; %d restarts within %s already", p.cfg.Restarts.Count, p.cfg.Restarts.Window), now)
}

// correlated records a failure determination and returns how many other
// members had one within the correlation window.
func (p *Policy) correlated(slot int, now time.Time) int {
	kept := p.failures[:0]
	others := map[int]bool{}
	for _, f := range p.failures {
		if now.Sub(f.at) < p.cfg.Correlated.Window {
			kept = append(kept, f)
			if f.slot != slot {
				others[f.slot] = true
			}
		}
	}
	p.failures = append(kept, failure{slot: slot, at: now})
	if len(others)+1 >= p.cfg.Correlated.Count {
		return len(others)
	}
	return 0
}

// fence marks a member FAULTED for condition c (0: the operator's word),
// unless the array cannot serve without it: then it is kept, and if it is
// gone or unresponsive the volume is suspended until it answers.
func (p *Policy) fence(slot int, c Condition, why string, now time.Time) []Action {
	h := p.members[slot]
	if !p.layout.Survives(p.serving(slot)) {
		out := []Action{{Kind: ActNote, Slot: slot, Reason: why + "; not fenced: the array cannot serve without it"}}
		if c == CondGone || c == CondUnresponsive {
			out = append(out, p.goDown(slot, c, why, now)...)
		}
		return out
	}
	h.state, h.restarting, h.down = Faulted, 0, 0
	out := []Action{{Kind: ActFence, Slot: slot, Reason: why}}
	if p.cfg.AutoFailover {
		out = append(out, Action{Kind: ActFailover, Slot: slot, Reason: "auto-failover"})
	} else {
		h.awaiting = true
		out = append(out, Action{Kind: ActNote, Slot: slot, Reason: "failover awaits the operator's approval (lockstep failover approve)"})
	}
	return out
}

// goDown records that a member needed for service is gone or unresponsive,
// and suspends the volume if that leaves it below quorum.
func (p *Policy) goDown(slot int, c Condition, why string, now time.Time) []Action {
	h := p.members[slot]
	if h.down != 0 {
		return nil
	}
	h.down = c
	out := []Action{{Kind: ActDown, Slot: slot, Reason: why}}
	if !p.suspended && !p.layout.Survives(p.serving(-1)) {
		p.suspended = true
		out = append(out, Action{Kind: ActSuspend, Slot: -1, Reason: fmt.Sprintf("below quorum: member %d is %s", slot, c)})
	}
	return out
}

// maybeResume resumes a suspended volume once it can serve again.
func (p *Policy) maybeResume() []Action {
	if p.suspended && p.layout.Survives(p.serving(-1)) {
		p.suspended = false
		return []Action{{Kind: ActResume, Slot: -1, Reason: "quorum regained"}}
	}
	return nil
}
